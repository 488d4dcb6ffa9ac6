//! `ingest`: validates webhooks and publishes them to RabbitMQ. It needs the broker and
//! nothing else: it never touches PostgreSQL, so it keeps accepting while the database
//! is down.
//!
//! `POST /webhooks/{system}`: authenticate (Standard Webhooks or URL token), bound the
//! body, parse, check what routing needs, route to at least one sync rule, wrap in the
//! versioned envelope, publish persistent + mandatory with a confirm, and only then
//! answer 202.

pub mod metrics;
pub mod signature;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use config::{ConfigError, Settings};
use domain::record::value_text;
use domain::rules::{SyncRules, SystemKind, WebhookAuth};
use queue::{Broker, EventV1, QueueMessage, Topology, topology::WORK_KEY};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::signature::{AuthError, parse_secret, verify, verify_token};

/// How a system's webhooks authenticate, with its secrets read.
#[derive(Clone)]
enum Auth {
    Token(String),
    Signed {
        keys: Vec<Vec<u8>>,
        tolerance_secs: i64,
    },
}

struct AppState {
    rules: SyncRules,
    auth: BTreeMap<String, Auth>,
    broker: Arc<Broker>,
    max_body: usize,
    metrics: Metrics,
}

/// The ingest service, ready to serve.
pub struct Ingest {
    state: Arc<AppState>,
}

impl Ingest {
    /// Reads every webhook secret the rules name and prepares the broker handle.
    pub fn new(settings: &Settings, rules: SyncRules) -> Result<Ingest, ConfigError> {
        Ingest::with_secrets(settings, rules, config::secret)
    }

    /// As [`Ingest::new`], with secrets from `secret(path, var)`.
    pub fn with_secrets(
        settings: &Settings,
        rules: SyncRules,
        secret: impl Fn(&str, &str) -> Result<String, ConfigError>,
    ) -> Result<Ingest, ConfigError> {
        let mut auth = BTreeMap::new();
        for (name, sys) in &rules.systems {
            match &sys.webhook {
                Some(WebhookAuth::Token { token_env }) => {
                    let token = secret(&format!("systems.{name}.webhook.token_env"), token_env)?;
                    auth.insert(name.clone(), Auth::Token(token));
                }
                Some(WebhookAuth::StandardWebhooks {
                    secret_env,
                    tolerance_seconds,
                }) => {
                    let path = format!("systems.{name}.webhook.secret_env");
                    let raw = secret(&path, secret_env)?;
                    let keys: Option<Vec<Vec<u8>>> =
                        raw.split_whitespace().map(parse_secret).collect();
                    let keys = keys.filter(|k| !k.is_empty()).ok_or_else(|| ConfigError::Invalid {
                        file: "environment".into(),
                        problems: vec![config::Problem {
                            path: path.clone(),
                            message: format!("{secret_env} must hold whsec_<base64> secrets separated by spaces"),
                        }],
                    })?;
                    let tolerance_secs = tolerance_seconds.unwrap_or(300) as i64;
                    auth.insert(
                        name.clone(),
                        Auth::Signed {
                            keys,
                            tolerance_secs,
                        },
                    );
                }
                None => {}
            }
        }
        let topology = Topology::new(&settings.queue_prefix, settings.retry_delays_ms.clone());
        let broker = Broker::new(
            &settings.amqp_url,
            "recordsync-ingest",
            topology,
            Duration::from_millis(settings.publish_timeout_ms),
        );
        Ok(Ingest {
            state: Arc::new(AppState {
                rules,
                auth,
                broker,
                max_body: settings.max_body_bytes,
                metrics: Metrics::default(),
            }),
        })
    }

    /// The broker handle (tests wait on it).
    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.state.broker)
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/webhooks/{system}", post(webhook))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(Arc::clone(&self.state))
    }

    /// Serves until `shutdown`; keeps the broker connection alive meanwhile.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let keeper = self.state.broker.spawn_keeper(shutdown.clone());
        let app = self.router();
        let stop = shutdown.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        shutdown.cancel();
        let _ = keeper.await;
        served
    }
}

