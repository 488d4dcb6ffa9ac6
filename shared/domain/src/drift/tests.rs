use super::*;
use serde_json::json;

fn rules(extra: Value) -> SyncRules {
    let mut rule = json!({
        "name": "r",
        "source": {"system": "kintone", "app": "1"},
        "target": {"system": "helpdesk", "entity": "ticket"},
        "identity": {"source_field": "no", "target_field": "external_id"},
        "direction": "both",
        "write_back": {"field": "ticket_id"},
        "fields": [
            {"source": "件名", "target": "subject"},
            {"source": "優先度", "target": "priority",
             "transforms": [{"map": {"table": {"高": "high", "低": "low"}, "default": "normal"}}]},
            {"source": "状態", "target": "status", "owner": "helpdesk",
             "reverse": [{"map": {"table": {"closed": "完了", "open": "未着手"}}}]}
        ]
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        rule[k] = v;
    }
    serde_json::from_value(json!({
        "version": 1,
        "systems": {
            "kintone": {"kind": "kintone", "base_url": "http://k", "auth": {"type": "kintone_api_token", "token_env": "T"}},
            "helpdesk": {"kind": "rest", "base_url": "http://h", "auth": {"type": "header", "header": "A", "value_env": "H"},
                "entities": {"ticket": {"get": "/t/{id}", "search": "/t?{field}={value}", "create": "/t", "update": "/t/{id}"}}}
        },
        "rules": [rule]
    }))
    .expect("rules")
}

fn shape(t: &str) -> FieldShape {
    FieldShape {
        field_type: t.into(),
        ..FieldShape::default()
    }
}

fn choice(t: &str, options: &[&str]) -> FieldShape {
    FieldShape {
        field_type: t.into(),
        options: options.iter().map(|o| o.to_string()).collect(),
        required: false,
    }
}

fn app() -> Schema {
    [
        ("no", shape("SINGLE_LINE_TEXT")),
        ("件名", shape("SINGLE_LINE_TEXT")),
        ("優先度", choice("DROP_DOWN", &["高", "低"])),
        ("状態", choice("DROP_DOWN", &["未着手", "完了"])),
        ("ticket_id", shape("SINGLE_LINE_TEXT")),
    ]
    .into_iter()
    .map(|(c, s)| (c.to_string(), s))
    .collect()
}

fn kintone_drift(r: &SyncRules, baseline: Option<&Schema>, now: &Schema) -> Vec<Drift> {
    compare(
        &reliances(r, "kintone", "1"),
        &creators(r, "kintone", "1"),
        baseline,
        now,
    )
}

#[test]
fn the_source_side_relies_on_identity_mapped_write_back_and_update_time_fields() {
    let r = rules(json!({"resync": {"every_seconds": 60}}));
    let got = reliances(&r, "kintone", "1");
    let fields: Vec<(&str, &Role)> = got.iter().map(|x| (x.field.as_str(), &x.role)).collect();
    assert_eq!(
        fields,
        vec![
            ("no", &Role::IdentitySource),
            ("件名", &Role::MapsFrom("subject".into())),
            ("優先度", &Role::MapsFrom("priority".into())),
            ("状態", &Role::MapsFrom("status".into())),
            ("ticket_id", &Role::WriteBack),
            ("更新日時", &Role::UpdatedTime),
        ]
    );
    let priority = &got[2];
    assert_eq!(priority.reads, ["低", "高"].map(String::from).into());
    assert!(priority.writes.is_empty());
    // A two-way rule writes its reverse map's values into the source.
    let status = &got[3];
    assert_eq!(status.writes, ["完了", "未着手"].map(String::from).into());
}

#[test]
fn the_target_side_relies_on_the_identity_and_mapped_fields_with_the_values_written() {
    let r = rules(json!({}));
    let got = reliances(&r, "helpdesk", "ticket");
    let fields: Vec<&str> = got.iter().map(|x| x.field.as_str()).collect();
    assert_eq!(fields, ["external_id", "subject", "priority", "status"]);
    assert_eq!(
        got[2].writes,
        ["high", "low", "normal"].map(String::from).into()
    );
    assert_eq!(got[3].reads, ["closed", "open"].map(String::from).into());
    // Another system or app: nothing.
    assert!(reliances(&r, "kintone", "2").is_empty());
    assert!(reliances(&r, "helpdesk", "other").is_empty());
}

#[test]
fn a_one_way_rule_writes_nothing_into_its_source() {
    let r = rules(json!({"direction": "one_way"}));
    let got = reliances(&r, "kintone", "1");
    assert!(got.iter().all(|x| x.writes.is_empty()));
}

#[test]
fn an_unchanged_schema_shows_no_drift_with_or_without_a_baseline() {
    let r = rules(json!({}));
    assert_eq!(kintone_drift(&r, None, &app()), vec![]);
    assert_eq!(kintone_drift(&r, Some(&app()), &app()), vec![]);
}

#[test]
fn a_renamed_field_is_missing_and_the_new_name_is_suggested() {
    let r = rules(json!({}));
    let mut now = app();
    let old = now.remove("件名").expect("field");
    now.insert("タイトル".into(), old);
    now.insert("メモ".into(), shape("MULTI_LINE_TEXT"));
    let got = kintone_drift(&r, Some(&app()), &now);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].field, "件名");
    assert_eq!(got[0].severity, Severity::Breaking);
    assert_eq!(
        got[0].kind,
        DriftKind::Missing {
            renamed_to: vec!["タイトル".into()]
        }
    );
    assert_eq!(
        got[0].summary(),
        "field 件名 (rule r maps it to subject) is gone; renamed to タイトル?"
    );
    // Without a baseline there is nothing to suggest.
    let got = kintone_drift(&r, None, &now);
    assert_eq!(got[0].kind, DriftKind::Missing { renamed_to: vec![] });
    assert_eq!(
        got[0].summary(),
        "field 件名 (rule r maps it to subject) is gone: renamed or removed"
    );
}

