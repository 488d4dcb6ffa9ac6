//! The rules file's defaults, the rules a change is taken by, and how a field's
//! owner and strategy are resolved.

use super::*;
use crate::authority::{Owner, Strategy};
use serde_json::json;

/// The project's own rules file, with what a test changes.
fn rules(edit: impl FnOnce(&mut serde_json::Value)) -> SyncRules {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../../../../sync-rules.json")).expect("JSON");
    edit(&mut v);
    serde_json::from_value(v).expect("valid rules")
}

/// Every default a rules file may leave out is the one its schema documents.
#[test]
fn what_a_rules_file_leaves_out_takes_its_documented_default() {
    let r = rules(|v| {
        let helpdesk = &mut v["systems"]["helpdesk"];
        helpdesk["limits"] = json!({"requests_per_second": 5.0});
        let ticket = &mut helpdesk["entities"]["ticket"];
        ticket
            .as_object_mut()
            .expect("an entity")
            .remove("update_method");
        ticket["bulk_update"] =
            json!({"path": "/api/tickets/bulk", "results": {"list": "/results"}});
        ticket["field_paths"] = json!({"po": {"pointer": "/custom_fields", "id": 7}});
        let rule = &mut v["rules"][0];
        rule["resync"] = json!({"every_seconds": 60});
        rule["reconcile"] = json!({"every_seconds": 600});
    });
    let helpdesk = &r.systems["helpdesk"];
    assert_eq!(helpdesk.limits.as_ref().map(|l| l.burst), Some(1));
    let ticket = &helpdesk.entities["ticket"];
    assert_eq!(ticket.update_method, "PATCH");
    let bulk = ticket.bulk_update.as_ref().expect("bulk");
    assert_eq!(
        (
            bulk.method.as_str(),
            bulk.max,
            bulk.list_key.as_str(),
            bulk.id_key.as_str(),
            bulk.fields_key.as_str(),
            bulk.string_ids
        ),
        ("POST", 100, "updates", "id", "fields", false)
    );
    assert_eq!(bulk.results.as_ref().map(|x| x.id.as_str()), Some("/id"));
    let po = &ticket.field_paths["po"];
    assert_eq!((po.id_key.as_str(), po.value_key.as_str()), ("id", "value"));
    let rule = &r.rules[0];
    let resync = rule.resync.as_ref().expect("resync");
    assert_eq!(
        (resync.overlap_seconds, resync.updated_field.as_str()),
        (120, "更新日時")
    );
    assert!(rule.reconcile.as_ref().is_some_and(|c| c.repair));
    assert_eq!(rule.on_schema_drift, OnSchemaDrift::Alert);
    // A default is left out when the file is written back; anything else is kept.
    let written = serde_json::to_value(rule).expect("serializes");
    assert!(written.get("on_schema_drift").is_none(), "{written}");
    let mut paused = rule.clone();
    paused.on_schema_drift = OnSchemaDrift::Pause;
    assert_eq!(
        serde_json::to_value(&paused).expect("serializes")["on_schema_drift"],
        "pause"
    );
}

#[test]
fn a_change_is_taken_by_the_rules_whose_source_it_is_and_the_two_way_rules_whose_target_it_is() {
    let r = rules(|v| {
        let mut second = v["rules"][0].clone();
        second["name"] = json!("tickets-back");
        second["direction"] = json!("both");
        second["source"] = json!({"system": "kintone", "app": "202"});
        let mut third = v["rules"][0].clone();
        third["name"] = json!("one-way-elsewhere");
        third["source"] = json!({"system": "kintone", "app": "303"});
        let list = v["rules"].as_array_mut().expect("rules");
        list.push(second);
        list.push(third);
    });
    let names = |system: &str, app: &str| -> Vec<String> {
        r.rules_for(system, app).map(|x| x.name.clone()).collect()
    };
    assert_eq!(names("kintone", "101"), ["work-orders-to-tickets"]);
    assert_eq!(names("kintone", "202"), ["tickets-back"]);
    assert_eq!(names("kintone", "303"), ["one-way-elsewhere"]);
    // The helpdesk's tickets feed only the two-way rule that targets them.
    assert_eq!(names("helpdesk", "ticket"), ["tickets-back"]);
    assert!(names("helpdesk", "other").is_empty());
    assert!(names("kintone", "ticket").is_empty());
    assert!(names("crm", "101").is_empty());
    assert_eq!(
        r.rule("tickets-back").map(|x| x.source.app.as_str()),
        Some("202")
    );
    assert!(r.rule("nope").is_none());
    assert_eq!(
        r.rule_names(),
        [
            "work-orders-to-tickets",
            "tickets-back",
            "one-way-elsewhere"
        ]
    );
}

#[test]
fn write_only_fields_are_the_rules_target_entitys() {
    let r = rules(|v| {
        v["systems"]["helpdesk"]["entities"]["ticket"]["write_only"] = json!(["requester"]);
    });
    assert_eq!(r.write_only(&r.rules[0]), ["requester"]);
    let mut elsewhere = r.rules[0].clone();
    elsewhere.target.entity = "contact".into();
    assert!(r.write_only(&elsewhere).is_empty());
}

#[test]
fn a_fields_strategy_follows_its_owner_unless_given() {
    let r = rules(|_| {});
    let rule = &r.rules[0];
    let mut f = rule.fields[0].clone();
    f.strategy = None;
    f.owner = None;
    assert_eq!(f.owner_of(rule), Owner::System("kintone".into()));
    assert_eq!(f.strategy_of(rule), Strategy::LocalWins);
    f.owner = Some("helpdesk".into());
    assert_eq!(f.strategy_of(rule), Strategy::ExternalWins);
    f.owner = Some("crm".into());
    assert_eq!(f.strategy_of(rule), Strategy::LocalWins);
    f.owner = Some("shared".into());
    assert_eq!(f.owner_of(rule), Owner::Shared);
    assert_eq!(f.strategy_of(rule), Strategy::LatestValidChange);
    f.strategy = Some(Strategy::ExternalWins);
    assert_eq!(f.strategy_of(rule), Strategy::ExternalWins);
}
