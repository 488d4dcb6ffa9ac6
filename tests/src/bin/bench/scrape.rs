//! The `scrape` scenario: a worker's `/metrics` answered over a `deliveries` table of
//! 1,000,000 rows (`--count`), one in a thousand of them unaccounted for. A scrape
//! reads the ledger's rollup; the recount that fills it (once per period for the
//! fleet) is what every scrape of every worker ran before, and is the comparison. The
//! PostgreSQL CPU of the run's database is read from `/proc` around the scrapes.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::cpu;
use crate::e2e::database_name;
use crate::fixture::Janitor;
use crate::report::Row;
use crate::stats::{Summary, ms, percent, thousands};

/// Deliveries unless `--count` says otherwise.
pub const DEFAULT_DELIVERIES: usize = 1_000_000;
/// Scrapes measured, after as many to warm up.
const SCRAPES: usize = 200;
/// Targets: a scrape's answer and its PostgreSQL CPU.
const MAX_SCRAPE_MS: f64 = 50.0;
const MAX_SCRAPE_PG_CPU_MS: f64 = 5.0;
/// One delivery in this many has no outcome.
const LOST_EVERY: usize = 1_000;

/// What one run measured.
pub struct Figures {
    deliveries: usize,
    latency: Summary,
    pg_cpu_per_scrape: Duration,
    recount: Duration,
    unaccounted: i64,
    filling: Duration,
}

impl Figures {
    /// The report's rows.
    pub fn rows(&self) -> Vec<Row> {
        let scenario = format!("scrape, {} deliveries", thousands(self.deliveries as u64));
        let p50 = self.latency.p50.as_secs_f64() * 1e3;
        let pg = self.pg_cpu_per_scrape.as_secs_f64() * 1e3;
        vec![
            Row::plain(
                &scenario,
                "/metrics p50 / p99",
                format!("{} / {} ms", ms(self.latency.p50), ms(self.latency.p99)),
            )
            .ceiling(
                format!("{} ms the recount each scrape ran before", ms(self.recount)),
                percent(p50, self.recount.as_secs_f64() * 1e3),
            )
            .target(&format!("< {MAX_SCRAPE_MS} ms"), p50 < MAX_SCRAPE_MS),
            Row::plain(
                &scenario,
                "PostgreSQL CPU per scrape",
                format!("{pg:.2} ms"),
            )
            .target(
                &format!("< {MAX_SCRAPE_PG_CPU_MS} ms"),
                pg < MAX_SCRAPE_PG_CPU_MS,
            ),
            Row::plain(
                &scenario,
                "unaccounted events on the metric",
                thousands(self.unaccounted.max(0) as u64),
            )
            .target(
                &thousands((self.deliveries / LOST_EVERY) as u64),
                self.unaccounted == (self.deliveries / LOST_EVERY) as i64,
            ),
        ]
    }

    /// What the run left out of its figures.
    pub fn notes(&self) -> Vec<String> {
        vec![format!(
            "scrape: filling {} deliveries and their outcomes, VACUUM ANALYZE and the first recount took {:.1} s (not counted); {SCRAPES} scrapes warmed up first; the worker recounts once an hour during the measured scrapes, so that their CPU is the scrape's own",
            thousands(self.deliveries as u64),
            self.filling.as_secs_f64()
        )]
    }
}

/// Fills a database, starts one worker on it in this process, and scrapes it.
pub async fn run(
    janitor: &Janitor,
    http: &reqwest::Client,
    deliveries: usize,
) -> anyhow::Result<Figures> {
    let sandbox = sandbox::Sandbox::start(sandbox::SandboxConfig::default()).await?;
    let mut rules = tests::example_rules(&sandbox.base_url);
    // Nothing scheduled but the ledger's recount: the scrapes are alone with it.
    for rule in &mut rules.rules {
        rule.resync = None;
        rule.reconcile = None;
    }
    for system in rules.systems.values_mut() {
        system.schema_check = None;
    }
    let database_url = janitor.database().await?;
    let store = store::Store::connect(&database_url, 2).await?;
    let filling = Instant::now();
    sqlx::query(
        "INSERT INTO deliveries (event_id, rule, source_record_id, first_seen_at, last_seen_at)
         SELECT 'ev-' || g, $1, (g % 50000)::text,
                now() - interval '2 hours' - (g % 70000) * interval '1 second',
                now() - interval '2 hours' - (g % 70000) * interval '1 second'
           FROM generate_series(1, $2::bigint) AS g",
    )
    .bind(tests::RULE)
    .bind(deliveries as i64)
    .execute(store.pool())
    .await
    .context("fill deliveries")?;
    sqlx::query(
        "INSERT INTO processed_events (event_id, rule, outcome)
         SELECT 'ev-' || g, $1, 'synced' FROM generate_series(1, $2::bigint) AS g
          WHERE g % $3 <> 0",
    )
    .bind(tests::RULE)
    .bind(deliveries as i64)
    .bind(LOST_EVERY as i64)
    .execute(store.pool())
    .await
    .context("fill processed_events")?;
    sqlx::query("VACUUM ANALYZE deliveries, processed_events")
        .execute(store.pool())
        .await?;
    // The recount each scrape of each worker ran before the rollup.
    let settings = config::Settings {
        database_url: database_url.clone(),
        queue_prefix: janitor.prefix(),
        ..config::Settings::default()
    };
    let names: Vec<String> = rules.rules.iter().map(|r| r.name.clone()).collect();
    let started = Instant::now();
    let recounted = store
        .roll_up_unaccounted(
            &names,
            settings.ledger_settle(),
            Duration::from_secs(24 * 3600),
            Duration::ZERO,
        )
        .await?;
    let recount = started.elapsed();
    if !recounted {
        bail!("the first recount did not run");
    }
    let filling = filling.elapsed() - recount;

    let settings = config::Settings {
        ledger_rollup_ms: 3_600_000,
        ..settings
    };
    let secrets = tests::secrets(&sandbox::SandboxConfig::default());
    let connectors = connectors::Connectors::build(&rules, tests::lookup(&secrets))?;
    let worker = worker::Worker::with_connectors(settings, rules, connectors)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(Some(listener), stop.clone()));

    let scrape = || async {
        let started = Instant::now();
        let resp = http.get(&url).send().await?;
        let body = resp.error_for_status()?.text().await?;
        anyhow::Ok((started.elapsed(), body))
    };
    // Until the worker serves, then the warm-up.
    let mut ready = false;
    for _ in 0..200 {
        if scrape().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        bail!("the worker's admin API never answered");
    }
    for _ in 0..SCRAPES {
        scrape().await?;
    }
    let watch = cpu::Watch::new(vec![cpu::Group {
        name: "PostgreSQL",
        members: cpu::Members::Postgres {
            database: database_name(&database_url),
            except: vec![],
        },
    }]);
    let before = watch.snapshot();
    let mut samples = Vec::with_capacity(SCRAPES);
    let mut last = String::new();
    for _ in 0..SCRAPES {
        let (took, body) = scrape().await?;
        samples.push(took);
        last = body;
    }
    let after = watch.snapshot();
    let pg_cpu_per_scrape = watch.seconds(0, &before, &after).div_f64(SCRAPES as f64);
    let prefix = format!(
        "recordsync_ledger_unaccounted_events{{rule=\"{}\"}} ",
        tests::RULE
    );
    let unaccounted = last
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(-1, |v| v as i64);
    stop.cancel();
    running.await??;
    Ok(Figures {
        deliveries,
        latency: Summary::of(samples),
        pg_cpu_per_scrape,
        recount,
        unaccounted,
        filling,
    })
}
