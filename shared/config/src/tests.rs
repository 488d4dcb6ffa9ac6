use super::*;
use domain::rules::SystemKind;

const GOOD: &str = include_str!("../../../sync-rules.json");

fn problems(text: &str) -> Vec<String> {
    match parse_rules("t.json", text) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(ConfigError::Shape { problem, .. }) => vec![problem.to_string()],
        Err(e) => vec![e.to_string()],
    }
}

fn edit(f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    f(&mut v);
    v.to_string()
}

#[test]
fn the_example_file_is_valid() {
    let rules = parse_rules("example", GOOD).unwrap();
    assert!(!rules.rules.is_empty());
    assert!(
        rules
            .rules_for("kintone", &rules.rules[0].source.app)
            .count()
            >= 1
    );
}

#[test]
fn the_checked_in_schema_is_current() {
    let checked_in = include_str!("../../../sync-rules.schema.json");
    assert_eq!(
        checked_in,
        rules_schema(),
        "sync-rules.schema.json is stale: run `cargo run -p worker -- schema > sync-rules.schema.json`"
    );
}

#[test]
fn shape_errors_name_the_path() {
    let p = problems(&edit(|v| {
        v["rules"][0]["source"]["app"] = serde_json::json!(101)
    }));
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("rules[0].source.app (line 1 column ")
            && p[0].contains("): invalid type: integer `101`, expected a string"),
        "{p:?}"
    );
    let p = problems(&edit(|v| {
        v["rules"][0]["identity"]["colour"] = serde_json::json!("x")
    }));
    assert!(
        p[0].starts_with("rules[0].identity.colour (line 1 column ")
            && p[0].contains("unknown field `colour`"),
        "{p:?}"
    );
    let p = problems(&edit(|v| {
        v["rules"][0]["on_missing"] = serde_json::json!("explode")
    }));
    assert!(
        p[0].starts_with("rules[0].on_missing (line ")
            && p[0].contains("unknown variant `explode`"),
        "{p:?}"
    );
    let p = problems(&edit(|v| {
        v["rules"][0]["fields"][1]["transforms"] = serde_json::json!(["shout"])
    }));
    assert!(
        p[0].starts_with("rules[0].fields[1].transforms[0] (line ")
            && p[0].contains("unknown variant `shout`"),
        "{p:?}"
    );
    let p = problems("{ not json");
    assert!(p[0].starts_with("line 1 column 3"), "{p:?}");
}

#[test]
fn semantic_errors_name_every_path() {
    let text = edit(|v| {
        v["rules"][0]["target"]["system"] = serde_json::json!("helpdsk");
        v["rules"][0]["fields"][1]["target"] = v["rules"][0]["fields"][0]["target"].clone();
        v["rules"][0]["write_back"]["field"] = v["rules"][0]["identity"]["source_field"].clone();
        v["systems"]["helpdesk"]["base_url"] = serde_json::json!("ftp://x");
        v["systems"]["kintone"]["auth"]["token_env"] = serde_json::json!("lower case");
        v["version"] = serde_json::json!(2);
    });
    let p = problems(&text);
    let paths: Vec<&str> = p.iter().map(|s| s.split(':').next().unwrap()).collect();
    assert_eq!(
        paths,
        vec![
            "version",
            "systems.helpdesk.base_url",
            "systems.kintone.auth.token_env",
            "rules[0].target.system",
            "rules[0].fields[1].target",
            "rules[0].write_back.field",
        ],
        "{p:#?}"
    );
    assert!(p[3].contains("unknown system \"helpdsk\" (known: helpdesk, kintone)"));
}

#[test]
fn references_and_duplicates() {
    let text = edit(|v| {
        let r = v["rules"][0].clone();
        v["rules"].as_array_mut().unwrap().push(r);
        v["rules"][0]["target"]["entity"] = serde_json::json!("invoice");
        v["rules"][0]["source"]["app"] = serde_json::json!("abc");
    });
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|s| s.starts_with("rules[1].name: another rule is already named")),
        "{p:#?}"
    );
    assert!(
        p.iter().any(|s| s
            .starts_with("rules[0].target.entity: system \"helpdesk\" has no entity \"invoice\"")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|s| s.starts_with("rules[0].source.app: \"abc\" is not a kintone app id")),
        "{p:#?}"
    );
}

