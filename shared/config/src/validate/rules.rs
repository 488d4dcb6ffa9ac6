//! A rule's checks: its name, then its schedules, its source and target, its identity,
//! its fields and its policies, in that order.

use std::collections::BTreeSet;

use domain::rules::{RuleSpec, SyncRules, SystemKind, SystemSpec};

use super::{Problems, fields, policies, schedules};

/// Every check of `rule`, at `at` (`rules[i]`); `known` lists the systems, `names` the
/// rules' names seen so far.
pub(super) fn rule<'a>(
    out: &mut Problems,
    rules: &SyncRules,
    known: &[&str],
    names: &mut BTreeSet<&'a str>,
    at: &str,
    rule: &'a RuleSpec,
) {
    if rule.name.trim().is_empty() {
        out.bad(format!("{at}.name"), "a rule needs a name".into());
    } else if !names.insert(rule.name.as_str()) {
        out.bad(
            format!("{at}.name"),
            format!("another rule is already named \"{}\"", rule.name),
        );
    }
    let source = rules.systems.get(&rule.source.system);
    let target = rules.systems.get(&rule.target.system);
    schedules::schedules(out, at, rule, source);
    endpoints(out, at, rule, source, target, known);
    identity(out, at, rule);
    fields::fields(out, at, rule, target);
    policies::deletes(out, at, rule, source, target);
    policies::write_back(out, at, rule, source);
}

/// `source` and `target`: known systems, an entity or app each has, what a file source
/// refuses, a rest source's webhook routing, and not the same app on both sides.
fn endpoints(
    out: &mut Problems,
    at: &str,
    rule: &RuleSpec,
    source: Option<&SystemSpec>,
    target: Option<&SystemSpec>,
    known: &[&str],
) {
    if source.is_none() {
        out.bad(
            format!("{at}.source.system"),
            format!(
                "unknown system \"{}\" (known: {})",
                rule.source.system,
                known.join(", ")
            ),
        );
    }
    match target {
        None => out.bad(
            format!("{at}.target.system"),
            format!(
                "unknown system \"{}\" (known: {})",
                rule.target.system,
                known.join(", ")
            ),
        ),
        Some(t) if t.kind == SystemKind::Rest && !t.entities.contains_key(&rule.target.entity) => {
            let entities: Vec<&str> = t.entities.keys().map(String::as_str).collect();
            out.bad(
                format!("{at}.target.entity"),
                format!(
                    "system \"{}\" has no entity \"{}\" (it has: {})",
                    rule.target.system,
                    rule.target.entity,
                    entities.join(", ")
                ),
            );
        }
        Some(t) if t.kind == SystemKind::File => out.bad(
            format!("{at}.target.system"),
            format!(
                "\"{}\" is a file system: files are imported from, never written to",
                rule.target.system
            ),
        ),
        Some(t) if t.kind == SystemKind::Kintone && rule.target.entity.parse::<u64>().is_err() => {
            out.bad(
                format!("{at}.target.entity"),
                format!("\"{}\" is not a kintone app id", rule.target.entity),
            );
        }
        Some(_) => {}
    }
    if let Some(s) = source {
        if s.kind == SystemKind::Kintone && rule.source.app.parse::<u64>().is_err() {
            out.bad(
                format!("{at}.source.app"),
                format!("\"{}\" is not a kintone app id", rule.source.app),
            );
        }
        if s.kind == SystemKind::File {
            let refused = [
                ("direction", rule.both_ways()),
                ("resync", rule.resync.is_some()),
                ("reconcile", rule.reconcile.is_some()),
            ];
            for (key, set) in refused {
                if set {
                    out.bad(
                        format!("{at}.{key}"),
                        format!(
                            "the source \"{}\" is a file system: it cannot be written to or listed; remove this",
                            rule.source.system
                        ),
                    );
                }
            }
        }
        if s.kind == SystemKind::Rest {
            match &s.webhook_routing {
                Some(r) if r.entity == rule.source.app => {}
                _ => out.bad(
                    format!("{at}.source.app"),
                    format!(
                        "system \"{}\" routes its webhooks to no entity \"{}\"",
                        rule.source.system, rule.source.app
                    ),
                ),
            }
        }
    }
    if rule.source.system == rule.target.system && rule.source.app == rule.target.entity {
        out.bad(
            format!("{at}.target"),
            "a rule cannot sync an app into itself".into(),
        );
    }
}

/// `identity`: both lookup fields named.
fn identity(out: &mut Problems, at: &str, rule: &RuleSpec) {
    if rule.identity.source_field.trim().is_empty() {
        out.bad(
            format!("{at}.identity.source_field"),
            "name the source field that holds the lookup value".into(),
        );
    }
    if rule.identity.target_field.trim().is_empty() {
        out.bad(
            format!("{at}.identity.target_field"),
            "name the target field searched for the lookup value".into(),
        );
    }
}
