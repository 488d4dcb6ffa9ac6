//! The worker's admin HTTP API: health, metrics, a record's story, open conflicts.
//! Timelines are rendered from the append-only history, never from logs.
//!
//! Every route goes through [`crate::auth::guard`]: `/healthz` and `/readyz` pass as
//! they are; the others pass the Host check, then need a bearer token with a role
//! strong enough for the route (`/metrics` only when a metrics token is configured).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use queue::Broker;
use serde_json::json;
use store::{DeadFilter, HistoryRow, Store};

use crate::auth::{Access, Principal};
use crate::metrics::Metrics;

mod console;
mod jobs;

use jobs::{
    budgets, import, imports, preview, reconcile, reconcile_runs, resync, resync_cursors,
    schema_check, schema_checks,
};

/// What the admin API reads.
#[derive(Clone)]
pub struct AdminState {
    /// The processor (rules and connectors, for rehydration).
    pub processor: Arc<crate::step::Processor>,
    /// The store.
    pub store: Store,
    /// The broker.
    pub broker: Arc<Broker>,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// How long an event with no outcome is in flight before the ledger calls it
    /// unaccounted.
    pub ledger_settle: std::time::Duration,
    /// The time zone timelines are rendered in unless a request names another.
    pub time_zone: chrono_tz::Tz,
}

impl AdminState {
    /// What a worker's admin API reads: the worker's own processor, store, broker and
    /// counters.
    pub fn of(worker: &crate::Worker) -> AdminState {
        AdminState {
            processor: worker.processor(),
            store: worker.store().clone(),
            broker: worker.broker(),
            metrics: worker.metrics(),
            ledger_settle: worker.settings().ledger_settle(),
            time_zone: worker.settings().time_zone,
        }
    }
}

/// The admin routes, behind `access` (see [`crate::auth`]). Build `access` with
/// [`Access::new`] or [`Access::from_env`] for the listener the router is served on:
/// either refuses an API without tokens on a non-loopback address.
pub fn router(state: AdminState, access: Access) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/records/{rule}/{record_id}", get(record))
        .route("/records/{rule}/{record_id}/timeline", get(timeline))
        .route("/issues", get(issues))
        .route("/rules/{rule}/history", get(rule_history))
        .route("/conflicts", get(conflicts))
        .route("/conflicts/{id}/resolve", post(resolve))
        .route("/conflicts/{id}/dismiss", post(dismiss))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{id}", get(dead_letter))
        .route("/dead-letters/replay", post(replay))
        .route("/dead-letters/purge", post(purge))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/paused", get(paused))
        .route("/rehydrate", post(rehydrate))
        .route("/resync", get(resync_cursors).post(resync))
        .route("/ledger", get(ledger))
        .route("/reconcile", get(reconcile_runs).post(reconcile))
        .route("/preview", post(preview))
        .route("/schema-check", get(schema_checks).post(schema_check))
        .route("/budget", get(budgets))
        .route(
            "/import",
            get(imports)
                .post(import)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::import::MAX_FILE_BYTES,
                )),
        )
        .route_layer(middleware::from_fn_with_state(
            access.clone(),
            crate::auth::guard,
        ))
        .with_state(state.clone())
        .merge(console::router(state, access))
}

