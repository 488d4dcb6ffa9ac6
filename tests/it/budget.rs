//! Daily API budgets: every request counts, wherever it comes from; once a budget is
//! used up, resync and reconcile wait while live sync goes on.

use std::time::Duration;

use domain::budget::Verdict;
use domain::rules::{Budget, SyncRules};
use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE, wait_for};
use worker::resync::{PAGE_SIZE, ResyncError, ResyncJob};

fn kintone_budget(rules: &mut SyncRules) {
    rules.systems.get_mut("kintone").expect("kintone").budget = Some(Budget {
        requests_per_day: 5,
    });
}

#[tokio::test]
async fn a_used_up_budget_holds_resync_and_reconcile_back_and_live_sync_goes_on()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        edit_rules: Some(kintone_budget),
        ..EnvOptions::default()
    })
    .await?;
    // Three work orders synced live: each costs kintone a read and a write-back.
    let mut ids = vec![];
    for n in 0..3 {
        let id = env
            .kintone_create(
                json!({"work_order_no": format!("WO-70{n}"), "件名": format!("Budget {n}")}),
            )
            .await?;
        ids.push(id);
    }
    env.settle("the live sync", || env.all_written_back(&ids))
        .await?;

    // Every request to kintone is counted, whichever worker made it: the count
    // follows the sandbox's log once the echoes of the write-backs are decided (a
    // request is logged when it arrives, counted when its answer is back).
    let processor = env.processor()?;
    let counted = || async {
        let used = worker::budget::status(&processor).await?[0]
            .usage
            .used_today;
        anyhow::Ok((used, env.request_log("kintone").await?.len() as u64))
    };
    wait_for(
        "the count to follow the log",
        Duration::from_secs(10),
        || async {
            let (used, logged) = counted().await?;
            Ok(used == logged)
        },
    )
    .await?;
    let kintone_requests = counted().await?.1;
    let status = worker::budget::status(&processor).await?;
    assert_eq!(status.len(), 1, "{status:#?}");
    assert!(kintone_requests >= 6, "{kintone_requests}");
    let Verdict::Hold { reason } = &status[0].background else {
        panic!("the budget of 5 is used up: {status:#?}");
    };
    assert!(
        reason.contains("kintone's API budget is used up"),
        "{reason}"
    );

    // A resync waits, lists nothing, and keeps its lease free for the next try.
    let job = ResyncJob::claim(&processor, RULE).await?;
    let (publisher, names) = env.publisher().await?;
    let held = job
        .run(&processor, &publisher, &names, false, PAGE_SIZE)
        .await;
    let Err(ResyncError::HeldBack(why)) = held else {
        panic!("not held back: {held:?}");
    };
    assert_eq!(&why, reason);
    assert_eq!(
        env.request_log("kintone").await?.len() as u64,
        kintone_requests
    );
    ResyncJob::claim(&processor, RULE).await?.release().await?;

    // The admin API says why, for resync and reconcile alike, and shows the figures.
    let admin = &env.admin_urls[0];
    for (path, body) in [
        ("/resync", json!({"rule": RULE})),
        ("/reconcile", json!({"rule": RULE})),
    ] {
        let resp = env
            .http
            .post(format!("{admin}{path}"))
            .json(&body)
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 409, "{path}");
        let body: Value = resp.json().await?;
        assert_eq!(body["error"]["code"], "held_back", "{body:#}");
    }
    let budgets: Value = env
        .http
        .get(format!("{admin}/budget"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(budgets["budgets"][0]["system"], "kintone", "{budgets:#}");
    assert_eq!(
        budgets["budgets"][0]["background"]["state"], "hold",
        "{budgets:#}"
    );
    let metrics = env.worker_metrics().await?;
    assert!(
        metrics.contains("recordsync_api_budget_requests{system=\"kintone\"} 5\n"),
        "{metrics}"
    );

    // Live sync is never held: a new work order still reaches the helpdesk.
    let id = env
        .kintone_create(json!({"work_order_no": "WO-799", "件名": "Still live"}))
        .await?;
    env.settle("the live sync past the budget", || env.written_back(&id))
        .await?;
    assert_eq!(env.tickets_for("WO-799").await?.len(), 1);
    wait_for("the count to follow", Duration::from_secs(10), || async {
        let (used, logged) = counted().await?;
        Ok(used == logged && used > kintone_requests)
    })
    .await?;

    // With a budget that fits, the same resync runs.
    let mut roomy = env.rules.clone();
    roomy.systems.get_mut("kintone").expect("kintone").budget = Some(Budget {
        requests_per_day: 1_000_000,
    });
    let processor = env.processor_with(&roomy)?;
    let report = ResyncJob::claim(&processor, RULE)
        .await?
        .run(&processor, &publisher, &names, false, PAGE_SIZE)
        .await?;
    assert_eq!(report.listed, 4);
    env.finish().await
}