/// Why a webhook was not accepted: each maps to one status of the bad-input contract.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("unknown system \"{0}\"")]
    UnknownSystem(String),
    #[error("system \"{0}\" does not accept webhooks (no webhook auth configured)")]
    NoWebhookAuth(String),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body could not be read: {0}")]
    BadBody(String),
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the payload lacks {0}, which routing needs")]
    MissingField(&'static str),
    #[error("no sync rule watches app \"{app}\" of system \"{system}\"")]
    NoRule { system: String, app: String },
    #[error("the broker is unavailable ({0}); nothing was queued — retry later")]
    Unavailable(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::UnknownSystem(_) => StatusCode::NOT_FOUND,
            Refusal::NoWebhookAuth(_) | Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BadBody(_) | Refusal::NotJson(_) => StatusCode::BAD_REQUEST,
            Refusal::MissingField(_) | Refusal::NoRule { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The outcome label for metrics (a bounded set).
    fn outcome(&self) -> &'static str {
        match self {
            Refusal::UnknownSystem(_) => "unknown_system",
            Refusal::NoWebhookAuth(_) | Refusal::Unauthorized(_) => "unauthorized",
            Refusal::TooLarge(_) => "too_large",
            Refusal::BadBody(_) | Refusal::NotJson(_) => "bad_request",
            Refusal::MissingField(_) => "missing_field",
            Refusal::NoRule { .. } => "no_rule",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Refusal::MissingField(_) => "missing_field",
            other => other.outcome(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code(), "message": self.to_string()}}));
        let mut resp = (self.status(), body).into_response();
        if matches!(self, Refusal::Unavailable(_)) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

/// What routing needs from a webhook.
#[derive(Debug, PartialEq)]
struct Routed {
    event_id: String,
    event_type: String,
    app: String,
    record_id: String,
}

fn text_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(value_text)
        .filter(|s| !s.is_empty())
}

/// kintone: `id`, `type`, `app.id`, and `record.$id.value` (or `recordId` for deletes).
fn route_kintone(payload: &Value) -> Result<Routed, Refusal> {
    let event_id = text_at(payload, "/id").ok_or(Refusal::MissingField("id"))?;
    let event_type = text_at(payload, "/type").ok_or(Refusal::MissingField("type"))?;
    let app = text_at(payload, "/app/id").ok_or(Refusal::MissingField("app.id"))?;
    let record_id = text_at(payload, "/record/$id/value")
        .or_else(|| text_at(payload, "/recordId"))
        .ok_or(Refusal::MissingField("record.$id.value or recordId"))?;
    Ok(Routed {
        event_id,
        event_type,
        app,
        record_id,
    })
}

fn route_rest(
    system: &domain::rules::SystemSpec,
    webhook_id: Option<&str>,
    payload: &Value,
) -> Result<Routed, Refusal> {
    let routing = system
        .webhook_routing
        .as_ref()
        .ok_or(Refusal::MissingField(
            "webhook_routing in the configuration",
        ))?;
    let event_id = webhook_id
        .map(str::to_owned)
        .ok_or(Refusal::MissingField("webhook-id"))?;
    let event_type =
        text_at(payload, &routing.event_type).ok_or(Refusal::MissingField("the event type"))?;
    let record_id =
        text_at(payload, &routing.record_id).ok_or(Refusal::MissingField("the record id"))?;
    Ok(Routed {
        event_id,
        event_type,
        app: routing.entity.clone(),
        record_id,
    })
}

async fn webhook(
    State(state): State<Arc<AppState>>,
    Path(system): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let label = if state.rules.systems.contains_key(&system) {
        system.as_str()
    } else {
        "unknown"
    };
    match accept(&state, &system, &query, &headers, body).await {
        Ok(event_id) => {
            state.metrics.count(label, "accepted");
            (
                StatusCode::ACCEPTED,
                Json(json!({"event_id": event_id, "status": "queued"})),
            )
                .into_response()
        }
        Err(refusal) => {
            state.metrics.count(label, refusal.outcome());
            match &refusal {
                Refusal::Unavailable(_) => {
                    tracing::error!(system, error = %refusal, "webhook refused with 503: the broker is unavailable; the sender will retry — check RabbitMQ")
                }
                Refusal::Unauthorized(_) | Refusal::NoWebhookAuth(_) => {
                    tracing::warn!(system, error = %refusal, "webhook refused: authentication failed; check the sender's secret")
                }
                _ => tracing::info!(system, error = %refusal, "webhook refused"),
            }
            refusal.into_response()
        }
    }
}