fn failed(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": {"code": "unavailable", "message": e.to_string()}})),
    )
        .into_response()
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if let Err(e) = s.store.ping().await {
        return failed(e);
    }
    if !s.broker.is_connected() {
        return failed("the broker is not connected");
    }
    (StatusCode::OK, "ready").into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    // The gauges are read now; the counters and histograms are the process's own.
    if let Ok(p) = s.broker.publisher().await {
        let names = s.broker.names();
        for (label, q) in [("work", names.work_queue()), ("dead", names.dead_queue())] {
            if let Ok(n) = p.queue_depth(&q).await {
                s.metrics.queue_depth(label, n);
            }
        }
    }
    if let Ok(open) = s.store.conflicts("open").await {
        let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
        for c in &open {
            *kinds.entry(c.kind.as_str()).or_default() += 1;
        }
        let oldest = open
            .iter()
            .map(|c| c.opened_at)
            .min()
            .and_then(|at| (chrono::Utc::now() - at).to_std().ok());
        s.metrics.open_conflicts(kinds, oldest);
    }
    // The ledger's last recount (one row per rule), never a scan of the deliveries.
    if let Ok(by_rule) = s.store.unaccounted_rolled_up().await {
        let by_rule: Vec<(String, i64)> = by_rule
            .into_iter()
            .map(|r| (r.rule, r.unaccounted))
            .collect();
        s.metrics.unaccounted(&by_rule);
    }
    if let Ok(budgets) = crate::budget::status(&s.processor).await {
        let figures: Vec<(String, u64, u64, u64)> = budgets
            .into_iter()
            .map(|b| (b.system, b.budget, b.usage.used_today, b.forecast))
            .collect();
        s.metrics.api_budgets(&figures);
    }
    if let Ok(checks) = s.store.schema_checks_latest(None).await {
        let latest: Vec<(String, String, i64, i64)> = checks
            .into_iter()
            .map(|c| {
                let all = c.drift.as_array().map_or(0, Vec::len) as i64;
                let breaking = i64::from(c.breaking);
                (c.system, c.app, breaking, all - breaking)
            })
            .collect();
        s.metrics.schema_drift(&latest);
    }
    (
        [(header::CONTENT_TYPE, config::telemetry::CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

async fn record(
    State(s): State<AdminState>,
    Path((rule, record_id)): Path<(String, String)>,
) -> Response {
    match record_view(&s, &rule, &record_id).await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": format!("no history for record {record_id} under rule {rule}")}}))).into_response(),
        Err(e) => failed(e),
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
) -> Result<Option<serde_json::Value>, store::StoreError> {
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

async fn timeline(
    State(s): State<AdminState>,
    Path((rule, record_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let tz = match q.get("tz").map(|name| domain::history::time_zone(name)) {
        None => s.time_zone,
        Some(Ok(tz)) => tz,
        Some(Err(message)) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"code": "bad_time_zone", "message": message}})),
            )
                .into_response();
        }
    };
    match s.store.history(&rule, &record_id).await {
        Ok(rows) if rows.is_empty() => (
            StatusCode::NOT_FOUND,
            format!("no history for record {record_id} under rule {rule}\n"),
        )
            .into_response(),
        Ok(rows) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            render_timeline(&rows, tz),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

async fn conflicts(
    State(s): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let status = q.get("status").map(String::as_str).unwrap_or("open");
    if !["open", "resolved", "dismissed"].contains(&status) {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "bad_status", "message": "status is open, resolved or dismissed"}}))).into_response();
    }
    match s.store.conflicts(status).await {
        Ok(rows) => Json(json!({"conflicts": rows})).into_response(),
        Err(e) => failed(e),
    }
}

async fn dead_letters(State(s): State<AdminState>, Query(filter): Query<DeadFilter>) -> Response {
    match s.store.dead_letters(&filter, 1_000).await {
        Ok(rows) => Json(json!({"dead_letters": rows})).into_response(),
        Err(e) => failed(e),
    }
}

async fn dead_letter(State(s): State<AdminState>, Path(id): Path<i64>) -> Response {
    match s.store.dead_letter(id).await {
        Ok(Some(row)) => {
            let body: serde_json::Value = serde_json::from_slice(&row.body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&row.body).into_owned())
            });
            Json(json!({"dead_letter": row, "body": body})).into_response()
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"error": {"code": "not_found", "message": format!("no dead letter {id}")}}),
            ),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

async fn replay(State(s): State<AdminState>, Json(filter): Json<DeadFilter>) -> Response {
    let publisher = match s.broker.publisher().await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    match crate::dlq::replay(&s.store, &publisher, s.broker.names(), &filter).await {
        Ok(ids) => Json(json!({"replayed": ids})).into_response(),
        Err(e) => failed(e),
    }
}

