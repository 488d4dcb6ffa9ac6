//! The `e2e` scenario: a sandbox, ingest and 1, 2 or 4 workers, each a process of its
//! own. The bench sends kintone webhooks to ingest itself (so it knows when each was
//! accepted) and reads when each event's decision was committed from PostgreSQL: the
//! history rows the step's commit appends, stamped by `clock_timestamp()` inside the
//! commit's transaction, after the ticket, the write-back and before the ack. Each
//! event is one create: a kintone GET, helpdesk searches, a POST and a kintone PUT.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};

use crate::ceiling::{self, warm_up};
use crate::cpu;
use crate::fixture::{ChildEnv, Janitor};
use crate::intake::wait_ready;
use crate::load::{self, Run};
use crate::procs::Proc;
use crate::report::Row;
use crate::stats::{Summary, megabytes, ms, percent, rate};
use tests::SandboxAdmin;

/// Webhooks in flight while the bench pushes as fast as ingest takes them.
pub(crate) const CONCURRENCY: usize = 64;
/// The first work order number; the sandbox helpdesk holds no ticket that matches.
const FIRST_ORDER: usize = 100_000;
/// The `application_name` of the bench's own connection that reads the commits, which
/// the connection counts leave out.
pub(crate) const WATCHER: &str = "recordsync-bench-commits";
/// History ids the commit watcher reads again at each poll: a commit that took its ids
/// before another's may become visible after it (a few hundred rows are in flight at
/// the most).
const TRAILING_IDS: i64 = 5_000;
/// How long the committed count may stand still before the run fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Target: events per second with one worker.
const MIN_RATE_ONE_WORKER: f64 = 1_000.0;
/// Target: the p99 latency at half the maximum rate.
const MAX_P99_AT_HALF_RATE: Duration = Duration::from_millis(100);
/// Target: SQL statements per event (a create with its write-back).
const MAX_STATEMENTS_PER_EVENT: f64 = 8.0;
/// Target: each worker's peak RSS.
const MAX_WORKER_RSS_MB: f64 = 100.0;

/// What one worker count measured.
pub struct Figures {
    /// Worker processes.
    pub workers: usize,
    /// Events per second from the first webhook sent to the last commit.
    pub max_rate: f64,
    /// Sent → committed, while pushing as fast as ingest takes webhooks.
    pub max_latency: Summary,
    /// The rate of the paced phase (half of `max_rate`).
    pub half_rate: f64,
    /// Sent → committed, at half the maximum rate.
    pub half_latency: Summary,
    /// The largest worker peak RSS, in KiB.
    pub worker_rss_kib: u64,
    /// The PostgreSQL ceiling: steps of the worker's statement shape per second.
    pub pg_steps_per_s: f64,
    /// Connections the PostgreSQL ceiling used.
    pub pg_connections: usize,
    /// The broker ceiling: messages consumed and acknowledged per second while they
    /// are published with confirms.
    pub broker_acks_per_s: f64,
    /// Where the CPU went in each phase.
    pub cpu: Vec<String>,
    /// SQL statements the workers sent per event at the maximum rate, as sqlx reports
    /// them: `COMMIT` included, `BEGIN` and pool pings not; the limiter's too.
    pub statements_per_event: f64,
}