#[test]
fn missing_secrets_are_named() {
    let e = secret(
        "systems.kintone.auth.token_env",
        "RECORDSYNC_TEST_SURELY_UNSET_VAR",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "systems.kintone.auth.token_env: environment variable RECORDSYNC_TEST_SURELY_UNSET_VAR is not set"
    );
    let rules = parse_rules("example", GOOD).unwrap();
    let vars = secret_vars(&rules);
    assert!(
        vars.iter()
            .any(|(p, _)| p == "systems.kintone.webhook.token_env")
    );
}

#[test]
fn a_resync_needs_a_sane_interval_and_a_listable_source() {
    let ok = edit(|v| {
        v["rules"][0]["resync"] = serde_json::json!({"every_seconds": 300});
    });
    let rules = parse_rules("t.json", &ok).unwrap();
    let r = rules.rules[0].resync.as_ref().unwrap();
    assert_eq!((r.every_seconds, r.overlap_seconds), (300, 120));

    let text = edit(|v| {
        v["rules"][0]["resync"] = serde_json::json!({"every_seconds": 5});
        v["rules"][0]["source"]["system"] = serde_json::json!("helpdesk");
    });
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|s| s.starts_with("rules[0].resync.every_seconds: must be at least 10")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|s| s.starts_with("rules[0].resync: resync lists the source's changed records")),
        "{p:#?}"
    );
    // A rest source whose entity declares `list` can be resynced; without it, not.
    let listable = |list: bool| {
        edit(|v| {
            v["rules"][0]["resync"] = serde_json::json!({"every_seconds": 60});
            v["rules"][0]["source"] = serde_json::json!({"system": "helpdesk", "app": "ticket"});
            v["rules"][0]["target"] = serde_json::json!({"system": "kintone", "entity": "101"});
            let ticket = &mut v["systems"]["helpdesk"]["entities"]["ticket"];
            if list {
                ticket["list"] = serde_json::json!(
                    "/api/tickets?updated_since={since}&after_id={after}&limit={limit}"
                );
            } else {
                ticket.as_object_mut().unwrap().remove("list");
            }
        })
    };
    let no_resync_problem = |text: &str| {
        !problems(text)
            .iter()
            .any(|s| s.starts_with("rules[0].resync"))
    };
    assert!(
        no_resync_problem(&listable(true)),
        "{:#?}",
        problems(&listable(true))
    );
    assert!(!no_resync_problem(&listable(false)));
    let text = edit(|v| {
        v["rules"][0]["reconcile"] = serde_json::json!({"every_seconds": 30});
    });
    assert!(
        problems(&text)
            .iter()
            .any(|s| s.starts_with("rules[0].reconcile.every_seconds: must be at least 60")),
        "{:#?}",
        problems(&text)
    );
    let ok = edit(|v| {
        v["rules"][0]["reconcile"] = serde_json::json!({"every_seconds": 3600});
    });
    let rules = parse_rules("t.json", &ok).unwrap();
    assert!(
        rules.rules[0].reconcile.as_ref().unwrap().repair,
        "repairs by default"
    );
    let text = edit(|v| {
        v["rules"][0]["resync"] = serde_json::json!({"every_seconds": 60, "often": true});
    });
    assert!(
        problems(&text).iter().any(|s| s.contains("often")),
        "unknown keys are refused"
    );
}