#[test]
fn a_type_change_is_breaking_only_against_a_baseline() {
    let r = rules(json!({}));
    let mut now = app();
    now.insert("件名".into(), shape("NUMBER"));
    let got = kintone_drift(&r, Some(&app()), &now);
    assert_eq!(
        got.iter()
            .map(|d| (&d.kind, d.severity))
            .collect::<Vec<_>>(),
        vec![(
            &DriftKind::TypeChanged {
                from: "SINGLE_LINE_TEXT".into(),
                to: "NUMBER".into()
            },
            Severity::Breaking
        )]
    );
    assert!(
        got[0]
            .summary()
            .contains("changed type from SINGLE_LINE_TEXT to NUMBER")
    );
    assert_eq!(kintone_drift(&r, None, &now), vec![]);
}

#[test]
fn an_option_the_rule_writes_gone_is_breaking_one_it_reads_is_a_warning() {
    let r = rules(json!({}));
    let mut now = app();
    now.insert("状態".into(), choice("DROP_DOWN", &["未着手", "済"]));
    now.insert("優先度".into(), choice("DROP_DOWN", &["高"]));
    let got = kintone_drift(&r, Some(&app()), &now);
    let kinds: Vec<(&str, &DriftKind, Severity)> = got
        .iter()
        .map(|d| (d.field.as_str(), &d.kind, d.severity))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "状態",
                &DriftKind::WrittenOptionGone {
                    option: "完了".into()
                },
                Severity::Breaking
            ),
            (
                "優先度",
                &DriftKind::ReadOptionGone {
                    option: "低".into()
                },
                Severity::Warning
            ),
        ]
    );
    assert!(got[0].summary().contains("those writes will be refused"));
}

#[test]
fn an_option_removed_since_the_baseline_that_no_map_names_is_a_warning() {
    let r = rules(json!({}));
    let mut before = app();
    before.insert("優先度".into(), choice("DROP_DOWN", &["高", "低", "中"]));
    let got = kintone_drift(&r, Some(&before), &app());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].kind,
        DriftKind::OptionRemoved {
            option: "中".into()
        }
    );
    assert_eq!(got[0].severity, Severity::Warning);
}