impl Figures {
    /// The report rows.
    pub fn rows(&self) -> Vec<Row> {
        let scenario = format!(
            "e2e, {} worker{}",
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        );
        let ceiling = self.pg_steps_per_s.min(self.broker_acks_per_s);
        let mut max = Row::plain(&scenario, "events/s", rate(self.max_rate)).ceiling(
            format!(
                "PG {} create-shaped steps/s ({} conn); broker {} publish+consume+ack/s",
                rate(self.pg_steps_per_s),
                self.pg_connections,
                rate(self.broker_acks_per_s)
            ),
            percent(self.max_rate, ceiling),
        );
        if self.workers == 1 {
            max = max.target("≥ 1,000/s", self.max_rate >= MIN_RATE_ONE_WORKER);
        }
        let rss_mb = megabytes(self.worker_rss_kib);
        vec![
            max,
            Row::plain(
                &scenario,
                "latency p50 / p99 at max rate",
                format!(
                    "{} / {} ms",
                    ms(self.max_latency.p50),
                    ms(self.max_latency.p99)
                ),
            ),
            Row::plain(
                &scenario,
                &format!(
                    "latency p50 / p99 at half rate ({}/s)",
                    rate(self.half_rate)
                ),
                format!(
                    "{} / {} ms",
                    ms(self.half_latency.p50),
                    ms(self.half_latency.p99)
                ),
            )
            .target("p99 < 100 ms", self.half_latency.p99 < MAX_P99_AT_HALF_RATE),
            Row::plain(
                &scenario,
                "worker peak RSS (largest)",
                format!("{rss_mb:.1} MB"),
            )
            .target("< 100 MB each", rss_mb < MAX_WORKER_RSS_MB),
            Row::plain(
                &scenario,
                "SQL statements per event",
                format!("{:.2}", self.statements_per_event),
            )
            .target(
                &format!("≤ {MAX_STATEMENTS_PER_EVENT}"),
                self.statements_per_event <= MAX_STATEMENTS_PER_EVENT,
            ),
        ]
    }
}

/// Runs the scenario once with `workers` worker processes and `count` events per
/// phase. Each phase gets a stack of its own (sandbox, database, prefix, ingest,
/// workers), so that both start from an empty helpdesk.
pub async fn run(
    janitor: &Janitor,
    http: &reqwest::Client,
    workers: usize,
    count: usize,
    prefetch: u16,
) -> anyhow::Result<Figures> {
    let label = format!(
        "e2e, {workers} worker{}",
        if workers == 1 { "" } else { "s" }
    );
    // A warm-up opens the connections and fills the caches before each phase.
    let warm = warm_up(count);

    // The ceilings, measured before ingest and the workers run.
    let seeded = Seeded::new(http, &label, warm + count).await?;
    let database_url = janitor.database().await?;
    let pg_connections = workers * usize::from(prefetch);
    let steps = (2 * count).max(50 * pg_connections);
    eprintln!(
        "{label}: ceiling: {steps} create-shaped PostgreSQL steps over {pg_connections} connections"
    );
    let pg_steps_per_s = ceiling::pg_steps(&database_url, pg_connections, steps).await?;
    let envelope = envelope(&seeded.bodies[0])?;
    let messages = 5 * count;
    eprintln!(
        "{label}: ceiling: {messages} messages of {} bytes published with confirms while {workers} consumer(s) consume and acknowledge them, prefetch {prefetch}",
        envelope.len()
    );
    let broker_acks_per_s =
        ceiling::consume_ack(janitor, &envelope, messages, workers, prefetch).await?;

    // Phase 1: as fast as ingest takes the webhooks.
    let mut stack = Stack::start(janitor, http, seeded, database_url, workers, prefetch).await?;
    stack.warm_up(warm).await?;
    eprintln!("{label}: {count} kintone changes at concurrency {CONCURRENCY}");
    let statements_before = stack.statements().await?;
    let before = stack.cpu.snapshot();
    let sender = stack.sender.clone();
    let pushed = load::closed_loop(count, CONCURRENCY, move |i| sender.send(warm + i)).await?;
    let committed = stack.wait_committed(warm..warm + count).await?;
    let after = stack.cpu.snapshot();
    let max_cpu = stack.cpu.describe(
        "event",
        &format!("{label}, max rate"),
        count,
        &before,
        &after,
    );
    let first_sent = pushed
        .samples
        .iter()
        .map(sent_at)
        .min()
        .context("no webhook was sent")?;
    let last_committed = committed.iter().max().copied().unwrap_or(first_sent);
    let span = (last_committed - first_sent)
        .to_std()
        .context("the last commit came before the first webhook was sent")?
        .max(Duration::from_millis(1));
    let max_rate = count as f64 / span.as_secs_f64();
    let max_latency = latencies(&pushed, &committed)?;
    let statements_per_event =
        (stack.statements().await? - statements_before) as f64 / count as f64;
    let mut worker_rss_kib = stack.finish().await?;
    janitor.clean().await?;

    // Phase 2: paced at half the rate phase 1 reached.
    let half_rate = max_rate / 2.0;
    let seeded = Seeded::new(http, &label, warm + count).await?;
    let database_url = janitor.database().await?;
    let mut stack = Stack::start(janitor, http, seeded, database_url, workers, prefetch).await?;
    stack.warm_up(warm).await?;
    eprintln!(
        "{label}: {count} kintone changes paced at {}/s",
        rate(half_rate)
    );
    let before = stack.cpu.snapshot();
    let sender = stack.sender.clone();
    let paced = load::paced(count, half_rate, 4 * CONCURRENCY, move |i| {
        sender.send(warm + i)
    })
    .await?;
    let committed = stack.wait_committed(warm..warm + count).await?;
    let after = stack.cpu.snapshot();
    let half_cpu = stack.cpu.describe(
        "event",
        &format!("{label}, half rate"),
        count,
        &before,
        &after,
    );
    let half_latency = latencies(&paced, &committed)?;
    worker_rss_kib = worker_rss_kib.max(stack.finish().await?);
    janitor.clean().await?;

    Ok(Figures {
        workers,
        max_rate,
        max_latency,
        half_rate,
        half_latency,
        worker_rss_kib,
        pg_steps_per_s,
        pg_connections,
        broker_acks_per_s,
        cpu: vec![max_cpu, half_cpu],
        statements_per_event,
    })
}

