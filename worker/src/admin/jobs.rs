//! The routes that start or report the background jobs and checks: resync, reconcile,
//! rule-change preview, schema checks, partner imports and API budgets.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::jobs::{Claimed, Job};

/// A job started in the background: 202 and what was started.
type Started = (StatusCode, Json<Value>);

/// A resync to start.
#[derive(serde::Deserialize)]
pub(super) struct ResyncRequest {
    rule: String,
    #[serde(default)]
    full: bool,
}

/// `GET /resync`: each rule's resync cursor.
pub(super) async fn resync_cursors(State(s): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let c = s.store.resync_cursors().await?;
    Ok(Json(json!({"resync": c})))
}

/// Claims the rule's resync lease here (so that a second start is refused with 409),
/// then scans in the background.
pub(super) async fn resync(
    State(s): State<AdminState>,
    Json(req): Json<ResyncRequest>,
) -> Result<Started, ApiError> {
    let publisher = s.broker.publisher().await?;
    held_back(&s, &req.rule, false).await?;
    start(&s, Job::Resync { full: req.full }, publisher, &req.rule).await
}

/// Claims the rule's job here (a second start is refused with 409), runs it to its
/// end in the background and logs how it ended; answers 202.
async fn start(
    s: &AdminState,
    job: Job,
    publisher: queue::Publisher,
    rule: &str,
) -> Result<Started, ApiError> {
    let job: Claimed = job.claim(&s.processor, rule).await?;
    let processor = Arc::clone(&s.processor);
    let names = s.broker.names().clone();
    let started = Json(json!({ "started": rule }));
    let rule = rule.to_owned();
    tokio::spawn(async move {
        match job.run(&processor, Some((&publisher, &names))).await {
            Ok(report) => tracing::info!(rule, done = report.summary(), "job done"),
            Err(e) => {
                tracing::warn!(rule, error = %e, "job stopped; a resync resumes from its cursor at its next run")
            }
        }
    });
    Ok((StatusCode::ACCEPTED, started))
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
) -> Result<Started, ApiError> {
    let publisher = s.broker.publisher().await?;
    held_back(&s, &req.rule, true).await?;
    let settle = req
        .settle_seconds
        .map(std::time::Duration::from_secs)
        .unwrap_or(s.ledger_settle);
    let job = Job::Reconcile {
        dry_run: req.dry_run,
        settle,
    };
    start(&s, job, publisher, &req.rule).await
}

/// Which runs.
#[derive(serde::Deserialize)]
pub(super) struct RunsQuery {
    #[serde(default)]
    rule: Option<String>,
}

/// `GET /reconcile`: the latest stored runs.
pub(super) async fn reconcile_runs(
    State(s): State<AdminState>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let runs = s.store.reconcile_runs(q.rule.as_deref(), 20).await?;
    Ok(Json(json!({"runs": runs})))
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

/// `POST /preview`: what the new rules would change on the rule's linked records.
pub(super) async fn preview(
    State(s): State<AdminState>,
    Json(req): Json<PreviewRequest>,
) -> Result<Json<crate::preview::PreviewReport>, ApiError> {
    let new = config::parse_rules("rules", &req.rules.to_string())
        .map_err(|e| ApiError::InvalidRules(e.to_string()))?;
    let records = req.records.min(MAX_PREVIEW_RECORDS);
    let report = crate::preview::preview(&s.processor, &new, &req.rule, records, req.since).await?;
    Ok(Json(report))
}

/// 409 `held_back` when an API budget holds a rule's background work back (its source;
/// with `both`, its target too), so that the operator hears why at once.
async fn held_back(s: &AdminState, rule: &str, both: bool) -> Result<(), ApiError> {
    let Some(spec) = s.processor.rules.rule(rule) else {
        return Ok(());
    };
    let mut systems = vec![spec.source.system.as_str()];
    if both {
        systems.push(&spec.target.system);
    }
    match crate::budget::hold(&s.processor, &systems).await? {
        None => Ok(()),
        Some(reason) => Err(ApiError::HeldBack(reason)),
    }
}

/// `GET /budget`: each system's API budget, use today and forecast.
pub(super) async fn budgets(State(s): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let systems = crate::budget::status(&s.processor).await?;
    Ok(Json(json!({"budgets": systems})))
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

/// `POST /import?rule=&file=&dry_run=`: imports the file in the body.
pub(super) async fn import(
    State(s): State<AdminState>,
    Query(q): Query<ImportQuery>,
    body: axum::body::Bytes,
) -> Result<Json<crate::import::ImportReport>, ApiError> {
    let publisher = if q.dry_run {
        None
    } else {
        Some(s.broker.publisher().await?)
    };
    let names = s.broker.names().clone();
    let file = q.file.unwrap_or_else(|| "upload".to_owned());
    let queue = publisher.as_ref().map(|p| (p, &names));
    let report = crate::import::import(&s.processor, queue, &q.rule, &file, &body, |_| {}).await?;
    Ok(Json(report))
}

/// `GET /import`: the latest stored imports.
pub(super) async fn imports(
    State(s): State<AdminState>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let runs = s.store.imports(q.rule.as_deref(), 20).await?;
    Ok(Json(json!({"imports": runs})))
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

/// `POST /schema-check`: checks the systems' schemas for drift now.
pub(super) async fn schema_check(
    State(s): State<AdminState>,
    Json(req): Json<SchemaCheckRequest>,
) -> Result<Json<Value>, ApiError> {
    use crate::schema::{Mode, check};
    let mode = match (req.dry_run, req.accept) {
        (true, true) => {
            return Err(ApiError::Invalid(
                "dry_run and accept exclude each other".into(),
            ));
        }
        (true, false) => Mode::DryRun,
        (false, true) => Mode::Accept,
        (false, false) => Mode::Record,
    };
    let checks = check(&s.processor, req.system.as_deref(), mode).await?;
    Ok(Json(json!({"checks": checks})))
}

/// Which system's checks.
#[derive(serde::Deserialize)]
pub(super) struct SystemQuery {
    #[serde(default)]
    system: Option<String>,
}

/// `GET /schema-check`: the latest check of each system (or one).
pub(super) async fn schema_checks(
    State(s): State<AdminState>,
    Query(q): Query<SystemQuery>,
) -> Result<Json<Value>, ApiError> {
    let checks = s.store.schema_checks_latest(q.system.as_deref()).await?;
    Ok(Json(json!({"checks": checks})))
}