#[test]
fn a_field_without_options_is_not_checked_for_options() {
    // A rest sample knows no options: the map's values are not checked.
    let r = rules(json!({}));
    let now: Schema = ["external_id", "subject", "priority", "status"]
        .into_iter()
        .map(|c| (c.to_string(), shape("string")))
        .collect();
    let got = compare(
        &reliances(&r, "helpdesk", "ticket"),
        &creators(&r, "helpdesk", "ticket"),
        None,
        &now,
    );
    assert_eq!(got, vec![]);
}

#[test]
fn a_required_field_a_creating_rule_does_not_write_is_breaking() {
    let r = rules(json!({}));
    let mut now: Schema = ["external_id", "subject", "priority", "status"]
        .into_iter()
        .map(|c| (c.to_string(), shape("string")))
        .collect();
    now.insert(
        "team".into(),
        FieldShape {
            field_type: "string".into(),
            options: vec![],
            required: true,
        },
    );
    // Required and written: fine.
    now.get_mut("subject").expect("subject").required = true;
    let got = compare(
        &reliances(&r, "helpdesk", "ticket"),
        &creators(&r, "helpdesk", "ticket"),
        None,
        &now,
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].field, "team");
    assert_eq!(got[0].kind, DriftKind::RequiredNotWritten);
    assert_eq!(
        got[0].summary(),
        "field team is now required and rule r does not write it: its creates will be refused"
    );
    // A rule that never creates there is not concerned.
    let r = rules(json!({"on_missing": "skip"}));
    assert!(creators(&r, "helpdesk", "ticket").is_empty());
}

#[test]
fn kintone_ids_are_always_present() {
    let r = rules(json!({"identity": {"source_field": "$id", "target_field": "external_id"}}));
    let mut now = app();
    now.remove("no");
    assert_eq!(kintone_drift(&r, None, &now), vec![]);
}

#[test]
fn a_null_in_a_sample_matches_every_type() {
    let r = rules(json!({}));
    let sample = |v: Value| sample_schema(v.as_object().expect("object"));
    let before = sample(
        json!({"external_id": "1", "subject": "a", "priority": "high", "status": null, "id": 3}),
    );
    let now = sample(
        json!({"external_id": "1", "subject": null, "priority": 2, "status": "open", "id": 3}),
    );
    let got = compare(
        &reliances(&r, "helpdesk", "ticket"),
        &[],
        Some(&before),
        &now,
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].field, "priority");
    assert_eq!(
        got[0].kind,
        DriftKind::TypeChanged {
            from: "string".into(),
            to: "number".into()
        }
    );
}

#[test]
fn a_field_relied_on_twice_by_one_rule_drifts_once() {
    // The identity source also mapped: one drift for the field per kind.
    let r = rules(json!({"fields": [{"source": "no", "target": "subject"}]}));
    let mut now = app();
    now.remove("no");
    let got = kintone_drift(&r, None, &now);
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn drift_round_trips_through_json() {
    let d = Drift {
        rule: "r".into(),
        field: "f".into(),
        role: Some(Role::MapsFrom("subject".into())),
        kind: DriftKind::TypeChanged {
            from: "A".into(),
            to: "B".into(),
        },
        severity: Severity::Breaking,
    };
    let v = serde_json::to_value(&d).expect("json");
    assert_eq!(v["kind"], "type_changed");
    assert_eq!(v["role"], json!({"does": "maps_from", "with": "subject"}));
    assert_eq!(v["severity"], "breaking");
    let back: Drift = serde_json::from_value(v).expect("back");
    assert_eq!(back, d);
}

#[test]
fn two_fields_gone_alike_are_two_drifts_and_one_field_relied_on_twice_is_one() {
    let r = rules(json!({}));
    let mut now = app();
    now.remove("件名");
    now.remove("ticket_id");
    let got = kintone_drift(&r, None, &now);
    let fields: Vec<&str> = got.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields.len(), 2, "{got:?}");
    assert!(
        fields.contains(&"件名") && fields.contains(&"ticket_id"),
        "{got:?}"
    );
    // 状態 is read (mapped) and written (its reverse flows back): gone, it drifts once.
    let mut now = app();
    now.remove("状態");
    let got = kintone_drift(&r, None, &now);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].field, "状態");
}
