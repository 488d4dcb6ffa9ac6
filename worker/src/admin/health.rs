//! The routes a load balancer and Prometheus call: `/healthz`, `/readyz` and
//! `/metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{AdminState, ApiError};

/// `GET /healthz`: the process answers.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: PostgreSQL answers and the broker is connected.
pub(super) async fn readyz(State(s): State<AdminState>) -> Result<&'static str, ApiError> {
    s.store.ping().await?;
    if !s.broker.is_connected() {
        return Err(ApiError::unavailable("the broker is not connected"));
    }
    Ok("ready")
}

/// `GET /metrics`: the gauges are read now; the counters and histograms are the
/// process's own.
pub(super) async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let names = s.broker.names();
    for (label, q) in [("work", names.work_queue()), ("dead", names.dead_queue())] {
        if let Ok(n) = s.broker.queue_depth(&q).await {
            s.metrics.queue_depth(label, n);
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
}
