//! Rule-change preview: what a new rules file would do, read from the systems as they
//! are now, with nothing written anywhere.

use serde_json::json;
use tests::{Env, EnvOptions, RULE};

#[tokio::test]
async fn a_preview_shows_a_transform_an_owner_and_a_variant_change_and_writes_nothing()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let (pump, _) = env.seed_linked("WO-901", "Pump").await?;
    let (valve, _) = env.seed_linked("WO-902", "valve").await?;

    let mut new = env.rules.clone();
    let rule = new
        .rules
        .iter_mut()
        .find(|r| r.name == RULE)
        .expect("the rule");
    let subject = rule
        .fields
        .iter_mut()
        .find(|f| f.target == "subject")
        .expect("subject");
    subject
        .transforms
        .push(serde_json::from_value(json!("lowercase"))?);
    rule.fields
        .iter_mut()
        .find(|f| f.target == "priority")
        .expect("priority")
        .owner = Some("helpdesk".into());
    rule.identity.variants.reverse();

    let before = (
        env.request_log("kintone").await?.len(),
        env.request_log("helpdesk").await?.len(),
    );
    let history_before = env.store.history_counts(None).await?;
    let processor = env.processor()?;
    let report = worker::preview::preview(&processor, &new, RULE, 100, None).await?;

    let rule_changes: Vec<(String, String)> = report
        .rule_changes
        .iter()
        .map(|c| (c.field.clone(), c.what.clone()))
        .collect();
    assert!(
        rule_changes.contains(&(
            "subject".into(),
            "transforms [trim] → [trim, lowercase]".into()
        )),
        "{rule_changes:?}"
    );
    assert!(
        rule_changes.contains(&("priority".into(), "owner kintone → helpdesk".into())),
        "{rule_changes:?}"
    );
    assert!(
        rule_changes.iter().any(|(f, w)| f == "identity"
            && w.contains("by [without prefix \"WO-\", without leading zeros] became")),
        "{rule_changes:?}"
    );
    assert_eq!(report.records, 2);
    // Only the record whose subject is not in lower case would be written.
    let changed: Vec<&str> = report.changed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(changed, vec![pump.as_str()], "{report:#?}");
    assert!(
        report.summary.contains(&format!(
            "1 record: subject would now be written to helpdesk ({pump})"
        )),
        "{:#?}",
        report.summary
    );
    assert!(
        report.summary.contains(&format!(
            "1 record: subject would map to a different value (e.g. \"Pump\" → \"pump\") ({pump})"
        )),
        "{:#?}",
        report.summary
    );
    assert!(
        !report
            .summary
            .iter()
            .any(|l| l.contains(&format!("({valve})")))
    );

    // It read both records of each link and, the identity changing, listed kintone
    // for records not linked yet (there are none: no search); it wrote nothing.
    let kintone = env.request_log("kintone").await?;
    let helpdesk = env.request_log("helpdesk").await?;
    let new_requests: Vec<_> = kintone[before.0..]
        .iter()
        .chain(&helpdesk[before.1..])
        .collect();
    assert_eq!(new_requests.len(), 5, "{new_requests:#?}");
    assert_eq!(report.unlinked, 0);
    assert_eq!(
        kintone[before.0..]
            .iter()
            .filter(|e| e["path"] == "/k/v1/records.json")
            .count(),
        1
    );
    assert!(
        new_requests.iter().all(|e| e["method"] == "GET"),
        "{new_requests:#?}"
    );
    assert_eq!(env.store.history_counts(None).await?, history_before);
    env.finish().await
}

