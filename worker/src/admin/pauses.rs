//! The routes that pause and resume a rule or a system, and show what is paused and
//! what is parked meanwhile.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::{AdminState, ApiError};

/// A rule or a system.
#[derive(serde::Deserialize)]
pub(super) struct Scope {
    scope: String,
    name: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /pause`: changes to the scope are parked until it is resumed.
pub(super) async fn pause(
    State(s): State<AdminState>,
    Json(req): Json<Scope>,
) -> Result<Json<Value>, ApiError> {
    crate::ops::pause(
        &s.store,
        &s.processor.rules,
        &req.scope,
        &req.name,
        req.reason.as_deref(),
    )
    .await?;
    Ok(Json(
        json!({"paused": {"scope": req.scope, "name": req.name}}),
    ))
}

/// `POST /resume`: the parked changes are written.
pub(super) async fn resume(
    State(s): State<AdminState>,
    Json(req): Json<Scope>,
) -> Result<Json<Value>, ApiError> {
    let was_paused =
        crate::ops::resume(&s.store, &s.processor.rules, &req.scope, &req.name).await?;
    Ok(Json(
        json!({"resumed": {"scope": req.scope, "name": req.name}, "was_paused": was_paused}),
    ))
}

/// `GET /paused`: what is paused, and what is parked.
pub(super) async fn paused(State(s): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let (paused, parked) = (s.store.paused().await, s.store.parked(None).await);
    let (paused, parked) = (paused?, parked?);
    let paused: Vec<_> = paused
        .into_iter()
        .map(|p| json!({"scope": p.scope, "name": p.name}))
        .collect();
    Ok(Json(json!({"paused": paused, "parked": parked})))
}
