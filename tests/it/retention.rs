//! Retention: what grows with every event is pruned in bounded batches, and what the
//! ledger, the echo checks and the in-doubt creates need is kept.

use std::time::Duration;

use serde_json::json;
use tests::{Env, EnvOptions, RULE, change};
use worker::step::Done;

/// Rows of one of the pruned tables, for the checks.
async fn count(env: &Env, table: &str) -> anyhow::Result<i64> {
    let sql = match table {
        "deliveries" => "SELECT count(*) FROM deliveries",
        "processed_events" => "SELECT count(*) FROM processed_events",
        other => anyhow::bail!("not a pruned table: {other}"),
    };
    Ok(sqlx::query_scalar(sql).fetch_one(env.store.pool()).await?)
}

/// An outbound operation created `age` ago.
async fn op(env: &Env, record: &str, status: &str, age: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO outbound_ops (rule, source_record_id, system, idempotency_key, fields, vv, status, created_at)
         VALUES ($1, $2, 'helpdesk', gen_random_uuid()::text, '{}', '{}', $3, now() - $4::interval)
         RETURNING id",
    )
    .bind(RULE)
    .bind(record)
    .bind(status)
    .bind(age)
    .fetch_one(env.store.pool())
    .await?)
}

#[tokio::test]
async fn pruning_keeps_what_the_ledger_echoes_and_in_doubt_creates_need() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    // Three events seen 40 days ago: two have an outcome, one was lost. One recent.
    for (event, age, outcome) in [
        ("ev-old-1", "40 days", Some("synced")),
        ("ev-old-2", "40 days", Some("unchanged")),
        ("ev-old-lost", "40 days", None),
        ("ev-new", "1 minute", Some("synced")),
    ] {
        sqlx::query(
            "INSERT INTO deliveries (event_id, rule, source_record_id, first_seen_at, last_seen_at)
             VALUES ($1, $2, '1', now() - $3::interval, now() - $3::interval)",
        )
        .bind(event)
        .bind(RULE)
        .bind(age)
        .execute(env.store.pool())
        .await?;
        if let Some(outcome) = outcome {
            sqlx::query("INSERT INTO processed_events (event_id, rule, outcome, processed_at) VALUES ($1, $2, $3, now() - $4::interval)")
                .bind(event)
                .bind(RULE)
                .bind(outcome)
                .bind(age)
                .execute(env.store.pool())
                .await?;
        }
    }
    let confirmed = op(&env, "1", "confirmed", "40 days").await?;
    let replaced = op(&env, "2", "sent", "40 days").await?;
    let latest = op(&env, "2", "sent", "39 days").await?;
    let in_doubt = op(&env, "3", "pending", "40 days").await?;
    // A later write to the same record does not make a create in doubt prunable.
    let after_doubt = op(&env, "3", "sent", "39 days").await?;
    let recent = op(&env, "4", "confirmed", "1 minute").await?;

    // One batch of one row a table: a run is bounded.
    let bounded = store::Retention {
        events: Duration::from_secs(30 * 24 * 3600),
        operations: Duration::from_secs(30 * 24 * 3600),
        batch: 1,
        max_batches: 1,
    };
    let first = env.store.prune(&bounded).await?.expect("no other pruner");
    assert_eq!(
        (first.deliveries, first.processed_events, first.outbound_ops),
        (1, 1, 1)
    );
    let all = store::Retention {
        batch: 100,
        max_batches: 10,
        ..bounded
    };
    let second = env.store.prune(&all).await?.expect("no other pruner");
    assert_eq!(
        (
            second.deliveries,
            second.processed_events,
            second.outbound_ops
        ),
        (1, 1, 1)
    );
    let third = env.store.prune(&all).await?.expect("no other pruner");
    assert_eq!(
        third,
        store::Pruned::default(),
        "nothing more is old enough"
    );

    let events: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM deliveries ORDER BY event_id")
            .fetch_all(env.store.pool())
            .await?;
    assert_eq!(
        events,
        ["ev-new", "ev-old-lost"],
        "a lost event is what the ledger shows"
    );
    assert_eq!(count(&env, "processed_events").await?, 1);
    let ops: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbound_ops ORDER BY id")
        .fetch_all(env.store.pool())
        .await?;
    assert_eq!(
        ops,
        [latest, in_doubt, after_doubt, recent],
        "pruned {confirmed} and {replaced}"
    );

    // The ledger still balances: the lost event is still named.
    let ledger = &env.store.ledger(Some(RULE), Duration::ZERO).await?[0];
    assert_eq!(
        (ledger.accepted, ledger.synced, ledger.unaccounted),
        (2, 1, 1)
    );
    env.finish().await
}

/// Over a run of many events, the worker's pruner keeps the events' tables at what the
/// retention holds, and says so on its metric.
#[tokio::test]
async fn over_a_long_run_the_events_tables_stay_bounded() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 1,
        edit_settings: Some(|s| {
            s.retain_events_secs = 1;
            s.prune_every_ms = 200;
        }),
        ..EnvOptions::default()
    })
    .await?;
    env.admin_post("/_admin/kintone/webhook_cap", json!({"per_minute": 0}))
        .await?;
    let step = env.processor()?;
    let record = env
        .kintone_create_silently(json!({"work_order_no": "WO-700", "件名": "Retained"}))
        .await?;
    const ROUNDS: usize = 6;
    const PER_ROUND: usize = 10;
    for round in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let done = step
                .step(&change(&format!("ev-{round}-{i}"), &record), 1)
                .await?;
            assert!(
                matches!(done[0].1, Done::Synced | Done::Unchanged | Done::Stale),
                "{done:?}"
            );
        }
        // Each round's events are pruned a second after they were seen; the tables
        // never hold more than about a round's worth.
        tests::wait_for("the round pruned", Duration::from_secs(30), || async {
            Ok(
                count(&env, "deliveries").await? == 0
                    && count(&env, "processed_events").await? == 0,
            )
        })
        .await?;
    }
    let metrics = env.worker_metrics().await?;
    let pruned: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("recordsync_worker_pruned_rows_total{table=\"deliveries\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert_eq!(pruned as usize, ROUNDS * PER_ROUND, "{metrics}");
    env.finish().await
}
