//! Configuration: `sync-rules.json` (loaded, validated, every problem named by its JSON
//! path) and the service settings (typed, defaults pointing at local services,
//! overridden by `RECORDSYNC_*` environment variables).

pub mod migration;
mod settings;
pub mod telemetry;
mod validate;

use std::fmt;
use std::path::Path;

use domain::rules::{ApiAuth, SyncRules, WebhookAuth};

pub use settings::{Loaded, SETTINGS_FILE_VAR, Settings, SettingsError, Shown, Source};
pub use validate::validate;

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

#[cfg(test)]
mod tests;
