//! `ingest`: validates webhooks and publishes them to RabbitMQ. It needs the broker and
//! nothing else: it never touches PostgreSQL, so it keeps accepting while the database
//! is down.
//!
//! `POST /webhooks/{system}`: authenticate (Standard Webhooks or URL token), bound the
//! body, parse, check what routing needs, route to at least one sync rule, wrap in the
//! versioned envelope, publish persistent + mandatory with a confirm, and only then
//! answer 202.
//!
//! Intake is bounded ([`IntakeLimits`]): hyper's header-read timeout (which also
//! closes idle keep-alive connections), tower-http's body-read timeout between chunks
//! and a whole-request deadline, a cap on open connections, and a budget of body bytes
//! buffered at once across all requests (503 with `Retry-After` when it is spent).

#[cfg(test)]
mod fuzz;
mod limits;
pub mod metrics;
pub mod signature;

pub use limits::IntakeLimits;

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use config::{ConfigError, Settings};
use domain::record::value_text;
use domain::rules::{SyncRules, SystemKind, WebhookAuth};
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use queue::{Broker, EventV1, QueueMessage, Topology, topology::WORK_KEY};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

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
    /// Body bytes that may be buffered at once, across every request.
    body_budget: Arc<Semaphore>,
    metrics: Metrics,
}

/// The ingest service, ready to serve.
pub struct Ingest {
    state: Arc<AppState>,
    limits: IntakeLimits,
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
                    let tolerance_secs =
                        i64::try_from(tolerance_seconds.unwrap_or(300)).unwrap_or(i64::MAX);
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
        let limits = IntakeLimits::default();
        Ok(Ingest {
            state: Arc::new(AppState {
                rules,
                auth,
                broker,
                max_body: settings.max_body_bytes,
                body_budget: budget(&limits, settings.max_body_bytes),
                metrics: Metrics::default(),
            }),
            limits,
        })
    }

    /// Replaces the default [`IntakeLimits`].
    pub fn with_limits(mut self, limits: IntakeLimits) -> Ingest {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.body_budget = budget(&limits, state.max_body);
        }
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &IntakeLimits {
        &self.limits
    }

    /// The broker handle (tests wait on it).
    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.state.broker)
    }

    /// The HTTP routes, with the body-read timeout (between chunks) and the
    /// whole-request deadline.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/webhooks/{system}", post(webhook))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(Arc::clone(&self.state))
            .layer(RequestBodyTimeoutLayer::new(self.limits.body_timeout))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                self.limits.request_timeout,
            ))
    }

    /// Serves HTTP/1.1 until `shutdown`, within the [`IntakeLimits`]; keeps the broker
    /// connection alive meanwhile. On shutdown, requests in flight finish (each within
    /// the request deadline) and idle connections close.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let keeper = self.state.broker.spawn_keeper(shutdown.clone());
        let app = self.router();
        let limits = self.limits.clone();
        // axum::serve offers no header-read timeout, so connections are served with
        // hyper's HTTP/1 builder, and each holds a permit of the connection cap.
        let connections = Arc::new(Semaphore::new(limits.max_connections));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&connections).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let stop = shutdown.clone();
            tokio::spawn(serve_connection(conn, stop, permit));
        }
        drop(listener);
        // Every connection gives its permit back when it ends.
        let _ = connections
            .acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX))
            .await;
        shutdown.cancel();
        let _ = keeper.await;
        Ok(())
    }
}

fn budget(limits: &IntakeLimits, max_body: usize) -> Arc<Semaphore> {
    let bytes = limits
        .body_budget_bytes
        .max(max_body)
        .min(Semaphore::MAX_PERMITS);
    Arc::new(Semaphore::new(bytes))
}

async fn serve_connection<S>(
    conn: hyper::server::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, S>,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as axum::body::HttpBody>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        _ = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
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
    #[error("the body did not arrive in time")]
    SlowBody,
    #[error("too many webhook bodies are being received at once; retry later")]
    Busy,
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the payload lacks {0}, which routing needs")]
    MissingField(&'static str),
    #[error("{0}")]
    Invalid(String),
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
            Refusal::SlowBody => StatusCode::REQUEST_TIMEOUT,
            Refusal::MissingField(_) | Refusal::Invalid(_) | Refusal::NoRule { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Refusal::Busy | Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The outcome label for metrics (a bounded set).
    fn outcome(&self) -> &'static str {
        match self {
            Refusal::UnknownSystem(_) => "unknown_system",
            Refusal::NoWebhookAuth(_) | Refusal::Unauthorized(_) => "unauthorized",
            Refusal::TooLarge(_) => "too_large",
            Refusal::BadBody(_) | Refusal::NotJson(_) => "bad_request",
            Refusal::SlowBody => "timeout",
            Refusal::Busy => "busy",
            Refusal::MissingField(_) => "missing_field",
            Refusal::Invalid(_) => "invalid",
            Refusal::NoRule { .. } => "no_rule",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    fn code(&self) -> &'static str {
        self.outcome()
    }

    fn retry_after(&self) -> Option<&'static str> {
        match self {
            Refusal::Unavailable(_) => Some("5"),
            Refusal::Busy => Some("1"),
            _ => None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code(), "message": self.to_string()}}));
        let mut resp = (self.status(), body).into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
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