/// An error and its sources as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn accept(
    state: &AppState,
    system: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<String, Refusal> {
    let spec = state
        .rules
        .systems
        .get(system)
        .ok_or_else(|| Refusal::UnknownSystem(system.to_owned()))?;
    let auth = state
        .auth
        .get(system)
        .ok_or_else(|| Refusal::NoWebhookAuth(system.to_owned()))?;
    // A URL token is checked before the body is read.
    if let Auth::Token(expected) = auth {
        verify_token(expected, query.get("token").map(String::as_str))?;
    }
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body) {
        return Err(Refusal::TooLarge(state.max_body));
    }
    let bytes: Bytes = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|e| {
            if error_chain(&e).contains("length limit") {
                Refusal::TooLarge(state.max_body)
            } else {
                Refusal::BadBody(e.to_string())
            }
        })?;
    if let Auth::Signed {
        keys,
        tolerance_secs,
    } = auth
    {
        verify(
            keys,
            header_str(headers, "webhook-id"),
            header_str(headers, "webhook-timestamp"),
            header_str(headers, "webhook-signature"),
            &bytes,
            chrono::Utc::now().timestamp(),
            *tolerance_secs,
        )?;
    }
    let payload: Value =
        serde_json::from_slice(&bytes).map_err(|e| Refusal::NotJson(e.to_string()))?;
    let routed = match spec.kind {
        SystemKind::Kintone => route_kintone(&payload)?,
        SystemKind::Rest => route_rest(spec, header_str(headers, "webhook-id"), &payload)?,
    };
    if state.rules.rules_for(system, &routed.app).next().is_none() {
        return Err(Refusal::NoRule {
            system: system.to_owned(),
            app: routed.app,
        });
    }
    let correlation_id = header_str(headers, "x-correlation-id")
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let message = QueueMessage::V1(EventV1 {
        event_id: routed.event_id.clone(),
        system: system.to_owned(),
        app: routed.app,
        record_id: routed.record_id,
        event_type: routed.event_type,
        received_at: chrono::Utc::now(),
        correlation_id: correlation_id.clone(),
        payload,
    });
    let publisher = state
        .broker
        .publisher()
        .await
        .map_err(|e| Refusal::Unavailable(e.to_string()))?;
    let names = state.broker.names();
    let headers = queue::header_table(&[
        (queue::headers::ATTEMPT, queue::number(1)),
        (queue::headers::CORRELATION_ID, queue::text(&correlation_id)),
    ]);
    publisher
        .publish(
            &names.events_exchange(),
            WORK_KEY,
            &message.encode(),
            &routed.event_id,
            headers,
        )
        .await
        .map_err(|e| Refusal::Unavailable(e.to_string()))?;
    tracing::debug!(system, event_id = %routed.event_id, correlation_id, "webhook queued");
    Ok(routed.event_id)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.broker.publisher().await.is_ok() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is not connected",
        )
            .into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    let connected = u8::from(state.broker.is_connected());
    text.push_str(
        "# HELP recordsync_ingest_broker_connected Whether ingest holds a broker connection.\n",
    );
    text.push_str("# TYPE recordsync_ingest_broker_connected gauge\n");
    text.push_str(&format!("recordsync_ingest_broker_connected {connected}\n"));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kintone_routing_names_the_missing_field() {
        let ok = json!({"id": "e1", "type": "UPDATE_RECORD", "app": {"id": "101"}, "record": {"$id": {"value": "5"}}});
        assert_eq!(
            route_kintone(&ok).unwrap(),
            Routed {
                event_id: "e1".into(),
                event_type: "UPDATE_RECORD".into(),
                app: "101".into(),
                record_id: "5".into()
            }
        );
        let del = json!({"id": "e2", "type": "DELETE_RECORD", "app": {"id": 101}, "recordId": "7"});
        assert_eq!(route_kintone(&del).unwrap().record_id, "7");
        assert_eq!(route_kintone(&del).unwrap().app, "101");
        for (payload, field) in [
            (
                json!({"type": "X", "app": {"id": "1"}, "recordId": "1"}),
                "id",
            ),
            (
                json!({"id": "e", "app": {"id": "1"}, "recordId": "1"}),
                "type",
            ),
            (json!({"id": "e", "type": "X", "recordId": "1"}), "app.id"),
            (
                json!({"id": "e", "type": "X", "app": {"id": "1"}}),
                "record.$id.value or recordId",
            ),
        ] {
            match route_kintone(&payload) {
                Err(Refusal::MissingField(f)) => assert_eq!(f, field),
                other => panic!("expected missing {field}, got {other:?}"),
            }
        }
    }
}