/// A sandbox seeded with work orders, and the webhook kintone would send for each.
pub(crate) struct Seeded {
    sandbox: Proc,
    bodies: Vec<String>,
    label: String,
}

impl Seeded {
    pub(crate) async fn new(
        http: &reqwest::Client,
        label: &str,
        records: usize,
    ) -> anyhow::Result<Seeded> {
        let sandbox = Proc::spawn("sandbox", "__sandbox", &[]).await?;
        wait_ready(http, &format!("{}/healthz", sandbox.url())).await?;
        let admin = SandboxAdmin::new(http, sandbox.url());
        eprintln!("{label}: seeding {records} kintone records");
        let bodies = seed(&admin, records).await?;
        Ok(Seeded {
            sandbox,
            bodies,
            label: label.to_owned(),
        })
    }
}

/// One phase's processes: a seeded sandbox, ingest and the workers, on their own
/// database and queue prefix.
pub(crate) struct Stack {
    pub(crate) sandbox: Proc,
    ingest: Proc,
    fleet: Vec<Proc>,
    pub(crate) sender: Sender,
    /// Each webhook's event id, in send order.
    event_ids: Vec<String>,
    /// The bench's one connection to the workers' database, where the commits are
    /// read; its backend's CPU is counted apart from PostgreSQL's.
    watcher: sqlx::PgConnection,
    /// The history read so far: the last row id, and each event's latest row time.
    watched_to: i64,
    committed: HashMap<String, DateTime<Utc>>,
    cpu: cpu::Watch,
    label: String,
    /// Where each worker writes how many SQL statements it has sent.
    statement_files: Vec<std::path::PathBuf>,
}

