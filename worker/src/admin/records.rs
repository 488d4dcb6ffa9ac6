//! The routes about records: a record's story (`/records/...`), its timeline as text,
//! a rule's recent history, the open issues, and rehydration.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use store::HistoryRow;

use super::{AdminState, ApiError};

/// `GET /records/{rule}/{record_id}`: [`record_view`], or 404.
pub(super) async fn record(
    State(s): State<AdminState>,
    Path((rule, record_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    match record_view(&s, &rule, &record_id).await? {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::NotFound(format!(
            "no history for record {record_id} under rule {rule}"
        ))),
    }
}

/// A record under a rule: its link, each mapped field with its owner, strategy, value
/// and last change, its outbound operations and its history; `None` when the record
/// has neither a link nor a history. The admin API answers it as JSON, the console
/// renders it.
pub(crate) async fn record_view(
    s: &AdminState,
    rule: &str,
    record_id: &str,
) -> Result<Option<Value>, store::StoreError> {
    let history = s.store.history(rule, record_id).await?;
    let link = s.store.link(rule, record_id).await?;
    if history.is_empty() && link.is_none() {
        return Ok(None);
    }
    let state = link.as_ref().and_then(|l| l.state.clone());
    let fields = s.processor.rules.rule(rule).map(|r| {
        r.fields
            .iter()
            .map(|f| {
                let st = state.as_ref();
                json!({
                    "field": f.target,
                    "source_field": f.source,
                    "owner": match f.owner_of(r) { domain::authority::Owner::Shared => "shared".to_owned(), domain::authority::Owner::System(s) => s },
                    "strategy": f.strategy_of(r).as_str(),
                    "value": st.map(|s| s["canonical"][&f.target].clone()),
                    "last_changed_by": st.map(|s| s["field_versions"][&f.target]["by"].clone()),
                    "last_changed_at_version": st.map(|s| s["field_versions"][&f.target]["vv"].clone()),
                })
            })
            .collect::<Vec<_>>()
    });
    let version = state.as_ref().map(|s| s["vv"].clone());
    let ops = s.store.ops(rule, record_id).await.unwrap_or_default();
    let ops: Vec<_> = ops
        .into_iter()
        .map(|o| json!({"system": o.system, "status": o.status, "fields": o.fields}))
        .collect();
    Ok(Some(
        json!({"rule": rule, "record_id": record_id, "link": link, "version": version, "fields": fields, "outbound": ops, "history": history}),
    ))
}

/// A record's timeline as plain text, one line per step: `2026-11-30T10:08:03Z
/// <summary>` (UTC, marked).
pub fn render_timeline(rows: &[HistoryRow], tz: chrono_tz::Tz) -> String {
    rows.iter()
        .map(|r| format!("{} {}\n", domain::history::local_time(r.at, tz), r.summary))
        .collect()
}

/// `GET /records/{rule}/{record_id}/timeline`: [`render_timeline`] in the worker's
/// time zone or `?tz=`.
pub(super) async fn timeline(
    State(s): State<AdminState>,
    Path((rule, record_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let tz = match q.get("tz") {
        None => s.time_zone,
        Some(name) => domain::history::time_zone(name).map_err(ApiError::BadTimeZone)?,
    };
    let rows = s.store.history(&rule, &record_id).await?;
    if rows.is_empty() {
        return Err(ApiError::NoHistory { rule, record_id });
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        render_timeline(&rows, tz),
    ))
}

/// `GET /issues`: open problems, separated: what retrying (or a replay) can fix, and
/// what a person must fix in the data.
pub(super) async fn issues(State(s): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let dead = s
        .store
        .dead_letters(&store::DeadFilter::default(), 1_000)
        .await?;
    let parked = s.store.parked(None).await?;
    let conflicts = s.store.conflicts("open").await?;
    Ok(Json(json!({
        "retryable": {"dead_letters": dead, "parked": parked},
        "data_quality": {"conflicts": conflicts},
    })))
}

/// `GET /rules/{rule}/history`: a rule's recent history, and its counts by kind (the
/// mismatch reasons among them).
pub(super) async fn rule_history(
    State(s): State<AdminState>,
    Path(rule): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .min(1_000);
    let (rows, counts) = (
        s.store.rule_history(&rule, limit).await,
        s.store.history_counts(Some(&rule)).await,
    );
    let (rows, counts) = (rows?, counts?);
    let counts: serde_json::Map<String, Value> = counts
        .into_iter()
        .map(|c| (c.kind, json!(c.count)))
        .collect();
    Ok(Json(
        json!({"rule": rule, "counts": counts, "history": rows}),
    ))
}

/// What to rehydrate.
#[derive(serde::Deserialize)]
pub(super) struct RehydrateRequest {
    rule: String,
    #[serde(default)]
    record_id: Option<String>,
}

/// `POST /rehydrate`: queues a rule's records (or one) to be read again from the source.
pub(super) async fn rehydrate(
    State(s): State<AdminState>,
    Json(req): Json<RehydrateRequest>,
) -> Result<Json<Value>, ApiError> {
    let publisher = s.broker.publisher().await?;
    let ids = crate::ops::rehydrate(
        &s.processor,
        &publisher,
        s.broker.names(),
        &req.rule,
        req.record_id.as_deref(),
    )
    .await?;
    Ok(Json(json!({"queued": ids})))
}
