//! The `slow` scenario: a helpdesk that answers every request after 200 ms, and 1, 2
//! or 4 workers at a large prefetch. Against a slow target, throughput is events in
//! flight ÷ the target's time per event; the question is whether the fleet reaches
//! that ceiling while using only a handful of PostgreSQL connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::e2e::{CONCURRENCY, Seeded, Stack};
use crate::fixture::Janitor;
use crate::load;
use crate::report::Row;
use crate::stats::{percent, rate};

/// The helpdesk's answer time.
pub const LATENCY_MS: u64 = 200;
/// Target: share of the in-flight ceiling reached with 4 workers.
const MIN_SHARE_AT_FOUR: f64 = 0.70;
/// Target: PostgreSQL connections used by the whole fleet.
const MAX_CONNECTIONS: usize = 40;

/// What one run measured.
pub struct Figures {
    /// Worker processes.
    pub workers: usize,
    /// Events per second, first accepted webhook to last ticket.
    pub rate: f64,
    /// Events in flight: workers × prefetch, or fewer when the run is smaller.
    pub in_flight: usize,
    /// Helpdesk requests per event, from the sandbox's log.
    pub requests_per_event: f64,
    /// The peak of `pg_stat_activity` connections to the run's database.
    pub peak_connections: usize,
    /// Retries, dead letters and conflicts recorded in the run's history.
    pub errors: i64,
    /// Tickets created more than once for one work order (sandbox log).
    pub duplicates: u64,
}

impl Figures {
    /// In flight ÷ the target's time per event.
    fn ceiling(&self) -> f64 {
        let per_event = self.requests_per_event * LATENCY_MS as f64 / 1_000.0;
        self.in_flight as f64 / per_event.max(f64::EPSILON)
    }

    /// The report's rows.
    pub fn rows(&self) -> Vec<Row> {
        let scenario = format!(
            "slow, {} worker{}",
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        );
        let share = self.rate / self.ceiling();
        let mut events = Row::plain(&scenario, "events/s", rate(self.rate)).ceiling(
            format!(
                "{} in flight ÷ {:.2} s per event = {}",
                self.in_flight,
                self.requests_per_event * LATENCY_MS as f64 / 1_000.0,
                rate(self.ceiling())
            ),
            percent(self.rate, self.ceiling()),
        );
        if self.workers == 4 {
            events = events.target("≥ 70% of the ceiling", share >= MIN_SHARE_AT_FOUR);
        }
        vec![
            events,
            Row::plain(
                &scenario,
                "peak PostgreSQL connections",
                self.peak_connections.to_string(),
            )
            .target("≤ 40", self.peak_connections <= MAX_CONNECTIONS),
            Row::plain(
                &scenario,
                "retries, dead letters, conflicts",
                self.errors.to_string(),
            )
            .target("0", self.errors == 0),
            Row::plain(&scenario, "duplicate creates", self.duplicates.to_string())
                .target("0", self.duplicates == 0),
        ]
    }
}

