//! The routes about data-quality conflicts: the list, resolving one (queued for the
//! worker to apply) and dismissing one.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::auth::{Caller, Principal};
use super::{AdminState, ApiError};

/// `GET /conflicts?status=`: the conflicts with a status (open by default).
pub(super) async fn conflicts(
    State(s): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let status = q.get("status").map(String::as_str).unwrap_or("open");
    if !["open", "resolved", "dismissed"].contains(&status) {
        return Err(ApiError::BadStatus);
    }
    let rows = s.store.conflicts(status).await?;
    Ok(Json(json!({"conflicts": rows})))
}

/// Who is recorded as resolving: the token's name when the API has tokens, never what
/// the body says. Without tokens (a loopback-only API) the body's `by` is all there is.
fn actor(principal: Option<Principal>, r: &crate::ops::Resolution) -> String {
    match principal {
        Some(p) => p.name,
        None => {
            r.by.as_deref()
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(|b| b.chars().take(64).collect())
                .unwrap_or_else(|| "an operator".to_owned())
        }
    }
}

/// `POST /conflicts/{id}/resolve`: checks the resolution against the conflict and
/// queues it (202).
pub(super) async fn resolve(
    State(s): State<AdminState>,
    Caller(principal): Caller,
    Path(id): Path<i64>,
    Json(r): Json<crate::ops::Resolution>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let actor = actor(principal, &r);
    let publisher = s.broker.publisher().await?;
    crate::ops::resolve(
        &s.store,
        &s.processor.rules,
        &publisher,
        s.broker.names(),
        id,
        &r,
        &actor,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"conflict": id, "status": "resolution queued"})),
    ))
}

/// `POST /conflicts/{id}/dismiss`: closes an open conflict without acting on it.
pub(super) async fn dismiss(
    State(s): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    if !s.store.dismiss_conflict(id).await? {
        return Err(ApiError::NotOpen(id));
    }
    Ok(Json(json!({"conflict": id, "status": "dismissed"})))
}
