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
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> RuleSpec {
        serde_json::from_value(v).expect("a rule")
    }

    fn base() -> Value {
        json!({
            "name": "r",
            "source": {"system": "kintone", "app": "1"},
            "target": {"system": "helpdesk", "entity": "ticket"},
            "identity": {"source_field": "no", "target_field": "external_id", "variants": [{"strip_prefix": "WO-"}, "strip_leading_zeros"]},
            "direction": "both",
            "fields": [
                {"source": "件名", "target": "subject", "transforms": ["trim"]},
                {"source": "優先度", "target": "priority"},
                {"source": "状態", "target": "status", "owner": "helpdesk"}
            ]
        })
    }

    fn fields(v: Value) -> Fields {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn a_strategy_is_a_change_of_its_own_only_when_set_and_different() {
        let old = rule(base());
        // Set explicitly to what the owner already gives it: not a change.
        let mut v = base();
        v["fields"][0]["strategy"] = json!("local_wins");
        assert!(rule_changes(&old, &rule(v)).is_empty());
        // Set to something else, beside another field that has one of its own.
        let mut a = base();
        a["fields"][1]["strategy"] = json!("external_wins");
        let mut b = a.clone();
        b["fields"][0]["strategy"] = json!("latest_valid_change");
        assert_eq!(
            rule_changes(&rule(a), &rule(b)),
            vec![RuleChange {
                field: "subject".into(),
                what: "strategy LocalWins → LatestValidChange".into()
            }]
        );
    }

    #[test]
    fn each_part_of_the_identity_is_a_change_of_it() {
        let old = rule(base());
        for (part, value) in [
            ("source_field", json!("no2")),
            ("target_field", json!("ref")),
            ("variants", json!([])),
        ] {
            let mut v = base();
            v["identity"][part] = value;
            let rc = rule_changes(&old, &rule(v));
            assert_eq!(rc.len(), 1, "{part}: {rc:?}");
            assert_eq!(rc[0].field, "identity", "{part}");
        }
    }

    #[test]
    fn a_mapping_added_or_removed_reads_as_such_and_ten_ids_are_shown() {
        let value = |before: Value, after: Value| Change::Value {
            field: "priority".into(),
            before,
            after,
        };
        let ids = |n: usize| (1..=n).map(|i| i.to_string()).collect::<Vec<_>>();
        let records: Vec<(String, Vec<Change>)> = ids(10)
            .into_iter()
            .map(|id| (id, vec![value(Value::Null, json!("high"))]))
            .chain(
                ids(11)
                    .into_iter()
                    .map(|id| (format!("x{id}"), vec![value(json!("high"), Value::Null)])),
            )
            .collect();
        assert_eq!(
            summarize(&records, "kintone", "helpdesk"),
            [
                "11 records: priority would no longer be mapped from kintone (x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, …)",
                "10 records: priority would now be mapped from kintone (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)",
            ]
        );
    }

    #[test]
    fn the_same_rule_changes_nothing() {
        let r = rule(base());
        assert!(rule_changes(&r, &r).is_empty());
        let s = fields(json!({"件名": " A ", "優先度": "high", "状態": "open"}));
        let t = fields(json!({"subject": "B", "priority": "high", "status": "closed"}));
        assert!(record_changes(&r, &r, &s, &t).is_empty());
    }

    #[test]
    fn a_transform_added_changes_the_value_mapped_and_names_the_transforms() {
        let old = rule(base());
        let mut v = base();
        v["fields"][0]["transforms"] = json!(["trim", "lowercase"]);
        let new = rule(v);
        let rc = rule_changes(&old, &new);
        assert_eq!(rc.len(), 1);
        assert_eq!(rc[0].field, "subject");
        assert_eq!(rc[0].what, "transforms [trim] → [trim, lowercase]");
        let s = fields(json!({"件名": " Pump ", "優先度": "high", "状態": "open"}));
        let t = fields(json!({"subject": "Pump", "priority": "high", "status": "open"}));
        let changes = record_changes(&old, &new, &s, &t);
        assert_eq!(
            changes,
            vec![
                Change::Value {
                    field: "subject".into(),
                    before: json!("Pump"),
                    after: json!("pump")
                },
                Change::Write {
                    field: "subject".into(),
                    before: None,
                    after: Some(Action::UpdateTarget)
                }
            ]
        );
        // A record already in lower case: no write appears, nothing differs.
        let s = fields(json!({"件名": "pump", "優先度": "high", "状態": "open"}));
        let t = fields(json!({"subject": "pump", "priority": "high", "status": "open"}));
        assert!(record_changes(&old, &new, &s, &t).is_empty());
    }

    #[test]
    fn an_owner_change_turns_a_write_around() {
        let old = rule(base());
        let mut v = base();
        v["fields"][1]["owner"] = json!("helpdesk");
        let new = rule(v);
        assert_eq!(
            rule_changes(&old, &new),
            vec![RuleChange {
                field: "priority".into(),
                what: "owner kintone → helpdesk".into()
            }]
        );
        let s = fields(json!({"件名": "A", "優先度": "high", "状態": "open"}));
        let t = fields(json!({"subject": "A", "priority": "low", "status": "open"}));
        assert_eq!(
            record_changes(&old, &new, &s, &t),
            vec![Change::Write {
                field: "priority".into(),
                before: Some(Action::UpdateTarget),
                after: Some(Action::UpdateSource)
            }]
        );
    }

    #[test]
    fn a_variant_reorder_and_a_direction_change_are_rule_changes() {
        let old = rule(base());
        let mut v = base();
        v["identity"]["variants"] = json!(["strip_leading_zeros", {"strip_prefix": "WO-"}]);
        v["direction"] = json!("one_way");
        let new = rule(v);
        let rc = rule_changes(&old, &new);
        let fields: Vec<&str> = rc.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["identity", "direction"]);
        assert!(
            rc[0].what.contains("may match a different helpdesk record"),
            "{}",
            rc[0].what
        );
    }

    #[test]
    fn a_field_dropped_from_the_mapping_stops_its_writes() {
        let old = rule(base());
        let mut v = base();
        v["fields"].as_array_mut().unwrap().remove(1);
        let new = rule(v);
        assert_eq!(rule_changes(&old, &new)[0].what, "no longer mapped");
        let s = fields(json!({"件名": "A", "優先度": "high", "状態": "open"}));
        let t = fields(json!({"subject": "A", "priority": "low", "status": "open"}));
        let changes = record_changes(&old, &new, &s, &t);
        assert!(changes.contains(&Change::Write {
            field: "priority".into(),
            before: Some(Action::UpdateTarget),
            after: None
        }));
    }

    #[test]
    fn a_required_field_makes_an_empty_record_unmappable() {
        let old = rule(base());
        let mut v = base();
        v["fields"][0]["required"] = json!(true);
        let new = rule(v);
        let s = fields(json!({"件名": "", "優先度": "high", "状態": "open"}));
        let t = fields(json!({"subject": "", "priority": "high", "status": "open"}));
        assert_eq!(
            record_changes(&old, &new, &s, &t),
            vec![Change::Unmappable {
                before: false,
                after: true
            }]
        );
    }

    #[test]
    fn the_summary_groups_records_by_change() {
        let write = |field: &str| Change::Write {
            field: field.into(),
            before: None,
            after: Some(Action::UpdateTarget),
        };
        let value = |b: &str, a: &str| Change::Value {
            field: "subject".into(),
            before: json!(b),
            after: json!(a),
        };
        let records = vec![
            (
                "17".to_owned(),
                vec![value("Pump", "pump"), write("subject")],
            ),
            (
                "3".to_owned(),
                vec![value("Valve", "valve"), write("subject")],
            ),
            ("88".to_owned(), vec![write("priority")]),
        ];
        let lines = summarize(&records, "kintone", "helpdesk");
        assert_eq!(
            lines,
            vec![
                "1 record: priority would now be written to helpdesk (88)",
                "2 records: subject would map to a different value (e.g. \"Pump\" → \"pump\") (3, 17)",
                "2 records: subject would now be written to helpdesk (3, 17)",
            ]
        );
    }

    #[test]
    fn the_summary_says_which_records_would_match_differently() {
        let m = |b: Option<&str>, a: Option<&str>| Change::Match {
            before: b.map(str::to_owned),
            after: a.map(str::to_owned),
        };
        let records = vec![
            ("4".to_owned(), vec![m(None, Some("12"))]),
            ("5".to_owned(), vec![m(None, Some("13"))]),
            ("6".to_owned(), vec![m(Some("14"), None)]),
            (
                "7".to_owned(),
                vec![m(Some("15"), Some("several (15, 16)"))],
            ),
            ("8".to_owned(), vec![m(None, None)]),
        ];
        let lines = summarize(&records, "kintone", "helpdesk");
        assert_eq!(
            lines,
            vec![
                "1 record: would match a different helpdesk record (e.g. 15 → several (15, 16)) (7)",
                "1 record: would no longer match a helpdesk record (e.g. 14): on_missing decides (6)",
                "2 records: would now match an existing helpdesk record instead of none (e.g. 12) (4, 5)",
            ]
        );
    }
}
