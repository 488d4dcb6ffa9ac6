//! Connectors to external systems: the only crate that imports reqwest.
//!
//! - [`kintone`]: kintone's REST API (`record.json`, `records.json`, its error shape).
//! - [`rest`]: a generic REST API described by URL templates and JSON pointers.
//! - `http`: the HTTP core both send through (timeout, `Retry-After`, status
//!   classification, redaction).
//! - [`file`]: a `file` system, which has no API.
//! - [`RecordApi`]: the one trait each kind implements: one app or entity of one
//!   system, whatever its kind, as the worker sees it (fetch, search, create, update,
//!   write one field); an [`Endpoint`] is one behind an `Arc`.
//!
//! Every failure is a [`ConnectorError`] that says whether retrying can help.

pub mod api;
pub mod file;
mod http;
pub mod kintone;
pub mod redact;
pub mod rest;
pub mod shape;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use domain::rules::{ApiAuth, SyncRules, SystemKind, WebhookAuth};

pub use api::{Endpoint, RecordApi, Reply};
pub(crate) use http::http_client;
pub use http::parse_retry_after;
pub use redact::Redactor;

/// A failure talking to an external system.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The request did not complete: connection refused, reset, timed out.
    #[error("{system} could not be reached: {source}")]
    Transport {
        /// The system.
        system: String,
        /// The HTTP client error.
        #[source]
        source: reqwest::Error,
    },
    /// 429: the system asks us to slow down.
    #[error("{system} is rate limiting (429){}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        /// The system.
        system: String,
        /// Its `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// 5xx: the system failed.
    #[error("{system} answered {status}: {message}")]
    Server {
        /// The system.
        system: String,
        /// The status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// 401/403: our credentials are refused. An operator must fix the secret; the
    /// event is retried meanwhile and dead-lettered if it is not fixed in time.
    #[error(
        "{system} refused our credentials ({status}): {message} — check the API token's environment variable"
    )]
    Unauthorized {
        /// The system.
        system: String,
        /// The status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// kintone 409 `GAIA_CO02`: the record changed since we read it. Refetch and
    /// decide again.
    #[error("{system} record changed since it was read (revision conflict)")]
    RevisionConflict {
        /// The system.
        system: String,
    },
    /// Another 4xx: the system refuses the data. Retrying the same data cannot help.
    #[error("{system} refused the request ({status}): {message}")]
    Rejected {
        /// The system.
        system: String,
        /// The status.
        status: u16,
        /// Its message, e.g. a validation error.
        message: String,
    },
    /// The response was not what the API documents.
    #[error("{system} answered something unexpected: {message}")]
    BadResponse {
        /// The system.
        system: String,
        /// What was wrong.
        message: String,
    },
    /// The configuration names something the connectors do not have.
    #[error("no connector for {0}")]
    Unknown(String),
    /// A `file` system has no API: its records arrive only as imported rows.
    #[error(
        "{system} is a file system with no API: its records arrive only through an import (import the partner's file again)"
    )]
    NoApi {
        /// The system.
        system: String,
    },
}

impl ConnectorError {
    /// The delay the system asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short class for metrics and history: `transport`, `rate_limited`, `server`,
    /// `unauthorized`, `revision_conflict`, `rejected`, `bad_response`, `unknown`.
    pub fn class(&self) -> &'static str {
        match self {
            ConnectorError::Transport { .. } => "transport",
            ConnectorError::RateLimited { .. } => "rate_limited",
            ConnectorError::Server { .. } => "server",
            ConnectorError::Unauthorized { .. } => "unauthorized",
            ConnectorError::RevisionConflict { .. } => "revision_conflict",
            ConnectorError::Rejected { .. } => "rejected",
            ConnectorError::BadResponse { .. } => "bad_response",
            ConnectorError::Unknown(_) => "unknown",
            ConnectorError::NoApi { .. } => "no_api",
        }
    }

    /// The status code, when the system answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectorError::Server { status, .. }
            | ConnectorError::Unauthorized { status, .. }
            | ConnectorError::Rejected { status, .. } => Some(*status),
            ConnectorError::RateLimited { .. } => Some(429),
            ConnectorError::RevisionConflict { .. } => Some(409),
            _ => None,
        }
    }
}

