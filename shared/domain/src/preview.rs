//! A rule change, previewed before it ships: what the current rule and a new one would
//! each do, and how they differ. Per rule (owners, strategies, mapped fields, identity
//! variants, direction) and per linked record as both systems hold it now (the values
//! each rule maps, and the writes each would make). Pure: the worker reads the records
//! through the connectors and hands them here; nothing is written anywhere.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::mapping::map_fields;
use crate::plan::target_values;
use crate::reconcile::{Action, compare};
use crate::record::Fields;
use crate::rules::RuleSpec;

/// A difference between two versions of a rule itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleChange {
    /// The target field it concerns, or `identity` / `direction`.
    pub field: String,
    /// What changed, in words ("owner kintone → helpdesk").
    pub what: String,
}

/// A difference in what the two rules do to one linked record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The value the rule maps from the source for a field changes (a transform, a
    /// source field, a mapping added or removed).
    Value {
        /// The target field.
        field: String,
        /// Under the current rule (`null`: not mapped, or nothing).
        before: Value,
        /// Under the new rule.
        after: Value,
    },
    /// What a sync or a repair would write for a field changes: a write appears,
    /// disappears or changes direction.
    Write {
        /// The target field.
        field: String,
        /// Under the current rule (`None`: nothing written).
        before: Option<Action>,
        /// Under the new rule.
        after: Option<Action>,
    },
    /// The source record cannot be mapped under one of the rules (a required field
    /// empty, a value no transform accepts): that rule opens a conflict instead.
    Unmappable {
        /// Under the current rule.
        before: bool,
        /// Under the new rule.
        after: bool,
    },
    /// A record not linked yet would match another target record (identity fields or
    /// variants changed): the record it matches under each rule, `None` for none (a
    /// create, or what `on_missing` says), `several (…)` for an ambiguous match.
    Match {
        /// Under the current rule.
        before: Option<String>,
        /// Under the new rule.
        after: Option<String>,
    },
}

/// The differences between two versions of a rule.
pub fn rule_changes(old: &RuleSpec, new: &RuleSpec) -> Vec<RuleChange> {
    let mut out = vec![];
    let old_p: BTreeMap<String, _> = old
        .policies()
        .into_iter()
        .map(|p| (p.field.clone(), p))
        .collect();
    let new_p: BTreeMap<String, _> = new
        .policies()
        .into_iter()
        .map(|p| (p.field.clone(), p))
        .collect();
    let fields: BTreeSet<&String> = old_p.keys().chain(new_p.keys()).collect();
    for field in fields {
        let change = |what: String| RuleChange {
            field: field.clone(),
            what,
        };
        match (old_p.get(field), new_p.get(field)) {
            (Some(_), None) => out.push(change("no longer mapped".into())),
            (None, Some(_)) => out.push(change("newly mapped".into())),
            (Some(a), Some(b)) => {
                if a.owner != b.owner {
                    out.push(change(format!(
                        "owner {} → {}",
                        owner_name(&a.owner),
                        owner_name(&b.owner)
                    )));
                }
                // A strategy that only follows the owner's default is not a change of
                // its own.
                let explicit = |r: &RuleSpec| {
                    r.fields
                        .iter()
                        .find(|m| &m.target == field)
                        .and_then(|m| m.strategy)
                };
                if a.strategy != b.strategy && explicit(old) != explicit(new) {
                    out.push(change(format!(
                        "strategy {:?} → {:?}",
                        a.strategy, b.strategy
                    )));
                }
            }
            (None, None) => {}
        }
        let transforms = |r: &RuleSpec| {
            r.fields
                .iter()
                .find(|m| &m.target == field)
                .map(|m| (m.source.clone(), list(&m.transforms)))
        };
        if let (Some((src_a, tr_a)), Some((src_b, tr_b))) = (transforms(old), transforms(new)) {
            if src_a != src_b {
                out.push(change(format!("source field {src_a} → {src_b}")));
            }
            if tr_a != tr_b {
                out.push(change(format!("transforms [{tr_a}] → [{tr_b}]")));
            }
        }
    }
    if old.identity.variants != new.identity.variants
        || old.identity.source_field != new.identity.source_field
        || old.identity.target_field != new.identity.target_field
    {
        out.push(RuleChange {
            field: "identity".into(),
            what: format!(
                "{} → {} by [{}] became {} → {} by [{}]: records not yet linked may match a different {} record",
                old.identity.source_field,
                old.identity.target_field,
                list(&old.identity.variants),
                new.identity.source_field,
                new.identity.target_field,
                list(&new.identity.variants),
                new.target.system
            ),
        });
    }
    if old.direction != new.direction {
        out.push(RuleChange {
            field: "direction".into(),
            what: format!("{:?} → {:?}", old.direction, new.direction),
        });
    }
    out
}

