//! How much an unauthenticated client may hold of ingest, and for how long: the
//! connection cap, the timeouts and the shared body-byte budget, read from
//! `RECORDSYNC_INGEST_*`.

use std::time::Duration;

use tokio::sync::Semaphore;

/// How much a client may hold of ingest, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntakeLimits {
    /// `RECORDSYNC_INGEST_MAX_CONNECTIONS`: open connections at once. Further
    /// connections wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// `RECORDSYNC_INGEST_HEADER_TIMEOUT_MS`: a request's headers must arrive within
    /// this. It also closes a keep-alive connection idle this long, and a connection
    /// that sends nothing.
    pub header_timeout: Duration,
    /// `RECORDSYNC_INGEST_BODY_TIMEOUT_MS`: the longest wait for the next chunk of a
    /// body (408).
    pub body_timeout: Duration,
    /// `RECORDSYNC_INGEST_REQUEST_TIMEOUT_MS`: a whole request, from its headers to
    /// the answer (408). Keep it above `RECORDSYNC_PUBLISH_TIMEOUT_MS`.
    pub request_timeout: Duration,
    /// `RECORDSYNC_INGEST_BODY_BUDGET_BYTES`: body bytes buffered at once across all
    /// requests, before their signature is checked. A request that would exceed it is
    /// answered 503 with `Retry-After`. At least `RECORDSYNC_MAX_BODY_BYTES`.
    pub body_budget_bytes: usize,
    /// `RECORDSYNC_INGEST_MAX_HEADER_BYTES`: the largest request head (hyper's read
    /// buffer; at least 8192).
    pub max_header_bytes: usize,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        IntakeLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            body_budget_bytes: 64 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
        }
    }
}

impl IntakeLimits {
    /// Defaults overridden by the process environment.
    pub fn from_env(max_body_bytes: usize) -> Result<IntakeLimits, config::SettingsError> {
        IntakeLimits::from_lookup(max_body_bytes, |k| std::env::var(k).ok())
    }

    /// Defaults overridden by `lookup`; `max_body_bytes` is the largest body accepted
    /// (the budget must hold at least one).
    pub fn from_lookup(
        max_body_bytes: usize,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<IntakeLimits, config::SettingsError> {
        let mut l = IntakeLimits::default();
        let num = |name: &str, min: u64, max: u64| -> Result<Option<u64>, config::SettingsError> {
            let var = format!("RECORDSYNC_INGEST_{name}");
            let Some(value) = lookup(&var) else {
                return Ok(None);
            };
            match value.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(config::SettingsError {
                    var,
                    value,
                    message: format!("must be a whole number from {min} to {max}"),
                }),
            }
        };
        let ms = |n: u64| Duration::from_millis(n);
        if let Some(n) = num("MAX_CONNECTIONS", 1, 1 << 20)? {
            l.max_connections = n as usize;
        }
        if let Some(n) = num("HEADER_TIMEOUT_MS", 1, 3_600_000)? {
            l.header_timeout = ms(n);
        }
        if let Some(n) = num("BODY_TIMEOUT_MS", 1, 3_600_000)? {
            l.body_timeout = ms(n);
        }
        if let Some(n) = num("REQUEST_TIMEOUT_MS", 1, 3_600_000)? {
            l.request_timeout = ms(n);
        }
        if let Some(n) = num("MAX_HEADER_BYTES", 8192, 1 << 24)? {
            l.max_header_bytes = n as usize;
        }
        let max_budget = u64::from(u32::MAX).min(Semaphore::MAX_PERMITS as u64);
        if let Some(n) = num("BODY_BUDGET_BYTES", max_body_bytes as u64, max_budget)? {
            l.body_budget_bytes = n as usize;
        }
        l.body_budget_bytes = l.body_budget_bytes.max(max_body_bytes);
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_limits_read_their_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let l = IntakeLimits::from_lookup(
            1024,
            vars(&[
                ("RECORDSYNC_INGEST_MAX_CONNECTIONS", "7"),
                ("RECORDSYNC_INGEST_HEADER_TIMEOUT_MS", "1500"),
                ("RECORDSYNC_INGEST_BODY_TIMEOUT_MS", "2500"),
                ("RECORDSYNC_INGEST_REQUEST_TIMEOUT_MS", "9000"),
                ("RECORDSYNC_INGEST_BODY_BUDGET_BYTES", "4096"),
            ]),
        )
        .unwrap();
        assert_eq!(l.max_connections, 7);
        assert_eq!(l.header_timeout, Duration::from_millis(1500));
        assert_eq!(l.body_timeout, Duration::from_millis(2500));
        assert_eq!(l.request_timeout, Duration::from_secs(9));
        assert_eq!(l.body_budget_bytes, 4096);
        assert_eq!(
            IntakeLimits::from_lookup(1024, |_| None).unwrap(),
            IntakeLimits::default()
        );
        let e = IntakeLimits::from_lookup(
            1024,
            vars(&[("RECORDSYNC_INGEST_BODY_BUDGET_BYTES", "100")]),
        )
        .unwrap_err();
        assert_eq!(e.var, "RECORDSYNC_INGEST_BODY_BUDGET_BYTES");
        assert!(
            IntakeLimits::from_lookup(1, vars(&[("RECORDSYNC_INGEST_MAX_CONNECTIONS", "0")]))
                .is_err()
        );
    }
}
