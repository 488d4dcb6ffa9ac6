//! The `chaos` run: proof that nothing is lost and nothing is duplicated while
//! everything that can fail does.
//!
//! The sandbox, ingest and three workers run as processes of their own. Ingest and the
//! workers reach RabbitMQ and PostgreSQL through TCP proxies this process controls, so
//! that a broker "restart" and a database stop cut only this run's connections (other
//! runs on the machine keep the shared servers). On a schedule drawn from the seed and
//! printed before it starts, the run SIGKILLs workers and restarts them, cuts RabbitMQ,
//! stops PostgreSQL for 10 s, and makes the helpdesk and kintone fail (5xx, 429 with
//! `Retry-After`, timeouts, lost responses). All along, the helpdesk's search lags and
//! it ignores idempotency keys, and kintone drops webhooks beyond 60 a minute.
//!
//! Meanwhile a driver changes N work orders several times in kintone and their tickets
//! in the helpdesk, redelivers old webhooks (duplicated, late, out of order) and sends
//! webhooks whose payloads lie. It keeps its own model of what each person last wrote.
//!
//! After the last fault it waits for the fleet to settle, replays any dead letter, and
//! checks, from the sandbox's state and the driver's model alone (never the service's
//! store): every record converged to what field authority implies, no ticket was
//! created twice, every dead letter was replayed and processed, and the ledger
//! balances with nothing in flight.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tests::proxy::Proxy;
use tokio::sync::Mutex;

use crate::fixture::{self, ChildEnv, Janitor};
use crate::procs::Proc;
use tests::servers::{OwnPostgres, OwnRabbit};

const RULE: &str = tests::RULE;
const APP: &str = tests::APP;
/// The number of the first work order (`WO-700000`): no seeded ticket matches.
const FIRST_ORDER: usize = 700_000;
/// How long a worker stays dead before it is restarted.
const DEAD_FOR: Duration = Duration::from_secs(1);
/// How long the broker is cut.
const BROKER_DOWN: Duration = Duration::from_secs(5);
/// How long PostgreSQL is stopped.
const POSTGRES_DOWN: Duration = Duration::from_secs(10);
/// The helpdesk's search lag, all run long.
const SEARCH_LAG_MS: u64 = 1_500;
/// The most dead letters a run may replay and still pass. Every recorded run replayed
/// none (seeds 1–14 at 300 × 3, and the smoke run): each fault injected is transient
/// and the retry ladder outlasts it, so a dead letter means a transient fault was taken
/// for a final one, which replay would only hide.
const MAX_REPLAYED: usize = 0;
/// How long the fleet may take to settle after the last fault before the run fails.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(420);
/// Priorities a person picks in kintone, and what the rule maps each to.
const PRIORITIES: [(&str, &str); 3] = [("高", "high"), ("中", "normal"), ("低", "low")];
/// Statuses an agent sets in the helpdesk, and kintone's 状態 for each.
const STATUSES: [(&str, &str); 2] = [("in_progress", "対応中"), ("closed", "完了")];

/// What one run is asked to do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The seed of the schedule, the changes and the faults.
    pub seed: u64,
    /// Work orders.
    pub records: usize,
    /// Versions of each work order in kintone (the create and the edits).
    pub versions: usize,
    /// Worker processes.
    pub workers: usize,
    /// How long the faults last; the changes are spread over it.
    pub fault_window: Duration,
}

/// What one run found.
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The printed report: the schedule, the ledger, the figures.
    pub report: String,
    /// Every failed check; empty when the run proved what it should.
    pub failures: Vec<String>,
    /// The row for the table in the book (docs/src/chaos.md).
    pub summary: String,
}

/// A small deterministic PRNG (splitmix64): the same seed draws the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    fn between(&mut self, from: Duration, to: Duration) -> Duration {
        let span = to.saturating_sub(from).as_millis().max(1) as u64;
        from + Duration::from_millis(self.next() % span)
    }
}

/// A fault at its time, counted from the start of the window.
#[derive(Clone, Debug)]
enum Fault {
    /// SIGKILL worker n, restart it a second later.
    KillWorker(usize),
    /// Cut every broker connection and refuse new ones for a while.
    Broker,
    /// Cut every PostgreSQL connection and refuse new ones for a while.
    Postgres,
}

fn schedule(rng: &mut Rng, plan: &Plan) -> Vec<(Duration, Fault)> {
    let w = plan.fault_window;
    let mut faults = vec![
        (rng.between(w / 5, w * 2 / 5), Fault::Broker),
        (rng.between(w / 2, w * 7 / 10), Fault::Postgres),
    ];
    let mut at = rng.between(Duration::from_secs(2), Duration::from_secs(4));
    while at < w {
        faults.push((at, Fault::KillWorker(rng.below(plan.workers))));
        at += rng.between(Duration::from_secs(3), Duration::from_secs(7));
    }
    faults.sort_by_key(|(at, _)| *at);
    faults
}

/// A change the driver makes.
#[derive(Clone, Debug)]
enum Op {
    /// A person creates work order n in kintone.
    Create(usize),
    /// A person edits work order n's fields in kintone (its version k).
    Edit(usize, usize),
    /// An agent sets the status of work order n's ticket (the helpdesk owns it).
    AgentStatus(usize, usize),
    /// An agent edits the subject of work order n's ticket (kintone owns it: refused).
    AgentSubject(usize),
    /// A kintone webhook about work order n whose payload lies about the subject.
    Lie(usize),
    /// An old kintone webhook delivered again (duplicated, late, out of order).
    Redeliver,
}

fn changes(rng: &mut Rng, plan: &Plan) -> Vec<Op> {
    let mut per_record: Vec<Vec<Op>> = (0..plan.records)
        .map(|n| {
            let mut ops = vec![Op::Create(n)];
            ops.extend((1..plan.versions).map(|k| Op::Edit(n, k)));
            if rng.chance(0.4) {
                let at = 1 + rng.below(ops.len());
                ops.insert(at, Op::AgentStatus(n, rng.below(STATUSES.len())));
            }
            if rng.chance(0.1) {
                let at = 1 + rng.below(ops.len());
                ops.insert(at, Op::AgentSubject(n));
            }
            if rng.chance(0.1) {
                let at = 1 + rng.below(ops.len());
                ops.insert(at, Op::Lie(n));
            }
            ops.reverse();
            ops
        })
        .collect();
    let mut out = vec![];
    let mut open: Vec<usize> = (0..plan.records).collect();
    while !open.is_empty() {
        let pick = rng.below(open.len());
        let n = open[pick];
        match per_record[n].pop() {
            Some(op) => out.push(op),
            None => {
                open.swap_remove(pick);
            }
        }
        if rng.chance(0.1) && out.len() > 5 {
            out.push(Op::Redeliver);
        }
    }
    out
}

/// What the people last wrote: the independent oracle.
#[derive(Clone, Debug, Default)]
struct Order {
    kintone_id: Option<String>,
    subject: String,
    detail: String,
    priority: usize,
    email: String,
    status: Option<usize>,
}

impl Order {
    fn version(n: usize, k: usize, rng: &mut Rng) -> Order {
        Order {
            kintone_id: None,
            subject: format!("  Work order {n} v{k}  "),
            detail: format!("detail of {n}, version {k}"),
            priority: rng.below(PRIORITIES.len()),
            email: format!(" Customer{n}.V{k}@Example.COM "),
            status: None,
        }
    }