#[test]
fn a_file_with_shape_and_reference_problems_names_every_one() {
    let text = edit(|v| {
        // A shape problem in a system, another in a rule, and a reference problem in a
        // rule that is well-formed.
        v["systems"]["helpdesk"]["base_url"] = serde_json::json!(8090);
        let mut second = v["rules"][0].clone();
        second["name"] = serde_json::json!("second");
        second["source"]["system"] = serde_json::json!("nowhere");
        v["rules"][0]["direction"] = serde_json::json!("sideways");
        v["rules"].as_array_mut().unwrap().push(second);
    });
    let found = problems(&text);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("systems.helpdesk.base_url: invalid type: integer `8090`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("rules[0].direction: unknown variant `sideways`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("rules[1].source.system: unknown system \"nowhere\"")),
        "{found:#?}"
    );
    // The second rule's target is the malformed helpdesk: not named again as unknown.
    assert!(
        !found
            .iter()
            .any(|p| p.contains("unknown system \"helpdesk\"")),
        "{found:#?}"
    );
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn a_single_shape_problem_keeps_its_line_and_column() {
    let text = edit(|v| v["rules"][0]["direction"] = serde_json::json!("sideways"));
    match parse_rules("t.json", &text) {
        Err(ConfigError::Shape { problem, .. }) => {
            assert!(
                problem
                    .path
                    .starts_with("rules[0].direction (line 1 column"),
                "{problem}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_schema_check_needs_a_sane_interval_and_samples_of_known_entities() {
    let ok = edit(|v| {
        v["systems"]["helpdesk"]["schema_check"] =
            serde_json::json!({"every_seconds": 3600, "samples": {"ticket": "1"}});
        v["rules"][0]["on_schema_drift"] = serde_json::json!("pause");
    });
    let rules = parse_rules("t.json", &ok).unwrap();
    assert_eq!(
        rules.rules[0].on_schema_drift,
        domain::rules::OnSchemaDrift::Pause
    );
    let text = edit(|v| {
        v["systems"]["helpdesk"]["schema_check"] =
            serde_json::json!({"every_seconds": 5, "samples": {"tiket": "1"}});
        v["systems"]["kintone"]["schema_check"] =
            serde_json::json!({"every_seconds": 60, "samples": {"101": "1"}});
        v["rules"][0]["on_schema_drift"] = serde_json::json!("stop");
    });
    let p = problems(&text);
    // A shape problem (the unknown variant) is named with the reference problems.
    assert!(p.iter().any(|s| s.contains("stop")), "{p:#?}");
    for want in [
        "systems.helpdesk.schema_check.every_seconds: must be at least 60",
        "systems.helpdesk.schema_check.samples.tiket: \"tiket\" is not an entity",
        "systems.kintone.schema_check.samples.101: \"101\" is not an entity",
    ] {
        assert!(p.iter().any(|s| s.starts_with(want)), "{want}\n{p:#?}");
    }
}

#[test]
fn a_file_system_is_only_a_one_way_source_without_an_api() {
    let partner = |v: &mut serde_json::Value| {
        v["systems"]["partner"] = serde_json::json!({"kind": "file"});
        v["rules"][0]["source"] = serde_json::json!({"system": "partner", "app": "orders"});
        v["rules"][0].as_object_mut().unwrap().remove("write_back");
    };
    let ok = edit(partner);
    assert_eq!(problems(&ok), Vec::<String>::new());
    let rules = parse_rules("t.json", &ok).unwrap();
    assert_eq!(rules.systems["partner"].kind, SystemKind::File);

    let text = edit(|v| {
        partner(v);
        v["systems"]["partner"]["base_url"] = serde_json::json!("http://x");
        v["systems"]["partner"]["limits"] = serde_json::json!({"requests_per_second": 1});
        v["rules"][0]["direction"] = serde_json::json!("both");
        v["rules"][0]["write_back"] = serde_json::json!({"field": "helpdesk_ticket_id"});
        v["rules"][0]["resync"] = serde_json::json!({"every_seconds": 60});
        // And a rule that writes into it.
        let mut back = v["rules"][0].clone();
        back["name"] = serde_json::json!("back");
        back["source"] = serde_json::json!({"system": "kintone", "app": "101"});
        back["target"] = serde_json::json!({"system": "partner", "entity": "orders"});
        back.as_object_mut().unwrap().remove("resync");
        back.as_object_mut().unwrap().remove("write_back");
        back["direction"] = serde_json::json!("one_way");
        v["rules"].as_array_mut().unwrap().push(back);
    });
    let p = problems(&text);
    for want in [
        "systems.partner.base_url: a file system has no API",
        "systems.partner.limits: a file system has no API",
        "rules[0].direction: the source \"partner\" is a file system",
        "rules[0].resync: the source \"partner\" is a file system",
        "rules[0].write_back: write-back is supported for kintone sources",
        "rules[1].target.system: \"partner\" is a file system",
    ] {
        assert!(p.iter().any(|s| s.starts_with(want)), "{want}\n{p:#?}");
    }
}

#[test]
fn a_budget_needs_at_least_one_request_a_day() {
    let text = edit(|v| {
        v["systems"]["kintone"]["budget"] = serde_json::json!({"requests_per_day": 0});
    });
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|s| s.starts_with("systems.kintone.budget.requests_per_day: must be at least 1")),
        "{p:#?}"
    );
    let ok = edit(|v| {
        v["systems"]["kintone"]["budget"] = serde_json::json!({"requests_per_day": 10000});
    });
    let rules = parse_rules("t.json", &ok).unwrap();
    assert_eq!(
        rules.systems["kintone"]
            .budget
            .as_ref()
            .map(|b| b.requests_per_day),
        Some(10_000)
    );
}

#[test]
fn deleting_or_flagging_the_target_needs_what_it_writes() {
    let text = edit(|v| {
        v["rules"][0]["on_delete"] = serde_json::json!("delete_target");
    });
    let p = problems(&text);
    assert!(
        p.iter().any(|s| s.starts_with(
            "rules[0].on_delete: delete_target deletes through the entity's `delete` template"
        )),
        "{p:#?}"
    );
    let ok = edit(|v| {
        v["rules"][0]["on_delete"] = serde_json::json!("delete_target");
        v["systems"]["helpdesk"]["entities"]["ticket"]["delete"] =
            serde_json::json!("/api/tickets/{id}");
    });
    assert_eq!(problems(&ok), Vec::<String>::new());

    let text = edit(|v| {
        v["rules"][0]["on_delete"] = serde_json::json!("flag");
    });
    assert!(
        problems(&text)
            .iter()
            .any(|s| s.starts_with("rules[0].deleted_flag: on_delete: flag needs deleted_flag")),
        "{:#?}",
        problems(&text)
    );
    let text = edit(|v| {
        v["rules"][0]["deleted_flag"] = serde_json::json!({"field": "status", "value": "closed"});
    });
    assert!(
        problems(&text).iter().any(|s| s.starts_with(
            "rules[0].deleted_flag: deleted_flag is only written with on_delete: flag"
        )),
        "{:#?}",
        problems(&text)
    );
    let ok = edit(|v| {
        v["rules"][0]["on_delete"] = serde_json::json!("flag");
        v["rules"][0]["deleted_flag"] = serde_json::json!({"field": "status", "value": "closed"});
    });
    assert_eq!(problems(&ok), Vec::<String>::new());
}

#[test]
fn only_a_two_way_rule_acts_on_a_deleted_target() {
    let text = edit(|v| {
        v["rules"][0]["on_target_delete"] = serde_json::json!("unlink");
    });
    assert!(
        problems(&text)
            .iter()
            .any(|s| s.starts_with("rules[0].on_target_delete: only a two-way rule")),
        "{:#?}",
        problems(&text)
    );
}

#[test]
fn a_target_deleted_flag_goes_with_on_target_delete_flag() {
    let two_way = |v: &mut serde_json::Value| {
        v["rules"][0]["direction"] = serde_json::json!("both");
    };
    let missing = edit(|v| {
        two_way(v);
        v["rules"][0]["on_target_delete"] = serde_json::json!("flag");
    });
    assert!(
        problems(&missing).iter().any(|s| s.starts_with(
            "rules[0].target_deleted_flag: on_target_delete: flag needs target_deleted_flag"
        )),
        "{:#?}",
        problems(&missing)
    );
    let stray = edit(|v| {
        two_way(v);
        v["rules"][0]["target_deleted_flag"] =
            serde_json::json!({"field": "状態", "value": "取消"});
    });
    assert!(
        problems(&stray)
            .iter()
            .any(|s| s.starts_with("rules[0].target_deleted_flag: target_deleted_flag is only written with on_target_delete: flag")),
        "{:#?}",
        problems(&stray)
    );
    let ok = edit(|v| {
        two_way(v);
        v["rules"][0]["on_target_delete"] = serde_json::json!("flag");
        v["rules"][0]["target_deleted_flag"] =
            serde_json::json!({"field": "状態", "value": "取消"});
    });
    assert!(
        !problems(&ok).iter().any(|s| s.contains("target_delete")),
        "{:#?}",
        problems(&ok)
    );
    let delete_source = edit(|v| {
        two_way(v);
        v["rules"][0]["on_target_delete"] = serde_json::json!("delete_source");
    });
    assert!(
        !problems(&delete_source)
            .iter()
            .any(|s| s.contains("target_delete")),
        "kintone deletes records: {:#?}",
        problems(&delete_source)
    );
}

#[test]
fn request_shapes_are_checked_and_every_bad_one_named() {
    let good = edit(|v| {
        let t = &mut v["systems"]["helpdesk"]["entities"]["ticket"];
        t["fields_pointer"] = serde_json::json!("/properties");
        t["field_paths"] = serde_json::json!({
            "po": {"pointer": "/custom_fields", "id": 360001},
            "city": {"pointer": "/address/city"}
        });
        t["search"] = serde_json::json!("/crm/v3/objects/tickets/search");
        t["search_body"] = serde_json::json!({"filterGroups": [{"filters": [{"propertyName": "{field}", "operator": "EQ", "value": "{value}"}]}]});
        t["bulk_update"] = serde_json::json!({
            "path": "/batch/update", "method": "POST", "list_key": "inputs", "fields_key": "properties",
            "string_ids": true,
            "results": {"list": "/results", "errors": "/errors", "error_ids": "/context/ids", "message": "/message"}
        });
    });
    assert!(problems(&good).is_empty(), "{:#?}", problems(&good));
    let bad = edit(|v| {
        let t = &mut v["systems"]["helpdesk"]["entities"]["ticket"];
        t["fields_pointer"] = serde_json::json!("properties");
        t["field_paths"] = serde_json::json!({
            "po": {"pointer": "custom_fields", "id": [1]},
        });
        t["search"] = serde_json::json!("/search");
        t["search_body"] = serde_json::json!({"query": "{field}"});
        t["bulk_update"] = serde_json::json!({
            "path": "/bulk", "method": "GET", "max": 0,
            "results": {"list": "results", "errors": "/errors"}
        });
    });
    let p = problems(&bad);
    let at = "systems.helpdesk.entities.ticket";
    for wanted in [
        format!("{at}.fields_pointer: \"properties\" is not a JSON pointer"),
        format!("{at}.field_paths.po.pointer: \"custom_fields\" is not a JSON pointer"),
        format!("{at}.field_paths.po.id: an element's id is a number or a string"),
        format!("{at}.search_body: the body needs {{value}}"),
        format!("{at}.bulk_update.method: use POST, PUT or PATCH"),
        format!("{at}.bulk_update.max: at least 1"),
        format!("{at}.bulk_update.results.list: \"results\" is not a JSON pointer"),
        format!("{at}.bulk_update.results: errors and error_ids go together"),
    ] {
        assert!(
            p.iter().any(|s| s.starts_with(&wanted)),
            "{wanted} not in {p:#?}"
        );
    }
}
