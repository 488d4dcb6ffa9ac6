//! The ledger route: per rule, every accepted event and what became of it, and what
//! is unaccounted for.

use axum::Json;
use axum::extract::{Query, State};
use serde_json::Value;

use super::{AdminState, ApiError};

/// Which ledger.
#[derive(serde::Deserialize)]
pub(super) struct LedgerQuery {
    #[serde(default)]
    rule: Option<String>,
    /// Overrides the settle time (seconds).
    #[serde(default)]
    settle_seconds: Option<u64>,
}

/// `GET /ledger`: the ledger of a rule (or all), with events in flight longer than the
/// settle time counted as unaccounted.
pub(super) async fn ledger(
    State(s): State<AdminState>,
    Query(q): Query<LedgerQuery>,
) -> Result<Json<Value>, ApiError> {
    let settle = q
        .settle_seconds
        .map(std::time::Duration::from_secs)
        .unwrap_or(s.ledger_settle);
    let l = s.store.ledger(q.rule.as_deref(), settle).await?;
    Ok(Json(crate::ops::ledger_json(&l, settle)))
}
