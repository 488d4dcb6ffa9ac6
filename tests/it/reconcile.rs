//! Reconcile: drift no webhook announced (an edit made directly in the helpdesk) is
//! found by comparing both systems, classified by the field's owner, and repaired
//! through the step; a record in flight is left alone; a dry run changes nothing.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE};
use worker::reconcile::ReconcileJob;

async fn subject(env: &Env, order: &str) -> anyhow::Result<Value> {
    Ok(env.tickets_for(order).await?[0]["subject"].clone())
}

async fn runs(env: &Env) -> anyhow::Result<Vec<Value>> {
    let v: Value = env
        .http
        .get(format!("{}/reconcile?rule={RULE}", env.admin_urls[0]))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["runs"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn drift_in_the_target_is_found_by_its_owner_and_repaired_through_the_step()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 1,
        ..EnvOptions::default()
    })
    .await?;
    let processor = env.processor()?;
    let mut records = vec![];
    for n in 1..=3 {
        records.push(
            env.seed_linked(&format!("WO-80{n}"), &format!("Subject {n}"))
                .await?,
        );
    }
    // Someone edits two tickets directly in the helpdesk; no webhook says so.
    env.helpdesk_edit(&records[1].1, json!({"subject": "Drifted"}))
        .await?;
    env.helpdesk_edit(&records[2].1, json!({"subject": "Drifted too"}))
        .await?;
    // The third record is in flight: a worker holds its lease.
    let mut held = env.store.begin_record(RULE, &records[2].0).await?;

    // A dry run reports and changes nothing.
    let dry = ReconcileJob::claim(&processor, RULE)
        .await?
        .run(&processor, None, true, Duration::ZERO)
        .await?;
    assert_eq!(
        (
            dry.linked,
            dry.compared,
            dry.skipped_in_flight,
            dry.records_apart
        ),
        (3, 2, 1, 1),
        "{dry:#?}"
    );
    assert_eq!(dry.differences.get("update_target"), Some(&1), "{dry:#?}");
    // Three linked records make one bucket; it is apart, so its two are compared row
    // by row.
    assert_eq!(
        (dry.buckets, dry.buckets_apart, dry.rows_compared),
        (1, 1, 2),
        "{dry:#?}"
    );
    assert_ne!(dry.source_hash, dry.target_hash);
    assert_eq!(dry.repairs_queued, 0);
    // kintone reads the linked ids in one `$id in (…)` request; the helpdesk lists one
    // page and the empty page that ends the listing.
    assert_eq!(dry.requests, 3, "{dry:#?}");
    let reads: Vec<Value> = env
        .request_log("kintone")
        .await?
        .into_iter()
        .filter(|e| e["path"] == "/k/v1/records.json")
        .collect();
    assert_eq!(reads.len(), 1, "{reads:#?}");
    let query = reads[0]["query"].as_str().unwrap_or_default();
    let wanted = format!("query=%24id+in+%28{}%2C+{}%29", records[0].0, records[1].0);
    assert!(query.contains(&wanted), "a read by ids: {query}");
    let f = &dry.found[0];
    assert_eq!(
        (
            f.record_id.as_str(),
            f.difference.field.as_str(),
            f.difference.owner.as_str()
        ),
        (records[1].0.as_str(), "subject", "kintone")
    );
    assert_eq!(
        (f.difference.source.clone(), f.difference.target.clone()),
        (json!("Subject 2"), json!("Drifted"))
    );
    assert_eq!(subject(&env, "WO-802").await?, "Drifted");
    held.commit().await?;

    // Through the admin API: a run repairs what it found, through the step.
    let resp = env
        .http
        .post(format!("{}/reconcile", env.admin_urls[0]))
        .json(&json!({"rule": RULE, "settle_seconds": 0}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 202);
    tests::wait_for("the run to be stored", Duration::from_secs(20), || async {
        Ok(runs(&env).await?.len() == 2)
    })
    .await?;
    let run = runs(&env).await?[0].clone();
    assert_eq!(run["dry_run"], false, "{run:#}");
    assert_eq!(run["summary"]["records_apart"], 2, "{run:#}");
    assert_eq!(run["summary"]["repairs_queued"], 2, "{run:#}");
    env.settle("both tickets restored", || async {
        Ok(subject(&env, "WO-802").await? == "Subject 2"
            && subject(&env, "WO-803").await? == "Subject 3")
    })
    .await?;
    // The ticket is written before the step commits its story: wait for the story.
    let told = "a reconcile asked to repair this kintone record: subject differs (kintone holds \"Subject 2\", helpdesk holds \"Drifted\"; kintone owns it)";
    tests::wait_for("the repair's story", Duration::from_secs(10), || async {
        Ok(env
            .history(&records[1].0)
            .await?
            .iter()
            .any(|h| h.contains(told)))
    })
    .await?;
    assert_eq!(subject(&env, "WO-801").await?, "Subject 1");
    assert_eq!(env.ticket_posts().await?, 0, "nothing created");

    // Once repaired, a run finds the systems together.
    tests::wait_for("the repairs to commit", Duration::from_secs(10), || async {
        Ok(env
            .store
            .busy_records(RULE, Duration::ZERO)
            .await?
            .is_empty())
    })
    .await?;
    let after = ReconcileJob::claim(&processor, RULE)
        .await?
        .run(&processor, None, true, Duration::ZERO)
        .await?;
    assert_eq!((after.compared, after.records_apart), (3, 0), "{after:#?}");
    // The buckets agree: no record is compared row by row.
    assert_eq!(
        (after.buckets_apart, after.rows_compared),
        (0, 0),
        "{after:#?}"
    );
    assert_eq!(after.source_hash, after.target_hash);
    env.finish().await
}

