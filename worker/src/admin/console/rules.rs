//! The console's rules page (the rules and systems, what is paused and parked, the API
//! budgets) and its actions: pause and resume.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::guard::{Signed, SignedForm};
use super::pages::{Done, done, page, refused, unavailable};
use super::{ConsoleState, Session, render};

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

impl Signed for ScopeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub(super) async fn pause(
    State(s): State<ConsoleState>,
    SignedForm { session, form }: SignedForm<ScopeForm>,
) -> Response {
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
    SignedForm { form, .. }: SignedForm<ScopeForm>,
) -> Response {
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
