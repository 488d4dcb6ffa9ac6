//! A rule's fields: at least one, a two-way rule's target sending webhooks, and each
//! field's owner, strategy, validation pattern, source and (unique) target.

use std::collections::BTreeSet;

use domain::authority::Strategy;
use domain::rules::{RuleSpec, SystemSpec};

use super::Problems;

/// `fields` (and `direction`, which decides where their values may come from), at `at`
/// (`rules[i]`).
pub(super) fn fields(out: &mut Problems, at: &str, rule: &RuleSpec, target: Option<&SystemSpec>) {
    if rule.fields.is_empty() {
        out.bad(format!("{at}.fields"), "map at least one field".into());
    }
    if rule.both_ways()
        && let Some(t) = target
        && t.webhook.is_none()
    {
        out.bad(
            format!("{at}.direction"),
            format!(
                "changes flow back only from webhooks: give systems.{}.webhook",
                rule.target.system
            ),
        );
    }
    let mut targets = BTreeSet::new();
    for (j, f) in rule.fields.iter().enumerate() {
        let fat = format!("{at}.fields[{j}]");
        if let Some(o) = &f.owner
            && o != "shared"
            && o != &rule.source.system
            && o != &rule.target.system
        {
            out.bad(
                format!("{fat}.owner"),
                format!(
                    "\"{o}\" is neither the rule's source ({}), its target ({}), nor shared",
                    rule.source.system, rule.target.system
                ),
            );
        }
        let owner = f
            .owner
            .clone()
            .unwrap_or_else(|| rule.source.system.clone());
        if !rule.both_ways() && owner != rule.source.system {
            out.bad(
                format!("{fat}.owner"),
                "a one-way rule takes values from its source only: set \"direction\": \"both\""
                    .into(),
            );
        }
        let fits = match f.strategy_of(rule) {
            Strategy::LocalWins => owner == rule.source.system,
            Strategy::ExternalWins => owner == rule.target.system,
            Strategy::LatestValidChange | Strategy::Merge | Strategy::ManualReview => {
                owner == "shared"
            }
        };
        if !fits {
            let s = f.strategy_of(rule).as_str();
            out.bad(
                format!("{fat}.strategy"),
                format!(
                    "{s} does not fit owner \"{owner}\": local_wins is for source-owned fields, external_wins for target-owned ones, the others for shared ones"
                ),
            );
        }
        if let Some(p) = f.validate.as_ref().and_then(|v| v.problem()) {
            out.bad(format!("{fat}.validate.pattern"), p);
        }
        if f.source.trim().is_empty() {
            out.bad(
                format!("{at}.fields[{j}].source"),
                "empty field code".into(),
            );
        }
        if f.target.trim().is_empty() {
            out.bad(
                format!("{at}.fields[{j}].target"),
                "empty field name".into(),
            );
        } else if !targets.insert(f.target.as_str()) {
            out.bad(
                format!("{at}.fields[{j}].target"),
                format!("\"{}\" is already mapped by an earlier field", f.target),
            );
        }
    }
}
