//! Legacy API limits: the fleet-wide rate limit and the shared pause after a 429.
//!
//! These tests read time off the sandbox's request log, so they run on a multi-thread
//! runtime: on a single thread, a request sent on time could be logged late whenever
//! another task held the thread.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde_json::{Value, json};
use tests::{APP, Env, EnvOptions, RULE};

fn limited_helpdesk(rules: &mut domain::rules::SyncRules) {
    let h = rules
        .systems
        .get_mut("helpdesk")
        .expect("the helpdesk system");
    h.limits = Some(domain::rules::Limits {
        requests_per_second: 10.0,
        burst: 1,
        max_concurrent: Some(4),
    });
}

fn at(e: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap()
}

/// The most requests in any window of one second (each window starting at a request).
/// The log is in response order but stamped with arrival times, so it is sorted first:
/// unsorted, a perfectly spaced run can count 11 in a second.
fn busiest_second(log: &[Value]) -> usize {
    let mut times: Vec<DateTime<FixedOffset>> = log.iter().map(at).collect();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < chrono::Duration::seconds(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Seeds `n` synced work orders, then edits each once (a webhook each).
async fn seed_and_edit(env: &Env, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut linked = vec![];
    for i in 0..n {
        linked.push(
            env.seed_linked(&format!("WO-8{i:04}"), &format!("Before {i}"))
                .await?,
        );
    }
    for (i, (id, _)) in linked.iter().enumerate() {
        env.kintone_edit(id, json!({"件名": format!("After {i}")}))
            .await?;
    }
    Ok(linked)
}

async fn all_after(env: &Env, linked: &[(String, String)]) -> anyhow::Result<bool> {
    let tickets = env.tickets().await?;
    Ok(linked.iter().enumerate().all(|(i, (_, t))| {
        tickets.iter().any(|x| {
            t.parse::<i64>().ok() == x["id"].as_i64() && x["subject"] == format!("After {i}")
        })
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_against_a_10_per_second_target_never_exceed_10_in_any_second()
-> anyhow::Result<()> {
    let updates: usize = std::env::var("RECORDSYNC_TEST_LIMITER_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let env = Env::start_with(EnvOptions {
        workers: 4,
        prefetch: 4,
        edit_rules: Some(limited_helpdesk),
        ..EnvOptions::default()
    })
    .await?;
    env.admin_post(
        "/_admin/limits",
        json!({"system": "helpdesk", "requests_per_second": 10, "burst": 10}),
    )
    .await?;
    let linked = seed_and_edit(&env, updates).await?;
    env.flush_webhooks().await?;
    let budget = Duration::from_secs(60 + updates as u64 / 4);
    tests::wait_for("every update", budget, || async {
        Ok(env.store.processed_count(RULE).await? as usize >= updates)
    })
    .await?;
    assert!(
        all_after(&env, &linked).await?,
        "every ticket holds its last edit"
    );

    let log = env.request_log("helpdesk").await?;
    assert_eq!(log.len(), updates, "one PATCH per update and nothing else");
    assert!(
        log.iter().all(|e| e["status"] == 200),
        "the target never had to refuse"
    );
    let busiest = busiest_second(&log);
    assert!(busiest <= 10, "{busiest} requests in one second");
    let first = log.iter().map(at).min().unwrap();
    let last = log.iter().map(at).max().unwrap();
    let span = last - first;
    let rate = (updates - 1) as f64 / (span.num_milliseconds() as f64 / 1000.0);
    assert!(rate > 8.0, "the limit is used, not wasted: {rate:.1}/s");
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_storm_makes_every_worker_wait_and_dead_letters_nothing() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 4,
        prefetch: 4,
        edit_rules: Some(limited_helpdesk),
        ..EnvOptions::default()
    })
    .await?;
    env.admin_post("/_admin/faults", json!({"system": "helpdesk", "method": "PATCH", "status": 429, "retry_after": "1", "count": 6})).await?;
    let linked = seed_and_edit(&env, 30).await?;
    env.flush_webhooks().await?;
    env.settle("every update", || all_after(&env, &linked))
        .await?;

    let log = env.request_log("helpdesk").await?;
    let refused: Vec<&Value> = log.iter().filter(|e| e["status"] == 429).collect();
    assert_eq!(refused.len(), 6);
    // After a 429, nobody sends for the Retry-After, beyond requests that left before
    // the worker that got the 429 had recorded the pause (a 500 ms grace: the machine
    // running the tests is busy).
    for r in &refused {
        let t = at(r);
        let too_soon = log
            .iter()
            .filter(|e| {
                at(e) - t > chrono::Duration::milliseconds(500)
                    && at(e) - t < chrono::Duration::milliseconds(900)
            })
            .count();
        let timeline: Vec<String> = log
            .iter()
            .map(|e| format!("{} {} {}", e["at"], e["method"], e["status"]))
            .collect();
        assert_eq!(
            too_soon, 0,
            "a request was sent during the pause after the 429 at {t}: {timeline:#?}"
        );
    }
    let admin = &env.admin_urls[0];
    let dead: Value = env
        .http
        .get(format!("{admin}/dead-letters"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(dead["dead_letters"], json!([]));
    let _ = APP;
    env.finish().await
}

/// `max_concurrent` is fleet-wide: three limiters (three worker processes, each with
/// its own pool, each allowed 2 at once by its own semaphore) share 2 slots in
/// PostgreSQL, so never more than 2 requests are out at once across them, and the 2
/// are used (the limit is not met by running one at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrent_holds_across_the_fleet() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MAX: u32 = 2;
    const PROCESSES: usize = 3;
    const TASKS: usize = 6;
    const REQUESTS: usize = 3;
    let db = tests::TestDb::create().await?;
    let mut rules = tests::example_rules("http://127.0.0.1:9");
    rules
        .systems
        .get_mut("helpdesk")
        .expect("the helpdesk system")
        .limits = Some(domain::rules::Limits {
        // A rate that holds nobody back: only concurrency is under test.
        requests_per_second: 1_000.0,
        burst: 100,
        max_concurrent: Some(MAX),
    });
    let out = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut stores = vec![];
    for _ in 0..PROCESSES {
        let store = store::Store::connect(&db.url, 4).await?;
        stores.push(store.clone());
        let limiter = Arc::new(worker::limiter::Limiter::new(store, &rules));
        for _ in 0..TASKS {
            let (limiter, out, most, done) = (
                Arc::clone(&limiter),
                Arc::clone(&out),
                Arc::clone(&most),
                Arc::clone(&done),
            );
            tasks.spawn(async move {
                for _ in 0..REQUESTS {
                    let permit = limiter.acquire("helpdesk").await?;
                    let now = out.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // The request's time on the wire.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    out.fetch_sub(1, Ordering::SeqCst);
                    limiter.release("helpdesk", permit).await;
                    done.fetch_add(1, Ordering::SeqCst);
                }
                anyhow::Ok(())
            });
        }
    }
    let ran = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        anyhow::Ok(())
    })
    .await;
    for store in stores {
        store.pool().close().await;
    }
    db.drop_db().await?;
    ran.map_err(|_| anyhow::anyhow!("the requests did not all get a slot within 120 s"))??;
    assert_eq!(done.load(Ordering::SeqCst), PROCESSES * TASKS * REQUESTS);
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= MAX as usize,
        "{most} requests were out at once across the fleet; max_concurrent is {MAX}"
    );
    assert_eq!(
        most, MAX as usize,
        "the {MAX} slots were never used at once"
    );
    Ok(())
}
