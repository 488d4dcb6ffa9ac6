//! The routes that start or report the background jobs and checks: resync, reconcile,
//! rule-change preview, schema checks, partner imports and API budgets.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AdminState, failed};

/// A resync to start.
#[derive(serde::Deserialize)]
pub(super) struct ResyncRequest {
    rule: String,
    #[serde(default)]
    full: bool,
}

/// Which ledger.
pub(super) async fn resync_cursors(State(s): State<AdminState>) -> Response {
    match s.store.resync_cursors().await {
        Ok(c) => Json(json!({"resync": c})).into_response(),
        Err(e) => failed(e),
    }
}

/// Claims the rule's resync lease here (so that a second start is refused with 409),
/// then scans in the background.
pub(super) async fn resync(
    State(s): State<AdminState>,
    Json(req): Json<ResyncRequest>,
) -> Response {
    use crate::resync::{PAGE_SIZE, ResyncJob};
    let publisher = match s.broker.publisher().await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    if let Some(refused) = held_back(&s, &req.rule, false).await {
        return refused;
    }
    let job = match ResyncJob::claim(&s.processor, &req.rule).await {
        Ok(job) => job,
        Err(e) => return claim_refused(e),
    };
    let processor = Arc::clone(&s.processor);
    let names = s.broker.names().clone();
    let rule = req.rule.clone();
    tokio::spawn(async move {
        match job
            .run(&processor, &publisher, &names, req.full, PAGE_SIZE)
            .await
        {
            Ok(r) => {
                tracing::info!(rule = %r.rule, listed = r.listed, queued = r.queued, "resync done")
            }
            Err(e) => {
                tracing::warn!(rule = %req.rule, error = %e, "resync stopped; the next run resumes from its cursor")
            }
        }
    });
    (StatusCode::ACCEPTED, Json(json!({"started": rule}))).into_response()
}

/// A reconcile to start.
#[derive(serde::Deserialize)]
pub(super) struct ReconcileRequest {
    rule: String,
    #[serde(default)]
    dry_run: bool,
    /// Leave out records that moved within this many seconds (default: the ledger's
    /// settle time).
    #[serde(default)]
    settle_seconds: Option<u64>,
}

/// Claims the rule's reconcile lease here (a second start is refused with 409), then
/// compares in the background; `GET /reconcile` shows the stored run.
pub(super) async fn reconcile(
    State(s): State<AdminState>,
    Json(req): Json<ReconcileRequest>,
) -> Response {
    use crate::reconcile::ReconcileJob;
    let publisher = match s.broker.publisher().await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    if let Some(refused) = held_back(&s, &req.rule, true).await {
        return refused;
    }
    let job = match ReconcileJob::claim(&s.processor, &req.rule).await {
        Ok(job) => job,
        Err(e) => return claim_refused(e),
    };
    let processor = Arc::clone(&s.processor);
    let names = s.broker.names().clone();
    let settle = req
        .settle_seconds
        .map(std::time::Duration::from_secs)
        .unwrap_or(s.ledger_settle);
    let rule = req.rule.clone();
    tokio::spawn(async move {
        match job
            .run(&processor, Some((&publisher, &names)), req.dry_run, settle)
            .await
        {
            Ok(r) => {
                tracing::info!(rule = %r.rule, run = r.run, apart = r.records_apart, "reconcile done")
            }
            Err(e) => tracing::warn!(rule = %req.rule, error = %e, "reconcile stopped"),
        }
    });
    (StatusCode::ACCEPTED, Json(json!({"started": rule}))).into_response()
}

/// Which runs.
#[derive(serde::Deserialize)]
pub(super) struct RunsQuery {
    #[serde(default)]
    rule: Option<String>,
}

pub(super) async fn reconcile_runs(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<RunsQuery>,
) -> Response {
    match s.store.reconcile_runs(q.rule.as_deref(), 20).await {
        Ok(runs) => Json(json!({"runs": runs})).into_response(),
        Err(e) => failed(e),
    }
}

