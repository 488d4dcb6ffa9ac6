//! Service settings: typed, with defaults that point at the local services, in three
//! layers: the defaults, a settings file (`RECORDSYNC_SETTINGS` names it; `NAME=value`
//! lines, the same names as the environment), and the environment `RECORDSYNC_<NAME>`,
//! each over the one before. Each setting is declared once ([`FIELDS`]: its name, its
//! check, how it is shown), read and checked once at start; an error names the variable,
//! and the file's line when it was set there.

mod file;

use file::{Entry, parse_file};
use std::time::Duration;

/// The settings shared by ingest and worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `RECORDSYNC_AMQP_URL`: one broker URL, or a cluster's nodes comma-separated;
    /// ingest and the workers connect to the first that answers and fail over to the
    /// next when it goes.
    pub amqp_url: String,
    /// `RECORDSYNC_DATABASE_URL`.
    pub database_url: String,
    /// `RECORDSYNC_QUEUE_PREFIX`: every exchange and queue name starts with it.
    pub queue_prefix: String,
    /// `RECORDSYNC_RULES`: the path of `sync-rules.json`.
    pub rules_path: String,
    /// `RECORDSYNC_INGEST_LISTEN`.
    pub ingest_listen: String,
    /// `RECORDSYNC_ADMIN_LISTEN`: the worker's admin and metrics API.
    pub admin_listen: String,
    /// `RECORDSYNC_MAX_BODY_BYTES`: the largest webhook body accepted.
    pub max_body_bytes: usize,
    /// `RECORDSYNC_PREFETCH`: unacknowledged messages per worker, and so the most
    /// events a worker processes at once.
    pub prefetch: u16,
    /// `RECORDSYNC_RETRY_DELAYS_MS`: the delay tiers, comma-separated; attempt n waits
    /// in tier min(n, tiers) - 1.
    pub retry_delays_ms: Vec<u64>,
    /// `RECORDSYNC_MAX_ATTEMPTS`: attempts before an event is dead-lettered.
    pub max_attempts: u32,
    /// `RECORDSYNC_DB_MAX_CONNECTIONS`: the worker's pool. Nothing holds a connection
    /// while another system is called, so a handful serves any prefetch.
    pub db_max_connections: u32,
    /// `RECORDSYNC_LEASE_TTL_MS`: how long a record's lease lasts unless its holder
    /// renews it (every third of this); a dead worker's records wait this long.
    pub lease_ttl_ms: u64,
    /// `RECORDSYNC_IN_DOUBT_SETTLE_MS`: how long a create whose outcome is in doubt is
    /// looked for (write-back field, search) before it is made again. Set it above the
    /// slowest target's search lag.
    pub in_doubt_settle_ms: u64,
    /// `RECORDSYNC_PUBLISH_TIMEOUT_MS`: how long ingest waits for a broker confirm.
    pub publish_timeout_ms: u64,
    /// `RECORDSYNC_LEDGER_ROLLUP_MS`: how often one worker of the fleet recounts the
    /// ledger's unaccounted events of the last 24 hours into `ledger_rollup`, which a
    /// metrics scrape reads instead of scanning the deliveries. A minute by default: the
    /// ledger's alert waits ten.
    pub ledger_rollup_ms: u64,
    /// `RECORDSYNC_RETAIN_EVENTS_SECS`: how long an event that has an outcome is
    /// remembered (`deliveries`, `processed_events`): the ledger's reach, and how late a
    /// redelivery is still recognised as a duplicate by its id (after that, the record's
    /// synced revision still makes it stale). 14 days by default.
    pub retain_events_secs: u64,
    /// `RECORDSYNC_RETAIN_OPERATIONS_SECS`: how long settled outbound operations are
    /// kept (`outbound_ops`: confirmed, failed, or replaced by a later write to the same
    /// record and system). A create in doubt is never pruned. 30 days by default.
    pub retain_operations_secs: u64,
    /// `RECORDSYNC_PRUNE_EVERY_MS`: how often one worker of the fleet prunes, in
    /// bounded batches. 10 minutes by default.
    pub prune_every_ms: u64,
    /// `RECORDSYNC_TIME_ZONE`: the IANA time zone timelines are rendered in (each time
    /// with its offset); `UTC` by default. A request may ask for another (`?tz=`).
    pub time_zone: chrono_tz::Tz,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/recordsync".into(),
            queue_prefix: "recordsync".into(),
            rules_path: "sync-rules.json".into(),
            ingest_listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            max_body_bytes: 1024 * 1024,
            prefetch: 256,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000, 600_000],
            max_attempts: 6,
            db_max_connections: 8,
            lease_ttl_ms: 30_000,
            in_doubt_settle_ms: 60_000,
            publish_timeout_ms: 5_000,
            ledger_rollup_ms: 60_000,
            retain_events_secs: 14 * 24 * 3600,
            retain_operations_secs: 30 * 24 * 3600,
            prune_every_ms: 600_000,
            time_zone: chrono_tz::Tz::UTC,
        }
    }
}