/// The ticket's description is the helpdesk's own, on a one-way rule: it never flows
/// back to kintone.
fn description_owned_by_the_helpdesk(rules: &mut domain::rules::SyncRules) {
    let rule = rules
        .rules
        .iter_mut()
        .find(|r| r.name == RULE)
        .expect("the example rule");
    let f = rule
        .fields
        .iter_mut()
        .find(|f| f.target == "description")
        .expect("the description mapping");
    f.owner = Some("helpdesk".into());
}

#[tokio::test]
async fn a_repair_writes_only_what_has_a_clear_owner_and_differs() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(description_owned_by_the_helpdesk),
        ..EnvOptions::default()
    })
    .await?;
    let processor = env.processor()?;
    let (id, ticket) = env.seed_linked("WO-810", "Kept").await?;
    env.helpdesk_edit(
        &ticket,
        json!({"subject": "Drifted", "description": "Written by support"}),
    )
    .await?;
    let dry = ReconcileJob::claim(&processor, RULE)
        .await?
        .run(&processor, None, true, Duration::ZERO)
        .await?;
    let actions: Vec<(String, String)> = dry
        .found
        .iter()
        .map(|f| {
            (
                f.difference.field.clone(),
                serde_json::to_value(f.difference.action)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("subject".to_owned(), "update_target".to_owned()),
            ("description".to_owned(), "ignore".to_owned())
        ],
        "{dry:#?}"
    );
    let kintone_puts = |log: &[Value]| log.iter().filter(|e| e["method"] == "PUT").count();
    let before = kintone_puts(&env.request_log("kintone").await?);
    let repair = tests::command(
        "rp-810",
        queue::Command::Repair {
            rule: RULE.into(),
            record_id: id.clone(),
            reason: "subject differs".into(),
        },
    );
    processor.step(&repair, 1).await?;
    let t = &env.tickets_for("WO-810").await?[0];
    assert_eq!(t["subject"], "Kept", "{t:#}");
    assert_eq!(t["description"], "Written by support", "{t:#}");
    assert_eq!(
        kintone_puts(&env.request_log("kintone").await?),
        before,
        "nothing flows back to kintone on a one-way rule"
    );
    let record = env.kintone_record(&id).await?;
    assert_eq!(record["詳細"]["value"], "", "{record:#}");
    env.finish().await
}

fn reconciled_hourly(rules: &mut domain::rules::SyncRules) {
    let rule = rules
        .rules
        .iter_mut()
        .find(|r| r.name == RULE)
        .expect("the example rule");
    rule.reconcile = Some(domain::rules::ReconcileSpec {
        every_seconds: 3600,
        repair: true,
        settle_seconds: Some(0),
    });
}

#[tokio::test]
async fn a_scheduled_reconcile_runs_once_per_period_for_the_fleet() -> anyhow::Result<()> {
    let mut env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(reconciled_hourly),
        ..EnvOptions::default()
    })
    .await?;
    let (_, ticket) = env.seed_linked("WO-830", "Scheduled").await?;
    env.helpdesk_edit(&ticket, json!({"subject": "Drifted"}))
        .await?;
    // Two workers start; each runs the schedule at once, and one of them runs it.
    env.start_worker().await?;
    env.start_worker().await?;
    env.settle("the scheduled repair", || async {
        Ok(subject(&env, "WO-830").await? == "Scheduled")
    })
    .await?;
    // Both workers have had their turn: one ran it, the other found it taken (or
    // running).
    tests::wait_for("both workers' turn", Duration::from_secs(20), || async {
        Ok(env
            .scheduled_turns("reconcile")
            .await?
            .values()
            .sum::<u64>()
            >= 2)
    })
    .await?;
    let turns = env.scheduled_turns("reconcile").await?;
    assert_eq!(turns.get("ran"), Some(&1), "{turns:?}");
    assert_eq!(turns.values().sum::<u64>(), 2, "{turns:?}");
    let stored = env.store.reconcile_runs(Some(RULE), 10).await?;
    assert_eq!(stored.len(), 1, "one run for the period: {stored:#?}");
    assert_eq!(stored[0].summary["repairs_queued"], 1, "{stored:#?}");
    env.finish().await
}