/// A rule change to preview: the whole new rules document, the rule, how many of its
/// linked records to read.
#[derive(serde::Deserialize)]
pub(super) struct PreviewRequest {
    rule: String,
    rules: serde_json::Value,
    #[serde(default = "default_preview_records")]
    records: usize,
    /// Only the linked records synced at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

fn default_preview_records() -> usize {
    100
}

/// Most linked records one preview reads (each costs a request to both systems).
const MAX_PREVIEW_RECORDS: usize = 1_000;

pub(super) async fn preview(
    State(s): State<AdminState>,
    Json(req): Json<PreviewRequest>,
) -> Response {
    use crate::preview::PreviewError;
    let new = match config::parse_rules("rules", &req.rules.to_string()) {
        Ok(rules) => rules,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": {"code": "invalid_rules", "message": e.to_string()}})),
            )
                .into_response();
        }
    };
    let records = req.records.min(MAX_PREVIEW_RECORDS);
    match crate::preview::preview(&s.processor, &new, &req.rule, records, req.since).await {
        Ok(report) => Json(report).into_response(),
        Err(e @ (PreviewError::UnknownRule(_) | PreviewError::NotInNewRules(_))) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": e.to_string()}})),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

/// 409 `held_back` when an API budget holds a rule's background work back (its source;
/// with `both`, its target too), so that the operator hears why at once.
pub(super) async fn held_back(s: &AdminState, rule: &str, both: bool) -> Option<Response> {
    let spec = s.processor.rules.rule(rule)?;
    let mut systems = vec![spec.source.system.as_str()];
    if both {
        systems.push(&spec.target.system);
    }
    match crate::budget::hold(&s.processor, &systems).await {
        Ok(None) => None,
        Ok(Some(reason)) => Some(
            (
                StatusCode::CONFLICT,
                Json(json!({"error": {"code": "held_back", "message": reason}})),
            )
                .into_response(),
        ),
        Err(e) => Some(failed(e)),
    }
}

/// Why a resync or reconcile could not start: 404 for an unknown rule, 409 while one
/// runs, else a failure.
pub(super) async fn budgets(State(s): State<AdminState>) -> Response {
    match crate::budget::status(&s.processor).await {
        Ok(systems) => Json(json!({"budgets": systems})).into_response(),
        Err(e) => failed(e),
    }
}

/// A partner file to import: the body is the file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportQuery {
    rule: String,
    /// The file's name, for the history (default `upload`); `.csv`, `.jsonl` or
    /// `.ndjson` say its format.
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn import(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<ImportQuery>,
    body: axum::body::Bytes,
) -> Response {
    use crate::import::ImportError;
    let publisher = if q.dry_run {
        None
    } else {
        match s.broker.publisher().await {
            Ok(p) => Some(p),
            Err(e) => return failed(e),
        }
    };
    let names = s.broker.names().clone();
    let file = q.file.unwrap_or_else(|| "upload".to_owned());
    let queue = publisher.as_ref().map(|p| (p, &names));
    match crate::import::import(&s.processor, queue, &q.rule, &file, &body, |_| {}).await {
        Ok(report) => Json(report).into_response(),
        Err(e @ ImportError::UnknownRule(_)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": e.to_string()}})),
        )
            .into_response(),
        Err(ImportError::Unreadable { file, problems }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"code": "unreadable", "message": format!("{file}: nothing was imported"), "problems": problems}})),
        )
            .into_response(),
        Err(e @ ImportError::NotAFileSource { .. }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"code": "not_a_file_source", "message": e.to_string()}})),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

pub(super) async fn imports(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<RunsQuery>,
) -> Response {
    match s.store.imports(q.rule.as_deref(), 20).await {
        Ok(runs) => Json(json!({"imports": runs})).into_response(),
        Err(e) => failed(e),
    }
}

/// A schema-drift check to run now.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct SchemaCheckRequest {
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    accept: bool,
}

pub(super) async fn schema_check(
    State(s): State<AdminState>,
    Json(req): Json<SchemaCheckRequest>,
) -> Response {
    use crate::schema::{Mode, SchemaError, check};
    let mode = match (req.dry_run, req.accept) {
        (true, true) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": {"code": "invalid", "message": "dry_run and accept exclude each other"}})),
            )
                .into_response();
        }
        (true, false) => Mode::DryRun,
        (false, true) => Mode::Accept,
        (false, false) => Mode::Record,
    };
    match check(&s.processor, req.system.as_deref(), mode).await {
        Ok(checks) => Json(json!({"checks": checks})).into_response(),
        Err(e @ SchemaError::UnknownSystem(_)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": e.to_string()}})),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

/// Which system's checks.
#[derive(serde::Deserialize)]
pub(super) struct SystemQuery {
    #[serde(default)]
    system: Option<String>,
}

pub(super) async fn schema_checks(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<SystemQuery>,
) -> Response {
    match s.store.schema_checks_latest(q.system.as_deref()).await {
        Ok(checks) => Json(json!({"checks": checks})).into_response(),
        Err(e) => failed(e),
    }
}

fn claim_refused(e: crate::resync::ResyncError) -> Response {
    use crate::resync::ResyncError;
    let (status, code) = match &e {
        ResyncError::UnknownRule(_) => (StatusCode::NOT_FOUND, "not_found"),
        ResyncError::AlreadyRunning(_) => (StatusCode::CONFLICT, "already_running"),
        _ => return failed(e),
    };
    (
        status,
        Json(json!({"error": {"code": code, "message": e.to_string()}})),
    )
        .into_response()
}