/// A purge names its filter and says it means it.
#[derive(serde::Deserialize)]
struct PurgeRequest {
    #[serde(flatten)]
    filter: DeadFilter,
    #[serde(default)]
    confirm: bool,
}

async fn purge(State(s): State<AdminState>, Json(req): Json<PurgeRequest>) -> Response {
    if !req.confirm {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "confirm", "message": "a purge deletes dead letters for good: send \"confirm\": true"}}))).into_response();
    }
    match s.store.purge_dead_letters(&req.filter).await {
        Ok(n) => Json(json!({"purged": n})).into_response(),
        Err(e) => failed(e),
    }
}

/// A rule or a system.
#[derive(serde::Deserialize)]
struct Scope {
    scope: String,
    name: String,
    #[serde(default)]
    reason: Option<String>,
}

fn ops_error(e: crate::ops::OpsError) -> Response {
    use crate::ops::OpsError;
    let unprocessable = |code: &str, e: &OpsError| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"code": code, "message": e.to_string()}})),
        )
            .into_response()
    };
    match e {
        OpsError::NotACandidate { .. } => unprocessable("not_a_candidate", &e),
        OpsError::AlreadyLinked { .. } => unprocessable("already_linked", &e),
        OpsError::Invalid(_) => unprocessable("invalid", &e),
        OpsError::Unknown(m) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": m}})),
        )
            .into_response(),
        OpsError::Connector(c) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": {"code": "source_failed", "message": c.to_string()}})),
        )
            .into_response(),
        other => failed(other),
    }
}

async fn pause(State(s): State<AdminState>, Json(req): Json<Scope>) -> Response {
    match crate::ops::pause(
        &s.store,
        &s.processor.rules,
        &req.scope,
        &req.name,
        req.reason.as_deref(),
    )
    .await
    {
        Ok(()) => Json(json!({"paused": {"scope": req.scope, "name": req.name}})).into_response(),
        Err(e) => ops_error(e),
    }
}

async fn resume(State(s): State<AdminState>, Json(req): Json<Scope>) -> Response {
    match crate::ops::resume(&s.store, &s.processor.rules, &req.scope, &req.name).await {
        Ok(was_paused) => Json(
            json!({"resumed": {"scope": req.scope, "name": req.name}, "was_paused": was_paused}),
        )
        .into_response(),
        Err(e) => ops_error(e),
    }
}

async fn paused(State(s): State<AdminState>) -> Response {
    let (paused, parked) = match (s.store.paused().await, s.store.parked(None).await) {
        (Ok(p), Ok(k)) => (p, k),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    let paused: Vec<_> = paused
        .into_iter()
        .map(|p| json!({"scope": p.scope, "name": p.name}))
        .collect();
    Json(json!({"paused": paused, "parked": parked})).into_response()
}

/// What to rehydrate.
#[derive(serde::Deserialize)]
struct RehydrateRequest {
    rule: String,
    #[serde(default)]
    record_id: Option<String>,
}

async fn rehydrate(State(s): State<AdminState>, Json(req): Json<RehydrateRequest>) -> Response {
    let publisher = match s.broker.publisher().await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    match crate::ops::rehydrate(
        &s.processor,
        &publisher,
        s.broker.names(),
        &req.rule,
        req.record_id.as_deref(),
    )
    .await
    {
        Ok(ids) => Json(json!({"queued": ids})).into_response(),
        Err(e) => ops_error(e),
    }
}

#[derive(serde::Deserialize)]
struct LedgerQuery {
    #[serde(default)]
    rule: Option<String>,
    /// Overrides the settle time (seconds).
    #[serde(default)]
    settle_seconds: Option<u64>,
}

async fn ledger(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<LedgerQuery>,
) -> Response {
    let settle = q
        .settle_seconds
        .map(std::time::Duration::from_secs)
        .unwrap_or(s.ledger_settle);
    match s.store.ledger(q.rule.as_deref(), settle).await {
        Ok(l) => Json(crate::ops::ledger_json(&l, settle)).into_response(),
        Err(e) => failed(e),
    }
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

async fn resolve(
    State(s): State<AdminState>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<i64>,
    Json(r): Json<crate::ops::Resolution>,
) -> Response {
    let actor = actor(principal.map(|Extension(p)| p), &r);
    let publisher = match s.broker.publisher().await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    match crate::ops::resolve(
        &s.store,
        &s.processor.rules,
        &publisher,
        s.broker.names(),
        id,
        &r,
        &actor,
    )
    .await
    {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"conflict": id, "status": "resolution queued"})),
        )
            .into_response(),
        Err(e) => ops_error(e),
    }
}