/// A setting that could not be read: `var` names it where it was set (the variable,
/// and the settings file's line when it came from there).
#[derive(Debug, thiserror::Error)]
#[error("{var}=\"{value}\": {message}")]
pub struct SettingsError {
    /// The variable, and where it was set.
    pub var: String,
    /// Its value (hidden for a URL, which may hold a password).
    pub value: String,
    /// What is wrong.
    pub message: String,
}

/// The variable that names a settings file: `NAME=value` lines, the same names as the
/// environment (the format of compose's `env_file`), `#` comments.
pub const SETTINGS_FILE_VAR: &str = "RECORDSYNC_SETTINGS";

/// The admin API's access variables: read by the worker's `auth` from the
/// environment only, never from the settings file (tokens are secrets).
const ENVIRONMENT_ONLY: &[&str] = &[
    "RECORDSYNC_ADMIN_TOKENS",
    "RECORDSYNC_ADMIN_TOKENS_FILE",
    "RECORDSYNC_METRICS_TOKEN",
    "RECORDSYNC_ADMIN_HOSTS",
];

/// Where a setting's value came from, lowest layer first: the default, the settings
/// file, the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A line of the settings file.
    File {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
    },
    /// The process environment.
    Env,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { path, line } => write!(f, "{path}:{line}"),
            Source::Env => f.write_str("environment"),
        }
    }
}

/// One setting, declared once: its variable (after `RECORDSYNC_`), how a value is
/// checked and set, and how the value in use is shown.
pub(crate) struct Field {
    pub(crate) name: &'static str,
    /// Its value may hold a password: never shown, in an error or a listing.
    pub(crate) secret: bool,
    pub(crate) set: fn(&mut Settings, &str) -> Result<(), String>,
    pub(crate) show: fn(&Settings) -> String,
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| "not a valid number".to_owned())
}

fn at_least<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    v: &str,
    least: T,
    why: &str,
) -> Result<T, String> {
    let n: T = number(v)?;
    if n < least {
        return Err(format!("must be at least {least}{why}"));
    }
    Ok(n)
}

