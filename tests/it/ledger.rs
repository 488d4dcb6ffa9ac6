//! The ledger: every event a worker saw under a rule, against what became of it, from
//! PostgreSQL. Each bucket is driven here by the real path that fills it.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE, change};
use worker::step::Done;

#[tokio::test]
async fn every_event_seen_is_accounted_for_once_and_a_lost_one_is_named() -> anyhow::Result<()> {
    // One worker for the admin API. The records are created without webhooks and
    // kintone sends none (the write-backs would announce themselves), so the worker
    // consumes nothing and only the test's steps are seen.
    let env = Env::start_with(EnvOptions {
        workers: 1,
        ..EnvOptions::default()
    })
    .await?;
    env.admin_post("/_admin/kintone/webhook_cap", json!({"per_minute": 0}))
        .await?;
    let step = env.processor()?;
    let one = |done: Done| vec![(RULE.to_owned(), done)];

    // Synced, then the same delivery again (a duplicate is not a second event), then a
    // second event that finds nothing new.
    let a = env
        .kintone_create_silently(json!({"work_order_no": "WO-91", "件名": "Ledger"}))
        .await?;
    assert_eq!(step.step(&change("ev-a1", &a), 1).await?, one(Done::Synced));
    assert_eq!(
        step.step(&change("ev-a1", &a), 2).await?,
        one(Done::Duplicate)
    );
    let again = step.step(&change("ev-a2", &a), 1).await?;
    assert_eq!(again.len(), 1);
    let skip_reason = again[0].1.as_str();
    assert!(
        matches!(again[0].1, Done::Stale | Done::Unchanged),
        "{again:?}"
    );

    // A conflict: no lookup value.
    let b = env
        .kintone_create_silently(json!({"work_order_no": "", "件名": "No number"}))
        .await?;
    assert_eq!(
        step.step(&change("ev-b1", &b), 1).await?,
        one(Done::Conflict)
    );

    // Seen, then failed (the helpdesk is down): no outcome yet.
    env.admin_post(
        "/_admin/faults",
        json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": 503, "count": 1}),
    )
    .await?;
    let d = env
        .kintone_create_silently(json!({"work_order_no": "WO-94", "件名": "Failing"}))
        .await?;
    assert!(step.step(&change("ev-d1", &d), 1).await.is_err());

    // Parked twice: the second event replaces the first, which is coalesced.
    worker::ops::pause(&env.store, &env.rules, "rule", RULE, Some("ledger test")).await?;
    let c = env
        .kintone_create_silently(json!({"work_order_no": "WO-93", "件名": "Parked"}))
        .await?;
    assert_eq!(step.step(&change("ev-c1", &c), 1).await?, one(Done::Parked));
    assert_eq!(step.step(&change("ev-c2", &c), 1).await?, one(Done::Parked));

    // With no settle time, the failed event is unaccounted for, and named.
    let now = env.store.ledger(Some(RULE), Duration::ZERO).await?;
    assert_eq!(now.len(), 1, "{now:#?}");
    let l = &now[0];
    assert_eq!(l.accepted, 6, "{l:#?}");
    assert_eq!(l.synced, 1, "{l:#?}");
    assert_eq!(
        l.skipped,
        [(skip_reason.to_owned(), 1), ("coalesced".to_owned(), 1)]
            .into_iter()
            .collect(),
        "{l:#?}"
    );
    assert_eq!(
        (l.conflicts, l.parked, l.dead_lettered),
        (1, 1, 0),
        "{l:#?}"
    );
    assert_eq!(
        (l.in_flight, l.unaccounted, l.imbalance()),
        (0, 1, 1),
        "{l:#?}"
    );
    assert_eq!(l.oldest_unaccounted.len(), 1, "{l:#?}");
    assert_eq!(l.oldest_unaccounted[0].event_id, "ev-d1");
    assert_eq!(
        l.oldest_unaccounted[0].record_id.as_deref(),
        Some(d.as_str())
    );
    // The duplicate delivery was counted as a delivery of the same event.
    let deliveries: i32 = sqlx::query_scalar(
        "SELECT deliveries FROM deliveries WHERE event_id = 'ev-a1' AND rule = $1",
    )
    .bind(RULE)
    .fetch_one(env.store.pool())
    .await?;
    assert_eq!(deliveries, 2);

    // Within the settle time it is in flight: the ledger balances.
    let settled = env
        .store
        .ledger(Some(RULE), Duration::from_secs(600))
        .await?;
    assert_eq!((settled[0].in_flight, settled[0].imbalance()), (1, 0));

    // Its dead letter accounts for it (the runner stores one after the last attempt).
    env.store
        .insert_dead_letter(&store::NewDeadLetter {
            dead_id: "dead-ev-d1".into(),
            event_id: Some("ev-d1".into()),
            rule: Some(RULE.into()),
            system: Some("kintone".into()),
            app: Some(tests::APP.into()),
            record_id: Some(d.clone()),
            class: "server".into(),
            reason: "503 from the helpdesk".into(),
            attempts: 5,
            history: json!([]),
            body: b"{}".to_vec(),
        })
        .await?;
    let after = env.store.ledger(Some(RULE), Duration::ZERO).await?;
    assert_eq!(
        (
            after[0].dead_lettered,
            after[0].unaccounted,
            after[0].accepted
        ),
        (1, 0, 6),
        "{after:#?}"
    );

    // The admin API serves the same ledger.
    let v: Value = env
        .http
        .get(format!(
            "{}/ledger?rule={RULE}&settle_seconds=0",
            env.admin_urls[0]
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(v["balanced"], true, "{v:#}");
    assert_eq!(v["rules"][0]["accepted"], 6, "{v:#}");
    assert_eq!(v["rules"][0]["dead_lettered"], 1, "{v:#}");
    assert_eq!(v["rules"][0]["parked"], 1, "{v:#}");
    assert_eq!(v["rules"][0]["skipped"]["coalesced"], 1, "{v:#}");

    // A scrape reads the ledger (over the default settle time: the failed event is in
    // flight there) and the open conflicts by kind from PostgreSQL.
    let metrics = env.worker_metrics().await?;
    assert!(
        metrics.contains(&format!(
            "recordsync_ledger_unaccounted_events{{rule=\"{RULE}\"}} 0\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("recordsync_open_conflicts{kind=\"no_lookup_value\"} 1\n"),
        "{metrics}"
    );

    // A purged dead letter's event is done for good, and says so.
    let purged = env
        .store
        .purge_dead_letters(&store::DeadFilter {
            rule: Some(RULE.into()),
            ..Default::default()
        })
        .await?;
    assert_eq!(purged, 1);
    let l = &env.store.ledger(Some(RULE), Duration::ZERO).await?[0];
    assert_eq!(
        (
            l.accepted,
            l.dead_lettered,
            l.unaccounted,
            l.skipped.get("purged")
        ),
        (6, 0, 0, Some(&1)),
        "{l:#?}"
    );
    env.finish().await
}

/// The ledger's metric comes from its recount, not from a scan at scrape time: an
/// event seen two hours ago with no outcome, dead letter, parked row or lease shows
/// as unaccounted for, and leaves the count once it has an outcome.
#[tokio::test]
async fn a_lost_event_moves_the_ledger_metric_and_an_outcome_brings_it_back() -> anyhow::Result<()>
{
    let env = Env::start_with(EnvOptions {
        workers: 1,
        ..EnvOptions::default()
    })
    .await?;
    let gauge = |n: u32| format!("recordsync_ledger_unaccounted_events{{rule=\"{RULE}\"}} {n}\n");
    let shows = |n: u32| {
        let env = &env;
        let line = gauge(n);
        move || {
            let line = line.clone();
            async move { Ok(env.worker_metrics().await?.contains(&line)) }
        }
    };
    // Every configured rule has its line from the first recount on.
    tests::wait_for(
        "the ledger's first recount",
        Duration::from_secs(30),
        shows(0),
    )
    .await?;
    sqlx::query(
        "INSERT INTO deliveries (event_id, rule, source_record_id, first_seen_at, last_seen_at)
         VALUES ('ev-lost', $1, '77', now() - interval '2 hours', now() - interval '2 hours')",
    )
    .bind(RULE)
    .execute(env.store.pool())
    .await?;
    tests::wait_for(
        "the lost event on the metric",
        Duration::from_secs(30),
        shows(1),
    )
    .await?;
    let rolled: i64 = sqlx::query_scalar("SELECT unaccounted FROM ledger_rollup WHERE rule = $1")
        .bind(RULE)
        .fetch_one(env.store.pool())
        .await?;
    assert_eq!(rolled, 1);
    sqlx::query(
        "INSERT INTO processed_events (event_id, rule, outcome) VALUES ('ev-lost', $1, 'skipped')",
    )
    .bind(RULE)
    .execute(env.store.pool())
    .await?;
    tests::wait_for("the metric back at 0", Duration::from_secs(30), shows(0)).await?;
    env.finish().await
}