async fn dismiss(State(s): State<AdminState>, Path(id): Path<i64>) -> Response {
    match s.store.dismiss_conflict(id).await {
        Ok(true) => Json(json!({"conflict": id, "status": "dismissed"})).into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"error": {"code": "not_open", "message": format!("no open conflict {id}")}}),
            ),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

/// Open problems, separated: what retrying (or a replay) can fix, and what a person must
/// fix in the data.
async fn issues(State(s): State<AdminState>) -> Response {
    let dead = match s
        .store
        .dead_letters(&store::DeadFilter::default(), 1_000)
        .await
    {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let parked = match s.store.parked(None).await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let conflicts = match s.store.conflicts("open").await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    Json(json!({
        "retryable": {"dead_letters": dead, "parked": parked},
        "data_quality": {"conflicts": conflicts},
    }))
    .into_response()
}

/// A rule's recent history, and its counts by kind (the mismatch reasons among them).
async fn rule_history(
    State(s): State<AdminState>,
    Path(rule): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .min(1_000);
    match (
        s.store.rule_history(&rule, limit).await,
        s.store.history_counts(Some(&rule)).await,
    ) {
        (Ok(rows), Ok(counts)) => {
            let counts: serde_json::Map<String, serde_json::Value> = counts
                .into_iter()
                .map(|c| (c.kind, json!(c.count)))
                .collect();
            Json(json!({"rule": rule, "counts": counts, "history": rows})).into_response()
        }
        (Err(e), _) | (_, Err(e)) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The OpenAPI document names every route the router serves, and only those.
    #[test]
    fn the_openapi_document_matches_the_routes() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).expect("openapi.json is JSON");
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        // The router, not this test, which names routes too.
        let source = include_str!("mod.rs")
            .split("#[cfg(test)]")
            .next()
            .expect("the source");
        // `.route("/path", ...)`, on one line or, formatted, on the next.
        let routed: BTreeSet<String> = source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
            .map(str::to_owned)
            .collect();
        assert_eq!(documented, routed);
    }

    /// The role each operation states in the OpenAPI document (`x-role`) is the role
    /// the middleware asks for, and every role in the table is documented, so no route
    /// falls to the `admin` default unnoticed.
    #[test]
    fn the_openapi_document_states_each_routes_role() {
        use crate::auth::{ROUTE_ROLES, Requirement, requirement};
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).expect("openapi.json is JSON");
        let mut checked = 0;
        for (path, operations) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in operations.as_object().expect("operations") {
                let method: axum::http::Method =
                    method.to_uppercase().parse().expect("an HTTP method");
                let expected = match requirement(&method, path) {
                    Requirement::Open => "none",
                    Requirement::Metrics => "metrics",
                    Requirement::Role(role) => role.as_str(),
                };
                assert_eq!(operation["x-role"], expected, "{method} {path}");
                checked += 1;
            }
        }
        for (method, path, _) in ROUTE_ROLES {
            assert!(
                doc["paths"][path][method.to_lowercase()].is_object(),
                "{method} {path} has a role but is not documented"
            );
        }
        // The open ones: /healthz, /readyz, /metrics.
        assert_eq!(checked, ROUTE_ROLES.len() + 3, "every operation is checked");
    }
}
