//! Worker **processes** that die or freeze mid-step. Killed with SIGKILL between a
//! create and its commit, against a helpdesk that ignores idempotency keys and whose
//! search lags: the next holder resolves the in-doubt create instead of creating
//! again. Frozen with SIGSTOP past its lease's expiry: its late commit is refused and
//! the next holder's result stands.
//!
//! And a worker process given a bad rules file refuses to start, naming the file and
//! the problem.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Env, EnvOptions};

/// A worker process (the bench binary's `__worker` mode) on the environment's broker,
/// database and queue prefix; its log goes to `log` when given.
fn spawn_worker(
    env: &Env,
    rules: &std::path::Path,
    log: Option<&std::path::Path>,
) -> anyhow::Result<Child> {
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
        .stderr(match log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::inherit(),
        });
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

#[tokio::test]
async fn a_worker_process_killed_between_a_create_and_its_commit_creates_once() -> anyhow::Result<()>
{
    // The settle time is longer than the search lag, as the book's Settings ask.
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
    let mut first = Killed(spawn_worker(&env, &rules, None)?);
    let id = env
        .kintone_create(json!({"work_order_no": "WO-91", "件名": "Killed mid-step"}))
        .await?;
    let started = Instant::now();
    while env.ticket_posts().await? == 0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the first worker never created the ticket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL: no drain, no release of the lease, no commit.
    first.0.kill()?;
    first.0.wait()?;
    assert!(
        env.store.links(tests::RULE).await?.is_empty(),
        "nothing was committed"
    );
    let fault_id = hang["id"].as_str().unwrap_or_default().to_owned();
    env.sandbox_admin()
        .delete(&format!("/_admin/faults/{fault_id}"))
        .await?;

    // The next worker gets the redelivered message once the lease has expired.
    env.start_worker().await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    env.assert_created_once_resolved("WO-91", &id, "by search")
        .await?;
    let _ = std::fs::remove_file(&rules);
    env.finish().await
}

/// A child process killed (and reaped) when dropped, also when a test fails: a
/// stopped process would not notice its stdin closing.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {sig} failed");
    Ok(())
}

#[tokio::test]
async fn a_lease_holder_frozen_past_its_expiry_cannot_commit_late() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        in_doubt_settle_ms: 20_000,
        // The frozen holder's pending call must not time out while it is frozen.
        edit_rules: Some(|rules| {
            for sys in rules.systems.values_mut() {
                sys.timeout_ms = Some(60_000);
            }
        }),
        ..EnvOptions::default()
    })
    .await?;
    let dir = std::env::temp_dir();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let rules = dir.join(format!("recordsync-frozen-{tag}.json"));
    let log = dir.join(format!("recordsync-frozen-{tag}.log"));
    std::fs::write(&rules, serde_json::to_vec(&env.rules)?)?;
    env.admin_post(
        "/_admin/helpdesk/config",
        json!({"ignore_idempotency_keys": true}),
    )
    .await?;
    // The write-back takes a while, so that the holder is mid-step, after its create
    // and before its commit, when it freezes; the answer comes after it thaws.
    env.admin_post("/_admin/faults", json!({"system": "kintone", "method": "PUT", "path_prefix": "/k/v1/record.json", "latency_ms": 6_000, "count": 1})).await?;
    let frozen = Killed(spawn_worker(&env, &rules, Some(&log))?);
    let id = env
        .kintone_create(json!({"work_order_no": "WO-92", "件名": "Frozen"}))
        .await?;
    let started = Instant::now();
    while env.ticket_posts().await? == 0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the worker never created the ticket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&frozen.0, "-STOP")?;
    // Past its lease's expiry (2 s), another holder takes the record for the next
    // change. (Driven through the step: the broker would hand the change's webhook to
    // the frozen process, whose prefetch is not full.)
    tests::wait_for(
        "the frozen holder's lease to expire",
        Duration::from_secs(15),
        || async {
            let held: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM record_leases
                  WHERE source_record_id = $1 AND expires_at > now())",
            )
            .bind(&id)
            .fetch_one(env.store.pool())
            .await?;
            Ok(!held)
        },
    )
    .await?;
    env.kintone_edit(&id, json!({"件名": "Changed while it was frozen"}))
        .await?;
    let next = env.processor()?;
    let change = queue::CommandV2 {
        id: "the-next-change".into(),
        correlation_id: "the-next-change".into(),
        issued_at: chrono::Utc::now(),
        command: queue::Command::Change {
            system: "kintone".into(),
            app: tests::APP.into(),
            record_id: id.clone(),
            event_type: "UPDATE_RECORD".into(),
            payload: Value::Null,
        },
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), next.step(&change, 1)).await??;
    assert_eq!(
        outcome,
        vec![(tests::RULE.to_owned(), worker::step::Done::Synced)]
    );
    let linked = env.store.links(tests::RULE).await?[0].target_id.clone();
    assert!(linked.is_some());

    // Thawed, the first holder finishes its step; its commit is refused.
    signal(&frozen.0, "-CONT")?;
    let started = Instant::now();
    while !std::fs::read_to_string(&log)?.contains("was lost") {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the late commit was not refused; its log:\n{}",
            std::fs::read_to_string(&log)?
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.settle("the subject change", || async {
        Ok(env
            .tickets_for("WO-92")
            .await?
            .iter()
            .any(|t| t["subject"] == "Changed while it was frozen"))
    })
    .await?;
    assert_eq!(
        env.tickets_for("WO-92").await?.len(),
        1,
        "exactly one ticket"
    );
    assert_eq!(
        env.store.links(tests::RULE).await?[0].target_id,
        linked,
        "the next holder's link stands"
    );
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(|h| h.starts_with("in_doubt_resolved")),
        "{history:#?}"
    );
    drop(frozen);
    let _ = std::fs::remove_file(&rules);
    let _ = std::fs::remove_file(&log);
    env.finish().await
}

#[tokio::test]
async fn a_worker_process_refuses_to_start_on_a_bad_rules_file() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let dir = std::env::temp_dir().join(format!("rs-bad-rules-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    // A field's key misspelt.
    let mut rules = serde_json::to_value(&env.rules)?;
    rules["rules"][0]["fields"][0]["trasforms"] = json!([]);
    let bad = dir.join("sync-rules.json");
    std::fs::write(&bad, serde_json::to_vec_pretty(&rules)?)?;
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("__worker")
        .env("RECORDSYNC_AMQP_URL", &env.settings.amqp_url)
        .env("RECORDSYNC_DATABASE_URL", &env.settings.database_url)
        .env("RECORDSYNC_QUEUE_PREFIX", &env.settings.queue_prefix)
        .env("RECORDSYNC_RULES", &bad)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "it started: {stdout}");
    assert!(!stdout.contains("LISTENING"), "{stdout}");
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
    assert!(stderr.contains("trasforms"), "{stderr}");
    std::fs::remove_dir_all(&dir)?;
    env.finish().await
}
