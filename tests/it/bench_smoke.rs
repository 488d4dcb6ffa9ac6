//! The bench command cannot rot: each scenario runs at a tiny count, prints its figure
//! rows, and leaves no database and no queue behind.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sqlx::Connection;

struct Ran {
    stdout: String,
    stderr: String,
}

/// The chaos run boots a RabbitMQ node and a PostgreSQL cluster of its own and kills
/// processes on a schedule: it takes both cores for a while. The other scenarios
/// measure, and share this lock's read side, so that none of them runs beside it (a CI
/// run once failed the two e2e smokes while the chaos run was starting).
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Runs a scenario beside the others but never beside the chaos run; `limit` counts
/// from when it may start.
async fn shared<T>(
    limit: Duration,
    run: impl std::future::Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    let _shared = MACHINE.read().await;
    tokio::time::timeout(limit, run).await
}

/// Runs a bench scenario (a debug build here) and insists that it succeeds. Tiny
/// counts miss the targets by design: the figures are what is checked.
async fn bench(args: &[&str]) -> Ran {
    let mut args = args.to_vec();
    args.push("--report-only");
    run_bench(&args).await
}

/// Runs the bench binary with exactly these arguments and insists that it succeeds.
async fn run_bench(args: &[&str]) -> Ran {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking({
        let args = args.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
                .args(&args)
                .env("RUST_BACKTRACE", "0")
                .output()
        }
    })
    .await
    .expect("the bench thread joins")
    .expect("the bench binary starts");
    let ran = Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        out.status.success(),
        "bench {} failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        ran.stdout,
        ran.stderr
    );
    ran
}

/// The figure of the table row for `scenario` and `measure` (its first number).
fn figure_of(stdout: &str, scenario: &str, measure: &str) -> f64 {
    let found = stdout
        .lines()
        .map(|l| l.trim_start_matches(['|', ' ']))
        .filter(|l| l.starts_with(scenario))
        .filter_map(|l| l.split_once(measure).map(|(_, rest)| rest))
        .find_map(|rest| {
            // A measure may end in a parenthesis, e.g. `at half rate (10/s)`.
            let rest = rest.trim_start();
            let rest = match rest.strip_prefix('(') {
                Some(inner) => inner.split_once(')').map_or("", |(_, after)| after),
                None => rest,
            };
            let number: String = rest
                .trim_start_matches(['|', ' '])
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
                .filter(|c| *c != ',')
                .collect();
            number.parse::<f64>().ok()
        });
    found.unwrap_or_else(|| {
        panic!("no `{scenario}` row with a figure for `{measure}` in:\n{stdout}")
    })
}

/// Asserts a table row for `scenario` and `measure` whose figure is above zero (a
/// rate, a latency or a size of 0 means the bench measured nothing).
fn assert_figure(stdout: &str, scenario: &str, measure: &str) {
    let v = figure_of(stdout, scenario, measure);
    assert!(v > 0.0, "`{scenario}` `{measure}` is {v}:\n{stdout}");
}

/// Asserts a table row for `scenario` and `measure` whose figure is the count the
/// scenario promises (`expected`, usually 0: no 429, no dead letter).
fn assert_count(stdout: &str, scenario: &str, measure: &str, expected: u64) {
    let v = figure_of(stdout, scenario, measure);
    assert!(
        v.fract() == 0.0 && v == expected as f64,
        "`{scenario}` `{measure}` is {v}, the scenario promises {expected}:\n{stdout}"
    );
}

