//! The routes about dead letters: the list, one with its body, replaying and purging.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};
use store::DeadFilter;

use super::{AdminState, ApiError};

/// `GET /dead-letters`: those matching the filter.
pub(super) async fn dead_letters(
    State(s): State<AdminState>,
    Query(filter): Query<DeadFilter>,
) -> Result<Json<Value>, ApiError> {
    let rows = s.store.dead_letters(&filter, 1_000).await?;
    Ok(Json(json!({"dead_letters": rows})))
}

/// `GET /dead-letters/{id}`: one, with its body as JSON (as text when it is not JSON).
pub(super) async fn dead_letter(
    State(s): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let Some(row) = s.store.dead_letter(id).await? else {
        return Err(ApiError::NotFound(format!("no dead letter {id}")));
    };
    let body: Value = serde_json::from_slice(&row.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&row.body).into_owned()));
    Ok(Json(json!({"dead_letter": row, "body": body})))
}

/// `POST /dead-letters/replay`: republishes those matching the filter.
pub(super) async fn replay(
    State(s): State<AdminState>,
    Json(filter): Json<DeadFilter>,
) -> Result<Json<Value>, ApiError> {
    let publisher = s.broker.publisher().await?;
    let ids = crate::dlq::replay(&s.store, &publisher, s.broker.names(), &filter).await?;
    Ok(Json(json!({"replayed": ids})))
}

/// A purge names its filter and says it means it.
#[derive(serde::Deserialize)]
pub(super) struct PurgeRequest {
    #[serde(flatten)]
    filter: DeadFilter,
    #[serde(default)]
    confirm: bool,
}

/// `POST /dead-letters/purge`: deletes those matching the filter, for good.
pub(super) async fn purge(
    State(s): State<AdminState>,
    Json(req): Json<PurgeRequest>,
) -> Result<Json<Value>, ApiError> {
    if !req.confirm {
        return Err(ApiError::Unconfirmed);
    }
    let n = s.store.purge_dead_letters(&req.filter).await?;
    Ok(Json(json!({"purged": n})))
}
