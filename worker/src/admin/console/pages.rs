//! The console's overview and reconcile pages, and what every page shares: its
//! context, the failure and refusal pages, times, values as text, and confirmations.
//!
//! A console page is a handler here or in its resource's module (`records.rs`,
//! `conflicts.rs`, `dead_letters.rs`, `rules.rs`) and a template in
//! `worker/console/templates/`; an action is the same operation as its API route, then
//! a redirect back to the page with a short confirmation.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use store::DeadFilter;

use super::{ConsoleState, Session, message_page, render};
use crate::ops::OpsError;

/// A page's context: the session's part, the page's title and navigation key, and the
/// page's own values.
pub(super) fn page(session: &Session, nav: &str, title: &str, values: Value) -> Value {
    let mut ctx = session.context();
    ctx["nav"] = json!(nav);
    ctx["title"] = json!(title);
    if let Value::Object(values) = values {
        for (k, v) in values {
            ctx[k] = v;
        }
    }
    ctx
}

/// A store or broker failure, as a page.
pub(super) fn unavailable(e: impl std::fmt::Display) -> Response {
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Not available",
        &format!(
            "The console could not read what it needs: {e}. Try again in a moment; if it lasts, check the worker's health on the overview."
        ),
    )
}

/// An operation refused: why, in the operation's own words.
pub(super) fn refused(e: OpsError) -> Response {
    let status = match e {
        OpsError::NotACandidate { .. } | OpsError::AlreadyLinked { .. } | OpsError::Invalid(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        OpsError::Unknown(_) => StatusCode::NOT_FOUND,
        OpsError::Connector(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    message_page(status, "Not done", &e.to_string())
}

/// A time as the console shows it, in the worker's time zone.
pub(super) fn at(s: &ConsoleState, t: chrono::DateTime<chrono::Utc>) -> String {
    domain::history::local_time(t, s.admin.time_zone)
}

/// A value as a short line of text: a string as it is, anything else as JSON.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A confirmation named by a fixed code, so a crafted link cannot put words in it.
pub(super) fn done(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "resolved" => {
            "The resolution is queued: the worker applies it in a moment, and the record's timeline will say so."
        }
        "dismissed" => "The conflict is dismissed.",
        "replayed" => {
            "The dead letter is queued again: the worker refetches the record, so nothing stale is written."
        }
        "paused" => "Paused. Changes are parked, nothing is lost, and resuming writes them.",
        "resumed" => "Resumed. Parked changes are being written.",
        _ => return None,
    })
}

/// The console's address of a record's page.
pub(super) fn record_path(rule: &str, record: &str) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    format!("/console/records/{}/{}", enc(rule), enc(record))
}

#[derive(serde::Deserialize)]
pub(super) struct Done {
    #[serde(default)]
    pub(super) done: Option<String>,
}

pub(super) async fn overview(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
) -> Response {
    let a = &s.admin;
    let database = match a.store.ping().await {
        Ok(()) => json!({"ok": true, "text": "answering"}),
        Err(e) => json!({"ok": false, "text": e.to_string()}),
    };
    let broker_ok = a.broker.is_connected();
    let mut queues = vec![];
    if broker_ok {
        let names = a.broker.names();
        for (label, hint, q) in [
            (
                "Waiting to be processed",
                "changes the workers have not taken yet",
                names.work_queue(),
            ),
            (
                "Dead-letter queue",
                "failed every attempt, not yet stored for replay",
                names.dead_queue(),
            ),
        ] {
            let depth = a.broker.queue_depth(&q).await.ok();
            queues.push(json!({"name": label, "hint": hint, "depth": depth}));
        }
    }
    let ledger = match a.store.ledger(None, a.ledger_settle).await {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let rules: Vec<Value> = ledger
        .iter()
        .map(|l| {
            json!({
                "rule": l.rule, "accepted": l.accepted, "synced": l.synced,
                "skipped": l.skipped.values().sum::<i64>(), "conflicts": l.conflicts,
                "dead_lettered": l.dead_lettered, "parked": l.parked, "in_flight": l.in_flight,
                "unaccounted": l.imbalance(),
                "lost": l.oldest_unaccounted.iter().map(|u| json!({
                    "event_id": u.event_id, "record_id": u.record_id, "first_seen": at(&s, u.first_seen_at),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let balanced = ledger.iter().all(|l| l.imbalance() == 0);
    let open_conflicts = a.store.conflicts("open").await.map(|c| c.len()).ok();
    let dead = a
        .store
        .count_dead_letters(&DeadFilter::default())
        .await
        .ok();
    let paused = a.store.paused().await.map(|p| p.len()).ok();
    render(
        StatusCode::OK,
        "overview.html",
        &page(
            &session,
            "overview",
            "Overview",
            json!({
                "database": database, "broker_ok": broker_ok, "queues": queues,
                "ledger": rules, "balanced": balanced,
                "settle_minutes": a.ledger_settle.as_secs().div_ceil(60),
                "open_conflicts": open_conflicts, "dead": dead, "paused": paused,
            }),
        ),
    )
}

pub(super) async fn reconcile(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
) -> Response {
    let runs = match s.admin.store.reconcile_runs(None, 20).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            let figures: Vec<Value> = r
                .summary
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| !v.is_object() && !v.is_array())
                        .map(|(k, v)| json!({"name": k.replace('_', " "), "value": text(v)}))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "id": r.id, "rule": r.rule, "started": at(&s, r.started_at),
                "finished": at(&s, r.finished_at), "dry_run": r.dry_run, "figures": figures,
            })
        })
        .collect();
    render(
        StatusCode::OK,
        "reconcile.html",
        &page(
            &session,
            "reconcile",
            "Reconcile runs",
            json!({"runs": runs}),
        ),
    )
}
