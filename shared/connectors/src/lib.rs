//! Connectors to external systems: the only crate that imports reqwest.
//!
//! - [`kintone`]: kintone's REST API (`record.json`, `records.json`, its error shape).
//! - [`rest`]: a generic REST API described by URL templates and JSON pointers.
//! - `http`: the HTTP core both send through (timeout, `Retry-After`, status
//!   classification, redaction).
//! - [`Endpoint`]: one app or entity of one system, whatever its kind, as the worker
//!   sees it (fetch, search, create, update, write one field).
//!
//! Every failure is a [`ConnectorError`] that says whether retrying can help.

mod http;
pub mod kintone;
pub mod redact;
pub mod rest;
pub mod shape;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use domain::record::{Fields, SourceRecord, TargetRecord};
use domain::rules::{ApiAuth, SyncRules, SystemKind, WebhookAuth};

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

/// One app or entity of one system.
#[derive(Clone)]
pub enum Endpoint {
    /// A kintone app.
    Kintone(Arc<kintone::Kintone>, String),
    /// A REST entity.
    Rest(Arc<rest::Rest>),
    /// A `file` system: nothing to call ([`ConnectorError::NoApi`]).
    File(String),
}

impl Endpoint {
    /// The system's name.
    pub fn system(&self) -> &str {
        match self {
            Endpoint::Kintone(k, _) => k.system(),
            Endpoint::Rest(r) => r.system(),
            Endpoint::File(s) => s,
        }
    }

    /// Reads one record; `None` when it does not exist.
    pub async fn fetch(&self, id: &str) -> Result<Option<SourceRecord>, ConnectorError> {
        match self {
            Endpoint::Kintone(k, app) => k.get_record(app, id).await,
            Endpoint::Rest(r) => Ok(r.get(id).await?.map(|t| r.as_source(t))),
            Endpoint::File(s) => Err(ConnectorError::NoApi { system: s.clone() }),
        }
    }

    /// How many records one bulk read takes, where the system reads several ids in one
    /// request (kintone: `records.json` with `$id in (…)`, 100 at a time).
    pub fn read_many_max(&self) -> Option<usize> {
        match self {
            Endpoint::Kintone(..) => Some(100),
            Endpoint::Rest(_) | Endpoint::File(_) => None,
        }
    }

    /// Reads the records of these ids (at most [`Endpoint::read_many_max`]) in one
    /// request: those that exist.
    pub async fn read_many(&self, ids: &[&str]) -> Result<Vec<SourceRecord>, ConnectorError> {
        match self {
            Endpoint::Kintone(k, app) => k.records_by_ids(app, ids).await,
            Endpoint::Rest(r) => Err(ConnectorError::Unknown(format!(
                "{}: a rest entity has no bulk read",
                r.system()
            ))),
            Endpoint::File(s) => Err(ConnectorError::NoApi { system: s.clone() }),
        }
    }

    /// The records whose `field` equals `value`.
    pub async fn search(
        &self,
        field: &str,
        value: &str,
    ) -> Result<Vec<TargetRecord>, ConnectorError> {
        match self {
            Endpoint::Kintone(k, app) => k.search(app, field, value).await,
            Endpoint::Rest(r) => r.search(field, value).await,
            Endpoint::File(s) => Err(ConnectorError::NoApi { system: s.clone() }),
        }
    }

    /// Creates a record; the idempotency key makes a repeated create return the first.
    /// Returns its id and revision, when the system tells.
    pub async fn create(
        &self,
        fields: &Fields,
        idempotency_key: &str,
    ) -> Result<(String, Option<i64>), ConnectorError> {
        let (id, rev, _) = self.create_answered(fields, idempotency_key).await?;
        Ok((id, rev))
    }

    /// [`Endpoint::create`], with the record as the system answered it, when it answers
    /// one (a rest entity; kintone answers only the id and revision): what it kept.
    pub async fn create_answered(
        &self,
        fields: &Fields,
        idempotency_key: &str,
    ) -> Result<(String, Option<i64>, Option<Fields>), ConnectorError> {
        match self {
            // kintone answers a new record's revision: 1.
            Endpoint::Kintone(k, app) => Ok((k.create_record(app, fields).await?, Some(1), None)),
            Endpoint::Rest(r) => {
                let t = r.create(fields, idempotency_key).await?;
                let rev = r.revision_of(&t);
                let answered = r.answered(fields, t.fields);
                Ok((t.id, rev, Some(answered)))
            }
            Endpoint::File(s) => Err(ConnectorError::NoApi { system: s.clone() }),
        }
    }

