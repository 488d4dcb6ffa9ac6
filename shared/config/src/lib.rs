//! Configuration: `sync-rules.json` (loaded, validated, every problem named by its JSON
//! path) and the service settings (typed, defaults pointing at local services,
//! overridden by `RECORDSYNC_*` environment variables).

pub mod migration;
mod settings;
pub mod telemetry;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use domain::rules::{ApiAuth, SyncRules, SystemKind, WebhookAuth};

pub use settings::{Settings, SettingsError};

/// One thing wrong with a configuration, at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `rules[1].target.system`.
    pub path: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON, or a value has the wrong shape.
    #[error("{file}: {problem}")]
    Shape {
        /// The file.
        file: String,
        /// The first problem found.
        problem: Problem,
    },
    /// The file is well-formed but says something impossible.
    #[error("{file}: {} problem(s):\n  {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        /// The file.
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// A secret named by the configuration is not in the environment.
    #[error("{path}: environment variable {var} is not set")]
    MissingSecret {
        /// Where the variable is named.
        path: String,
        /// The variable.
        var: String,
    },
}

/// Reads and validates a rules file.
pub fn load_rules(path: impl AsRef<Path>) -> Result<SyncRules, ConfigError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: file.clone(),
        source,
    })?;
    parse_rules(&file, &text)
}

/// Parses and validates rules from text; `file` names the source in errors.
pub fn parse_rules(file: &str, text: &str) -> Result<SyncRules, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let rules: SyncRules = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let location = format!("line {} column {}", inner.line(), inner.column());
        let message = inner.to_string();
        let message = message
            .strip_suffix(&format!(" at {location}"))
            .unwrap_or(&message)
            .to_owned();
        let path = if matches!(path.as_str(), "." | "?" | "") {
            location
        } else {
            format!("{path} ({location})")
        };
        // The whole file does not parse. Each part is tried on its own, so that every
        // problem is named, not only the first.
        match every_problem(text) {
            Some(problems) if problems.len() > 1 => ConfigError::Invalid {
                file: file.to_owned(),
                problems,
            },
            _ => ConfigError::Shape {
                file: file.to_owned(),
                problem: Problem { path, message },
            },
        }
    })?;
    let problems = validate(&rules);
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(ConfigError::Invalid {
            file: file.to_owned(),
            problems,
        })
    }
}

/// For a file that does not parse as a whole (but is JSON): the shape problem of each
/// system, each rule and the top level, each tried on its own, then what the
/// well-formed parts say that is impossible. A reference to a system that is itself
/// malformed is not named twice. `None` when the text is not a JSON object.
fn every_problem(text: &str) -> Option<Vec<Problem>> {
    use serde_json::Value;
    fn part<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize(v.clone()).map_err(|e| {
            let path = e.path().to_string();
            (path, e.into_inner().to_string())
        })
    }
    fn join(at: &str, path: &str) -> String {
        if matches!(path, "." | "?" | "") {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        }
    }
    let value: Value = serde_json::from_str(text).ok()?;
    let top = value.as_object()?;
    let mut problems = vec![];
    let mut broken_systems = vec![];
    let mut systems = std::collections::BTreeMap::new();
    let mut rest = top.clone();
    if let Some(map) = top.get("systems").and_then(Value::as_object) {
        rest.insert("systems".into(), Value::Object(Default::default()));
        for (name, v) in map {
            match part(v) {
                Ok(sys) => {
                    systems.insert(name.clone(), sys);
                }
                Err((path, message)) => {
                    problems.push(Problem {
                        path: join(&format!("systems.{name}"), &path),
                        message,
                    });
                    broken_systems.push(name.clone());
                }
            }
        }
    }
    // The rules that parse, with their index in the file.
    let mut rules = vec![];
    let mut index = vec![];
    if let Some(list) = top.get("rules").and_then(Value::as_array) {
        rest.insert("rules".into(), Value::Array(vec![]));
        for (i, v) in list.iter().enumerate() {
            match part(v) {
                Ok(rule) => {
                    rules.push(rule);
                    index.push(i);
                }
                Err((path, message)) => problems.push(Problem {
                    path: join(&format!("rules[{i}]"), &path),
                    message,
                }),
            }
        }
    }
    let partial = match part::<SyncRules>(&Value::Object(rest)) {
        Ok(mut shell) => {
            shell.systems = systems;
            shell.rules = rules;
            Some(shell)
        }
        Err((path, message)) => {
            problems.push(Problem {
                path: join("", &path).trim_start_matches('.').to_owned(),
                message,
            });
            None
        }
    };
    if let Some(partial) = partial {
        for mut p in validate(&partial) {
            if broken_systems
                .iter()
                .any(|b| p.message.contains(&format!("\"{b}\"")))
            {
                continue;
            }
            // Paths of the rules that parsed point at their place in the file.
            if let Some(rest) = p.path.strip_prefix("rules[")
                && let Some((n, tail)) = rest.split_once(']')
                && let Ok(n) = n.parse::<usize>()
                && let Some(i) = index.get(n)
            {
                p.path = format!("rules[{i}]{tail}");
            }
            problems.push(p);
        }
    }
    Some(problems)
}