/// What differs between the two rules for one linked record: `source` is the source
/// record's fields, `target` the target record's, both as the systems hold them now.
pub fn record_changes(
    old: &RuleSpec,
    new: &RuleSpec,
    source: &Fields,
    target: &Fields,
) -> Vec<Change> {
    let mapped_old = map_fields(&old.fields, source);
    let mapped_new = map_fields(&new.fields, source);
    let (Ok(mapped_old), Ok(mapped_new)) = (mapped_old, mapped_new) else {
        let (before, after) = (
            map_fields(&old.fields, source).is_err(),
            map_fields(&new.fields, source).is_err(),
        );
        return if before == after {
            vec![]
        } else {
            vec![Change::Unmappable { before, after }]
        };
    };
    let mut out = vec![];
    let fields: BTreeSet<&String> = mapped_old.keys().chain(mapped_new.keys()).collect();
    for field in fields {
        let before = mapped_old.get(field).cloned().unwrap_or(Value::Null);
        let after = mapped_new.get(field).cloned().unwrap_or(Value::Null);
        if before != after {
            out.push(Change::Value {
                field: field.clone(),
                before,
                after,
            });
        }
    }
    let writes = |rule: &RuleSpec, mapped: &Fields| -> BTreeMap<String, Action> {
        compare(rule, mapped, &target_values(rule, target))
            .into_iter()
            .filter(|d| d.action.repairs())
            .map(|d| (d.field, d.action))
            .collect()
    };
    let (w_old, w_new) = (writes(old, &mapped_old), writes(new, &mapped_new));
    let fields: BTreeSet<&String> = w_old.keys().chain(w_new.keys()).collect();
    for field in fields {
        let (before, after) = (w_old.get(field).copied(), w_new.get(field).copied());
        if before != after {
            out.push(Change::Write {
                field: field.clone(),
                before,
                after,
            });
        }
    }
    out
}

/// The record changes, grouped into lines an operator reads like the timeline: "3
/// records: subject would now be written to helpdesk (17, 88, 203)". `source` and
/// `target` name the rule's systems.
pub fn summarize(records: &[(String, Vec<Change>)], source: &str, target: &str) -> Vec<String> {
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (id, changes) in records {
        for c in changes {
            let line = match c {
                Change::Value {
                    field,
                    before,
                    after,
                } => match (before.is_null(), after.is_null()) {
                    (false, true) => format!("{field} would no longer be mapped from {source}"),
                    (true, false) => format!("{field} would now be mapped from {source}"),
                    _ => format!(
                        "{field} would map to a different value (e.g. {} → {})",
                        show(before),
                        show(after)
                    ),
                },
                Change::Write {
                    field,
                    before,
                    after,
                } => match (before, after) {
                    (None, Some(a)) => format!(
                        "{field} would now be written to {}",
                        side(*a, source, target)
                    ),
                    (Some(b), None) => format!(
                        "{field} would no longer be written to {}",
                        side(*b, source, target)
                    ),
                    (Some(b), Some(a)) => format!(
                        "{field} would be written to {} instead of {}",
                        side(*a, source, target),
                        side(*b, source, target)
                    ),
                    (None, None) => continue,
                },
                Change::Unmappable { after: true, .. } => {
                    "the record could no longer be mapped (a conflict would open)".to_owned()
                }
                Change::Unmappable { .. } => "the record could be mapped again".to_owned(),
                Change::Match { before, after } => match (before, after) {
                    (None, Some(a)) => format!(
                        "would now match an existing {target} record instead of none (e.g. {a})"
                    ),
                    (Some(b), None) => format!(
                        "would no longer match a {target} record (e.g. {b}): on_missing decides"
                    ),
                    (Some(b), Some(a)) => {
                        format!("would match a different {target} record (e.g. {b} → {a})")
                    }
                    (None, None) => continue,
                },
            };
            groups.entry(line).or_default().push(id);
        }
    }
    // An example value belongs to the first record of its group only: group by the
    // line without it.
    let mut merged: BTreeMap<String, (String, Vec<&str>)> = BTreeMap::new();
    for (line, ids) in groups {
        let key = line.split(" (e.g.").next().unwrap_or(&line).to_owned();
        let entry = merged.entry(key).or_insert_with(|| (line.clone(), vec![]));
        entry.1.extend(ids);
    }
    merged
        .into_values()
        .map(|(line, mut ids)| {
            ids.sort_by_key(|id| (id.len(), id.to_string()));
            ids.dedup();
            let shown: Vec<&str> = ids.iter().take(10).copied().collect();
            let more = if ids.len() > 10 { ", …" } else { "" };
            format!(
                "{} record{}: {line} ({}{more})",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                shown.join(", ")
            )
        })
        .collect()
}

fn side(a: Action, source: &str, target: &str) -> String {
    match a {
        Action::UpdateTarget => target.to_owned(),
        Action::UpdateSource => source.to_owned(),
        Action::Ignore | Action::ManualReview => "nobody".to_owned(),
    }
}

fn owner_name(o: &crate::authority::Owner) -> String {
    match o {
        crate::authority::Owner::System(s) => s.clone(),
        crate::authority::Owner::Shared => "shared".into(),
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Null => "nothing".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
