//! Service settings: typed, with defaults that point at the local services, each
//! overridable by an environment variable `RECORDSYNC_<NAME>`.

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

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{var}=\"{value}\": {message}")]
pub struct SettingsError {
    /// The variable.
    pub var: String,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub message: String,
}

impl Settings {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        let get = |name: &str| {
            lookup(&format!("RECORDSYNC_{name}")).map(|v| (format!("RECORDSYNC_{name}"), v))
        };
        fn num<T: std::str::FromStr>((var, value): (String, String)) -> Result<T, SettingsError> {
            value.trim().parse().map_err(|_| SettingsError {
                var,
                value,
                message: "not a valid number".into(),
            })
        }
        if let Some((var, v)) = get("AMQP_URL") {
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
                return Err(SettingsError {
                    var,
                    value: "(hidden: it may hold a password)".into(),
                    message: "one or more amqp:// or amqps:// URLs, comma-separated (a cluster's nodes, tried in order)".into(),
                });
            }
            s.amqp_url = v;
        }
        if let Some((_, v)) = get("DATABASE_URL") {
            s.database_url = v;
        }
        if let Some((var, v)) = get("QUEUE_PREFIX") {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(SettingsError {
                    var,
                    value: v,
                    message: "use letters, digits, '-', '_' and '.'".into(),
                });
            }
            s.queue_prefix = v;
        }
        if let Some((_, v)) = get("RULES") {
            s.rules_path = v;
        }
        if let Some((_, v)) = get("INGEST_LISTEN") {
            s.ingest_listen = v;
        }
        if let Some((_, v)) = get("ADMIN_LISTEN") {
            s.admin_listen = v;
        }
        if let Some(p) = get("MAX_BODY_BYTES") {
            s.max_body_bytes = num(p)?;
        }
        if let Some(p) = get("PREFETCH") {
            s.prefetch = num(p)?;
        }
        if let Some((var, v)) = get("RETRY_DELAYS_MS") {
            let delays: Result<Vec<u64>, _> =
                v.split(',').map(|d| d.trim().parse::<u64>()).collect();
            match delays {
                Ok(d) if !d.is_empty() => s.retry_delays_ms = d,
                _ => {
                    return Err(SettingsError {
                        var,
                        value: v,
                        message: "a comma-separated list of milliseconds".into(),
                    });
                }
            }
        }
        if let Some(p) = get("MAX_ATTEMPTS") {
            s.max_attempts = num(p)?;
        }
        if let Some(p) = get("DB_MAX_CONNECTIONS") {
            s.db_max_connections = num(p)?;
        }
        if let Some(p) = get("LEASE_TTL_MS") {
            s.lease_ttl_ms = num(p)?;
        }
        if let Some(p) = get("IN_DOUBT_SETTLE_MS") {
            s.in_doubt_settle_ms = num(p)?;
        }
        if let Some(p) = get("PUBLISH_TIMEOUT_MS") {
            s.publish_timeout_ms = num(p)?;
        }
        if let Some(p) = get("RETAIN_EVENTS_SECS") {
            s.retain_events_secs = num(p)?;
        }
        if let Some(p) = get("RETAIN_OPERATIONS_SECS") {
            s.retain_operations_secs = num(p)?;
        }
        if let Some(p) = get("PRUNE_EVERY_MS") {
            s.prune_every_ms = num(p)?;
        }
        if let Some(p) = get("LEDGER_ROLLUP_MS") {
            s.ledger_rollup_ms = num(p)?;
        }
        if let Some((var, v)) = get("TIME_ZONE") {
            s.time_zone = domain::history::time_zone(&v).map_err(|message| SettingsError {
                var,
                value: v,
                message,
            })?;
        }
        if s.prefetch == 0 {
            return Err(SettingsError {
                var: "RECORDSYNC_PREFETCH".into(),
                value: "0".into(),
                message: "must be at least 1".into(),
            });
        }
        if s.lease_ttl_ms < 300 {
            return Err(SettingsError {
                var: "RECORDSYNC_LEASE_TTL_MS".into(),
                value: s.lease_ttl_ms.to_string(),
                message: "must be at least 300 (it is renewed every third of it)".into(),
            });
        }
        if s.db_max_connections < 2 {
            return Err(SettingsError {
                var: "RECORDSYNC_DB_MAX_CONNECTIONS".into(),
                value: s.db_max_connections.to_string(),
                message: "must be at least 2 (leases are renewed beside the work)".into(),
            });
        }
        if s.prune_every_ms < 100 {
            return Err(SettingsError {
                var: "RECORDSYNC_PRUNE_EVERY_MS".into(),
                value: s.prune_every_ms.to_string(),
                message: "must be at least 100".into(),
            });
        }
        if s.ledger_rollup_ms < 100 {
            return Err(SettingsError {
                var: "RECORDSYNC_LEDGER_ROLLUP_MS".into(),
                value: s.ledger_rollup_ms.to_string(),
                message: "must be at least 100".into(),
            });
        }
        if s.max_attempts == 0 {
            return Err(SettingsError {
                var: "RECORDSYNC_MAX_ATTEMPTS".into(),
                value: "0".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(s)
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
