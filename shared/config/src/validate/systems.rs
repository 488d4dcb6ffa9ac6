//! A system's checks: its name, URL, secrets' variables, budget, schema check, limits
//! and write windows, then what its kind requires (kintone, file; rest in `entities`).

use domain::rules::{ApiAuth, SystemKind, SystemSpec, WebhookAuth};

use super::{Problems, entities, valid_env_name, valid_system_name};
use crate::system_secret_vars;

/// Every check of the system `name`, at `systems.{name}`.
pub(super) fn system(out: &mut Problems, name: &str, sys: &SystemSpec) {
    let at = format!("systems.{name}");
    if !valid_system_name(name) {
        out.bad(
            at.clone(),
            "a system name uses only a-z, 0-9, '-' and '_' (it is part of the webhook URL)".into(),
        );
    }
    let is_file = sys.kind == SystemKind::File;
    let http = sys.base_url.starts_with("http://") || sys.base_url.starts_with("https://");
    if !is_file && !http {
        out.bad(
            format!("{at}.base_url"),
            format!("\"{}\" is not an http(s) URL", sys.base_url),
        );
    }
    for (path, var) in system_secret_vars(name, sys) {
        if !valid_env_name(&var) {
            out.bad(
                path,
                format!("\"{var}\" is not an environment variable name (A-Z, 0-9, _)"),
            );
        }
    }
    if sys.budget.as_ref().is_some_and(|b| b.requests_per_day == 0) {
        out.bad(
            format!("{at}.budget.requests_per_day"),
            "must be at least 1".into(),
        );
    }
    schema_check(out, &at, sys);
    limits(out, &at, sys);
    write_windows(out, &at, sys);
    match sys.kind {
        SystemKind::Kintone => kintone(out, &at, sys),
        SystemKind::File => file(out, &at, sys),
        SystemKind::Rest => entities::rest(out, &at, sys),
    }
}

/// `schema_check`: its period, and that each sample names an entity of a rest system.
fn schema_check(out: &mut Problems, at: &str, sys: &SystemSpec) {
    if let Some(check) = &sys.schema_check {
        if check.every_seconds < 60 {
            out.bad(
                format!("{at}.schema_check.every_seconds"),
                "must be at least 60".into(),
            );
        }
        for entity in check.samples.keys() {
            if sys.kind != SystemKind::Rest || !sys.entities.contains_key(entity) {
                out.bad(
                    format!("{at}.schema_check.samples.{entity}"),
                    format!("\"{entity}\" is not an entity of this rest system"),
                );
            }
        }
    }
}

/// `limits`: the rate, the burst and the concurrency cap.
fn limits(out: &mut Problems, at: &str, sys: &SystemSpec) {
    if let Some(l) = &sys.limits {
        if !(l.requests_per_second > 0.0 && l.requests_per_second.is_finite()) {
            out.bad(
                format!("{at}.limits.requests_per_second"),
                "must be a positive number".into(),
            );
        }
        if l.burst == 0 {
            out.bad(format!("{at}.limits.burst"), "must be at least 1".into());
        }
        if l.max_concurrent == Some(0) {
            out.bad(
                format!("{at}.limits.max_concurrent"),
                "must be at least 1 (leave it out for no cap)".into(),
            );
        }
    }
}

/// `write_windows`: each problem the windows report, under their path.
fn write_windows(out: &mut Problems, at: &str, sys: &SystemSpec) {
    if let Some(w) = &sys.write_windows {
        for p in w.problems() {
            out.bad(format!("{at}.write_windows.{}", p.path), p.message);
        }
    }
}

/// A kintone system: apps, not entities; token webhooks; an API token.
fn kintone(out: &mut Problems, at: &str, sys: &SystemSpec) {
    if !sys.entities.is_empty() {
        out.bad(
            format!("{at}.entities"),
            "kintone systems have apps, not entities: remove this".into(),
        );
    }
    if matches!(sys.webhook, Some(WebhookAuth::StandardWebhooks { .. })) {
        out.bad(
            format!("{at}.webhook.type"),
            "kintone webhooks are unsigned: use \"token\"".into(),
        );
    }
    if !matches!(sys.auth, ApiAuth::KintoneApiToken { .. }) {
        out.bad(
            format!("{at}.auth.type"),
            "kintone systems authenticate with \"kintone_api_token\"".into(),
        );
    }
}

/// A file system: none of what only an API has.
fn file(out: &mut Problems, at: &str, sys: &SystemSpec) {
    // A partner without an API: nothing to call, nothing calls us.
    let api_only = [
        ("base_url", !sys.base_url.is_empty()),
        ("auth", sys.auth != ApiAuth::None),
        ("webhook", sys.webhook.is_some()),
        ("entities", !sys.entities.is_empty()),
        ("webhook_routing", sys.webhook_routing.is_some()),
        ("limits", sys.limits.is_some()),
        ("write_windows", sys.write_windows.is_some()),
        ("schema_check", sys.schema_check.is_some()),
        ("budget", sys.budget.is_some()),
    ];
    for (key, set) in api_only {
        if set {
            out.bad(
                format!("{at}.{key}"),
                "a file system has no API: its records arrive through `worker import`; remove this"
                    .into(),
            );
        }
    }
}