/// The JSON Schema of `sync-rules.json`, as checked into the repository.
pub fn rules_schema() -> String {
    let schema = schemars::schema_for!(SyncRules);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

/// Reads a secret from the environment variable the configuration names at `path`.
pub fn secret(path: &str, var: &str) -> Result<String, ConfigError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(ConfigError::MissingSecret {
            path: path.to_owned(),
            var: var.to_owned(),
        }),
    }
}

/// Every environment variable the rules name, with where: for a start-up check.
pub fn secret_vars(rules: &SyncRules) -> Vec<(String, String)> {
    rules
        .systems
        .iter()
        .flat_map(|(name, sys)| system_secret_vars(name, sys))
        .collect()
}

fn system_secret_vars(name: &str, sys: &domain::rules::SystemSpec) -> Vec<(String, String)> {
    let mut out = vec![];
    match &sys.auth {
        ApiAuth::KintoneApiToken { token_env } => {
            out.push((format!("systems.{name}.auth.token_env"), token_env.clone()))
        }
        ApiAuth::Header { value_env, .. } => {
            out.push((format!("systems.{name}.auth.value_env"), value_env.clone()))
        }
        ApiAuth::None => {}
    }
    match &sys.webhook {
        Some(WebhookAuth::StandardWebhooks { secret_env, .. }) => out.push((
            format!("systems.{name}.webhook.secret_env"),
            secret_env.clone(),
        )),
        Some(WebhookAuth::Token { token_env }) => out.push((
            format!("systems.{name}.webhook.token_env"),
            token_env.clone(),
        )),
        None => {}
    }
    out
}

fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn valid_system_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_pointer(s: &str) -> bool {
    s.is_empty() || s.starts_with('/')
}

