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
    assert_eq!(dry.repairs_queued, 0);
    // Both systems can list: one page each.
    assert_eq!(dry.requests, 2, "{dry:#?}");
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
    let history = env.history(&records[1].0).await?;
    assert!(
        history.iter().any(|h| h.contains(
            "a reconcile asked to repair this kintone record: subject differs (kintone holds \"Subject 2\", helpdesk holds \"Drifted\"; kintone owns it)"
        )),
        "{history:#?}"
    );
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
    env.finish().await
}
