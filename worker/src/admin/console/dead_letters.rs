//! The console's dead-letter pages and their action: replay one.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};
use store::DeadFilter;

use super::conflicts::PlainForm;
use super::guard::SignedForm;
use super::pages::{Done, at, done, page, record_path, unavailable};
use super::{ConsoleState, Session, message_page, render};

/// How many dead letters the list shows at once (the oldest first).
const DEAD_LETTERS_SHOWN: i64 = 500;

pub(super) async fn dead_letters(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Done>,
) -> Response {
    // The oldest first, as many as a page holds; the heading says how many wait.
    let waiting = DeadFilter::default();
    let (rows, total) = match (
        s.admin
            .store
            .dead_letters(&waiting, DEAD_LETTERS_SHOWN)
            .await,
        s.admin.store.count_dead_letters(&waiting).await,
    ) {
        (Ok(d), Ok(n)) => (d, n),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let rows: Vec<Value> = rows
        .iter()
        .map(|d| {
            json!({
                "id": d.id, "rule": d.rule, "record": d.record_id, "class": d.class.replace('_', " "),
                "reason": d.reason, "attempts": d.attempts, "dead_at": at(&s, d.dead_at),
            })
        })
        .collect();
    render(
        StatusCode::OK,
        "dead_letters.html",
        &page(
            &session,
            "dead",
            "Dead letters",
            json!({"dead_letters": rows, "total": total, "done": done(q.done.as_deref())}),
        ),
    )
}

pub(super) async fn dead_letter(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> Response {
    let d = match s.admin.store.dead_letter(id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return message_page(
                StatusCode::NOT_FOUND,
                "No such dead letter",
                &format!("There is no dead letter {id}: it may have been purged."),
            );
        }
        Err(e) => return unavailable(e),
    };
    let body = serde_json::from_slice::<Value>(&d.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&d.body).into_owned());
    let history = serde_json::to_string_pretty(&d.history).unwrap_or_default();
    let record = match (&d.rule, &d.record_id) {
        (Some(rule), Some(r)) => Some(record_path(rule, r)),
        _ => None,
    };
    render(
        StatusCode::OK,
        "dead_letter.html",
        &page(
            &session,
            "dead",
            &format!("Dead letter {id}"),
            json!({
                "id": d.id, "rule": d.rule, "record": d.record_id, "record_href": record,
                "system": d.system, "class": d.class.replace('_', " "), "reason": d.reason,
                "attempts": d.attempts, "dead_at": at(&s, d.dead_at), "status": d.status,
                "body": body, "attempt_history": history,
            }),
        ),
    )
}

pub(super) async fn replay(
    State(s): State<ConsoleState>,
    Path(id): Path<i64>,
    SignedForm { session, .. }: SignedForm<PlainForm>,
) -> Response {
    let publisher = match s.admin.broker.publisher().await {
        Ok(p) => p,
        Err(e) => return unavailable(e),
    };
    let filter = DeadFilter {
        ids: vec![id],
        ..DeadFilter::default()
    };
    match crate::dlq::replay(&s.admin.store, &publisher, s.admin.broker.names(), &filter).await {
        Ok(ids) if ids.contains(&id) => {
            tracing::info!(dead_letter = id, by = %session.actor(), "dead letter replayed from the console");
            Redirect::to("/console/dead-letters?done=replayed").into_response()
        }
        Ok(_) => message_page(
            StatusCode::NOT_FOUND,
            "Not done",
            &format!(
                "Dead letter {id} is not waiting for a replay: it may have been replayed already."
            ),
        ),
        Err(e) => unavailable(e),
    }
}