/// The longest id, type or app name a webhook may route by: the event id becomes the
/// AMQP message id, a short string of at most 255 bytes.
pub const MAX_ROUTING_FIELD_BYTES: usize = 255;
/// The deepest payload accepted. The worker's JSON decoder stops at 128 levels and the
/// envelope adds one, so this leaves a wide margin.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Checks a value routing uses: short, and no control characters (PostgreSQL's text
/// refuses NUL).
fn check_routing_field(what: &'static str, value: &str) -> Result<(), Refusal> {
    if value.len() > MAX_ROUTING_FIELD_BYTES {
        return Err(Refusal::Invalid(format!(
            "{what} is {} bytes long; at most {MAX_ROUTING_FIELD_BYTES} are accepted",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Refusal::Invalid(format!(
            "{what} contains a control character"
        )));
    }
    Ok(())
}

/// How deeply arrays and objects nest in a value (a scalar is 0), without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            Value::Object(o) => {
                deepest = deepest.max(d + 1);
                stack.extend(o.values().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// The error behind a body error, when it is tower-http's body-read timeout.
fn is_body_timeout(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Reads a body of at most `max_body` bytes, holding its bytes of the shared budget:
/// all of a declared `Content-Length` up front, or chunk by chunk. The permit is given
/// back when the caller drops it, after the bytes are gone.
async fn read_body(
    budget: &Arc<Semaphore>,
    max_body: usize,
    declared: Option<usize>,
    body: Body,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Refusal> {
    let take = |n: usize| -> Result<OwnedSemaphorePermit, Refusal> {
        let n = u32::try_from(n).map_err(|_| Refusal::TooLarge(max_body))?;
        Arc::clone(budget)
            .try_acquire_many_owned(n)
            .map_err(|_| Refusal::Busy)
    };
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut reserved = 0usize;
    if let Some(n) = declared.filter(|n| *n > 0) {
        held = Some(take(n)?);
        reserved = n;
    }
    let mut buf = Vec::with_capacity(reserved);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            if is_body_timeout(&e) {
                Refusal::SlowBody
            } else {
                Refusal::BadBody(error_chain(&e))
            }
        })?;
        let len = buf.len().saturating_add(chunk.len());
        if len > max_body {
            return Err(Refusal::TooLarge(max_body));
        }
        if len > reserved {
            let more = take(len - reserved)?;
            match &mut held {
                Some(p) => p.merge(more),
                None => held = Some(more),
            }
            reserved = len;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, held))
}

/// A webhook ready to publish.
#[derive(Debug)]
struct Prepared {
    event_id: String,
    correlation_id: String,
    /// The encoded [`QueueMessage`].
    message: Vec<u8>,
}

/// Everything between the body and the broker, without I/O: the signature, JSON,
/// routing, the limits the worker decodes within, and the envelope. `now` is the
/// Unix time the signature's tolerance is measured from.
fn prepare(
    state: &AppState,
    system: &str,
    headers: &HeaderMap,
    bytes: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Prepared, Refusal> {
    let spec = state
        .rules
        .systems
        .get(system)
        .ok_or_else(|| Refusal::UnknownSystem(system.to_owned()))?;
    let auth = state
        .auth
        .get(system)
        .ok_or_else(|| Refusal::NoWebhookAuth(system.to_owned()))?;
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
            bytes,
            now.timestamp(),
            *tolerance_secs,
        )?;
    }
    let payload: Value =
        serde_json::from_slice(bytes).map_err(|e| Refusal::NotJson(e.to_string()))?;
    if depth(&payload) > MAX_PAYLOAD_DEPTH {
        return Err(Refusal::Invalid(format!(
            "the payload nests deeper than {MAX_PAYLOAD_DEPTH} levels"
        )));
    }
    let routed = match spec.kind {
        SystemKind::Kintone => route_kintone(&payload)?,
        SystemKind::Rest => route_rest(spec, header_str(headers, "webhook-id"), &payload)?,
        // A file system sends no webhooks (its config cannot name a webhook secret).
        SystemKind::File => return Err(Refusal::NoWebhookAuth(system.to_owned())),
    };
    check_routing_field("the event id", &routed.event_id)?;
    check_routing_field("the event type", &routed.event_type)?;
    check_routing_field("the app", &routed.app)?;
    check_routing_field("the record id", &routed.record_id)?;
    if state.rules.rules_for(system, &routed.app).next().is_none() {
        return Err(Refusal::NoRule {
            system: system.to_owned(),
            app: routed.app,
        });
    }
    // A sender's correlation id is kept when it is a plausible one.
    let correlation_id = header_str(headers, "x-correlation-id")
        .filter(|c| {
            !c.is_empty() && c.len() <= MAX_ROUTING_FIELD_BYTES && !c.chars().any(char::is_control)
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let message = QueueMessage::V1(EventV1 {
        event_id: routed.event_id.clone(),
        system: system.to_owned(),
        app: routed.app,
        record_id: routed.record_id,
        event_type: routed.event_type,
        received_at: now,
        correlation_id: correlation_id.clone(),
        payload,
    });
    Ok(Prepared {
        event_id: routed.event_id,
        correlation_id,
        message: message.encode(),
    })
}

async fn accept(
    state: &AppState,
    system: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<String, Refusal> {
    if !state.rules.systems.contains_key(system) {
        return Err(Refusal::UnknownSystem(system.to_owned()));
    }
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
    // The permit is held until the bytes (and what was made of them) are dropped.
    let (bytes, _permit) = read_body(&state.body_budget, state.max_body, declared, body).await?;
    let prepared = prepare(state, system, headers, &bytes, chrono::Utc::now())?;
    drop(bytes);
    let publisher = state
        .broker
        .publisher()
        .await
        .map_err(|e| Refusal::Unavailable(e.to_string()))?;
    let names = state.broker.names();
    // The trace starts here: its context rides in the message to the worker's step.
    let cx = webhook_span(system, &prepared.event_id, &prepared.correlation_id);
    let mut amqp_headers = vec![
        (queue::headers::ATTEMPT, queue::number(1)),
        (
            queue::headers::CORRELATION_ID,
            queue::text(&prepared.correlation_id),
        ),
    ];
    let traceparent = queue::trace::traceparent(&cx);
    if let Some(tp) = &traceparent {
        amqp_headers.push((queue::trace::TRACEPARENT, queue::text(tp)));
    }
    let amqp_headers = queue::header_table(&amqp_headers);
    let publishing = std::time::Instant::now();
    let published = publisher
        .publish(
            &names.events_exchange(),
            WORK_KEY,
            &prepared.message,
            &prepared.event_id,
            amqp_headers,
        )
        .await;
    state.metrics.confirmed(publishing.elapsed());
    {
        use opentelemetry::trace::TraceContextExt as _;
        let span = cx.span();
        if let Err(e) = &published {
            span.set_status(opentelemetry::trace::Status::error(e.to_string()));
        }
        span.end();
    }
    published.map_err(|e| Refusal::Unavailable(e.to_string()))?;
    tracing::debug!(system, event_id = %prepared.event_id, correlation_id = %prepared.correlation_id, "webhook queued");
    Ok(prepared.event_id)
}

/// The span of one accepted webhook, the root of its command's trace (a no-op when no
/// trace provider is set up).
fn webhook_span(system: &str, event_id: &str, correlation_id: &str) -> opentelemetry::Context {
    use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
    let tracer = opentelemetry::global::tracer("recordsync-ingest");
    let span = tracer
        .span_builder("webhook")
        .with_kind(SpanKind::Server)
        .with_attributes([
            opentelemetry::KeyValue::new("recordsync.system", system.to_owned()),
            opentelemetry::KeyValue::new("recordsync.event_id", event_id.to_owned()),
            opentelemetry::KeyValue::new("recordsync.correlation_id", correlation_id.to_owned()),
        ])
        .start(&tracer);
    opentelemetry::Context::new().with_span(span)
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
    let text = state.metrics.render(state.broker.is_connected());
    (
        [(header::CONTENT_TYPE, config::telemetry::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kintone_ingest() -> Ingest {
        let rules = config::parse_rules("sync-rules.json", include_str!("../../sync-rules.json"))
            .expect("the example rules");
        let settings = Settings {
            amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
            ..Settings::default()
        };
        Ingest::with_secrets(&settings, rules, |_, var| {
            Ok(match var {
                "HELPDESK_WEBHOOK_SECRET" => "whsec_c2VjcmV0".to_owned(),
                _ => "t".to_owned(),
            })
        })
        .expect("ingest")
    }

    fn prepare_kintone(payload: &Value) -> Result<Prepared, Refusal> {
        let ingest = kintone_ingest();
        prepare(
            &ingest.state,
            "kintone",
            &HeaderMap::new(),
            payload.to_string().as_bytes(),
            chrono::Utc::now(),
        )
    }

    #[test]
    fn an_event_id_too_long_for_an_amqp_message_id_is_refused() {
        // lapin's ShortString::from panics past 255 bytes: this id used to panic the
        // handler at publish time, and the client saw its connection drop.
        let hook = |id: &str| json!({"id": id, "type": "ADD_RECORD", "app": {"id": "101"}, "recordId": "1"});
        let ok = prepare_kintone(&hook(&"e".repeat(255))).expect("255 bytes fit");
        assert_eq!(ok.event_id.len(), 255);
        match prepare_kintone(&hook(&"e".repeat(256))) {
            Err(r @ Refusal::Invalid(_)) => {
                assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(
                    r.to_string(),
                    "the event id is 256 bytes long; at most 255 are accepted"
                );
            }
            other => panic!("expected a 422, got {other:?}"),
        }
        // A NUL PostgreSQL cannot store, in the record id.
        assert!(matches!(
            prepare_kintone(
                &json!({"id": "e", "type": "ADD_RECORD", "app": {"id": "101"}, "recordId": "1\u{0}"})
            ),
            Err(Refusal::Invalid(_))
        ));
        // A correlation id that is too long is replaced, not refused.
        let ingest = kintone_ingest();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-correlation-id",
            HeaderValue::from_str(&"c".repeat(300)).unwrap(),
        );
        let p = prepare(
            &ingest.state,
            "kintone",
            &headers,
            hook("e").to_string().as_bytes(),
            chrono::Utc::now(),
        )
        .unwrap();
        assert!(p.correlation_id.len() < 255);
    }

    #[test]
    fn a_payload_nested_too_deeply_for_the_worker_is_refused() {
        let nested = |d: usize| {
            let mut v = json!(1);
            for _ in 0..d {
                v = json!([v]);
            }
            json!({"id": "e", "type": "ADD_RECORD", "app": {"id": "101"}, "recordId": "1", "x": v})
        };
        // The premise: ingest's parser takes a payload the worker cannot decode once
        // it is wrapped in the envelope.
        let payload: Value =
            serde_json::from_str(&nested(126).to_string()).expect("ingest parses it");
        let wrapped = QueueMessage::V1(EventV1 {
            event_id: "e".into(),
            system: "kintone".into(),
            app: "101".into(),
            record_id: "1".into(),
            event_type: "ADD_RECORD".into(),
            received_at: chrono::Utc::now(),
            correlation_id: "c".into(),
            payload,
        });
        assert!(QueueMessage::decode(&wrapped.encode()).is_err());
        assert!(matches!(
            prepare_kintone(&nested(126)),
            Err(Refusal::Invalid(m)) if m == "the payload nests deeper than 64 levels"
        ));
        let ok = prepare_kintone(&nested(MAX_PAYLOAD_DEPTH - 1)).expect("64 levels are fine");
        assert!(QueueMessage::decode(&ok.message).is_ok());
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
    }

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

    #[tokio::test]
    async fn the_body_budget_is_shared_and_given_back() {
        let budget = Arc::new(Semaphore::new(100));
        // A declared length takes its bytes up front.
        let (first, held) = read_body(&budget, 80, Some(60), Body::from(vec![b'a'; 60]))
            .await
            .unwrap();
        assert_eq!(first.len(), 60);
        assert_eq!(budget.available_permits(), 40);
        // Another declared 60 does not fit beside it: 503.
        let busy = read_body(&budget, 80, Some(60), Body::from(vec![b'b'; 60])).await;
        assert!(matches!(busy, Err(Refusal::Busy)));
        assert_eq!(busy.unwrap_err().retry_after(), Some("1"));
        // Without a length, chunk by chunk: 40 fit, the 41st byte does not.
        let chunks = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(vec![b'c'; 40]),
            Ok(vec![b'c'; 1]),
        ]);
        assert!(matches!(
            read_body(&budget, 80, None, Body::from_stream(chunks)).await,
            Err(Refusal::Busy)
        ));
        assert_eq!(
            budget.available_permits(),
            40,
            "a refused read gives back what it took"
        );
        drop(held);
        assert_eq!(budget.available_permits(), 100);
        // A body longer than it declared takes the rest as it comes; past the limit: 413.
        let (b, held) = read_body(&budget, 80, Some(10), Body::from(vec![b'd'; 30]))
            .await
            .unwrap();
        assert_eq!((b.len(), budget.available_permits()), (30, 70));
        drop(held);
        assert!(matches!(
            read_body(&budget, 80, None, Body::from(vec![b'e'; 81])).await,
            Err(Refusal::TooLarge(80))
        ));
        assert_eq!(budget.available_permits(), 100);
    }

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
