//! The console's pages (what each reads and hands its template) and actions (each
//! the same operation as its API route, then a redirect back to the page with a
//! short confirmation).

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};
use store::DeadFilter;

use super::{ConsoleState, Session, message_page, render};
use crate::ops::{OpsError, Resolution};

/// How many dead letters the list shows at once (the oldest first).
const DEAD_LETTERS_SHOWN: i64 = 500;

/// A page's context: the session's part, the page's title and navigation key, and the
/// page's own values.
fn page(session: &Session, nav: &str, title: &str, values: Value) -> Value {
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
fn unavailable(e: impl std::fmt::Display) -> Response {
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Not available",
        &format!(
            "The console could not read what it needs: {e}. Try again in a moment; if it lasts, check the worker's health on the overview."
        ),
    )
}

/// An operation refused: why, in the operation's own words.
fn refused(e: OpsError) -> Response {
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

/// A form whose token is not the session's: not carried out.
fn stale_form() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Not done",
        "This form is out of date or was not sent from your console page. Go back, reload the page and try again.",
    )
}

/// A time as the console shows it, in the worker's time zone.
fn at(s: &ConsoleState, t: chrono::DateTime<chrono::Utc>) -> String {
    domain::history::local_time(t, s.admin.time_zone)
}

/// A value as a short line of text: a string as it is, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A confirmation named by a fixed code, so a crafted link cannot put words in it.
fn done(code: Option<&str>) -> Option<&'static str> {
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
    if let Ok(p) = a.broker.publisher().await {
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
            queues
                .push(json!({"name": label, "hint": hint, "depth": p.queue_depth(&q).await.ok()}));
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

#[derive(serde::Deserialize)]
pub(super) struct Search {
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

pub(super) async fn records(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Search>,
) -> Response {
    let rules: Vec<String> = s
        .admin
        .processor
        .rules
        .rules
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let chosen = q.rule.filter(|r| rules.contains(r));
    let id = q.id.map(|i| i.trim().to_owned()).filter(|i| !i.is_empty());
    let mut found = None;
    if let Some(id) = &id {
        let within = chosen.clone().map_or_else(|| rules.clone(), |r| vec![r]);
        match s.admin.store.find_records(&within, id, 50).await {
            Ok(rows) if rows.len() == 1 => {
                let r = &rows[0];
                return Redirect::to(&record_path(&r.rule, &r.source_record_id)).into_response();
            }
            Ok(rows) => {
                found = Some(
                    rows.into_iter()
                        .map(|r| {
                            json!({"rule": r.rule, "record": r.source_record_id, "target": r.target_id, "href": record_path(&r.rule, &r.source_record_id)})
                        })
                        .collect::<Vec<_>>(),
                );
            }
            Err(e) => return unavailable(e),
        }
    }
    render(
        StatusCode::OK,
        "records.html",
        &page(
            &session,
            "records",
            "Find a record",
            json!({"rules": rules, "rule": chosen, "id": id, "found": found}),
        ),
    )
}

/// The console's address of a record's page.
fn record_path(rule: &str, record: &str) -> String {
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

pub(super) async fn record(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Path((rule, record_id)): Path<(String, String)>,
) -> Response {
    let view = match super::super::record_view(&s.admin, &rule, &record_id).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            return message_page(
                StatusCode::NOT_FOUND,
                "No such record",
                &format!(
                    "Record {record_id} has no history under rule {rule}: it has not been synced, or the id is another system's. Search for it on the Records page."
                ),
            );
        }
        Err(e) => return unavailable(e),
    };
    let history = match s.admin.store.history(&rule, &record_id).await {
        Ok(h) => h,
        Err(e) => return unavailable(e),
    };
    let timeline: Vec<Value> = history
        .iter()
        .map(|h| json!({"at": at(&s, h.at), "kind": h.kind, "summary": h.summary}))
        .collect();
    let fields: Vec<Value> = view["fields"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| {
                    json!({
                        "field": f["field"], "source_field": f["source_field"], "owner": f["owner"],
                        "strategy": f["strategy"], "value": text(&f["value"]),
                        "by": text(&f["last_changed_by"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let outbound: Vec<Value> = view["outbound"]
        .as_array()
        .map(|o| {
            o.iter()
                .map(|o| json!({"system": o["system"], "status": o["status"], "fields": text(&o["fields"])}))
                .collect()
        })
        .unwrap_or_default();
    let link = &view["link"];
    let target = s
        .admin
        .processor
        .rules
        .rule(&rule)
        .map(|r| r.target.system.clone());
    render(
        StatusCode::OK,
        "record.html",
        &page(
            &session,
            "records",
            &format!("Record {record_id}"),
            json!({
                "rule": rule, "record_id": record_id, "target_system": target,
                "target_id": link["target_id"], "matched_by": matched_by(&link["matched_by"]),
                "fields": fields, "outbound": outbound, "timeline": timeline,
                "time_zone": s.admin.time_zone.name(),
            }),
        ),
    )
}

/// How a link was made, in words: `created "WO-900"`, `variant 1 "900"`.
fn matched_by(m: &Value) -> String {
    match (m["step"].as_str(), m.get("value")) {
        (Some(step), Some(v)) => format!("{} \"{}\"", step.replace('_', " "), text(v)),
        (Some(step), None) => step.replace('_', " "),
        _ => text(m),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct Done {
    #[serde(default)]
    done: Option<String>,
}

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

pub(super) async fn resolve(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Form(form): Form<ResolveForm>,
) -> Response {
    if !session.form_ok(&form.csrf) {
        return stale_form();
    }
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

pub(super) async fn dismiss(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Form(form): Form<PlainForm>,
) -> Response {
    if !session.form_ok(&form.csrf) {
        return stale_form();
    }
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
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Form(form): Form<PlainForm>,
) -> Response {
    if !session.form_ok(&form.csrf) {
        return stale_form();
    }
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

pub(super) async fn rules(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Done>,
) -> Response {
    let a = &s.admin;
    let (paused, parked) = match (a.store.paused().await, a.store.parked(None).await) {
        (Ok(p), Ok(k)) => (p, k),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let is_paused =
        |scope: &str, name: &str| paused.iter().any(|p| p.scope == scope && p.name == name);
    let mut parked_by_rule: HashMap<&str, usize> = HashMap::new();
    for p in &parked {
        *parked_by_rule.entry(p.rule.as_str()).or_default() += 1;
    }
    let rules: Vec<Value> = a
        .processor
        .rules
        .rules
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "from": format!("{} (app {})", r.source.system, r.source.app),
                "to": format!("{} ({})", r.target.system, r.target.entity),
                "both_ways": r.direction == domain::rules::Direction::Both,
                "paused": is_paused("rule", &r.name),
                "parked": parked_by_rule.get(r.name.as_str()).copied().unwrap_or(0),
            })
        })
        .collect();
    let budgets = crate::budget::status(&a.processor)
        .await
        .unwrap_or_default();
    let systems: Vec<Value> = a
        .processor
        .rules
        .systems
        .iter()
        .map(|(name, spec)| {
            let b = budgets.iter().find(|b| &b.system == name);
            json!({
                "name": name,
                "kind": format!("{:?}", spec.kind).to_lowercase(),
                "paused": is_paused("system", name),
                "budget": b.map(|b| json!({
                    "per_day": b.budget, "used": b.usage.used_today, "forecast": b.forecast,
                    "waits": match &b.background {
                        domain::budget::Verdict::Go => None,
                        domain::budget::Verdict::Hold { reason } => Some(reason),
                    },
                })),
            })
        })
        .collect();
    render(
        StatusCode::OK,
        "rules.html",
        &page(
            &session,
            "rules",
            "Rules and systems",
            json!({"rules": rules, "systems": systems, "done": done(q.done.as_deref())}),
        ),
    )
}

#[derive(serde::Deserialize)]
pub(super) struct ScopeForm {
    csrf: String,
    scope: String,
    name: String,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn pause(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ScopeForm>,
) -> Response {
    if !session.form_ok(&form.csrf) {
        return stale_form();
    }
    let reason = form
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .map(|r| format!("{r} (by {})", session.actor()))
        .unwrap_or_else(|| format!("paused from the console by {}", session.actor()));
    match crate::ops::pause(
        &s.admin.store,
        &s.admin.processor.rules,
        &form.scope,
        &form.name,
        Some(&reason),
    )
    .await
    {
        Ok(()) => Redirect::to("/console/rules?done=paused").into_response(),
        Err(e) => refused(e),
    }
}

pub(super) async fn resume(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ScopeForm>,
) -> Response {
    if !session.form_ok(&form.csrf) {
        return stale_form();
    }
    match crate::ops::resume(
        &s.admin.store,
        &s.admin.processor.rules,
        &form.scope,
        &form.name,
    )
    .await
    {
        Ok(_) => Redirect::to("/console/rules?done=resumed").into_response(),
        Err(e) => refused(e),
    }
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