/// Percent-encodes a value for a URL path segment or query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every connector the rules need, built once at start-up with their secrets.
pub struct Connectors {
    kintone: BTreeMap<String, Arc<kintone::Kintone>>,
    rest: BTreeMap<(String, String), Arc<rest::Rest>>,
    files: std::collections::BTreeSet<String>,
}

impl Connectors {
    /// Builds connectors for every system of the rules, reading secrets from the
    /// environment variables the rules name.
    pub fn from_rules(rules: &SyncRules) -> Result<Connectors, config::ConfigError> {
        Connectors::build(rules, config::secret)
    }

    /// Builds connectors with secrets from `secret(path, var)` (tests pass a map).
    ///
    /// Every secret the rules name is redacted from what an upstream answers: the API
    /// tokens the connectors send, and the webhook secrets too when this process can
    /// read them (a worker need not hold them).
    pub fn build(
        rules: &SyncRules,
        secret: impl Fn(&str, &str) -> Result<String, config::ConfigError>,
    ) -> Result<Connectors, config::ConfigError> {
        let http = http_client();
        let mut secrets = vec![];
        for (name, sys) in &rules.systems {
            match &sys.auth {
                ApiAuth::KintoneApiToken { token_env } => {
                    let value = secret(&format!("systems.{name}.auth.token_env"), token_env)?;
                    // kintone takes several comma-separated tokens.
                    secrets.extend(value.split(',').map(str::to_owned));
                    secrets.push(value);
                }
                ApiAuth::Header { value_env, .. } => {
                    secrets.push(secret(
                        &format!("systems.{name}.auth.value_env"),
                        value_env,
                    )?);
                }
                _ => {}
            }
            let webhook_var = match &sys.webhook {
                Some(WebhookAuth::Token { token_env }) => Some(token_env),
                Some(WebhookAuth::StandardWebhooks { secret_env, .. }) => Some(secret_env),
                None => None,
            };
            if let Some(var) = webhook_var
                && let Ok(value) = secret(&format!("systems.{name}.webhook"), var)
            {
                // Several may be configured at once (rotation).
                secrets.extend(value.split_whitespace().map(str::to_owned));
                secrets.push(value);
            }
        }
        let redactor = Arc::new(Redactor::new(secrets));
        let mut kintone = BTreeMap::new();
        let mut rest = BTreeMap::new();
        let mut files = std::collections::BTreeSet::new();
        for (name, sys) in &rules.systems {
            let timeout = Duration::from_millis(sys.timeout_ms.unwrap_or(10_000));
            let base = sys.base_url.trim_end_matches('/').to_owned();
            match sys.kind {
                SystemKind::File => {
                    files.insert(name.clone());
                }
                SystemKind::Kintone => {
                    let token = match &sys.auth {
                        ApiAuth::KintoneApiToken { token_env } => {
                            secret(&format!("systems.{name}.auth.token_env"), token_env)?
                        }
                        _ => String::new(),
                    };
                    kintone.insert(
                        name.clone(),
                        Arc::new(
                            kintone::Kintone::new(http.clone(), name, &base, &token, timeout)
                                .with_redactor(Arc::clone(&redactor)),
                        ),
                    );
                }
                SystemKind::Rest => {
                    let header = match &sys.auth {
                        ApiAuth::Header {
                            header,
                            value_env,
                            prefix,
                        } => {
                            let value =
                                secret(&format!("systems.{name}.auth.value_env"), value_env)?;
                            Some((header.clone(), format!("{prefix}{value}")))
                        }
                        _ => None,
                    };
                    for (ename, entity) in &sys.entities {
                        rest.insert(
                            (name.clone(), ename.clone()),
                            Arc::new(
                                rest::Rest::new(
                                    http.clone(),
                                    name,
                                    &base,
                                    header.clone(),
                                    entity.clone(),
                                    timeout,
                                )
                                .with_redactor(Arc::clone(&redactor)),
                            ),
                        );
                    }
                }
            }
        }
        Ok(Connectors {
            kintone,
            rest,
            files,
        })
    }