/// Every database and queue prefix the bench says it removed is gone, and it removed
/// at least one of each kind it should have made.
async fn assert_cleaned(stderr: &str, expect_databases: bool) -> anyhow::Result<()> {
    let databases: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("bench: dropped database "))
        .map(str::to_owned)
        .collect();
    let prefixes: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("bench: deleted the queues and exchange of "))
        .collect();
    assert!(!prefixes.is_empty(), "no queues deleted:\n{stderr}");
    assert_eq!(!databases.is_empty(), expect_databases, "{stderr}");

    let mut pg =
        sqlx::PgConnection::connect(&format!("{}/postgres", tests::pg_server_url())).await?;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = ANY($1)")
        .bind(&databases)
        .fetch_one(&mut pg)
        .await?;
    pg.close().await?;
    assert_eq!(left, 0, "databases left behind: {databases:?}");

    let conn = queue::connect(&tests::amqp_url(), "it-bench-smoke").await?;
    for prefix in prefixes {
        // A passive declare of a queue that does not exist fails (and closes its
        // channel, so each check gets a channel of its own).
        let channel = conn.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue::Names::new(prefix).work_queue().as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert!(
            declared.is_err(),
            "the work queue of {prefix} is left behind"
        );
    }
    conn.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test]
async fn the_ingest_bench_prints_its_figures_and_cleans_up() -> anyhow::Result<()> {
    let ran = shared(Duration::from_secs(60), bench(&["ingest", "--count", "50"])).await?;
    for measure in ["accepted/s", "latency p50 / p99 / max", "ingest peak RSS"] {
        assert_figure(&ran.stdout, "ingest, c=64", measure);
    }
    assert_figure(
        &ran.stdout,
        "ingest, 250 slow 1 MiB uploads",
        "RSS growth at peak",
    );
    assert!(ran.stdout.contains("raw publishes/s"), "{}", ran.stdout);
    assert_cleaned(&ran.stderr, false).await
}

#[tokio::test]
async fn the_e2e_bench_prints_its_figures_as_markdown_and_cleans_up() -> anyhow::Result<()> {
    let ran = shared(
        Duration::from_secs(120),
        bench(&[
            "e2e",
            "--count",
            "20",
            "--workers",
            "1",
            "--prefetch",
            "4",
            "--markdown",
        ]),
    )
    .await?;
    for measure in [
        "events/s",
        "latency p50 / p99 at max rate",
        "latency p50 / p99 at half rate",
        "worker peak RSS",
        "SQL statements per event",
    ] {
        assert_figure(&ran.stdout, "e2e, 1 worker", measure);
    }
    assert!(
        ran.stdout.contains("| --- | --- |"),
        "not Markdown:\n{}",
        ran.stdout
    );
    // The ceilings beside the rate: the worker's statement shape and the broker under
    // concurrent publishing.
    assert!(
        ran.stdout.contains("create-shaped steps/s")
            && ran.stdout.contains("publish+consume+ack/s"),
        "{}",
        ran.stdout
    );
    assert_cleaned(&ran.stderr, true).await
}

#[tokio::test]
async fn the_limiter_bench_prints_its_figures_and_cleans_up() -> anyhow::Result<()> {
    let ran = shared(
        Duration::from_secs(90),
        bench(&["limiter", "--count", "20", "--prefetch", "4"]),
    )
    .await?;
    for measure in ["busiest second", "mean rate"] {
        assert_figure(&ran.stdout, "limiter, 4 workers", measure);
    }
    // The fleet keeps under the sandbox's own limit: it never answers 429.
    assert_count(&ran.stdout, "limiter, 4 workers", "429 answers", 0);
    assert!(ran.stdout.contains("50/s configured"), "{}", ran.stdout);
    assert!(!ran.stdout.contains("skipped"), "{}", ran.stdout);
    assert_cleaned(&ran.stderr, true).await
}

#[tokio::test]
async fn the_slow_bench_prints_its_figures_and_cleans_up() -> anyhow::Result<()> {
    let ran = shared(
        Duration::from_secs(90),
        bench(&["slow", "--count", "20", "--workers", "1", "--prefetch", "8"]),
    )
    .await?;
    for measure in ["events/s", "peak PostgreSQL connections"] {
        assert_figure(&ran.stdout, "slow, 1 worker", measure);
    }
    // A slow target is not a failing one: nothing is retried, dead-lettered or
    // conflicted.
    assert_count(
        &ran.stdout,
        "slow, 1 worker",
        "retries, dead letters, conflicts",
        0,
    );
    // The ceiling is computed from the sandbox log: 20 creates cost requests, so the
    // ceiling cannot be empty or infinite.
    assert!(ran.stdout.contains("8 in flight ÷ 0."), "{}", ran.stdout);
    assert_cleaned(&ran.stderr, true).await
}