/// The same through the admin API: the new rules document in the body; a rule the new
/// rules lack is named (its links would be orphaned), and invalid rules are refused with
/// their JSON path.
#[tokio::test]
async fn the_admin_api_previews_a_rule_change() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (pump, _) = env.seed_linked("WO-903", "Pump").await?;
    let mut new = serde_json::to_value(&env.rules)?;
    new["rules"][0]["fields"][0]["transforms"] = json!(["trim", "lowercase"]);
    let url = format!("{}/preview", env.admin_urls[0]);

    let resp = env
        .http
        .post(&url)
        .json(&json!({"rule": RULE, "rules": new}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let report: serde_json::Value = resp.json().await?;
    assert_eq!(report["records"], 1, "{report}");
    assert_eq!(report["changed"][0][0], pump.as_str(), "{report}");
    assert!(
        report["summary"]
            .as_array()
            .is_some_and(|s| s.contains(&json!(format!(
                "1 record: subject would now be written to helpdesk ({pump})"
            )))),
        "{report}"
    );

    let mut renamed = new.clone();
    renamed["rules"][0]["name"] = json!("renamed-rule");
    let resp = env
        .http
        .post(&url)
        .json(&json!({"rule": RULE, "rules": renamed}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 404);
    let body: serde_json::Value = resp.json().await?;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("would be orphaned")),
        "{body}"
    );

    let mut invalid = new;
    invalid["rules"][0]["direction"] = json!("sideways");
    let resp = env
        .http
        .post(&url)
        .json(&json!({"rule": RULE, "rules": invalid}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 422);
    let body: serde_json::Value = resp.json().await?;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rules[0].direction")),
        "{body}"
    );
    env.finish().await
}

#[tokio::test]
async fn an_identity_change_previews_which_unlinked_records_would_match_another_ticket()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let ticket = env
        .helpdesk_seed(json!({"subject": "Gear", "external_id": "42"}))
        .await?;
    env.seed_linked("WO-901", "Pump").await?;
    let gear = env
        .kintone_create_silently(json!({"work_order_no": "WO-0042", "件名": "Gear"}))
        .await?;
    env.kintone_create_silently(json!({"work_order_no": "WO-0077", "件名": "Nothing"}))
        .await?;

    // Each variant applies to the original value, so today WO-0042 tries 0042 and
    // misses ticket 42; chained, the variants find it.
    let mut new = env.rules.clone();
    new.rules[0].identity.variants = vec![serde_json::from_value(
        json!({"chain": [{"strip_prefix": "WO-"}, "strip_leading_zeros"]}),
    )?];
    let logged = (
        env.request_log("kintone").await?.len(),
        env.request_log("helpdesk").await?.len(),
    );
    let processor = env.processor()?;
    let report = worker::preview::preview(&processor, &new, RULE, 100, None).await?;
    assert_eq!(report.unlinked, 2, "{report:#?}");
    assert_eq!(report.records, 1, "{report:#?}");
    assert_eq!(
        report.changed,
        vec![(
            gear.clone(),
            vec![domain::preview::Change::Match {
                before: None,
                after: Some(ticket.clone())
            }]
        )]
    );
    assert!(
        report.summary.contains(&format!(
            "1 record: would now match an existing helpdesk record instead of none (e.g. {ticket}) ({gear})"
        )),
        "{:#?}",
        report.summary
    );
    // Reads only, and nothing stored.
    for (system, from) in [("kintone", logged.0), ("helpdesk", logged.1)] {
        let log = env.request_log(system).await?;
        assert!(
            log[from..].iter().all(|e| e["method"] == "GET"),
            "{system}: {:#?}",
            &log[from..]
        );
    }
    assert!(env.store.links(RULE).await?.len() == 1);

    // `since` keeps the linked records synced at or after a time.
    let hour = chrono::Duration::hours(1);
    let later = chrono::Utc::now() + hour;
    let none = worker::preview::preview(&processor, &new, RULE, 100, Some(later)).await?;
    assert_eq!(none.records, 0, "{none:#?}");
    let earlier = chrono::Utc::now() - hour;
    let all = worker::preview::preview(&processor, &new, RULE, 100, Some(earlier)).await?;
    assert_eq!(all.records, 1, "{all:#?}");
    env.finish().await
}