    /// The endpoint for an app (kintone) or entity (rest) of a system.
    pub fn endpoint(&self, system: &str, app_or_entity: &str) -> Result<Endpoint, ConnectorError> {
        if let Some(k) = self.kintone.get(system) {
            return Ok(Arc::new(kintone::KintoneApp::new(
                Arc::clone(k),
                app_or_entity,
            )));
        }
        if self.files.contains(system) {
            return Ok(Arc::new(file::FileSystem::new(system)));
        }
        self.rest
            .get(&(system.to_owned(), app_or_entity.to_owned()))
            .map(|r| Arc::clone(r) as Endpoint)
            .ok_or_else(|| ConnectorError::Unknown(format!("{system}/{app_or_entity}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every request with `status` and an error body (in
    /// kintone's and the helpdesk's shapes at once) quoting the request head it got.
    async fn echoing_upstream(status: u16) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let body = serde_json::json!({
                        "code": "ECHO",
                        "message": format!("you sent: {head}"),
                        "error": {"message": format!("you sent: {head}")},
                    })
                    .to_string();
                    let resp = format!(
                        "HTTP/1.1 {status} Echo\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_upstream_echoing_our_credentials_gets_them_redacted_from_the_error() {
        let mut rules =
            config::parse_rules("sync-rules.json", include_str!("../../../sync-rules.json"))
                .unwrap();
        let secrets: BTreeMap<&str, &str> = [
            (
                "KINTONE_API_TOKEN",
                "kintone-api-token-1,kintone-api-token-2",
            ),
            ("HELPDESK_API_TOKEN", "helpdesk-api-token"),
            ("KINTONE_WEBHOOK_TOKEN", "kintone-webhook-token"),
            (
                "HELPDESK_WEBHOOK_SECRET",
                "whsec_aGVscGRlc2std2ViaG9vay1rZXk=",
            ),
        ]
        .into();
        for status in [500, 401, 422] {
            let base = echoing_upstream(status).await;
            for sys in rules.systems.values_mut() {
                sys.base_url = base.clone();
            }
            let connectors = Connectors::build(&rules, |path, var| {
                secrets.get(var).map(|v| (*v).to_owned()).ok_or_else(|| {
                    config::ConfigError::MissingSecret {
                        path: path.to_owned(),
                        var: var.to_owned(),
                    }
                })
            })
            .unwrap();
            for (system, app) in [("kintone", "101"), ("helpdesk", "ticket")] {
                let e = connectors
                    .endpoint(system, app)
                    .unwrap()
                    .fetch("1")
                    .await
                    .expect_err("the upstream fails");
                let text = e.to_string();
                // The premise: the upstream did echo the credential header.
                assert!(
                    text.contains("x-cybozu-api-token: [redacted]")
                        || text.contains("authorization: Bearer [redacted]"),
                    "{text}"
                );
                for value in secrets.values().flat_map(|v| v.split(',')) {
                    assert!(!text.contains(value), "{value} leaked: {text}");
                }
                assert!(!format!("{e:?}").contains("api-token-"), "{e:?}");
            }
        }
        // Without the redactor the same error carried the token: the test's check bites.
        let base = echoing_upstream(500).await;
        let raw = kintone::Kintone::new(
            http_client(),
            "kintone",
            &base,
            "kintone-api-token-1",
            Duration::from_secs(3),
        )
        .with_redactor(Arc::new(Redactor::default()));
        let e = raw.get_record("101", "1").await.unwrap_err();
        assert!(e.to_string().contains("kintone-api-token-1"), "{e}");
    }

    #[tokio::test]
    async fn a_transport_error_prints_no_secret_from_the_url() {
        // Nothing listens on port 1; the URL carries a password and a secret query.
        let r = Redactor::new(["s3cret-value".to_owned()]);
        let e = http_client()
            .get("http://user:pa55word@127.0.0.1:1/x?token=s3cret-value&q=1")
            .send()
            .await
            .unwrap_err();
        let text = error_chain_text(&r.reqwest_error(e));
        assert!(
            !text.contains("s3cret-value") && !text.contains("pa55word"),
            "{text}"
        );
        assert!(text.contains("127.0.0.1:1"), "{text}");
    }

    fn error_chain_text(e: &dyn std::error::Error) -> String {
        let mut text = format!("{e} {e:?}");
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(" {s}"));
            source = s.source();
        }
        text
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("WO-12 34"), "WO-12%2034");
        assert_eq!(encode("a/b?c=d&e"), "a%2Fb%3Fc%3Dd%26e");
        assert_eq!(encode("作"), "%E4%BD%9C");
    }
}