fn millis_list(v: &str) -> Result<Vec<u64>, String> {
    match v
        .split(',')
        .map(|d| d.trim().parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()
    {
        Ok(d) if !d.is_empty() => Ok(d),
        _ => Err("a comma-separated list of milliseconds".into()),
    }
}

fn amqp_urls(v: &str) -> Result<(), String> {
    let addresses: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if addresses.is_empty()
        || !addresses
            .iter()
            .all(|a| a.starts_with("amqp://") || a.starts_with("amqps://"))
    {
        return Err(
            "one or more amqp:// or amqps:// URLs, comma-separated (a cluster's nodes, tried in order)"
                .into(),
        );
    }
    Ok(())
}

fn queue_prefix(v: &str) -> Result<(), String> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("use letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

/// A URL with its password replaced by `***`.
fn without_password(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let u = u.trim();
            match (u.find("://"), u.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let auth = &u[scheme + 3..at];
                    match auth.split_once(':') {
                        Some((user, _)) => format!("{}{user}:***{}", &u[..scheme + 3], &u[at..]),
                        None => u.to_owned(),
                    }
                }
                _ => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every setting, in the order `settings` lists them.
pub(crate) const FIELDS: &[Field] = &[
    Field {
        name: "AMQP_URL",
        secret: true,
        set: |s, v| {
            amqp_urls(v)?;
            s.amqp_url = v.to_owned();
            Ok(())
        },
        show: |s| without_password(&s.amqp_url),
    },
    Field {
        name: "DATABASE_URL",
        secret: true,
        set: |s, v| {
            s.database_url = v.to_owned();
            Ok(())
        },
        show: |s| without_password(&s.database_url),
    },
    Field {
        name: "QUEUE_PREFIX",
        secret: false,
        set: |s, v| {
            queue_prefix(v)?;
            s.queue_prefix = v.to_owned();
            Ok(())
        },
        show: |s| s.queue_prefix.clone(),
    },
    Field {
        name: "RULES",
        secret: false,
        set: |s, v| {
            s.rules_path = v.to_owned();
            Ok(())
        },
        show: |s| s.rules_path.clone(),
    },
    Field {
        name: "INGEST_LISTEN",
        secret: false,
        set: |s, v| {
            s.ingest_listen = v.to_owned();
            Ok(())
        },
        show: |s| s.ingest_listen.clone(),
    },
    Field {
        name: "ADMIN_LISTEN",
        secret: false,
        set: |s, v| {
            s.admin_listen = v.to_owned();
            Ok(())
        },
        show: |s| s.admin_listen.clone(),
    },
    Field {
        name: "MAX_BODY_BYTES",
        secret: false,
        set: |s, v| {
            s.max_body_bytes = number(v)?;
            Ok(())
        },
        show: |s| s.max_body_bytes.to_string(),
    },
    Field {
        name: "PREFETCH",
        secret: false,
        set: |s, v| {
            s.prefetch = at_least(v, 1, "")?;
            Ok(())
        },
        show: |s| s.prefetch.to_string(),
    },
    Field {
        name: "RETRY_DELAYS_MS",
        secret: false,
        set: |s, v| {
            s.retry_delays_ms = millis_list(v)?;
            Ok(())
        },
        show: |s| {
            s.retry_delays_ms
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        },
    },
    Field {
        name: "MAX_ATTEMPTS",
        secret: false,
        set: |s, v| {
            s.max_attempts = at_least(v, 1, "")?;
            Ok(())
        },
        show: |s| s.max_attempts.to_string(),
    },
    Field {
        name: "DB_MAX_CONNECTIONS",
        secret: false,
        set: |s, v| {
            s.db_max_connections = at_least(v, 2, " (leases are renewed beside the work)")?;
            Ok(())
        },
        show: |s| s.db_max_connections.to_string(),
    },
    Field {
        name: "LEASE_TTL_MS",
        secret: false,
        set: |s, v| {
            s.lease_ttl_ms = at_least(v, 300, " (it is renewed every third of it)")?;
            Ok(())
        },
        show: |s| s.lease_ttl_ms.to_string(),
    },
    Field {
        name: "IN_DOUBT_SETTLE_MS",
        secret: false,
        set: |s, v| {
            s.in_doubt_settle_ms = number(v)?;
            Ok(())
        },
        show: |s| s.in_doubt_settle_ms.to_string(),
    },
    Field {
        name: "PUBLISH_TIMEOUT_MS",
        secret: false,
        set: |s, v| {
            s.publish_timeout_ms = number(v)?;
            Ok(())
        },
        show: |s| s.publish_timeout_ms.to_string(),
    },
    Field {
        name: "LEDGER_ROLLUP_MS",
        secret: false,
        set: |s, v| {
            s.ledger_rollup_ms = at_least(v, 100, "")?;
            Ok(())
        },
        show: |s| s.ledger_rollup_ms.to_string(),
    },
    Field {
        name: "RETAIN_EVENTS_SECS",
        secret: false,
        set: |s, v| {
            s.retain_events_secs = number(v)?;
            Ok(())
        },
        show: |s| s.retain_events_secs.to_string(),
    },
    Field {
        name: "RETAIN_OPERATIONS_SECS",
        secret: false,
        set: |s, v| {
            s.retain_operations_secs = number(v)?;
            Ok(())
        },
        show: |s| s.retain_operations_secs.to_string(),
    },
    Field {
        name: "PRUNE_EVERY_MS",
        secret: false,
        set: |s, v| {
            s.prune_every_ms = at_least(v, 100, "")?;
            Ok(())
        },
        show: |s| s.prune_every_ms.to_string(),
    },
    Field {
        name: "TIME_ZONE",
        secret: false,
        set: |s, v| {
            s.time_zone = domain::history::time_zone(v)?;
            Ok(())
        },
        show: |s| s.time_zone.name().to_owned(),
    },
];

/// The settings in use, and where each value came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The settings.
    pub settings: Settings,
    /// Each setting, in [`FIELDS`] order.
    pub shown: Vec<Shown>,
}

/// A setting as `settings` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// Its variable.
    pub var: String,
    /// The value in use (a URL without its password).
    pub value: String,
    /// Where the value came from.
    pub source: Source,
}

impl Settings {
    /// Defaults, then the settings file (if `RECORDSYNC_SETTINGS` names one), then the
    /// process environment.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::load(|k| std::env::var(k).ok()).map(|l| l.settings)
    }

    /// As [`Settings::from_env`], with `lookup` as the environment (a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        Settings::load(lookup).map(|l| l.settings)
    }

    /// The layers, lowest first: defaults, the settings file named by
    /// `RECORDSYNC_SETTINGS` (read with `std::fs`), the environment given by `lookup`.
    /// Each value is checked as it is set; an error names the variable, and the
    /// file's line when it came from there.
    pub fn load(lookup: impl Fn(&str) -> Option<String>) -> Result<Loaded, SettingsError> {
        let file = match lookup(SETTINGS_FILE_VAR) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| SettingsError {
                    var: SETTINGS_FILE_VAR.into(),
                    value: path.clone(),
                    message: format!("cannot be read: {e}"),
                })?;
                Some((path, text))
            }
            None => None,
        };
        Settings::layered(file.as_ref().map(|(p, t)| (p.as_str(), t.as_str())), lookup)
    }

    /// The layers with the file's text given (`(path, text)`).
    pub fn layered(
        file: Option<(&str, &str)>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Loaded, SettingsError> {
        let mut settings = Settings::default();
        let mut sources = vec![Source::Default; FIELDS.len()];
        let mut apply = |i: usize, value: &str, var: String, source: Source| {
            let field = &FIELDS[i];
            (field.set)(&mut settings, value).map_err(|message| SettingsError {
                var,
                value: if field.secret {
                    "(hidden: it may hold a password)".into()
                } else {
                    value.to_owned()
                },
                message,
            })?;
            sources[i] = source;
            Ok::<(), SettingsError>(())
        };
        if let Some((path, text)) = file {
            let entries = parse_file(text).map_err(|(line, message)| SettingsError {
                var: format!("{path}:{line}"),
                value: text.lines().nth(line - 1).unwrap_or_default().into(),
                message,
            })?;
            for Entry { name, value, line } in entries {
                let var = format!("{name} ({path}:{line})");
                if ENVIRONMENT_ONLY.contains(&name.as_str()) {
                    return Err(SettingsError {
                        var,
                        value: "(hidden)".into(),
                        message: "admin access is read from the environment only (with its secrets); set it there".into(),
                    });
                }
                let Some(i) = name
                    .strip_prefix("RECORDSYNC_")
                    .and_then(|n| FIELDS.iter().position(|f| f.name == n))
                else {
                    return Err(SettingsError {
                        var,
                        value,
                        message: format!(
                            "not a setting; the settings are {}",
                            FIELDS
                                .iter()
                                .map(|f| format!("RECORDSYNC_{}", f.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                };
                let source = Source::File {
                    path: path.to_owned(),
                    line,
                };
                apply(i, &value, var, source)?;
            }
        }
        for (i, field) in FIELDS.iter().enumerate() {
            let var = format!("RECORDSYNC_{}", field.name);
            if let Some(value) = lookup(&var) {
                apply(i, &value, var, Source::Env)?;
            }
        }
        let shown = FIELDS
            .iter()
            .zip(sources)
            .map(|(f, source)| Shown {
                var: format!("RECORDSYNC_{}", f.name),
                value: (f.show)(&settings),
                source,
            })
            .collect();
        Ok(Loaded { settings, shown })
    }

    /// How long after its last delivery an event with no outcome is still in flight,
    /// for the ledger: the longest retry delay (a message waiting in a delay queue is
    /// delivered again after it) and a minute.
    pub fn ledger_settle(&self) -> Duration {
        let longest = self.retry_delays_ms.iter().copied().max().unwrap_or(0);
        Duration::from_millis(longest) + Duration::from_secs(60)
    }

    /// The retry delay before attempt `next_attempt` (2 for the first retry).
    pub fn retry_delay(&self, next_attempt: u32) -> Duration {
        let tier = (next_attempt.saturating_sub(2) as usize).min(self.retry_delays_ms.len() - 1);
        Duration::from_millis(self.retry_delays_ms[tier])
    }
}

#[cfg(test)]
mod tests;