    fn kintone_fields(&self, n: usize) -> Value {
        tests::kintone_record(&json!({
            "work_order_no": format!("WO-{}", FIRST_ORDER + n),
            "件名": self.subject,
            "詳細": self.detail,
            "優先度": PRIORITIES[self.priority].0,
            "顧客メール": self.email,
        }))
    }

    /// What the ticket and the work order must hold, by field authority: kintone owns
    /// the mapped fields (with the rule's transforms), the helpdesk owns the status.
    /// kintone's own fields are compared too, as the person wrote them (an echo of the
    /// ticket written back into them would trim or lower-case them), and the status
    /// of every order: one no agent touched is still `open` (未対応 in kintone).
    fn drift(&self, ticket: &Value, record: &Value) -> Vec<String> {
        let mut out = vec![];
        let mut want = |what: &str, got: &Value, expected: &str| {
            if got.as_str() != Some(expected) {
                out.push(format!("{what} is {got}, expected {expected:?}"));
            }
        };
        want("ticket subject", &ticket["subject"], self.subject.trim());
        want("ticket description", &ticket["description"], &self.detail);
        want(
            "ticket priority",
            &ticket["priority"],
            PRIORITIES[self.priority].1,
        );
        want(
            "ticket contact_email",
            &ticket["contact_email"],
            &self.email.trim().to_lowercase(),
        );
        want("kintone 件名", &record["件名"]["value"], &self.subject);
        want("kintone 詳細", &record["詳細"]["value"], &self.detail);
        want(
            "kintone 優先度",
            &record["優先度"]["value"],
            PRIORITIES[self.priority].0,
        );
        want(
            "kintone 顧客メール",
            &record["顧客メール"]["value"],
            &self.email,
        );
        let (status, kintone_status) = self
            .status
            .map_or(("open", "未対応"), |s| (STATUSES[s].0, STATUSES[s].1));
        want("ticket status", &ticket["status"], status);
        want("kintone 状態", &record["状態"]["value"], kintone_status);
        out
    }
}

/// The running fleet: the processes and the proxies under the run's control.
struct Fleet {
    env: Vec<(String, String)>,
    workers: Mutex<Vec<Option<Proc>>>,
    pg: Pg,
    mq: Mq,
    log: Mutex<Vec<String>>,
    start: Instant,
}

/// The run's PostgreSQL, and how it is stopped.
enum Pg {
    /// A cluster of the run's own: stopped for real.
    Own(OwnPostgres),
    /// A proxy in front of the shared server: its connections cut.
    Proxied(Proxy),
}

/// The run's RabbitMQ, and how it is restarted.
enum Mq {
    /// A node of the run's own: stopped and started again on its data.
    Own(Mutex<OwnRabbit>),
    /// A proxy in front of the shared broker: its connections cut.
    Proxied(Proxy),
}

impl Fleet {
    async fn postgres(&self, up: bool) -> anyhow::Result<()> {
        match (&self.pg, up) {
            (Pg::Own(pg), true) => pg.up().await,
            (Pg::Own(pg), false) => pg.down().await,
            (Pg::Proxied(p), true) => {
                p.up();
                Ok(())
            }
            (Pg::Proxied(p), false) => {
                p.down();
                Ok(())
            }
        }
    }

    async fn broker(&self, up: bool) -> anyhow::Result<()> {
        match (&self.mq, up) {
            (Mq::Own(mq), true) => mq.lock().await.up().await,
            (Mq::Own(mq), false) => mq.lock().await.down().await,
            (Mq::Proxied(p), true) => {
                p.up();
                Ok(())
            }
            (Mq::Proxied(p), false) => {
                p.down();
                Ok(())
            }
        }
    }

    async fn note(&self, line: String) {
        let at = self.start.elapsed().as_secs_f64();
        self.log.lock().await.push(format!("{at:7.1} s  {line}"));
    }

    async fn spawn_worker(&self, n: usize) -> anyhow::Result<Proc> {
        Proc::spawn(&format!("worker {n}"), "__worker", &self.env).await
    }

    async fn kill(&self, n: usize) -> anyhow::Result<()> {
        let old = self.workers.lock().await[n].take();
        if let Some(mut p) = old {
            p.kill();
        }
        self.note(format!("SIGKILL worker {n}")).await;
        tokio::time::sleep(DEAD_FOR).await;
        self.restart(n).await
    }

