//! The console's conflicts page and its actions: resolve and dismiss.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::guard::{Signed, SignedForm};
use super::pages::{Done, at, done, page, record_path, refused, text, unavailable};
use super::{ConsoleState, Session, message_page, render};
use crate::ops::Resolution;

pub(super) async fn conflicts(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Done>,
) -> Response {
    let open = match s.admin.store.conflicts("open").await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let rows: Vec<Value> = open
        .iter()
        .map(|c| {
            let candidates = crate::ops::candidates(&c.detail).unwrap_or_default();
            let review = c.kind == "manual_review";
            json!({
                "id": c.id, "rule": c.rule, "record": c.source_record_id,
                "href": record_path(&c.rule, &c.source_record_id),
                "kind": c.kind.replace('_', " "), "summary": c.summary,
                "occurrences": c.occurrences, "opened": at(&s, c.opened_at),
                "candidates": if c.kind == "several_matches" || c.kind == "no_match" { candidates } else { vec![] },
                "links": c.kind == "several_matches" || c.kind == "no_match",
                "review": review,
                "field": if review { text(&c.detail["field"]) } else { String::new() },
                "incoming": if review { text(&c.detail["incoming"]) } else { String::new() },
                "current": if review { text(&c.detail["after"]) } else { String::new() },
            })
        })
        .collect();
    render(
        StatusCode::OK,
        "conflicts.html",
        &page(
            &session,
            "conflicts",
            "Open conflicts",
            json!({"conflicts": rows, "done": done(q.done.as_deref())}),
        ),
    )
}

#[derive(serde::Deserialize)]
pub(super) struct ResolveForm {
    csrf: String,
    #[serde(default)]
    target_id: Option<String>,
    #[serde(default)]
    pick: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

impl Signed for ResolveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub(super) async fn resolve(
    State(s): State<ConsoleState>,
    Path(id): Path<i64>,
    SignedForm { session, form }: SignedForm<ResolveForm>,
) -> Response {
    let nonempty = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let r = Resolution {
        // A value typed in the console is text.
        value: nonempty(form.value).map(Value::String),
        pick: nonempty(form.pick),
        target_id: nonempty(form.target_id),
        by: None,
        override_candidates: false,
        reason: None,
    };
    let publisher = match s.admin.broker.publisher().await {
        Ok(p) => p,
        Err(e) => return unavailable(e),
    };
    match crate::ops::resolve(
        &s.admin.store,
        &s.admin.processor.rules,
        &publisher,
        s.admin.broker.names(),
        id,
        &r,
        &session.actor(),
    )
    .await
    {
        Ok(()) => Redirect::to("/console/conflicts?done=resolved").into_response(),
        Err(e) => refused(e),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct PlainForm {
    csrf: String,
}

impl Signed for PlainForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub(super) async fn dismiss(
    State(s): State<ConsoleState>,
    Path(id): Path<i64>,
    _: SignedForm<PlainForm>,
) -> Response {
    match s.admin.store.dismiss_conflict(id).await {
        Ok(true) => Redirect::to("/console/conflicts?done=dismissed").into_response(),
        Ok(false) => message_page(
            StatusCode::NOT_FOUND,
            "Not done",
            &format!(
                "Conflict {id} is not open: someone may have resolved or dismissed it already."
            ),
        ),
        Err(e) => unavailable(e),
    }
}