/// Runs the scenario once with `workers` worker processes at `prefetch`.
pub async fn run(
    janitor: &Janitor,
    http: &reqwest::Client,
    workers: usize,
    count: usize,
    prefetch: u16,
) -> anyhow::Result<Figures> {
    let label = format!(
        "slow, {workers} worker{}",
        if workers == 1 { "" } else { "s" }
    );
    let warm = 8;
    let seeded = Seeded::new(http, &label, warm + count).await?;
    let database_url = janitor.database().await?;
    let database = crate::e2e::database_name(&database_url);
    let mut stack = Stack::start(
        janitor,
        http,
        seeded,
        database_url.clone(),
        workers,
        prefetch,
    )
    .await?;
    stack.warm_up(warm).await?;
    let sandbox = stack.sandbox.url();
    http.post(format!("{sandbox}/_admin/faults"))
        .json(&json!({"system": "helpdesk", "path_prefix": "/api", "latency_ms": LATENCY_MS}))
        .send()
        .await?
        .error_for_status()
        .context("the sandbox refused the latency fault")?;
    let seq_before = last_seq(http, &sandbox).await?;

    // The peak of the fleet's connections, sampled every 50 ms.
    let peak = Arc::new(AtomicUsize::new(0));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (peak, watching) = (Arc::clone(&peak), Arc::clone(&watching));
        let admin_url = format!("{}/postgres", tests::pg_server_url());
        let database = database.clone();
        tokio::spawn(async move {
            let pool = store::Store::connect(&admin_url, 1).await?;
            while watching.load(Ordering::SeqCst) {
                // The bench's own reader of the commits is not the fleet's.
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name <> $2",
                )
                .bind(&database)
                .bind(crate::e2e::WATCHER)
                .fetch_one(pool.pool())
                .await?;
                peak.fetch_max(usize::try_from(n).unwrap_or(0), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            pool.pool().close().await;
            anyhow::Ok(())
        })
    };

    eprintln!(
        "{label}: {count} kintone creates against a helpdesk answering after {LATENCY_MS} ms, prefetch {prefetch}"
    );
    let started = Instant::now();
    let sender = stack.sender.clone();
    load::closed_loop(count, CONCURRENCY, move |i| sender.send(warm + i)).await?;
    stack.wait_committed(warm..warm + count).await?;
    let span = started.elapsed().max(Duration::from_millis(1));
    watching.store(false, Ordering::SeqCst);
    watcher.await??;

    let (requests, duplicates) = requests_since(http, &sandbox, seq_before).await?;
    let errors: i64 = {
        let store = store::Store::connect(&database_url, 1).await?;
        let n = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM history WHERE kind IN ('retry_scheduled', 'dead_lettered'))
                  + (SELECT count(*) FROM conflicts)",
        )
        .fetch_one(store.pool())
        .await?;
        store.pool().close().await;
        n
    };
    stack.finish().await?;
    janitor.clean().await?;
    Ok(Figures {
        workers,
        rate: count as f64 / span.as_secs_f64(),
        in_flight: (workers * usize::from(prefetch)).min(count),
        requests_per_event: requests as f64 / count as f64,
        peak_connections: peak.load(Ordering::SeqCst),
        errors,
        duplicates,
    })
}

async fn log_page(http: &reqwest::Client, sandbox: &str, since: u64) -> anyhow::Result<Value> {
    Ok(http
        .get(format!(
            "{sandbox}/_admin/log?system=helpdesk&since_seq={since}"
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The sandbox log's latest sequence number.
async fn last_seq(http: &reqwest::Client, sandbox: &str) -> anyhow::Result<u64> {
    let mut since = 0;
    loop {
        let page = log_page(http, sandbox, since).await?;
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        let Some(last) = entries.iter().filter_map(|e| e["seq"].as_u64()).max() else {
            return Ok(since);
        };
        since = last;
    }
}

/// How many helpdesk API requests the sandbox logged after `since`, and how many
/// tickets were created beyond the first for one work order.
async fn requests_since(
    http: &reqwest::Client,
    sandbox: &str,
    since: u64,
) -> anyhow::Result<(u64, u64)> {
    let mut since = since;
    let mut n = 0;
    let mut created: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    loop {
        let page = log_page(http, sandbox, since).await?;
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        let Some(last) = entries.iter().filter_map(|e| e["seq"].as_u64()).max() else {
            let duplicates = created.values().map(|c| c.saturating_sub(1)).sum();
            return Ok((n, duplicates));
        };
        for e in &entries {
            let ok = e["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s));
            if ok
                && e["method"] == "POST"
                && e["path"] == "/api/tickets"
                && let Some(external_id) = e["body"]["external_id"].as_str()
            {
                *created.entry(external_id.to_owned()).or_default() += 1;
            }
        }
        n += entries
            .iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| p.starts_with("/api")))
            .count() as u64;
        since = last;
    }
}
