//! Rule changes read as such, the writes a changed rule would make differently, and
//! the summary that groups records by change.

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
