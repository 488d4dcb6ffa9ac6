//! A worker **process** killed with SIGKILL between a create and its commit, against a
//! helpdesk that ignores idempotency keys and whose search lags: the next holder
//! resolves the in-doubt create instead of creating again.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Env, EnvOptions};

/// A worker process (the bench binary's `__worker` mode) on the environment's broker,
/// database and queue prefix.
fn spawn_worker(env: &Env, rules: &std::path::Path) -> anyhow::Result<Child> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench"));
    cmd.arg("__worker")
        .env("RECORDSYNC_AMQP_URL", &env.settings.amqp_url)
        .env("RECORDSYNC_DATABASE_URL", &env.settings.database_url)
        .env("RECORDSYNC_QUEUE_PREFIX", &env.settings.queue_prefix)
        .env("RECORDSYNC_RULES", rules)
        .env("RECORDSYNC_RETRY_DELAYS_MS", "200,400,800")
        .env("RECORDSYNC_LEASE_TTL_MS", "2000")
        .env(
            "RECORDSYNC_IN_DOUBT_SETTLE_MS",
            env.settings.in_doubt_settle_ms.to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in tests::secrets(&env.sandbox_config) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    // The first line says it listens: it is up.
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
    anyhow::ensure!(line.starts_with("LISTENING"), "the worker said {line:?}");
    Ok(child)
}

fn created(log: &[Value]) -> usize {
    log.iter()
        .filter(|e| {
            e["method"] == "POST"
                && e["path"] == "/api/tickets"
                && e["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s))
        })
        .count()
}

#[tokio::test]
async fn a_worker_process_killed_between_a_create_and_its_commit_creates_once() -> anyhow::Result<()>
{
    // The settle time is longer than the search lag, as the README asks.
    let mut env = Env::start_with(EnvOptions {
        workers: 0,
        in_doubt_settle_ms: 20_000,
        ..EnvOptions::default()
    })
    .await?;
    let rules = std::env::temp_dir().join(format!(
        "recordsync-killed-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&rules, serde_json::to_vec(&env.rules)?)?;
    env.admin_post(
        "/_admin/helpdesk/config",
        json!({"search_lag_ms": 3_000, "ignore_idempotency_keys": true}),
    )
    .await?;
    // The write-back hangs, so the worker sits between its create and its commit.
    let hang = env.admin_post("/_admin/faults", json!({"system": "kintone", "method": "PUT", "path_prefix": "/k/v1/record.json", "latency_ms": 60_000})).await?;
    let mut first = spawn_worker(&env, &rules)?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-91", "件名": "Killed mid-step"}))
        .await?;
    let started = Instant::now();
    while created(&env.request_log("helpdesk").await?) == 0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the first worker never created the ticket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL: no drain, no release of the lease, no commit.
    first.kill()?;
    first.wait()?;
    assert!(
        env.store.links(tests::RULE).await?.is_empty(),
        "nothing was committed"
    );
    let fault_id = hang["id"].as_str().unwrap_or_default().to_owned();
    env.http
        .delete(format!("{}/_admin/faults/{fault_id}", env.sandbox.base_url))
        .send()
        .await?
        .error_for_status()?;

    // The next worker gets the redelivered message once the lease has expired.
    env.start_worker().await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    assert_eq!(
        env.tickets_for("WO-91").await?.len(),
        1,
        "exactly one ticket"
    );
    assert_eq!(created(&env.request_log("helpdesk").await?), 1);
    let history = env.history(&id).await?;
    assert!(
        history
            .iter()
            .any(|h| h.starts_with("in_doubt_resolved") && h.contains("by search")),
        "{history:#?}"
    );
    let _ = std::fs::remove_file(&rules);
    env.finish().await
}