    /// Starts worker n again, trying until it announces (it may start while
    /// PostgreSQL or RabbitMQ is away).
    async fn restart(&self, n: usize) -> anyhow::Result<()> {
        for attempt in 1.. {
            match self.spawn_worker(n).await {
                Ok(p) => {
                    self.workers.lock().await[n] = Some(p);
                    return Ok(());
                }
                Err(e) if attempt < 30 => {
                    self.note(format!("worker {n} did not start ({e:#}); again"))
                        .await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    /// Restarts any worker that exited by itself, and says so: a worker is meant to
    /// ride out every outage.
    async fn revive(&self) -> anyhow::Result<usize> {
        let mut dead = vec![];
        for (n, w) in self.workers.lock().await.iter_mut().enumerate() {
            if let Some(status) = w.as_mut().and_then(Proc::exited) {
                dead.push((n, status));
                *w = None;
            }
        }
        for (n, status) in &dead {
            self.note(format!(
                "worker {n} exited by itself ({status}); restarting"
            ))
            .await;
            self.restart(*n).await?;
        }
        Ok(dead.len())
    }
}

/// The sandbox's admin API.
struct Sandbox {
    admin: tests::SandboxAdmin,
    http: reqwest::Client,
}

impl Sandbox {
    fn url(&self) -> &str {
        self.admin.base()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        self.admin.call(method, path, Some(&body)).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.admin.post(path, &body).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.admin.get(path).await
    }

    async fn records(&self) -> anyhow::Result<HashMap<String, Value>> {
        let v = self
            .get(&format!("/_admin/kintone/apps/{APP}/records"))
            .await?;
        Ok(v["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["$id"]["value"].as_str()?.to_owned(), r.clone())))
            .collect())
    }

    async fn tickets(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.get("/_admin/helpdesk/tickets").await?;
        Ok(v["tickets"].as_array().cloned().unwrap_or_default())
    }

    /// An agent's edit through the helpdesk's API, tried again while injected faults
    /// refuse it (an agent retries too).
    async fn agent_edit(&self, ticket: &str, fields: Value) -> anyhow::Result<()> {
        for _ in 0..30 {
            let resp = self
                .http
                .patch(format!("{}/api/tickets/{ticket}", self.url()))
                .bearer_auth(sandbox::DEFAULT_HELPDESK_TOKEN)
                .json(&fields)
                .send()
                .await?;
            if resp.status().is_success() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the helpdesk refused an agent's edit of ticket {ticket} 30 times")
    }
}

/// Runs one seed.
pub async fn run(
    janitor: &Janitor,
    http: &reqwest::Client,
    plan: &Plan,
) -> anyhow::Result<Outcome> {
    let mut rng = Rng(plan.seed);
    let faults = schedule(&mut rng, plan);
    let ops = changes(&mut rng, plan);
    let mut report = String::new();
    writeln!(
        report,
        "chaos seed {}: {} work orders × {} versions, {} workers, {} changes over a {} s fault window",
        plan.seed,
        plan.records,
        plan.versions,
        plan.workers,
        ops.len(),
        plan.fault_window.as_secs()
    )?;
    writeln!(
        report,
        "fault schedule (seconds from the start of the window):"
    )?;
    writeln!(
        report,
        "  all window long: helpdesk POST 10% 503 before and 10% after the create, PATCH 15% 503, GET 5% 429 (Retry-After 1) and 3% slower than the timeout; kintone PUT 10% 503 after the write; all run long: helpdesk search lag {SEARCH_LAG_MS} ms, idempotency keys ignored, kintone webhooks capped at 60 a minute"
    )?;
    for (at, f) in &faults {
        let what = match f {
            Fault::KillWorker(n) => format!("SIGKILL worker {n}, restart after {DEAD_FOR:?}"),
            Fault::Broker => format!("RabbitMQ stopped for {BROKER_DOWN:?}, then started again"),
            Fault::Postgres => format!("PostgreSQL stopped for {POSTGRES_DOWN:?}"),
        };
        writeln!(report, "  {:6.1}  {what}", at.as_secs_f64())?;
    }
    eprint!("{report}");

    // The stack: its own PostgreSQL and RabbitMQ when they can be had, else proxies
    // in front of the shared ones. `db_url` and `amqp_url` are what the run's checks
    // use; the services get `worker_db_url` and `services_amqp_url`.
    let prefix = janitor.prefix();
    let (pg, db_url, worker_db_url) = match OwnPostgres::start().await {
        Ok(own) => {
            let url = format!("{}/recordsync_chaos", own.url());
            create_database(&own.url(), "recordsync_chaos").await?;
            writeln!(
                report,
                "PostgreSQL: the run's own cluster (initdb in {}, 127.0.0.1:{}), stopped with `pg_ctl stop -m immediate`",
                own.dir().display(),
                own.port
            )?;
            (Pg::Own(own), url.clone(), url)
        }
        Err(e) => {
            let url = janitor.database().await?;
            let (upstream, template) = proxied(&url, 5432)?;
            let proxy = Proxy::start(upstream).await?;
            let worker_url = template.replace("{port}", &proxy.addr.port().to_string());
            writeln!(
                report,
                "PostgreSQL: a TCP proxy in front of the shared server, its connections cut (no cluster of its own: {e:#})"
            )?;
            (Pg::Proxied(proxy), url, worker_url)
        }
    };
    let (mq, amqp_url, services_amqp_url) = match OwnRabbit::start().await {
        Ok(own) => {
            let url = own.url();
            writeln!(
                report,
                "RabbitMQ: the run's own node (in {}, 127.0.0.1:{}), stopped with `rabbitmqctl stop` and started again on its data",
                own.dir().display(),
                own.port
            )?;
            (Mq::Own(Mutex::new(own)), url.clone(), url)
        }
        Err(e) => {
            let (upstream, template) = proxied(&tests::amqp_url(), 5672)?;
            let proxy = Proxy::start(upstream).await?;
            let url = template.replace("{port}", &proxy.addr.port().to_string());
            writeln!(
                report,
                "RabbitMQ: a TCP proxy in front of the shared broker, its connections cut (no node of its own: {e:#})"
            )?;
            (Mq::Proxied(proxy), tests::amqp_url(), url)
        }
    };
    let sandbox_proc = Proc::spawn("sandbox", "__sandbox", &[]).await?;
    let sb = Sandbox {
        admin: tests::SandboxAdmin::new(http, sandbox_proc.url()),
        http: http.clone(),
    };
    let mut rules = tests::example_rules(sb.url());
    tests::two_way(&mut rules);
    let rule = rules
        .rules
        .iter_mut()
        .find(|r| r.name == RULE)
        .context("the example rule")?;
    rule.resync = Some(domain::rules::ResyncSpec {
        every_seconds: 10,
        ..domain::rules::ResyncSpec::by_hand()
    });
    rule.reconcile = Some(domain::rules::ReconcileSpec {
        every_seconds: 60,
        repair: true,
        settle_seconds: Some(20),
    });
    // The helpdesk takes no write for a while, early in the window: work for it is
    // parked, then flushed when the window opens again.
    let closed = closed_window(chrono::Utc::now());
    rules
        .systems
        .get_mut("helpdesk")
        .context("the helpdesk system")?
        .write_windows = Some(closed.windows());
    writeln!(
        report,
        "write window: the helpdesk takes no write from {} to {} UTC",
        closed.from.format("%H:%M:%S"),
        closed.to.format("%H:%M:%S")
    )?;
    let rules_path = janitor.rules_file(&rules)?;
    let mut env = ChildEnv {
        prefix: prefix.clone(),
        rules: rules_path,
        database_url: Some(worker_db_url),
        prefetch: 64,
    }
    .vars();
    for (k, v) in env.iter_mut() {
        if k == "RECORDSYNC_AMQP_URL" {
            v.clone_from(&services_amqp_url);
        }
    }
    env.extend([
        ("RECORDSYNC_LEASE_TTL_MS".to_owned(), "5000".to_owned()),
        (
            "RECORDSYNC_IN_DOUBT_SETTLE_MS".to_owned(),
            "6000".to_owned(),
        ),
        (
            "RECORDSYNC_PUBLISH_TIMEOUT_MS".to_owned(),
            "3000".to_owned(),
        ),
    ]);
    let ingest = Proc::spawn("ingest", "__ingest", &env).await?;
    sb.post(
        "/_admin/kintone/apps",
        tests::work_orders_app(Some(&format!(
            "{}/webhooks/kintone?token={}",
            ingest.url(),
            tests::KINTONE_WEBHOOK_TOKEN
        ))),
    )
    .await?;
    sb.post(
        "/_admin/helpdesk/config",
        json!({
            "webhook_url": format!("{}/webhooks/helpdesk", ingest.url()),
            "search_lag_ms": SEARCH_LAG_MS,
            "ignore_idempotency_keys": true
        }),
    )
    .await?;
    sb.post("/_admin/kintone/webhook_cap", json!({"per_minute": 60}))
        .await?;

    let fleet = Arc::new(Fleet {
        env,
        workers: Mutex::new((0..plan.workers).map(|_| None).collect()),
        pg,
        mq,
        log: Mutex::new(vec![]),
        start: Instant::now(),
    });
    for n in 0..plan.workers {
        fleet.restart(n).await?;
    }
    crate::e2e::wait_consumers(&amqp_url, &prefix, plan.workers).await?;

    // The window: target faults on, the schedule and the driver side by side.
    let fault_ids = target_faults(&sb, plan.seed).await?;
    let window_start = Instant::now();
    let driver = drive(&sb, &ops, plan, &mut rng, window_start);
    let injector = inject(&fleet, &faults, window_start, plan.fault_window);
    let (driven, injected) = tokio::join!(driver, injector);
    let (orders, driver_notes) = driven?;
    injected?;
    for id in fault_ids {
        sb.call(
            reqwest::Method::DELETE,
            &format!("/_admin/faults/{id}"),
            json!({}),
        )
        .await?;
    }
    let last_fault = Instant::now();
    fleet
        .note("target faults lifted; the last fault is over".into())
        .await;

    // Settle: the fleet catches up on its own (resync, reconcile); dead letters are
    // replayed as an operator would.
    let store = store::Store::connect(&db_url, 2).await?;
    let mut replayed = 0usize;
    let mut converged: Option<Duration> = None;
    let mut drift: Vec<String> = vec![];
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        fleet.revive().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let depth = queued(&amqp_url, &prefix).await?;
        let ledger = store.ledger(Some(RULE), Duration::ZERO).await?;
        let open = ledger
            .iter()
            .map(|l| l.in_flight + l.unaccounted)
            .sum::<i64>();
        if depth == 0 {
            let dead = store
                .dead_letters(&store::DeadFilter::default(), 10_000)
                .await?;
            if !dead.is_empty() {
                replayed += replay(&amqp_url, &store, &prefix).await?;
                fleet
                    .note(format!("replayed {} dead letter(s)", dead.len()))
                    .await;
                continue;
            }
        }
        drift = check_records(&sb, &orders).await?;
        if depth == 0 && open == 0 && drift.is_empty() {
            converged = Some(last_fault.elapsed());
            break;
        }
    }

    // The checks.
    let mut failures = vec![];
    if converged.is_none() {
        failures.push(format!(
            "the fleet did not settle within {SETTLE_TIMEOUT:?} of the last fault"
        ));
    }
    failures.extend(replay_failure(replayed));
    let (before, outside, after) = writes_around(&sb, &closed).await?;
    failures.extend(outside.iter().cloned());
    let duplicates = duplicates(&sb).await?;
    failures.extend(duplicates.iter().map(|(external, ids)| {
        format!(
            "external id {external} has {} tickets: {}",
            ids.len(),
            ids.join(", ")
        )
    }));
    let tickets = sb.tickets().await?;
    if tickets.len() != plan.records {
        failures.push(format!(
            "{} tickets for {} work orders",
            tickets.len(),
            plan.records
        ));
    }
    let ledgers = store.ledger(None, Duration::ZERO).await?;
    failures.extend(ledger_failures(&ledgers));
    let dead_left = store
        .dead_letters(&store::DeadFilter::default(), 10_000)
        .await?;
    if !dead_left.is_empty() {
        failures.push(format!("{} dead letters not replayed", dead_left.len()));
    }
    let conflicts = store.conflicts("open").await?;
    for c in &conflicts {
        failures.push(format!(
            "open conflict {} on record {} [{}]: {}",
            c.id, c.source_record_id, c.kind, c.summary
        ));
    }
    failures.extend(drift.iter().cloned());
    // A record that failed a check is shown with its timeline (and, for a duplicate,
    // the helpdesk requests about it).
    let mut stories = String::new();
    let mut failed_records: Vec<(String, Option<String>)> = drift
        .iter()
        .filter_map(|line| line.split_whitespace().nth(3))
        .map(|id| (id.trim_end_matches(':').to_owned(), None))
        .collect();
    for (external, _) in &duplicates {
        let n = external
            .trim_start_matches("WO-")
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(FIRST_ORDER));
        if let Some(id) = n
            .and_then(|n| orders.get(n))
            .and_then(|o| o.kintone_id.clone())
        {
            failed_records.push((id, Some(external.clone())));
        }
    }
    for (id, external) in failed_records.iter().take(8) {
        writeln!(stories, "timeline of work order record {id}:")?;
        for h in store.history(RULE, id).await? {
            writeln!(stories, "  {} {}", h.at.format("%H:%M:%S%.3f"), h.summary)?;
        }
        if let Some(external) = external {
            writeln!(stories, "helpdesk requests about {external}:")?;
            for line in requests_about(&sb, external).await? {
                writeln!(stories, "  {line}")?;
            }
        }
    }

    // The report.
    let helpdesk_log = sb.get("/_admin/log?system=helpdesk").await?;
    let posts = helpdesk_log["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["method"] == "POST" && e["path"] == "/api/tickets")
        .count();
    let cap = sb.get("/_admin/kintone/webhook_cap").await?;
    let counts: BTreeMap<String, i64> = store
        .history_counts(Some(RULE))
        .await?
        .into_iter()
        .map(|c| (c.kind, c.count))
        .collect();
    writeln!(report, "what happened:")?;
    for line in fleet.log.lock().await.iter() {
        writeln!(report, "  {line}")?;
    }
    for line in &driver_notes {
        writeln!(report, "  driver: {line}")?;
    }
    writeln!(
        report,
        "figures: {} tickets for {} work orders ({} create requests sent, {} duplicates); kintone dropped {} webhooks over its cap; {} dead letters replayed; {} open conflicts",
        tickets.len(),
        plan.records,
        posts,
        duplicates.len(),
        cap["dropped"],
        replayed,
        conflicts.len()
    )?;
    writeln!(
        report,
        "write window: {before} service writes reached the helpdesk before it closed, {} while it was closed, {after} after",
        outside.len()
    )?;
    writeln!(
        report,
        "replays: {replayed} dead letters replayed automatically (threshold {MAX_REPLAYED})"
    )?;
    let mut webhooks = vec![];
    for system in ["kintone", "helpdesk"] {
        let (accepted, not) =
            accepted_webhooks(&sb.get(&format!("/_admin/{system}/webhooks")).await?);
        webhooks.push(format!("{system} {accepted} accepted, {not} not"));
    }
    writeln!(
        report,
        "webhooks by the sandbox's delivery lists (ingest's last answer 202 or not): {}; not yet matched to the writes they caused",
        webhooks.join(", ")
    )?;
    writeln!(report, "history by kind: {counts:?}")?;
    for l in &ledgers {
        writeln!(
            report,
            "ledger {}: accepted {} = synced {} + skipped {:?} + conflicts {} + dead {} + parked {} + in flight {} (unaccounted {}, imbalance {})",
            l.rule,
            l.accepted,
            l.synced,
            l.skipped,
            l.conflicts,
            l.dead_lettered,
            l.parked,
            l.in_flight,
            l.unaccounted,
            l.imbalance()
        )?;
    }
    match converged {
        Some(t) => writeln!(
            report,
            "converged {:.1} s after the last fault",
            t.as_secs_f64()
        )?,
        None => writeln!(report, "did not converge")?,
    }
    report.push_str(&stories);
    let summary = format!(
        "| {} | {} × {} | {} | {} | {} | {} | {} | {} |",
        plan.seed,
        plan.records,
        plan.versions,
        faults.len(),
        cap["dropped"],
        replayed,
        duplicates.len(),
        drift.len(),
        converged.map_or_else(|| "—".to_owned(), |t| format!("{:.0} s", t.as_secs_f64()))
    );

    // Stop everything this run started; the janitor removes the database and queues.
    let workers: Vec<Proc> = fleet.workers.lock().await.drain(..).flatten().collect();
    for w in workers {
        w.stop().await?;
    }
    ingest.stop().await?;
    sandbox_proc.stop().await?;
    store.pool().close().await;
    Ok(Outcome {
        seed: plan.seed,
        report,
        failures,
        summary,
    })
}

/// Creates a database on a server.
async fn create_database(server: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// A URL's upstream address, and the URL with its port replaced by `{port}`.
fn proxied(url: &str, default_port: u16) -> anyhow::Result<(SocketAddr, String)> {
    let mut parsed = reqwest::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    let upstream = parsed
        .socket_addrs(|| Some(default_port))?
        .into_iter()
        .next()
        .with_context(|| format!("{url} resolves to no address"))?;
    parsed
        .set_port(Some(1))
        .map_err(|()| anyhow::anyhow!("{url} cannot take a port"))?;
    let text = parsed.to_string();
    Ok((upstream, text.replacen(":1/", ":{port}/", 1)))
}

/// The faults at the targets for the window; returns their ids.
async fn target_faults(sb: &Sandbox, seed: u64) -> anyhow::Result<Vec<String>> {
    let specs = [
        json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": 503, "probability": 0.1}),
        json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": 503, "probability": 0.1, "after": true}),
        json!({"system": "helpdesk", "method": "PATCH", "status": 503, "probability": 0.15}),
        json!({"system": "helpdesk", "method": "GET", "status": 429, "retry_after": "1", "probability": 0.05}),
        json!({"system": "helpdesk", "method": "GET", "latency_ms": 3_500, "probability": 0.03}),
        json!({"system": "kintone", "method": "PUT", "status": 503, "probability": 0.1, "after": true}),
    ];
    let mut ids = vec![];
    for (i, mut spec) in specs.into_iter().enumerate() {
        spec["seed"] = json!(seed.wrapping_mul(31).wrapping_add(i as u64 + 1));
        let v = sb.post("/_admin/faults", spec).await?;
        ids.push(
            v["id"]
                .as_str()
                .with_context(|| format!("the sandbox gave no fault id: {v}"))?
                .to_owned(),
        );
    }
    Ok(ids)
}

/// Makes the changes, spread evenly over the window. Returns the model and notes.
async fn drive(
    sb: &Sandbox,
    ops: &[Op],
    plan: &Plan,
    rng: &mut Rng,
    start: Instant,
) -> anyhow::Result<(Vec<Order>, Vec<String>)> {
    let mut orders: Vec<Order> = vec![Order::default(); plan.records];
    let every = plan.fault_window / ops.len().max(1) as u32;
    let mut deferred: Vec<Op> = vec![];
    let mut notes = vec![];
    let (mut redelivered, mut lies, mut agent_edits) = (0, 0, 0);
    let (mut deferred_count, mut abandoned) = (0, 0);
    let mut i = 0usize;
    let mut queue: std::collections::VecDeque<Op> = ops.iter().cloned().collect();
    while let Some(op) = queue.pop_front() {
        let due = start + every * i as u32;
        tokio::time::sleep_until(due.into()).await;
        i += 1;
        match op {
            Op::Create(n) | Op::Edit(n, _) => {
                let k = if let Op::Edit(_, k) = op { k } else { 0 };
                let mut next = Order::version(n, k, rng);
                next.kintone_id = orders[n].kintone_id.clone();
                next.status = orders[n].status;
                let body = json!({"record": next.kintone_fields(n), "webhook": true});
                match &next.kintone_id {
                    None => {
                        let v = sb
                            .post(&format!("/_admin/kintone/apps/{APP}/records"), body)
                            .await?;
                        next.kintone_id =
                            Some(v["id"].as_str().context("no record id")?.to_owned());
                    }
                    Some(id) => {
                        sb.call(
                            reqwest::Method::PUT,
                            &format!("/_admin/kintone/apps/{APP}/records/{id}"),
                            body,
                        )
                        .await?;
                    }
                }
                orders[n] = next;
            }
            Op::AgentStatus(n, _) | Op::AgentSubject(n) => {
                let ticket = match &orders[n].kintone_id {
                    Some(id) => ticket_of(sb, id).await?,
                    None => None,
                };
                match (ticket, op) {
                    (None, op) => {
                        // Not synced yet: the agent comes back to it later.
                        deferred_count += 1;
                        if deferred_count <= 20 * plan.records {
                            deferred.push(op);
                        } else {
                            abandoned += 1;
                        }
                    }
                    (Some(ticket), Op::AgentStatus(_, s)) => {
                        sb.agent_edit(&ticket, json!({"status": STATUSES[s].0}))
                            .await?;
                        orders[n].status = Some(s);
                        agent_edits += 1;
                    }
                    (Some(ticket), _) => {
                        sb.agent_edit(&ticket, json!({"subject": "typed over by an agent"}))
                            .await?;
                        agent_edits += 1;
                    }
                }
            }
            Op::Lie(n) => {
                let Some(id) = orders[n].kintone_id.clone() else {
                    continue;
                };
                let mut record = sb.records().await?.remove(&id).context("the record")?;
                record["件名"]["value"] = json!("a payload that lies");
                let lie = json!({"id": uuid::Uuid::new_v4().to_string(), "type": "UPDATE_RECORD", "app": {"id": APP, "name": "Work orders"}, "record": record, "recordTitle": "a payload that lies", "url": ""});
                sb.post(
                    &format!("/_admin/kintone/apps/{APP}/webhooks/send"),
                    json!({"payload": lie}),
                )
                .await?;
                lies += 1;
            }
            Op::Redeliver => {
                let sent = sb.get("/_admin/kintone/webhooks").await?;
                let ids: Vec<&str> = sent
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|w| w["id"].as_str())
                    .collect();
                if !ids.is_empty() {
                    let pick = ids[rng.below(ids.len())];
                    sb.post(
                        &format!("/_admin/kintone/webhooks/{pick}/redeliver"),
                        json!({}),
                    )
                    .await?;
                    redelivered += 1;
                }
            }
        }
        if queue.is_empty() && !deferred.is_empty() {
            // Give the fleet a moment before the agents look again.
            tokio::time::sleep(Duration::from_secs(1)).await;
            queue.extend(deferred.drain(..));
        }
    }
    notes.push(format!(
        "{} kintone changes, {agent_edits} agent edits ({deferred_count} put off until the ticket existed, {abandoned} given up), {redelivered} old webhooks delivered again, {lies} lying payloads; finished {:.1} s into the window",
        ops.iter().filter(|o| matches!(o, Op::Create(_) | Op::Edit(..))).count(),
        start.elapsed().as_secs_f64()
    ));
    Ok((orders, notes))
}

/// The ticket id written back into a work order, if any.
async fn ticket_of(sb: &Sandbox, kintone_id: &str) -> anyhow::Result<Option<String>> {
    let mut records = sb.records().await?;
    Ok(records
        .remove(kintone_id)
        .and_then(|r| r["helpdesk_ticket_id"]["value"].as_str().map(str::to_owned))
        .filter(|t| !t.is_empty()))
}

/// Runs the fault schedule over the window.
async fn inject(
    fleet: &Arc<Fleet>,
    faults: &[(Duration, Fault)],
    start: Instant,
    window: Duration,
) -> anyhow::Result<()> {
    let mut outages = vec![];
    for (at, fault) in faults {
        tokio::time::sleep_until((start + *at).into()).await;
        fleet.revive().await?;
        match fault {
            Fault::KillWorker(n) => fleet.kill(*n).await?,
            Fault::Broker => {
                fleet.broker(false).await?;
                fleet
                    .note(format!("RabbitMQ stopped for {BROKER_DOWN:?}"))
                    .await;
                let f = Arc::clone(fleet);
                outages.push(tokio::spawn(async move {
                    tokio::time::sleep(BROKER_DOWN).await;
                    f.broker(true).await?;
                    f.note("RabbitMQ back".into()).await;
                    anyhow::Ok(())
                }));
            }
            Fault::Postgres => {
                fleet.postgres(false).await?;
                fleet
                    .note(format!("PostgreSQL stopped for {POSTGRES_DOWN:?}"))
                    .await;
                let f = Arc::clone(fleet);
                outages.push(tokio::spawn(async move {
                    tokio::time::sleep(POSTGRES_DOWN).await;
                    f.postgres(true).await?;
                    f.note("PostgreSQL back".into()).await;
                    anyhow::Ok(())
                }));
            }
        }
    }
    for o in outages {
        o.await??;
    }
    tokio::time::sleep_until((start + window).into()).await;
    Ok(())
}

/// Messages still in the run's work, retry and dead-letter queues.
async fn queued(amqp_url: &str, prefix: &str) -> anyhow::Result<u32> {
    let conn = queue::connect(amqp_url, "recordsync-chaos-depth").await?;
    let channel = conn.create_channel().await?;
    let topology = fixture::topology(prefix);
    let names = &topology.names;
    let mut queues = vec![names.work_queue(), names.dead_queue()];
    queues.extend((0..topology.retry_delays_ms.len()).map(|t| names.retry_queue(t)));
    let mut total = 0;
    for q in queues {
        let declared = channel
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("Failed to read the depth of {q}"))?;
        total += declared.message_count();
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(total)
}

/// Replays every dead letter as `worker dlq replay` does; returns how many.
async fn replay(amqp_url: &str, store: &store::Store, prefix: &str) -> anyhow::Result<usize> {
    let conn = queue::connect(amqp_url, "recordsync-chaos-replay").await?;
    let publisher = queue::Publisher::open(&conn, Duration::from_secs(5)).await?;
    let names = queue::Names::new(prefix);
    let replayed =
        worker::dlq::replay(store, &publisher, &names, &store::DeadFilter::default()).await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(replayed.len())
}

/// A stretch of time in which the helpdesk takes no write.
struct Closed {
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
}

/// Requests sent just before the window closes may arrive just after: they were
/// decided while it was open. Measured on the request's arrival time in the sandbox's
/// request log (`at`, taken when the request reached the helpdesk), not on any time the
/// service reports.
const WINDOW_GRACE: chrono::TimeDelta = chrono::TimeDelta::milliseconds(100);

/// Closed for 20 s, starting 30 s after `now` (the workers start a few seconds after
/// the rules are written; the fault window follows). Whole seconds, as the rule's
/// window states them: the stretch checked is the one the service was given.
fn closed_window(now: chrono::DateTime<chrono::Utc>) -> Closed {
    let now = chrono::Timelike::with_nanosecond(&now, 0).unwrap_or(now);
    let from = now + chrono::TimeDelta::seconds(30);
    Closed {
        from,
        to: from + chrono::TimeDelta::seconds(20),
    }
}

impl Closed {
    /// The helpdesk's write windows: open from the end of the closed stretch round to
    /// its start, the next day (a window that ends at or before its start crosses
    /// midnight).
    fn windows(&self) -> domain::windows::WriteWindows {
        domain::windows::WriteWindows {
            time_zone: "UTC".into(),
            windows: vec![domain::windows::Window {
                days: vec![],
                from: self.to.format("%H:%M:%S").to_string(),
                to: self.from.format("%H:%M:%S").to_string(),
            }],
        }
    }
}

/// The service's writes to the helpdesk (creates, bulk updates, and updates: the
/// service's carry an idempotency key, an agent's do not) before, during and after the
/// closed stretch; those during it are named.
async fn writes_around(
    sb: &Sandbox,
    closed: &Closed,
) -> anyhow::Result<(usize, Vec<String>, usize)> {
    let log = sb.get("/_admin/log?system=helpdesk").await?;
    classify_writes(&log, closed)
}

/// [`writes_around`] on a request log (`/_admin/log?system=helpdesk`).
fn classify_writes(log: &Value, closed: &Closed) -> anyhow::Result<(usize, Vec<String>, usize)> {
    let (mut before, mut during, mut after) = (0, vec![], 0);
    for e in log["entries"].as_array().into_iter().flatten() {
        let service_write =
            e["method"] == "POST" || (e["method"] == "PATCH" && !e["idempotency_key"].is_null());
        if !service_write {
            continue;
        }
        let at = e["at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .with_context(|| format!("a request log entry without a time: {e}"))?;
        if at <= closed.from + WINDOW_GRACE {
            before += 1;
        } else if at < closed.to {
            during.push(format!(
                "a write reached the helpdesk while it took none: {} {} at {}",
                e["method"].as_str().unwrap_or("?"),
                e["path"].as_str().unwrap_or("?"),
                e["at"].as_str().unwrap_or("?")
            ));
        } else {
            after += 1;
        }
    }
    Ok((before, during, after))
}

/// Tickets that share an external id: the external id and the ticket ids.
async fn duplicates(sb: &Sandbox) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    Ok(shared_externals(&sb.tickets().await?))
}

/// [`duplicates`] among `tickets`.
fn shared_externals(tickets: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut by_external: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tickets {
        let external = t["external_id"]
            .as_str()
            .map_or_else(|| t["external_id"].to_string(), str::to_owned);
        by_external
            .entry(external)
            .or_default()
            .push(t["id"].to_string());
    }
    by_external
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect()
}

/// The helpdesk requests about one external id (its creates and its searches), one
/// line each.
async fn requests_about(sb: &Sandbox, external: &str) -> anyhow::Result<Vec<String>> {
    let log = sb.get("/_admin/log?system=helpdesk").await?;
    let number = external.trim_start_matches("WO-");
    Ok(log["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["body"]["external_id"].as_str() == Some(external)
                || e["query"].as_str().is_some_and(|q| q.contains(number))
        })
        .map(|e| {
            format!(
                "{} {} {}{} → {}{}",
                e["at"].as_str().unwrap_or("?"),
                e["method"].as_str().unwrap_or("?"),
                e["path"].as_str().unwrap_or("?"),
                e["query"]
                    .as_str()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default(),
                e["status"],
                if e["fault_id"].is_null() {
                    ""
                } else {
                    " (injected fault)"
                }
            )
        })
        .collect())
}

/// Every work order whose ticket or record does not hold what the people last wrote,
/// as `work order record <id>: …` lines.
async fn check_records(sb: &Sandbox, orders: &[Order]) -> anyhow::Result<Vec<String>> {
    let records = sb.records().await?;
    let tickets: HashMap<String, Value> = sb
        .tickets()
        .await?
        .into_iter()
        .map(|t| (t["id"].to_string(), t))
        .collect();
    Ok(record_drift(orders, &records, &tickets))
}

/// [`check_records`] on kintone's records (by record id) and the helpdesk's tickets
/// (by ticket id).
fn record_drift(
    orders: &[Order],
    records: &HashMap<String, Value>,
    tickets: &HashMap<String, Value>,
) -> Vec<String> {
    let mut out = vec![];
    for o in orders {
        let Some(id) = &o.kintone_id else { continue };
        let Some(record) = records.get(id) else {
            out.push(format!("work order record {id}: missing from kintone"));
            continue;
        };
        let Some(ticket_id) = record["helpdesk_ticket_id"]["value"]
            .as_str()
            .filter(|t| !t.is_empty())
        else {
            out.push(format!("work order record {id}: no ticket id written back"));
            continue;
        };
        let Some(ticket) = tickets.get(ticket_id) else {
            out.push(format!(
                "work order record {id}: written-back ticket {ticket_id} does not exist"
            ));
            continue;
        };
        let drift = o.drift(ticket, record);
        if !drift.is_empty() {
            out.push(format!("work order record {id}: {}", drift.join("; ")));
        }
    }
    out
}

/// Of a sandbox delivery list (`/_admin/{system}/webhooks`): how many distinct
/// webhooks ingest accepted (its last answer to them was 202), and how many it did not
/// (or has not yet). Read from the sandbox, not from the service's ledger.
fn accepted_webhooks(deliveries: &Value) -> (usize, usize) {
    let mut last: BTreeMap<&str, bool> = BTreeMap::new();
    for d in deliveries.as_array().into_iter().flatten() {
        if let Some(id) = d["id"].as_str() {
            last.insert(id, d["status"] == 202);
        }
    }
    let accepted = last.values().filter(|a| **a).count();
    (accepted, last.len() - accepted)
}

/// The run fails when it had to replay more dead letters than [`MAX_REPLAYED`].
fn replay_failure(replayed: usize) -> Option<String> {
    (replayed > MAX_REPLAYED).then(|| {
        format!("{replayed} dead letters were replayed, above the threshold of {MAX_REPLAYED}")
    })
}

/// What the ledgers say is lost or left over: an imbalance, an unaccounted or
/// in-flight event, a dead letter or a parked event at the end.
fn ledger_failures(ledgers: &[store::Ledger]) -> Vec<String> {
    let mut failures = vec![];
    for l in ledgers {
        if l.imbalance() != 0 || l.unaccounted != 0 || l.in_flight != 0 {
            failures.push(format!(
                "ledger of {}: imbalance {}, unaccounted {}, in flight {} (oldest unaccounted: {:?})",
                l.rule,
                l.imbalance(),
                l.unaccounted,
                l.in_flight,
                l.oldest_unaccounted
                    .iter()
                    .map(|u| &u.event_id)
                    .collect::<Vec<_>>()
            ));
        }
        if l.dead_lettered != 0 || l.parked != 0 {
            failures.push(format!(
                "ledger of {}: {} dead-lettered and {} parked at the end",
                l.rule, l.dead_lettered, l.parked
            ));
        }
    }
    failures
}

#[cfg(test)]
mod unit {
    use super::*;

    fn plan(seed: u64) -> Plan {
        Plan {
            seed,
            records: 20,
            versions: 3,
            workers: 3,
            fault_window: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_seed_draws_the_same_run_and_another_seed_another() {
        let draw = |seed| {
            let mut rng = Rng(seed);
            let faults = format!("{:?}", schedule(&mut rng, &plan(seed)));
            let ops = format!("{:?}", changes(&mut rng, &plan(seed)));
            (faults, ops)
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn the_schedule_has_one_broker_cut_one_database_stop_and_kills_inside_the_window() {
        let p = plan(3);
        let faults = schedule(&mut Rng(3), &p);
        let count = |f: fn(&Fault) -> bool| faults.iter().filter(|(_, x)| f(x)).count();
        assert_eq!(count(|f| matches!(f, Fault::Broker)), 1);
        assert_eq!(count(|f| matches!(f, Fault::Postgres)), 1);
        assert!(count(|f| matches!(f, Fault::KillWorker(_))) >= 60 / 7);
        assert!(faults.iter().all(|(at, _)| *at < p.fault_window));
        assert!(faults.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
        let (pg_at, _) = faults
            .iter()
            .find(|(_, f)| matches!(f, Fault::Postgres))
            .unwrap();
        assert!(
            *pg_at + POSTGRES_DOWN < p.fault_window,
            "PostgreSQL is back inside the window"
        );
    }

    #[test]
    fn every_work_order_is_created_before_it_is_edited_and_each_version_happens_once() {
        let p = plan(11);
        let ops = changes(&mut Rng(11), &p);
        let mut created = vec![false; p.records];
        let mut edits = vec![0; p.records];
        for op in &ops {
            match op {
                Op::Create(n) => {
                    assert!(!created[*n], "created twice");
                    created[*n] = true;
                }
                Op::Edit(n, _) | Op::AgentStatus(n, _) | Op::AgentSubject(n) | Op::Lie(n) => {
                    assert!(created[*n], "{op:?} before the create");
                    if matches!(op, Op::Edit(..)) {
                        edits[*n] += 1;
                    }
                }
                Op::Redeliver => {}
            }
        }
        assert!(created.iter().all(|c| *c));
        assert!(edits.iter().all(|e| *e == p.versions - 1));
    }

    #[test]
    fn the_oracle_applies_the_rules_transforms_and_the_owners() {
        let o = Order {
            kintone_id: Some("1".into()),
            subject: "  Pump  ".into(),
            detail: "d".into(),
            priority: 0,
            email: " A@B.COM ".into(),
            status: Some(1),
        };
        let ticket = json!({"subject": "Pump", "description": "d", "priority": "high", "contact_email": "a@b.com", "status": "closed"});
        let record = json!({"件名": {"value": "  Pump  "}, "詳細": {"value": "d"}, "優先度": {"value": "高"}, "顧客メール": {"value": " A@B.COM "}, "状態": {"value": "完了"}});
        assert!(o.drift(&ticket, &record).is_empty());
        let mut wrong = ticket.clone();
        wrong["subject"] = json!("typed over by an agent");
        assert_eq!(o.drift(&wrong, &record).len(), 1);
        let mut stale = record.clone();
        stale["状態"]["value"] = json!("対応中");
        assert_eq!(o.drift(&ticket, &stale).len(), 1);
    }

    /// A work order as the oracle has it, its ticket and its record, all agreeing.
    fn synced_order() -> (Order, Value, Value) {
        let o = Order {
            kintone_id: Some("7".into()),
            subject: "  Pump  ".into(),
            detail: "d".into(),
            priority: 0,
            email: " A@B.COM ".into(),
            status: Some(1),
        };
        let ticket = json!({"id": 70, "external_id": "WO-700007", "subject": "Pump", "description": "d", "priority": "high", "contact_email": "a@b.com", "status": "closed"});
        let record = json!({
            "helpdesk_ticket_id": {"value": "70"},
            "件名": {"value": "  Pump  "},
            "詳細": {"value": "d"},
            "優先度": {"value": "高"},
            "顧客メール": {"value": " A@B.COM "},
            "状態": {"value": "完了"},
        });
        (o, ticket, record)
    }

    #[test]
    fn drift_names_each_ticket_field_that_differs_from_the_oracle() {
        let (o, ticket, record) = synced_order();
        assert!(o.drift(&ticket, &record).is_empty());
        for (field, bad) in [
            ("subject", json!("  Pump  ")),
            ("description", json!("other")),
            ("priority", json!("low")),
            ("contact_email", json!(" A@B.COM ")),
            ("status", json!("in_progress")),
        ] {
            let mut wrong = ticket.clone();
            wrong[field] = bad;
            let drift = o.drift(&wrong, &record);
            assert_eq!(drift.len(), 1, "{field}: {drift:?}");
            assert!(drift[0].contains(field), "{drift:?}");
        }
    }

    #[test]
    fn drift_names_each_of_kintones_own_fields_an_echo_rewrote() {
        let (o, ticket, record) = synced_order();
        for (field, echo) in [
            ("件名", json!("Pump")),
            ("詳細", json!("d ")),
            ("優先度", json!("中")),
            ("顧客メール", json!("a@b.com")),
        ] {
            let mut echoed = record.clone();
            echoed[field]["value"] = echo;
            let drift = o.drift(&ticket, &echoed);
            assert_eq!(drift.len(), 1, "{field}: {drift:?}");
            assert!(
                drift[0].starts_with(&format!("kintone {field}")),
                "{drift:?}"
            );
        }
    }

    #[test]
    fn drift_checks_the_status_of_an_order_no_agent_touched() {
        let (mut o, mut ticket, mut record) = synced_order();
        o.status = None;
        ticket["status"] = json!("open");
        record["状態"]["value"] = json!("未対応");
        assert!(o.drift(&ticket, &record).is_empty());
        let mut closed = ticket.clone();
        closed["status"] = json!("closed");
        assert_eq!(o.drift(&closed, &record).len(), 1);
        let mut blank = record.clone();
        blank["状態"]["value"] = json!("");
        let drift = o.drift(&ticket, &blank);
        assert_eq!(drift.len(), 1);
        assert!(drift[0].starts_with("kintone 状態"), "{drift:?}");
    }

    fn by_id(values: &[(&str, Value)]) -> HashMap<String, Value> {
        values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn check_records_fails_a_missing_record_a_missing_ticket_and_a_drifted_one() {
        let (o, ticket, record) = synced_order();
        let orders = vec![o.clone(), Order::default()];
        let records = by_id(&[("7", record.clone())]);
        let tickets = by_id(&[("70", ticket.clone())]);
        assert!(record_drift(&orders, &records, &tickets).is_empty());
        let lost = record_drift(&orders, &HashMap::new(), &tickets);
        assert_eq!(lost, ["work order record 7: missing from kintone"]);
        let mut unlinked = record.clone();
        unlinked["helpdesk_ticket_id"]["value"] = json!("");
        let lost = record_drift(&orders, &by_id(&[("7", unlinked)]), &tickets);
        assert_eq!(lost, ["work order record 7: no ticket id written back"]);
        let lost = record_drift(&orders, &records, &HashMap::new());
        assert_eq!(
            lost,
            ["work order record 7: written-back ticket 70 does not exist"]
        );
        let mut drifted = ticket.clone();
        drifted["description"] = json!("stale");
        let out = record_drift(&orders, &records, &by_id(&[("70", drifted)]));
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("work order record 7: ticket description"));
    }

    #[test]
    fn two_tickets_with_one_external_id_are_a_duplicate() {
        let one = json!({"id": 1, "external_id": "WO-700001"});
        let two = json!({"id": 2, "external_id": "WO-700002"});
        assert!(shared_externals(&[one.clone(), two.clone()]).is_empty());
        let again = json!({"id": 3, "external_id": "WO-700001"});
        assert_eq!(
            shared_externals(&[one, two, again]),
            [("WO-700001".to_owned(), vec!["1".to_owned(), "3".to_owned()])]
        );
    }

    #[test]
    fn a_ledger_with_anything_unaccounted_in_flight_dead_or_parked_fails() {
        let balanced = store::Ledger {
            rule: RULE.into(),
            accepted: 10,
            synced: 7,
            skipped: [("unchanged".to_owned(), 3)].into(),
            ..Default::default()
        };
        assert!(ledger_failures(std::slice::from_ref(&balanced)).is_empty());
        let lost = store::Ledger {
            accepted: 11,
            ..balanced.clone()
        };
        assert!(ledger_failures(&[lost])[0].contains("imbalance 1"));
        let unaccounted = store::Ledger {
            accepted: 11,
            unaccounted: 1,
            ..balanced.clone()
        };
        assert!(ledger_failures(&[unaccounted])[0].contains("unaccounted 1"));
        let in_flight = store::Ledger {
            accepted: 11,
            in_flight: 1,
            ..balanced.clone()
        };
        assert!(ledger_failures(&[in_flight])[0].contains("in flight 1"));
        let dead = store::Ledger {
            accepted: 11,
            dead_lettered: 1,
            ..balanced.clone()
        };
        assert!(ledger_failures(&[dead])[0].contains("1 dead-lettered"));
        let parked = store::Ledger {
            accepted: 11,
            parked: 1,
            ..balanced
        };
        assert!(ledger_failures(&[parked])[0].contains("1 parked"));
    }

    #[test]
    fn replaying_more_dead_letters_than_the_threshold_fails_the_run() {
        assert_eq!(replay_failure(MAX_REPLAYED), None);
        let over = replay_failure(MAX_REPLAYED + 1).expect("a failure");
        assert!(over.contains("replayed, above the threshold"), "{over}");
    }

    #[test]
    fn a_webhook_counts_as_accepted_by_ingests_last_answer_to_its_id() {
        let deliveries = json!([
            {"id": "a", "status": 202},
            {"id": "b", "status": 503},
            {"id": "c", "status": null},
            {"id": "d", "status": 202},
        ]);
        assert_eq!(accepted_webhooks(&deliveries), (2, 2));
        assert_eq!(accepted_webhooks(&json!([])), (0, 0));
    }

    fn log(entries: &[(&str, &str, Option<&str>)]) -> Value {
        json!({"entries": entries.iter().map(|(at, method, key)| json!({
            "at": at, "method": method, "path": "/api/tickets", "idempotency_key": key,
        })).collect::<Vec<_>>()})
    }

    #[test]
    fn a_service_write_while_the_window_is_closed_is_a_violation_and_an_agents_is_not() {
        let closed = closed_window("2026-11-30T10:00:00Z".parse().unwrap());
        // Closed from 10:00:30 to 10:00:50.
        let ok = log(&[
            ("2026-11-30T10:00:29.000Z", "POST", None),
            ("2026-11-30T10:00:40.000Z", "PATCH", None),
            ("2026-11-30T10:00:50.000Z", "PATCH", Some("k")),
        ]);
        let (before, during, after) = classify_writes(&ok, &closed).unwrap();
        assert_eq!((before, during.len(), after), (1, 0, 1));
        let bad = log(&[
            ("2026-11-30T10:00:40.000Z", "PATCH", Some("k")),
            ("2026-11-30T10:00:49.999Z", "POST", None),
        ]);
        let (_, during, _) = classify_writes(&bad, &closed).unwrap();
        assert_eq!(during.len(), 2, "{during:?}");
        assert!(classify_writes(&log(&[("soon", "POST", None)]), &closed).is_err());
    }

    #[test]
    fn a_write_arriving_99_ms_after_the_window_closes_counts_as_before_and_101_ms_does_not() {
        let closed = closed_window("2026-11-30T10:00:00.640Z".parse().unwrap());
        assert_eq!(closed.from.to_rfc3339(), "2026-11-30T10:00:30+00:00");
        let early = log(&[("2026-11-30T10:00:30.099Z", "POST", None)]);
        let (before, during, _) = classify_writes(&early, &closed).unwrap();
        assert_eq!((before, during.len()), (1, 0));
        let late = log(&[("2026-11-30T10:00:30.101Z", "POST", None)]);
        let (before, during, _) = classify_writes(&late, &closed).unwrap();
        assert_eq!((before, during.len()), (0, 1));
        assert!(during[0].contains("10:00:30.101"), "{during:?}");
    }

    #[test]
    fn the_helpdesk_window_is_closed_exactly_for_its_stretch_even_across_midnight() {
        for now in ["2026-11-30T10:00:00Z", "2026-11-30T23:59:20Z"] {
            let now: chrono::DateTime<chrono::Utc> = now.parse().unwrap();
            let closed = closed_window(now);
            let w = closed.windows();
            assert!(w.problems().is_empty(), "{:?}", w.problems());
            let s = chrono::TimeDelta::seconds;
            assert!(w.is_open(now));
            assert!(w.is_open(closed.from - s(1)));
            assert!(!w.is_open(closed.from + s(1)));
            assert!(!w.is_open(closed.to - s(1)));
            assert!(w.is_open(closed.to + s(1)));
        }
    }

    #[test]
    fn urls_are_proxied_on_their_port() {
        let (addr, url) = proxied("postgres://postgres@127.0.0.1:5432/rs_x", 5432).unwrap();
        assert_eq!(addr.port(), 5432);
        assert_eq!(url, "postgres://postgres@127.0.0.1:{port}/rs_x");
        let (addr, url) = proxied("amqp://guest:guest@127.0.0.1/%2f", 5672).unwrap();
        assert_eq!(addr.port(), 5672);
        assert_eq!(url, "amqp://guest:guest@127.0.0.1:{port}/%2f");
    }
}