/// Checks what the types cannot: references between systems and rules, names, URLs,
/// pointers. Returns every problem found, each at its path.
pub fn validate(rules: &SyncRules) -> Vec<Problem> {
    let mut problems = vec![];
    let mut bad = |path: String, message: String| problems.push(Problem { path, message });

    if rules.version != 1 {
        bad(
            "version".into(),
            format!("version {} is unknown; use 1", rules.version),
        );
    }
    let known: Vec<&str> = rules.systems.keys().map(String::as_str).collect();
    for (name, sys) in &rules.systems {
        let at = format!("systems.{name}");
        if !valid_system_name(name) {
            bad(
                at.clone(),
                "a system name uses only a-z, 0-9, '-' and '_' (it is part of the webhook URL)"
                    .into(),
            );
        }
        let file = sys.kind == SystemKind::File;
        let http = sys.base_url.starts_with("http://") || sys.base_url.starts_with("https://");
        if !file && !http {
            bad(
                format!("{at}.base_url"),
                format!("\"{}\" is not an http(s) URL", sys.base_url),
            );
        }
        for (path, var) in system_secret_vars(name, sys) {
            if !valid_env_name(&var) {
                bad(
                    path,
                    format!("\"{var}\" is not an environment variable name (A-Z, 0-9, _)"),
                );
            }
        }
        if sys.budget.as_ref().is_some_and(|b| b.requests_per_day == 0) {
            bad(
                format!("{at}.budget.requests_per_day"),
                "must be at least 1".into(),
            );
        }
        if let Some(check) = &sys.schema_check {
            if check.every_seconds < 60 {
                bad(
                    format!("{at}.schema_check.every_seconds"),
                    "must be at least 60".into(),
                );
            }
            for entity in check.samples.keys() {
                if sys.kind != SystemKind::Rest || !sys.entities.contains_key(entity) {
                    bad(
                        format!("{at}.schema_check.samples.{entity}"),
                        format!("\"{entity}\" is not an entity of this rest system"),
                    );
                }
            }
        }
        if let Some(l) = &sys.limits {
            if !(l.requests_per_second > 0.0 && l.requests_per_second.is_finite()) {
                bad(
                    format!("{at}.limits.requests_per_second"),
                    "must be a positive number".into(),
                );
            }
            if l.burst == 0 {
                bad(format!("{at}.limits.burst"), "must be at least 1".into());
            }
            if l.max_concurrent == Some(0) {
                bad(
                    format!("{at}.limits.max_concurrent"),
                    "must be at least 1 (leave it out for no cap)".into(),
                );
            }
        }
        if let Some(w) = &sys.write_windows {
            for p in w.problems() {
                bad(format!("{at}.write_windows.{}", p.path), p.message);
            }
        }
        match sys.kind {
            SystemKind::Kintone => {
                if !sys.entities.is_empty() {
                    bad(
                        format!("{at}.entities"),
                        "kintone systems have apps, not entities: remove this".into(),
                    );
                }
                if matches!(sys.webhook, Some(WebhookAuth::StandardWebhooks { .. })) {
                    bad(
                        format!("{at}.webhook.type"),
                        "kintone webhooks are unsigned: use \"token\"".into(),
                    );
                }
                if !matches!(sys.auth, ApiAuth::KintoneApiToken { .. }) {
                    bad(
                        format!("{at}.auth.type"),
                        "kintone systems authenticate with \"kintone_api_token\"".into(),
                    );
                }
            }
            SystemKind::File => {
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
                        bad(
                            format!("{at}.{key}"),
                            "a file system has no API: its records arrive through `worker import`; remove this".into(),
                        );
                    }
                }
            }
            SystemKind::Rest => {
                if sys.entities.is_empty() {
                    bad(
                        format!("{at}.entities"),
                        "a rest system needs at least one entity".into(),
                    );
                }
                if sys.webhook.is_some() && sys.webhook_routing.is_none() {
                    bad(
                        format!("{at}.webhook_routing"),
                        "a rest system that sends webhooks needs webhook_routing".into(),
                    );
                }
                for (ename, e) in &sys.entities {
                    let eat = format!("{at}.entities.{ename}");
                    for (k, p) in [
                        ("record_pointer", &e.record_pointer),
                        ("list_pointer", &e.list_pointer),
                        ("id_pointer", &e.id_pointer),
                    ] {
                        if !valid_pointer(p) {
                            bad(
                                format!("{eat}.{k}"),
                                format!("\"{p}\" is not a JSON pointer (it starts with '/')"),
                            );
                        }
                    }
                    if !e.get.contains("{id}") {
                        bad(format!("{eat}.get"), "the template needs {id}".into());
                    }
                    if !e.update.contains("{id}") {
                        bad(format!("{eat}.update"), "the template needs {id}".into());
                    }
                    match &e.search_body {
                        None if !e.search.contains("{value}") => {
                            bad(format!("{eat}.search"), "the template needs {value}".into());
                        }
                        Some(b) if !b.is_object() => bad(
                            format!("{eat}.search_body"),
                            "a JSON object, with {value} inside one of its strings".into(),
                        ),
                        Some(b) if !b.to_string().contains("{value}") => bad(
                            format!("{eat}.search_body"),
                            "the body needs {value} inside one of its strings".into(),
                        ),
                        _ => {}
                    }
                    if !e.fields_pointer.is_empty() && !valid_pointer(&e.fields_pointer) {
                        bad(
                            format!("{eat}.fields_pointer"),
                            format!(
                                "\"{}\" is not a JSON pointer (it starts with '/')",
                                e.fields_pointer
                            ),
                        );
                    }
                    for (name, path) in &e.field_paths {
                        if path.pointer.is_empty() || !valid_pointer(&path.pointer) {
                            bad(
                                format!("{eat}.field_paths.{name}.pointer"),
                                format!(
                                    "\"{}\" is not a JSON pointer to somewhere inside the record (it starts with '/')",
                                    path.pointer
                                ),
                            );
                        }
                        if let Some(id) = &path.id
                            && !(id.is_number() || id.is_string())
                        {
                            bad(
                                format!("{eat}.field_paths.{name}.id"),
                                "an element's id is a number or a string".into(),
                            );
                        }
                    }
                    if let Some(b) = &e.bulk_update {
                        if !["POST", "PUT", "PATCH"].contains(&b.method.as_str()) {
                            bad(
                                format!("{eat}.bulk_update.method"),
                                "use POST, PUT or PATCH".into(),
                            );
                        }
                        if b.max == 0 {
                            bad(format!("{eat}.bulk_update.max"), "at least 1".into());
                        }
                        if let Some(r) = &b.results {
                            let pointers = [
                                ("list", Some(&r.list)),
                                ("id", Some(&r.id)),
                                ("ok", r.ok.as_ref()),
                                ("message", r.message.as_ref()),
                                ("errors", r.errors.as_ref()),
                                ("error_ids", r.error_ids.as_ref()),
                            ];
                            for (k, p) in pointers {
                                if let Some(p) = p
                                    && !valid_pointer(p)
                                {
                                    bad(
                                        format!("{eat}.bulk_update.results.{k}"),
                                        format!(
                                            "\"{p}\" is not a JSON pointer (it starts with '/')"
                                        ),
                                    );
                                }
                            }
                            if r.errors.is_some() != r.error_ids.is_some() {
                                bad(
                                    format!("{eat}.bulk_update.results"),
                                    "errors and error_ids go together: where the errors are, and which ids each names".into(),
                                );
                            }
                        }
                    }
                    if !["PATCH", "PUT", "POST"].contains(&e.update_method.as_str()) {
                        bad(
                            format!("{eat}.update_method"),
                            "use PATCH, PUT or POST".into(),
                        );
                    }
                }
                if let Some(r) = &sys.webhook_routing {
                    for (k, p) in [("event_type", &r.event_type), ("record_id", &r.record_id)] {
                        if !p.starts_with('/') {
                            bad(
                                format!("{at}.webhook_routing.{k}"),
                                format!("\"{p}\" is not a JSON pointer (it starts with '/')"),
                            );
                        }
                    }
                }
            }
        }
    }

    let mut names = BTreeSet::new();
    for (i, rule) in rules.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        if rule.name.trim().is_empty() {
            bad(format!("{at}.name"), "a rule needs a name".into());
        } else if !names.insert(rule.name.as_str()) {
            bad(
                format!("{at}.name"),
                format!("another rule is already named \"{}\"", rule.name),
            );
        }
        let source = rules.systems.get(&rule.source.system);
        let target = rules.systems.get(&rule.target.system);
        if rule
            .reconcile
            .as_ref()
            .is_some_and(|r| r.every_seconds < 60)
        {
            bad(
                format!("{at}.reconcile.every_seconds"),
                "must be at least 60".into(),
            );
        }
        if let Some(r) = &rule.resync {
            if r.every_seconds < 10 {
                bad(
                    format!("{at}.resync.every_seconds"),
                    "must be at least 10".into(),
                );
            }
            // A rest source lists its changes through the entity's `list` template.
            if let Some(s) = source.filter(|s| s.kind == SystemKind::Rest)
                && s.entities
                    .get(&rule.source.app)
                    .is_none_or(|e| e.list.is_none())
            {
                bad(
                    format!("{at}.resync"),
                    format!(
                        "resync lists the source's changed records: declare `list` on entity \"{}\" of system \"{}\" (a GET template with {{since}}, {{after}} and {{limit}}), or remove resync",
                        rule.source.app, rule.source.system
                    ),
                );
            }
        }
        if source.is_none() {
            bad(
                format!("{at}.source.system"),
                format!(
                    "unknown system \"{}\" (known: {})",
                    rule.source.system,
                    known.join(", ")
                ),
            );
        }
        match target {
            None => bad(
                format!("{at}.target.system"),
                format!(
                    "unknown system \"{}\" (known: {})",
                    rule.target.system,
                    known.join(", ")
                ),
            ),
            Some(t)
                if t.kind == SystemKind::Rest && !t.entities.contains_key(&rule.target.entity) =>
            {
                let entities: Vec<&str> = t.entities.keys().map(String::as_str).collect();
                bad(
                    format!("{at}.target.entity"),
                    format!(
                        "system \"{}\" has no entity \"{}\" (it has: {})",
                        rule.target.system,
                        rule.target.entity,
                        entities.join(", ")
                    ),
                );
            }
            Some(t) if t.kind == SystemKind::File => bad(
                format!("{at}.target.system"),
                format!(
                    "\"{}\" is a file system: files are imported from, never written to",
                    rule.target.system
                ),
            ),
            Some(t)
                if t.kind == SystemKind::Kintone && rule.target.entity.parse::<u64>().is_err() =>
            {
                bad(
                    format!("{at}.target.entity"),
                    format!("\"{}\" is not a kintone app id", rule.target.entity),
                );
            }
            Some(_) => {}
        }
        if let Some(s) = source {
            if s.kind == SystemKind::Kintone && rule.source.app.parse::<u64>().is_err() {
                bad(
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
                        bad(
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
                    _ => bad(
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
            bad(
                format!("{at}.target"),
                "a rule cannot sync an app into itself".into(),
            );
        }
        if rule.identity.source_field.trim().is_empty() {
            bad(
                format!("{at}.identity.source_field"),
                "name the source field that holds the lookup value".into(),
            );
        }
        if rule.identity.target_field.trim().is_empty() {
            bad(
                format!("{at}.identity.target_field"),
                "name the target field searched for the lookup value".into(),
            );
        }
        if rule.fields.is_empty() {
            bad(format!("{at}.fields"), "map at least one field".into());
        }
        if rule.both_ways()
            && let Some(t) = target
            && t.webhook.is_none()
        {
            bad(
                format!("{at}.direction"),
                format!(
                    "changes flow back only from webhooks: give systems.{}.webhook",
                    rule.target.system
                ),
            );
        }
        let mut targets = BTreeSet::new();
        for (j, f) in rule.fields.iter().enumerate() {
            let fat = format!("{at}.fields[{j}]");
            if let Some(o) = &f.owner
                && o != "shared"
                && o != &rule.source.system
                && o != &rule.target.system
            {
                bad(
                    format!("{fat}.owner"),
                    format!(
                        "\"{o}\" is neither the rule's source ({}), its target ({}), nor shared",
                        rule.source.system, rule.target.system
                    ),
                );
            }
            let owner = f
                .owner
                .clone()
                .unwrap_or_else(|| rule.source.system.clone());
            if !rule.both_ways() && owner != rule.source.system {
                bad(
                    format!("{fat}.owner"),
                    "a one-way rule takes values from its source only: set \"direction\": \"both\""
                        .into(),
                );
            }
            use domain::authority::Strategy;
            let fits = match f.strategy_of(rule) {
                Strategy::LocalWins => owner == rule.source.system,
                Strategy::ExternalWins => owner == rule.target.system,
                Strategy::LatestValidChange | Strategy::Merge | Strategy::ManualReview => {
                    owner == "shared"
                }
            };
            if !fits {
                let s = f.strategy_of(rule).as_str();
                bad(
                    format!("{fat}.strategy"),
                    format!(
                        "{s} does not fit owner \"{owner}\": local_wins is for source-owned fields, external_wins for target-owned ones, the others for shared ones"
                    ),
                );
            }
            if let Some(p) = f.validate.as_ref().and_then(|v| v.problem()) {
                bad(format!("{fat}.validate.pattern"), p);
            }
            if f.source.trim().is_empty() {
                bad(
                    format!("{at}.fields[{j}].source"),
                    "empty field code".into(),
                );
            }
            if f.target.trim().is_empty() {
                bad(
                    format!("{at}.fields[{j}].target"),
                    "empty field name".into(),
                );
            } else if !targets.insert(f.target.as_str()) {
                bad(
                    format!("{at}.fields[{j}].target"),
                    format!("\"{}\" is already mapped by an earlier field", f.target),
                );
            }
        }
        use domain::rules::OnDelete;
        match (&rule.on_delete, &rule.deleted_flag) {
            (OnDelete::Flag, None) => bad(
                format!("{at}.deleted_flag"),
                "on_delete: flag needs deleted_flag: {\"field\": ..., \"value\": ...}".into(),
            ),
            (OnDelete::Flag, Some(f)) if f.field.trim().is_empty() => bad(
                format!("{at}.deleted_flag.field"),
                "name the target field to write".into(),
            ),
            (OnDelete::Flag, Some(_)) | (_, None) => {}
            (_, Some(_)) => bad(
                format!("{at}.deleted_flag"),
                "deleted_flag is only written with on_delete: flag".into(),
            ),
        }
        use domain::rules::OnTargetDelete;
        match (&rule.on_target_delete, &rule.target_deleted_flag) {
            (OnTargetDelete::Flag, None) => bad(
                format!("{at}.target_deleted_flag"),
                "on_target_delete: flag needs target_deleted_flag: {\"field\": ..., \"value\": ...} (a source field)".into(),
            ),
            (OnTargetDelete::Flag, Some(f)) if f.field.trim().is_empty() => bad(
                format!("{at}.target_deleted_flag.field"),
                "name the source field to write".into(),
            ),
            (OnTargetDelete::Flag, Some(_)) | (_, None) => {}
            (_, Some(_)) => bad(
                format!("{at}.target_deleted_flag"),
                "target_deleted_flag is only written with on_target_delete: flag".into(),
            ),
        }
        if rule.on_target_delete == OnTargetDelete::DeleteSource
            && let Some(s) = source.filter(|s| s.kind == SystemKind::Rest)
            && s.entities
                .get(&rule.source.app)
                .is_some_and(|e| e.delete.is_none())
        {
            bad(
                format!("{at}.on_target_delete"),
                format!(
                    "delete_source deletes through the entity's `delete` template: declare it on entity \"{}\" of system \"{}\"",
                    rule.source.app, rule.source.system
                ),
            );
        }
        if rule.on_target_delete != domain::rules::OnTargetDelete::Ignore && !rule.both_ways() {
            bad(
                format!("{at}.on_target_delete"),
                "only a two-way rule reads its target record and sees it deleted: set \"direction\": \"both\", or remove this".into(),
            );
        }
        if rule.on_delete == OnDelete::DeleteTarget
            && let Some(t) = target.filter(|t| t.kind == SystemKind::Rest)
            && t.entities
                .get(&rule.target.entity)
                .is_some_and(|e| e.delete.is_none())
        {
            bad(
                format!("{at}.on_delete"),
                format!(
                    "delete_target deletes through the entity's `delete` template: declare it on entity \"{}\" of system \"{}\"",
                    rule.target.entity, rule.target.system
                ),
            );
        }
        if let Some(wb) = &rule.write_back {
            if wb.field.trim().is_empty() {
                bad(format!("{at}.write_back.field"), "empty field code".into());
            }
            if wb.field == rule.identity.source_field {
                bad(
                    format!("{at}.write_back.field"),
                    "writing back into the lookup field would change the record's identity".into(),
                );
            }
            if rule.fields.iter().any(|f| f.source == wb.field) {
                bad(
                    format!("{at}.write_back.field"),
                    "a mapped source field cannot also receive the write-back".into(),
                );
            }
            if source.is_some_and(|s| s.kind != SystemKind::Kintone) {
                bad(
                    format!("{at}.write_back"),
                    "write-back is supported for kintone sources".into(),
                );
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests;