    /// Updates some fields of a record; returns the revision the write produced, when
    /// the system tells.
    pub async fn update(
        &self,
        id: &str,
        fields: &Fields,
        idempotency_key: &str,
    ) -> Result<Option<i64>, ConnectorError> {
        Ok(self.update_answered(id, fields, idempotency_key).await?.0)
    }

    /// [`Endpoint::update`], with the record as the system answered it, when it answers
    /// one (a rest entity).
    pub async fn update_answered(
        &self,
        id: &str,
        fields: &Fields,
        idempotency_key: &str,
    ) -> Result<(Option<i64>, Option<Fields>), ConnectorError> {
        match self {
            Endpoint::Kintone(k, app) => {
                Ok((Some(k.update_record(app, id, fields, None).await?), None))
            }
            Endpoint::Rest(r) => {
                let t = r.update(id, fields, idempotency_key).await?;
                let rev = r.revision_of(&t);
                Ok((rev, Some(r.answered(fields, t.fields))))
            }
            Endpoint::File(s) => Err(ConnectorError::NoApi { system: s.clone() }),
        }
    }

    /// Deletes a record: `true` when it was there, `false` when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, ConnectorError> {
        match self {
            Endpoint::Kintone(k, app) => k.delete_record(app, id).await,
            Endpoint::Rest(r) => r.delete(id).await,
            Endpoint::File(s) => Err(ConnectorError::NoApi { system: s.clone() }),
        }
    }

    /// Updates some fields of a record only if it is still at `revision` (kintone's
    /// revision check; other systems write unconditionally). `Ok(None)` when the
    /// record changed since; otherwise the revision the write produced.
    pub async fn update_checked(
        &self,
        id: &str,
        fields: &Fields,
        revision: Option<i64>,
        idempotency_key: &str,
    ) -> Result<Option<Option<i64>>, ConnectorError> {
        match self {
            Endpoint::Kintone(k, app) => match k.update_record(app, id, fields, revision).await {
                Ok(rev) => Ok(Some(Some(rev))),
                Err(ConnectorError::RevisionConflict { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            Endpoint::Rest(_) | Endpoint::File(_) => {
                self.update(id, fields, idempotency_key).await.map(Some)
            }
        }
    }
}

impl Endpoint {
    /// Whole records with an id after `after`, in id order, at most `limit`: a page of a
    /// complete listing (see [`Endpoint::can_list`]).
    pub async fn records_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SourceRecord>, ConnectorError> {
        match self {
            Endpoint::Kintone(k, app) => {
                let after = kintone_after(k, after)?;
                k.records_page(app, after, limit).await
            }
            Endpoint::Rest(r) => Ok(r.changed(None, after, limit, false).await?.0),
            Endpoint::File(s) => Err(ConnectorError::NoApi { system: s.clone() }),
        }
    }

    /// The schema the rules are checked against: a kintone app's form fields; for a
    /// rest entity, the shape of a sample record (the one with `sample` as id, or the
    /// first one listed). `Ok(Err(why))` when there is nothing to check against.
    pub async fn schema(
        &self,
        sample: Option<&str>,
    ) -> Result<Result<domain::drift::Schema, String>, ConnectorError> {
        let record = match self {
            Endpoint::Kintone(k, app) => return Ok(Ok(k.form_fields(app).await?)),
            Endpoint::Rest(r) => match sample {
                Some(id) => match r.get(id).await? {
                    Some(t) => t.fields,
                    None => return Ok(Err(format!("the sample record {id} does not exist"))),
                },
                None if r.can_list() => match r.changed(None, None, 1, false).await?.0.pop() {
                    Some(s) => s.fields,
                    None => return Ok(Err("no record to sample: the listing is empty".into())),
                },
                None => {
                    return Ok(Err(
                        "the entity declares no list and no sample record".into()
                    ));
                }
            },
            Endpoint::File(_) => {
                return Ok(Err(
                    "a file system has no API: its rows are checked when imported".into(),
                ));
            }
        };
        Ok(Ok(domain::drift::sample_schema(&record)))
    }

    /// Whether [`Endpoint::changed`] can list the records (kintone always; a rest
    /// entity when it declares `list`).
    pub fn can_list(&self) -> bool {
        match self {
            Endpoint::Kintone(..) => true,
            Endpoint::Rest(r) => r.can_list(),
            Endpoint::File(_) => false,
        }
    }

    /// The most updates one bulk call takes, when the system has bulk updates (kintone:
    /// 100 per `records.json` call).
    pub fn bulk_max(&self) -> Option<usize> {
        match self {
            Endpoint::Kintone(..) => Some(100),
            Endpoint::Rest(r) => r.bulk_max(),
            Endpoint::File(_) => None,
        }
    }

    /// One page of the records changed at or after `since` (a time and the field code
    /// of the update time; all records without it) whose id comes after `after`, in id
    /// order: from kintone id and revision only; with `with_total`, also how many match
    /// in all. A rest entity lists through its `list` template (whole records).
    pub async fn changed(
        &self,
        since: Option<(chrono::DateTime<chrono::Utc>, &str)>,
        after: Option<&str>,
        limit: usize,
        with_total: bool,
    ) -> Result<(Vec<SourceRecord>, Option<u64>), ConnectorError> {
        match self {
            Endpoint::Kintone(k, app) => {
                let after = kintone_after(k, after)?;
                k.changed(app, since, after, limit, with_total).await
            }
            // A rest API's listing filters by its own update time: the field name is
            // in its `list` template.
            Endpoint::Rest(r) => {
                r.changed(since.map(|(t, _)| t), after, limit, with_total)
                    .await
            }
            Endpoint::File(s) => Err(ConnectorError::NoApi { system: s.clone() }),
        }
    }

    /// Updates several records in one call (at most [`Endpoint::bulk_max`]). What the
    /// answer says of each update, in order: confirmed, or why not. kintone's bulk
    /// update is all-or-nothing.
    pub async fn bulk_update(
        &self,
        updates: &[(String, Fields)],
        idempotency_key: &str,
    ) -> Result<Vec<Result<(), String>>, ConnectorError> {
        match self {
            Endpoint::Kintone(k, app) => {
                k.update_records(app, updates).await?;
                Ok(updates.iter().map(|_| Ok(())).collect())
            }
            Endpoint::Rest(r) => r.bulk_update(updates, idempotency_key).await,
            Endpoint::File(s) => Err(ConnectorError::NoApi { system: s.clone() }),
        }
    }

    /// Writes one field of a record with a revision check where the system has
    /// revisions (kintone), so that a change made since `revision` was read is never
    /// overwritten. Returns the new revision, or `None` when the record changed
    /// meanwhile.
    pub async fn write_field(
        &self,
        id: &str,
        field: &str,
        value: &str,
        revision: Option<i64>,
    ) -> Result<Option<i64>, ConnectorError> {
        let mut fields = Fields::new();
        fields.insert(
            field.to_owned(),
            serde_json::Value::String(value.to_owned()),
        );
        let key = format!("write-field:{id}:{field}:{value}");
        Ok(
            match self.update_checked(id, &fields, revision, &key).await? {
                Some(new_revision) => new_revision.or(revision),
                None => None,
            },
        )
    }
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
            return Ok(Endpoint::Kintone(Arc::clone(k), app_or_entity.to_owned()));
        }
        if self.files.contains(system) {
            return Ok(Endpoint::File(system.to_owned()));
        }
        self.rest
            .get(&(system.to_owned(), app_or_entity.to_owned()))
            .map(|r| Endpoint::Rest(Arc::clone(r)))
            .ok_or_else(|| ConnectorError::Unknown(format!("{system}/{app_or_entity}")))
    }
}

/// A kintone page cursor: the last record id listed (0 before the first page).
fn kintone_after(k: &kintone::Kintone, after: Option<&str>) -> Result<i64, ConnectorError> {
    match after {
        None => Ok(0),
        Some(a) => a.parse().map_err(|_| {
            ConnectorError::Unknown(format!(
                "{}: \"{a}\" is not a kintone record id",
                k.system()
            ))
        }),
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