#[tokio::test]
async fn the_scrape_bench_reads_the_ledger_rollup_and_cleans_up() -> anyhow::Result<()> {
    let ran = shared(
        Duration::from_secs(180),
        bench(&["scrape", "--count", "20000"]),
    )
    .await?;
    let scenario = "scrape, 20,000 deliveries";
    for measure in ["/metrics p50 / p99", "PostgreSQL CPU per scrape"] {
        assert_figure(&ran.stdout, scenario, measure);
    }
    // One delivery in a thousand has no outcome, and the metric shows exactly those.
    let shown = ran
        .stdout
        .lines()
        .find(|l| l.starts_with(scenario) && l.contains("unaccounted events on the metric"))
        .unwrap_or_default();
    assert!(
        shown.contains(" 20 ") && shown.trim_end().ends_with("pass"),
        "{}",
        ran.stdout
    );
    assert_cleaned(&ran.stderr, true).await
}

#[tokio::test]
async fn the_reconcile_bench_finds_every_drifted_record_and_cleans_up() -> anyhow::Result<()> {
    let ran = shared(
        Duration::from_secs(120),
        bench(&["reconcile", "--count", "3000"]),
    )
    .await?;
    let scenario = "reconcile, 3,000 records";
    for measure in ["run time", "comparison (CPU-bound part)", "requests"] {
        assert_figure(&ran.stdout, scenario, measure);
    }
    // One record in a thousand drifted, and the run found exactly those.
    let found = ran
        .stdout
        .lines()
        .find(|l| l.starts_with(scenario) && l.contains("drifted records found"))
        .unwrap_or_default();
    assert!(
        found.contains("= 3 drifted") && found.trim_end().ends_with("pass"),
        "{}",
        ran.stdout
    );
    // 3,000 ids read 100 a request from kintone, and 30 pages of tickets plus the
    // empty one that ends the listing.
    assert!(ran.stdout.contains("60 fewest possible"), "{}", ran.stdout);
    assert_eq!(figure_of(&ran.stdout, scenario, "requests"), 61.0);
    assert_cleaned(&ran.stderr, true).await
}

/// The fleet scales with in-flight work, not PostgreSQL connections: 8 worker
/// processes at prefetch 256 (2,048 events in flight) against a helpdesk that answers
/// after 200 ms, with PostgreSQL at its default 100 connections.
#[tokio::test]
async fn eight_worker_processes_at_prefetch_256_stay_within_postgresql_connections()
-> anyhow::Result<()> {
    let ran = shared(
        Duration::from_secs(240),
        bench(&[
            "slow",
            "--count",
            "400",
            "--workers",
            "8",
            "--prefetch",
            "256",
        ]),
    )
    .await?;
    let figure = |measure: &str| -> u64 {
        ran.stdout
            .lines()
            .find(|l| l.contains("slow, 8 workers") && l.contains(measure))
            .and_then(|l| {
                l.split_once(measure)?
                    .1
                    .split_whitespace()
                    .find(|w| w.chars().all(|c| c.is_ascii_digit() || c == ','))
                    .map(|w| w.replace(',', ""))
            })
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no {measure} figure in:\n{}", ran.stdout))
    };
    let peak = figure("peak PostgreSQL connections");
    eprintln!("8 workers × prefetch 256: peak PostgreSQL connections {peak}");
    assert!(peak > 0, "the sampler saw no connection:\n{}", ran.stdout);
    assert!(peak <= 8 * 8, "each worker keeps its pool of 8: {peak}");
    assert_eq!(
        figure("retries, dead letters, conflicts"),
        0,
        "{}",
        ran.stdout
    );
    assert_eq!(figure("duplicate creates"), 0, "{}", ran.stdout);
    assert_cleaned(&ran.stderr, true).await
}

