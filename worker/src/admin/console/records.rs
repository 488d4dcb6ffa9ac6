//! The console's record pages: finding a record by id, and a record's fields, links,
//! outbound operations and timeline.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::pages::{at, page, record_path, text, unavailable};
use super::{ConsoleState, Session, message_page, render};

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
    let rules = s.admin.processor.rules.rule_names();
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

pub(super) async fn record(
    State(s): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Path((rule, record_id)): Path<(String, String)>,
) -> Response {
    let view = match crate::admin::record_view(&s.admin, &rule, &record_id).await {
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