impl Stack {
    pub(crate) async fn start(
        janitor: &Janitor,
        http: &reqwest::Client,
        seeded: Seeded,
        database_url: String,
        workers: usize,
        prefetch: u16,
    ) -> anyhow::Result<Stack> {
        let Seeded {
            sandbox,
            bodies,
            label,
        } = seeded;
        let database = database_name(&database_url);
        let prefix = janitor.prefix();
        let event_ids = bodies
            .iter()
            .map(|b| {
                let v: Value = serde_json::from_str(b)?;
                v["id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("a webhook without an id")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let env = ChildEnv {
            prefix: prefix.clone(),
            rules: janitor.rules_file(&tests::example_rules(&sandbox.url()))?,
            database_url: Some(database_url.clone()),
            prefetch,
        }
        .vars();
        let ingest = Proc::spawn("ingest", "__ingest", &env).await?;
        wait_ready(http, &format!("{}/readyz", ingest.url())).await?;
        let mut fleet = Vec::with_capacity(workers);
        let mut statement_files = Vec::with_capacity(workers);
        for n in 0..workers {
            let file = std::env::temp_dir().join(format!("{prefix}-worker-{n}.statements"));
            let mut env = env.clone();
            env.push((
                "RECORDSYNC_BENCH_STATEMENTS_FILE".to_owned(),
                file.display().to_string(),
            ));
            fleet.push(Proc::spawn(&format!("worker {n}"), "__worker", &env).await?);
            statement_files.push(file);
        }
        wait_consumers(&tests::amqp_url(), &prefix, workers).await?;
        let mut watcher = ceiling::connect_as(&database_url, WATCHER).await?;
        let watcher_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut watcher)
            .await?;
        let cpu = cpu_watch(
            &sandbox,
            &ingest,
            &fleet,
            database,
            u32::try_from(watcher_pid).ok(),
        );
        let sender = Sender::kintone(http, &ingest, bodies);
        Ok(Stack {
            sandbox,
            ingest,
            fleet,
            sender,
            event_ids,
            watcher,
            watched_to: 0,
            committed: HashMap::new(),
            cpu,
            label,
            statement_files,
        })
    }

    /// The SQL statements the workers have sent, once the count stands still (a
    /// worker finishes its last commits after the last ticket is written).
    pub(crate) async fn statements(&self) -> anyhow::Result<u64> {
        let read = || -> anyhow::Result<u64> {
            let mut total = 0;
            for f in &self.statement_files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("Failed to read {}", f.display()))?;
                total += text.trim().parse::<u64>().unwrap_or(0);
            }
            Ok(total)
        };
        let mut last = read()?;
        loop {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let now = read()?;
            if now == last {
                return Ok(now);
            }
            last = now;
        }
    }

    /// Sends the first `n` webhooks and waits for their commits.
    pub(crate) async fn warm_up(&mut self, n: usize) -> anyhow::Result<()> {
        let sender = self.sender.clone();
        load::closed_loop(n, CONCURRENCY, move |i| sender.send(i)).await?;
        self.wait_committed(0..n).await?;
        Ok(())
    }

    /// Waits until the events `range` (webhooks by send order) each have their decision
    /// committed, and returns when each was, in order: the latest `history.at` of the
    /// event, which the step's commit appends (`clock_timestamp()`, the same clock the
    /// bench stamps acceptance with). Every 250 ms it reads only the history rows
    /// appended since its last read (by id, the primary key, with the last
    /// [`TRAILING_IDS`] again), so its cost does not grow with the history; its
    /// backend's CPU is reported apart. Fails when no new commit shows for
    /// [`STALL_TIMEOUT`].
    pub(crate) async fn wait_committed(
        &mut self,
        range: std::ops::Range<usize>,
    ) -> anyhow::Result<Vec<DateTime<Utc>>> {
        let ids = &self.event_ids[range];
        let mut seen = 0;
        let mut progressed = Instant::now();
        loop {
            // Ids come from a sequence, and a transaction that took an id can commit
            // after one that took a later id: the last TRAILING_IDS ids are read again.
            let rows: Vec<(i64, Option<String>, DateTime<Utc>)> =
                sqlx::query_as("SELECT id, event_id, at FROM history WHERE id > $1 ORDER BY id")
                    .bind(self.watched_to - TRAILING_IDS)
                    .fetch_all(&mut self.watcher)
                    .await?;
            for (id, event_id, at) in rows {
                self.watched_to = self.watched_to.max(id);
                if let Some(event_id) = event_id {
                    let latest = self.committed.entry(event_id).or_insert(at);
                    *latest = (*latest).max(at);
                }
            }
            let done = ids
                .iter()
                .filter(|id| self.committed.contains_key(*id))
                .count();
            if done == ids.len() {
                break;
            }
            if done > seen {
                seen = done;
                progressed = Instant::now();
            } else if progressed.elapsed() > STALL_TIMEOUT {
                bail!(
                    "{}: {done} of {} events committed and no new one for {STALL_TIMEOUT:?}; the workers' stderr above may say why",
                    self.label,
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(ids.iter().map(|id| self.committed[id]).collect())
    }

    /// Stops every process; returns the largest worker peak RSS in KiB.
    pub(crate) async fn finish(self) -> anyhow::Result<u64> {
        for f in &self.statement_files {
            let _ = std::fs::remove_file(f);
        }
        let mut rss = 0;
        for worker in &self.fleet {
            rss = rss.max(worker.peak_rss_kib()?);
        }
        for worker in self.fleet {
            worker.stop().await?;
        }
        self.ingest.stop().await?;
        self.sandbox.stop().await?;
        Ok(rss)
    }
}

/// The database name at the end of a PostgreSQL URL.
pub fn database_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Watches the CPU time of a stack's processes, RabbitMQ, the PostgreSQL processes
/// that serve `database`, and the bench itself.
pub fn cpu_watch(
    sandbox: &Proc,
    ingest: &Proc,
    fleet: &[Proc],
    database: String,
    watcher: Option<u32>,
) -> cpu::Watch {
    let except: Vec<u32> = watcher.into_iter().collect();
    cpu::Watch::new(vec![
        cpu::Group {
            name: "sandbox",
            members: cpu::Members::Pids(vec![sandbox.pid()]),
        },
        cpu::Group {
            name: "workers",
            members: cpu::Members::Pids(fleet.iter().map(Proc::pid).collect()),
        },
        cpu::Group {
            name: "ingest",
            members: cpu::Members::Pids(vec![ingest.pid()]),
        },
        cpu::Group {
            name: "RabbitMQ",
            members: cpu::Members::Command("beam.smp"),
        },
        cpu::Group {
            name: "PostgreSQL",
            members: cpu::Members::Postgres {
                database,
                except: except.clone(),
            },
        },
        cpu::Group {
            name: "bench's commit watcher (PostgreSQL)",
            members: cpu::Members::Pids(except),
        },
        cpu::Group {
            name: "bench",
            members: cpu::Members::Pids(vec![std::process::id()]),
        },
    ])
}

/// Posts prepared kintone webhooks to ingest.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    url: Arc<str>,
    bodies: Arc<Vec<String>>,
}

impl Sender {
    /// A sender of `bodies` to the kintone webhook of `ingest`.
    pub fn kintone(http: &reqwest::Client, ingest: &Proc, bodies: Vec<String>) -> Sender {
        Sender {
            http: http.clone(),
            url: Arc::from(format!(
                "{}/webhooks/kintone?token={}",
                ingest.url(),
                tests::KINTONE_WEBHOOK_TOKEN
            )),
            bodies: Arc::new(bodies),
        }
    }

    /// Posts webhook `i`; fails unless ingest answers 202.
    pub fn send(&self, i: usize) -> impl Future<Output = anyhow::Result<()>> + Send + use<> {
        let request = self
            .http
            .post(&*self.url)
            .header("content-type", "application/json")
            .body(self.bodies[i].clone());
        async move {
            let resp = request.send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if status != reqwest::StatusCode::ACCEPTED {
                bail!(
                    "ingest answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Ok(())
        }
    }
}

/// When a webhook was sent: its answer's time less the time it took. (Ingest's 202
/// can reach the bench after the worker committed: the latency starts at the send.)
fn sent_at(s: &load::Sample) -> DateTime<Utc> {
    s.done_at - chrono::Duration::from_std(s.latency).unwrap_or_default()
}

/// Sent → committed for each sample; `committed[k]` belongs to the sample with index
/// `k`. Both are read off this machine's clock in microseconds: a commit before its
/// webhook was sent is an error, not a zero.
fn latencies(run: &Run, committed: &[DateTime<Utc>]) -> anyhow::Result<Summary> {
    let mut each = Vec::with_capacity(run.samples.len());
    for s in &run.samples {
        let sent = sent_at(s);
        let took = (committed[s.index] - sent).to_std().with_context(|| {
            format!(
                "event {} was committed at {} before its webhook was sent at {sent}",
                s.index, committed[s.index]
            )
        })?;
        each.push(took);
    }
    Ok(Summary::of(each))
}

/// Sets the work-order app up as the test harness does, but without a webhook URL:
/// the bench posts the webhooks itself.
pub async fn create_app(admin: &SandboxAdmin) -> anyhow::Result<()> {
    admin
        .post("/_admin/kintone/apps", &tests::work_orders_app(None))
        .await?;
    Ok(())
}

/// Sets the work-order app up, seeds `n` work orders without webhooks, and returns the
/// kintone webhook each would have sent, in work-order order.
async fn seed(admin: &SandboxAdmin, n: usize) -> anyhow::Result<Vec<String>> {
    create_app(admin).await?;
    let admin = Arc::new(admin.clone());
    let seeder = Arc::clone(&admin);
    load::closed_loop(n, 8, move |i| {
        let admin = Arc::clone(&seeder);
        async move {
            let path = format!("/_admin/kintone/apps/{}/records", tests::APP);
            let body =
                json!({"record": tests::kintone_record(&order(FIRST_ORDER + i)), "webhook": false});
            admin.post(&path, &body).await.map(drop)
        }
    })
    .await?;
    let listed = admin
        .get(&format!("/_admin/kintone/apps/{}/records", tests::APP))
        .await?;
    let mut by_number: HashMap<String, Value> = listed["records"]
        .as_array()
        .context("the sandbox listed no records")?
        .iter()
        .filter_map(|r| {
            let no = r["work_order_no"]["value"].as_str()?.to_owned();
            Some((no, r.clone()))
        })
        .collect();
    let run = uuid::Uuid::new_v4().simple().to_string();
    (0..n)
        .map(|i| {
            let no = order_no(FIRST_ORDER + i);
            let record = by_number
                .remove(&no)
                .with_context(|| format!("the sandbox lost work order {no}"))?;
            Ok(webhook("ADD_RECORD", &format!("bench-{run}-{i}"), record))
        })
        .collect()
}

/// The kintone webhook of type `kind` (`ADD_RECORD`, `UPDATE_RECORD`) for `record`, a
/// record as the sandbox's admin API lists it.
pub fn webhook(kind: &str, id: &str, record: Value) -> String {
    json!({
        "id": id,
        "type": kind,
        "app": {"id": tests::APP, "name": "Work orders"},
        "record": record,
        "recordTitle": "",
        "url": "",
    })
    .to_string()
}

/// A work order's number.
pub fn order_no(n: usize) -> String {
    format!("WO-{n}")
}

/// A work order as the demo creates them.
pub fn order(n: usize) -> Value {
    let priority = ["高", "中", "低"][n % 3];
    json!({
        "work_order_no": order_no(n),
        "件名": format!("Work order {n}: inspect pump"),
        "詳細": "Reported by the customer by phone.",
        "優先度": priority,
        "顧客メール": format!(" Customer{n}@Example.com "),
        "tags": if n.is_multiple_of(2) { json!(["onsite"]) } else { json!(["remote", "follow-up"]) },
    })
}

/// The queue message ingest publishes for a kintone webhook, for a ceiling of the
/// same size.
fn envelope(body: &str) -> anyhow::Result<Vec<u8>> {
    let payload: Value = serde_json::from_str(body)?;
    let text = |p: &str| {
        payload
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    Ok(queue::QueueMessage::V1(queue::EventV1 {
        event_id: text("/id"),
        system: "kintone".into(),
        app: tests::APP.into(),
        record_id: text("/record/$id/value"),
        event_type: text("/type"),
        received_at: Utc::now(),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        payload,
    })
    .encode())
}

/// Waits until `want` consumers are on the work queue of `prefix` on the broker at
/// `amqp_url`: the workers have migrated, connected and started consuming.
pub async fn wait_consumers(amqp_url: &str, prefix: &str, want: usize) -> anyhow::Result<()> {
    let conn = queue::connect(amqp_url, "recordsync-bench-watch").await?;
    let queue = queue::Names::new(prefix).work_queue();
    let waited = tests::wait_for(
        &format!("{want} consumer(s) on {queue}"),
        Duration::from_secs(30),
        || async {
            let channel = conn.create_channel().await?;
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            let _ = channel.close(200, "done".into()).await;
            Ok(declared.is_ok_and(|q| q.consumer_count() as usize >= want))
        },
    )
    .await;
    let _ = conn.close(200, "done".into()).await;
    waited.context("the workers did not start consuming; their stderr above may say why")
}
