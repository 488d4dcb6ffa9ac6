//! The middleware in front of both simulated systems: it applies the rate limit and injected
//! faults, and appends every request to the request log.
//!
//! The rate limit is checked first, so that every request (including one that a fault will
//! answer) takes a token; faults are evaluated only for requests that the limit let through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::faults::FaultAction;
use crate::log::{LogEntry, body_for_log};
use crate::state::{Shared, System, now_millis};
use crate::{helpdesk, kintone};

/// The largest request body that the gate buffers.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The state of the middleware: the shared sandbox and which system it guards.
#[derive(Clone)]
pub(crate) struct Gate {
    shared: Arc<Shared>,
    system: System,
}

impl Gate {
    pub(crate) fn new(shared: Arc<Shared>, system: System) -> Gate {
        Gate { shared, system }
    }
}

/// What the log needs to know about a request before its response exists.
struct Arrival {
    at: String,
    method: String,
    path: String,
    query: Option<String>,
    idempotency_key: Option<String>,
    body: Value,
}

pub(crate) async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let mut arrival = Arrival {
        at: now_millis(),
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        idempotency_key: header_text(&parts.headers, "idempotency-key"),
        body: Value::Null,
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        let response = error_response(
            gate.system,
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is too large",
        );
        return finish(&gate, arrival, response, None);
    };
    arrival.body = body_for_log(&bytes);

    let decision = {
        let mut state = gate.shared.lock();
        match state.limits.take(gate.system, Instant::now()) {
            Err(retry_after) => Err(retry_after),
            Ok(()) => Ok(state.faults.evaluate(
                gate.system,
                &arrival.method,
                &arrival.path,
                arrival.query.as_deref().unwrap_or_default(),
                &bytes,
            )),
        }
    };
    let outcome = match decision {
        Ok(outcome) => outcome,
        Err(retry_after) => {
            let response = rate_limited(gate.system, retry_after);
            return finish(&gate, arrival, response, None);
        }
    };
    if outcome.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(outcome.latency_ms)).await;
    }
    let echoed = outcome
        .action
        .as_ref()
        .filter(|action| action.echo_headers)
        .map(|_| headers_text(&parts.headers));
    if let Some(action) = &outcome.action
        && !action.after
    {
        let response = fault_response(gate.system, action, echoed.as_deref());
        return finish(&gate, arrival, response, Some(action.fault_id.clone()));
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    match outcome.action {
        Some(action) => {
            let response = fault_response(gate.system, &action, echoed.as_deref());
            finish(&gate, arrival, response, Some(action.fault_id))
        }
        None => finish(&gate, arrival, response, None),
    }
}

/// Every request header as `name: value` lines, as an echoing server quotes them.
fn headers_text(headers: &HeaderMap) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn finish(gate: &Gate, arrival: Arrival, response: Response, fault_id: Option<String>) -> Response {
    let status = response.status().as_u16();
    tracing::info!(
        system = gate.system.as_str(),
        method = %arrival.method,
        path = %arrival.path,
        status,
        fault_id = fault_id.as_deref(),
        "request"
    );
    gate.shared.lock().log.push(LogEntry {
        seq: 0,
        at: arrival.at,
        system: gate.system,
        method: arrival.method,
        path: arrival.path,
        query: arrival.query,
        status,
        idempotency_key: arrival.idempotency_key,
        body: arrival.body,
        fault_id,
    });
    response
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The 429 answer of the rate limiter. The kintone body uses code `CB_TO01`; the helpdesk body
/// uses code `rate_limited`.
fn rate_limited(system: System, retry_after: u64) -> Response {
    let body = match system {
        System::Kintone => kintone::error_body(
            "CB_TO01",
            "リクエスト数が上限を超えています。しばらくしてから再度お試しください。",
        ),
        System::Helpdesk => helpdesk::error_body(
            "rate_limited",
            "too many requests; retry after the Retry-After delay",
            None,
        ),
    };
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// The answer of a fault: its own body when given, else an error in the system's shape.
/// With `echoed` headers, the error message quotes them (and a given object body gets
/// them as `request_headers`).
fn fault_response(system: System, action: &FaultAction, echoed: Option<&str>) -> Response {
    let status = StatusCode::from_u16(action.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = action
        .body
        .clone()
        .unwrap_or_else(|| fault_body(system, status, echoed));
    if let (Some(text), Some(_), Some(obj)) = (echoed, &action.body, body.as_object_mut()) {
        obj.insert("request_headers".to_owned(), Value::from(text));
    }
    let mut response = (status, Json(body)).into_response();
    if let Some(retry_after) = &action.retry_after
        && let Ok(value) = HeaderValue::from_str(retry_after)
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn fault_body(system: System, status: StatusCode, echoed: Option<&str>) -> Value {
    let mut message = format!(
        "injected fault: {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    if let Some(headers) = echoed {
        message.push_str("; you sent:\n");
        message.push_str(headers);
    }
    match system {
        System::Kintone => {
            let code = match status.as_u16() {
                429 => "CB_TO01",
                503 => "GAIA_TE01",
                _ => "CB_UN01",
            };
            kintone::error_body(code, &message)
        }
        System::Helpdesk => {
            let code = match status.as_u16() {
                429 => "rate_limited",
                500 => "internal_error",
                502 => "bad_gateway",
                503 => "service_unavailable",
                504 => "gateway_timeout",
                _ => "injected_fault",
            };
            helpdesk::error_body(code, &message, None)
        }
    }
}

fn error_response(system: System, status: StatusCode, message: &str) -> Response {
    let body = match system {
        System::Kintone => kintone::error_body("CB_IJ01", message),
        System::Helpdesk => helpdesk::error_body("payload_too_large", message, None),
    };
    (status, Json(body)).into_response()
}
