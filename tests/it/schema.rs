//! Synthetic schema-drift checks against the sandbox's kintone form and a helpdesk
//! sample ticket: a renamed field is caught and its rule paused before it writes
//! wrong data; a type change and a removed option are found against the baseline.

use std::time::Duration;

use domain::drift::{DriftKind, Role, Severity};
use serde_json::{Value, json};
use tests::{APP, Env, EnvOptions, RULE, wait_for};
use worker::schema::{AppCheck, Mode, check};

/// Changes a field of the work-orders app as an app administrator would.
async fn change_field(env: &Env, code: &str, change: Value) -> anyhow::Result<()> {
    env.admin_post(&format!("/_admin/kintone/apps/{APP}/fields/{code}"), change)
        .await?;
    Ok(())
}

fn of<'a>(checks: &'a [AppCheck], system: &str) -> &'a AppCheck {
    checks
        .iter()
        .find(|c| c.system == system)
        .unwrap_or_else(|| panic!("no check of {system}: {checks:#?}"))
}

fn writes(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|e| e["method"] != "GET")
        .map(|e| format!("{} {}", e["method"], e["path"]))
        .collect()
}

#[tokio::test]
async fn a_renamed_field_is_caught_by_the_next_check_and_its_rule_is_paused() -> anyhow::Result<()>
{
    let env = Env::start_with(EnvOptions {
        edit_rules: Some(|rules| {
            rules
                .systems
                .get_mut("kintone")
                .expect("kintone")
                .schema_check = Some(domain::rules::SchemaCheckSpec {
                every_seconds: 3600,
                samples: Default::default(),
            });
            rules.rules[0].on_schema_drift = domain::rules::OnSchemaDrift::Pause;
        }),
        ..EnvOptions::default()
    })
    .await?;
    change_field(&env, "優先度", json!({"options": ["高", "中", "低"]})).await?;
    let (pump, _) = env.seed_linked("WO-1", "Pump").await?;

    // The worker's schedule checks kintone at once; that first check is the baseline.
    wait_for(
        "the scheduled first check",
        Duration::from_secs(60),
        || async {
            let checks = env.store.schema_checks_latest(Some("kintone")).await?;
            Ok(checks.iter().any(|c| c.app == APP && c.baseline))
        },
    )
    .await?;
    let first = env.store.schema_checks_latest(Some("kintone")).await?;
    assert_eq!(first[0].drift, json!([]), "{first:#?}");
    assert!(first[0].paused.is_empty());

    change_field(&env, "件名", json!({"code": "タイトル"})).await?;
    let logged = (
        env.request_log("kintone").await?.len(),
        env.request_log("helpdesk").await?.len(),
    );
    let processor = env.processor()?;
    let checks = check(&processor, None, Mode::Record).await?;

    let kintone = of(&checks, "kintone");
    assert!(kintone.had_baseline);
    assert_eq!(kintone.breaking(), 1, "{kintone:#?}");
    let drift = &kintone.drift[0];
    assert_eq!((drift.rule.as_str(), drift.field.as_str()), (RULE, "件名"));
    assert_eq!(drift.role, Some(Role::MapsFrom("subject".into())));
    assert_eq!(
        drift.kind,
        DriftKind::Missing {
            renamed_to: vec!["タイトル".into()]
        }
    );
    assert_eq!(
        kintone.lines[0],
        format!("field 件名 (rule {RULE} maps it to subject) is gone; renamed to タイトル?")
    );
    assert_eq!(kintone.paused, vec![RULE.to_owned()]);
    // The helpdesk was sampled from its listing (the seeded ticket) and is unchanged.
    let helpdesk = of(&checks, "helpdesk");
    assert_eq!(helpdesk.not_checked, None);
    assert!(helpdesk.drift.is_empty(), "{helpdesk:#?}");

    // The check only read: the form, and one listed ticket.
    let kintone_log = env.request_log("kintone").await?;
    let helpdesk_log = env.request_log("helpdesk").await?;
    assert_eq!(writes(&kintone_log[logged.0..]), Vec::<String>::new());
    assert_eq!(writes(&helpdesk_log[logged.1..]), Vec::<String>::new());
    assert!(
        kintone_log[logged.0..]
            .iter()
            .any(|e| e["path"] == "/k/v1/app/form/fields.json"),
        "{:#?}",
        &kintone_log[logged.0..]
    );

    let paused = env.store.paused().await?;
    assert_eq!(
        paused,
        vec![store::PausedRow {
            scope: "rule".to_owned(),
            name: RULE.to_owned()
        }]
    );
    // Work for the paused rule is parked, not written with the subject missing.
    let before = env.request_log("helpdesk").await?.len();
    env.kintone_edit(&pump, json!({"詳細": "after the rename"}))
        .await?;
    wait_for("the change parked", Duration::from_secs(30), || async {
        Ok(!env.store.parked(Some(RULE)).await?.is_empty())
    })
    .await?;
    assert_eq!(
        writes(&env.request_log("helpdesk").await?[before..]),
        Vec::<String>::new()
    );

    // The admin API and the metrics show the latest check.
    let admin = &env.admin_urls[0];
    let latest: Value = env
        .http
        .get(format!("{admin}/schema-check?system=kintone"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(latest["checks"][0]["breaking"], 1, "{latest:#}");
    assert_eq!(latest["checks"][0]["paused"], json!([RULE]));
    let metrics = env.worker_metrics().await?;
    for want in [
        "recordsync_schema_drift_fields{system=\"kintone\",app=\"101\",severity=\"breaking\"} 1\n",
        "recordsync_schema_drift_fields{system=\"helpdesk\",app=\"ticket\",severity=\"breaking\"} 0\n",
    ] {
        assert!(metrics.contains(want), "{want}\n{metrics}");
    }

    // The field renamed back: no drift, and the rule stays paused until an operator
    // resumes it.
    change_field(&env, "タイトル", json!({"code": "件名"})).await?;
    let checks = check(&processor, Some("kintone"), Mode::Record).await?;
    assert!(checks[0].drift.is_empty(), "{checks:#?}");
    assert!(checks[0].paused.is_empty());
    assert_eq!(env.store.paused().await?.len(), 1);
    env.finish().await
}

#[tokio::test]
async fn a_type_change_and_a_removed_option_are_found_against_the_baseline() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    change_field(&env, "優先度", json!({"options": ["高", "中", "低"]})).await?;
    let processor = env.processor()?;
    let first = check(&processor, Some("kintone"), Mode::Record).await?;
    assert!(!first[0].had_baseline);
    assert!(first[0].drift.is_empty(), "{first:#?}");

    // 優先度 becomes radio buttons without 中, which the rule's map reads.
    change_field(
        &env,
        "優先度",
        json!({"type": "RADIO_BUTTON", "options": ["高", "低"]}),
    )
    .await?;
    let stored = env.store.schema_checks_latest(None).await?.len();
    let dry = check(&processor, Some("kintone"), Mode::DryRun).await?;
    let kinds: Vec<(&DriftKind, Severity)> =
        dry[0].drift.iter().map(|d| (&d.kind, d.severity)).collect();
    assert_eq!(
        kinds,
        vec![
            (
                &DriftKind::TypeChanged {
                    from: "DROP_DOWN".into(),
                    to: "RADIO_BUTTON".into()
                },
                Severity::Breaking
            ),
            (
                &DriftKind::ReadOptionGone {
                    option: "中".into()
                },
                Severity::Warning
            ),
        ]
    );
    // A dry run stores nothing; an alerting rule is never paused.
    assert_eq!(dry[0].id, None);
    assert_eq!(env.store.schema_checks_latest(None).await?.len(), stored);
    let recorded = check(&processor, Some("kintone"), Mode::Record).await?;
    assert_eq!(recorded[0].drift, dry[0].drift);
    assert!(recorded[0].paused.is_empty());
    assert!(env.store.paused().await?.is_empty());

    // Still breaking at the next check: the baseline stays the last good schema.
    let again = check(&processor, Some("kintone"), Mode::Record).await?;
    assert_eq!(again[0].breaking(), 1);
    // An operator accepts the change: it becomes the baseline, and only what the
    // rules themselves contradict (the option the map reads) is left.
    check(&processor, Some("kintone"), Mode::Accept).await?;
    let after = check(&processor, Some("kintone"), Mode::Record).await?;
    let kinds: Vec<&DriftKind> = after[0].drift.iter().map(|d| &d.kind).collect();
    assert_eq!(
        kinds,
        vec![&DriftKind::ReadOptionGone {
            option: "中".into()
        }]
    );
    env.finish().await
}

/// A rule maps an optional source field that no record has (a misspelt field code):
/// every write leaves it out, and each record read under the rule counts it, by rule
/// and field, while a field that is present but empty is not counted.
#[tokio::test]
async fn a_mapped_source_field_no_record_has_is_counted_by_rule_and_field() -> anyhow::Result<()> {
    fn misspelt(rules: &mut domain::rules::SyncRules) {
        let rule = rules
            .rules
            .iter_mut()
            .find(|r| r.name == RULE)
            .expect("the example rule");
        rule.fields.push(domain::rules::FieldMapping {
            source: "詳細X".into(),
            target: "notes".into(),
            ..Default::default()
        });
    }
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(misspelt),
        ..EnvOptions::default()
    })
    .await?;
    let step = env.processor()?;
    for n in 1..=2 {
        let id = env
            .kintone_create_silently(json!({"work_order_no": format!("WO-51{n}"), "件名": "Pump"}))
            .await?;
        let done = step
            .step(&tests::change(&format!("ev-{n}"), &id), 1)
            .await?;
        assert_eq!(done, vec![(RULE.to_owned(), worker::step::Done::Synced)]);
    }
    let metrics = step.metrics.render();
    assert!(
        metrics.contains(&format!(
            "recordsync_worker_source_fields_absent_total{{rule=\"{RULE}\",field=\"詳細X\"}} 2"
        )),
        "{metrics}"
    );
    // 詳細 is in every record (empty): not absent.
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("recordsync_worker_source_fields_absent_total{"))
            .count(),
        1,
        "{metrics}"
    );
    // Nothing was sent for it.
    let posts: Vec<Value> = env
        .request_log("helpdesk")
        .await?
        .into_iter()
        .filter(|e| e["method"] == "POST")
        .collect();
    assert_eq!(posts.len(), 2);
    assert!(
        posts.iter().all(|p| p["body"].get("notes").is_none()),
        "{posts:#?}"
    );
    env.finish().await
}
