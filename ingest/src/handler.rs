//! The HTTP handlers: `POST /webhooks/{system}` (the token check, the bounded body
//! read under the shared byte budget, then preparation and publishing), `/readyz` and
//! `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::prepare::prepare;
use crate::publish::publish;
use crate::refusal::Refusal;
use crate::server::{AppState, Auth};
use crate::signature::verify_token;

pub(crate) async fn webhook(
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

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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
    publish(state, system, &prepared).await?;
    Ok(prepared.event_id)
}

pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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

pub(crate) async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
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
}