/// The chaos command at smoke size. Every fault of its schedule happens (workers
/// SIGKILLed and restarted, the broker cut and back, PostgreSQL stopped and back, the
/// targets failing), and every check passes: one ticket per work order, nothing
/// drifted from what the people last wrote, a balanced ledger with nothing in flight.
/// The checks themselves are unit-tested in the bench (`chaos::unit`) against drifted
/// records, so a pass here is not a check that cannot fail.
#[tokio::test]
async fn the_chaos_run_injects_every_fault_and_loses_nothing() -> anyhow::Result<()> {
    let _alone = MACHINE.write().await;
    let ran = tokio::time::timeout(
        Duration::from_secs(600),
        run_bench(&[
            "chaos",
            "--records",
            "12",
            "--versions",
            "2",
            "--fault-seconds",
            "30",
            "--seed",
            "20261130",
        ]),
    )
    .await?;
    let out = &ran.stdout;
    assert!(
        out.contains("seed 20261130: every check passed"),
        "{out}\n{}",
        ran.stderr
    );
    for happened in [
        "SIGKILL worker",
        "RabbitMQ stopped",
        "RabbitMQ back",
        "PostgreSQL stopped",
        "PostgreSQL back",
        "target faults lifted",
    ] {
        assert!(out.contains(happened), "no `{happened}` in:\n{out}");
    }
    assert!(out.contains("12 tickets for 12 work orders"), "{out}");
    // The helpdesk's closed write window held: nothing the service sent reached it then,
    // and what was parked went out after.
    let window = out
        .lines()
        .find(|l| l.starts_with("write window: ") && l.contains("service writes"))
        .unwrap_or_else(|| panic!("no write window line in:\n{out}"));
    assert!(window.contains(", 0 while it was closed, "), "{window}");
    assert!(!window.ends_with(" 0 after"), "{window}");
    // The targets' faults were met and retried.
    assert!(out.contains("\"retry_scheduled\""), "{out}");
    let ledger = out
        .lines()
        .find(|l| l.starts_with("ledger work-orders-to-tickets: accepted "))
        .unwrap_or_else(|| panic!("no ledger line in:\n{out}"));
    let accepted: i64 = ledger
        .trim_start_matches("ledger work-orders-to-tickets: accepted ")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no accepted count in {ledger}"));
    assert!(accepted >= 12, "{ledger}");
    assert!(ledger.ends_with("(unaccounted 0, imbalance 0)"), "{ledger}");
    assert!(
        out.contains("| 20261130 | 12 × 2 |"),
        "no summary row:\n{out}"
    );
    // Its own servers, when it had them, are gone with their directories; otherwise
    // the database it made on the shared server is.
    let own_dir = |server: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{server}: the run's own")))
            .and_then(|l| l.split(" in ").nth(1))
            .and_then(|rest| rest.split(", 127.0.0.1").next())
            .map(std::path::PathBuf::from)
    };
    let own_pg = own_dir("PostgreSQL");
    for dir in own_pg.iter().chain(own_dir("RabbitMQ").iter()) {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
    assert_cleaned(&ran.stderr, own_pg.is_none()).await
}

/// A missed target fails the bench: without `--report-only`, a run whose tiny count
/// cannot reach 1,000 events/s exits 1 and names each missed target, after printing
/// its table and cleaning up.
#[tokio::test]
async fn the_bench_exits_1_and_names_each_missed_target() -> anyhow::Result<()> {
    let _shared = MACHINE.read().await;
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(["e2e", "--count", "20", "--workers", "1", "--prefetch", "4"])
            .env("RUST_BACKTRACE", "0")
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("bench: target not met: e2e, 1 worker — events/s: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("target(s) not met (listed above; --report-only exits 0)"),
        "{stderr}"
    );
    assert_figure(&stdout, "e2e, 1 worker", "events/s");
    assert_cleaned(&stderr, true).await
}
