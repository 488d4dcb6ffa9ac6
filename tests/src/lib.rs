//! The test and demo harness: starts the sandbox, ingest and workers in-process on
//! port 0 against the real RabbitMQ and PostgreSQL, each environment isolated by its
//! own database and its own queue prefix.

pub mod proxy;
pub mod servers;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use config::{ConfigError, Settings};
use connectors::Connectors;
use domain::rules::SyncRules;
use serde_json::{Value, json};
use store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A command as a delivery, an operator or a resync would send it to the step.
pub fn command(id: &str, command: queue::Command) -> queue::CommandV2 {
    queue::CommandV2 {
        id: id.to_owned(),
        correlation_id: format!("corr-{id}"),
        issued_at: chrono::Utc::now(),
        command,
    }
}

/// A change of a kintone work order, as its webhook announces it.
pub fn change(id: &str, record_id: &str) -> queue::CommandV2 {
    command(
        id,
        queue::Command::Change {
            system: "kintone".into(),
            app: APP.into(),
            record_id: record_id.into(),
            event_type: "UPDATE_RECORD".into(),
            payload: Value::Null,
        },
    )
}

/// Makes sure the tools some tests drive are here (Chromium with playwright-core,
/// promtool): runs `tests/setup.sh`, which installs what is missing, once per test
/// binary. `.ci/run` runs it first, so in CI this finds everything in place.
pub fn tools() -> anyhow::Result<()> {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("setup.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    *done = true;
    Ok(())
}

/// An HTTP client for a test. reqwest is built without a TLS crypto provider of its
/// own (the workspace picks ring), so one is installed first: a test that makes a
/// client before anything else did would otherwise panic.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The PostgreSQL server the tests, the demo and the bench create their databases on:
/// `RECORDSYNC_TEST_PG`, else the server of the services' `RECORDSYNC_DATABASE_URL`
/// (its database name dropped), else the local default.
pub fn pg_server_url() -> String {
    std::env::var("RECORDSYNC_TEST_PG")
        .ok()
        .or_else(|| {
            let url = std::env::var("RECORDSYNC_DATABASE_URL").ok()?;
            let url = url.split('?').next().unwrap_or_default();
            let (scheme, rest) = url.split_once("://")?;
            let server = rest.split('/').next()?;
            Some(format!("{scheme}://{server}"))
        })
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into())
}

/// The RabbitMQ the tests, the demo and the bench use: `RECORDSYNC_TEST_AMQP`, else the
/// services' `RECORDSYNC_AMQP_URL`, else the local default.
pub fn amqp_url() -> String {
    std::env::var("RECORDSYNC_TEST_AMQP")
        .or_else(|_| std::env::var("RECORDSYNC_AMQP_URL"))
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The sandbox's kintone work-order app (app 101, the fields the example rules map),
/// sending its webhooks to `webhook_url` if any: the body of `POST /_admin/kintone/apps`.
pub fn work_orders_app(webhook_url: Option<&str>) -> Value {
    let mut app = json!({
        "app": 101,
        "name": "Work orders",
        "title_field": "件名",
        "fields": {
            "work_order_no": "SINGLE_LINE_TEXT",
            "件名": "SINGLE_LINE_TEXT",
            "詳細": "MULTI_LINE_TEXT",
            "優先度": "DROP_DOWN",
            "顧客メール": "SINGLE_LINE_TEXT",
            "tags": "CHECK_BOX",
            "helpdesk_ticket_id": "SINGLE_LINE_TEXT",
            "状態": "DROP_DOWN"
        }
    });
    if let Some(url) = webhook_url {
        app["webhook_url"] = json!(url);
    }
    app
}

/// The kintone app the example rules watch.
pub const APP: &str = "101";
/// The example rule's name.
pub const RULE: &str = "work-orders-to-tickets";
/// The kintone webhook token used in tests.
pub const KINTONE_WEBHOOK_TOKEN: &str = "kintone-webhook-token";

/// The secrets of the example rules, as tests and the demo set them.
pub fn secrets(sandbox: &sandbox::SandboxConfig) -> HashMap<String, String> {
    [
        ("KINTONE_API_TOKEN", sandbox.kintone_api_token.clone()),
        ("KINTONE_WEBHOOK_TOKEN", KINTONE_WEBHOOK_TOKEN.to_owned()),
        ("HELPDESK_API_TOKEN", sandbox.helpdesk_token.clone()),
        // The examples in deploy/examples, played by the sandbox's dialects.
        ("ZENDESK_BASIC_CREDENTIALS", sandbox.helpdesk_token.clone()),
        ("HUBSPOT_PRIVATE_APP_TOKEN", sandbox.helpdesk_token.clone()),
        (
            "FRESHDESK_BASIC_CREDENTIALS",
            sandbox.helpdesk_token.clone(),
        ),
        (
            "HELPDESK_WEBHOOK_SECRET",
            sandbox.helpdesk_webhook_secret.clone(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Looks secrets up in `secrets`, for building connectors in-process.
pub fn lookup(
    secrets: &HashMap<String, String>,
) -> impl Fn(&str, &str) -> Result<String, ConfigError> + '_ {
    move |path, var| {
        secrets
            .get(var)
            .cloned()
            .ok_or_else(|| ConfigError::MissingSecret {
                path: path.to_owned(),
                var: var.to_owned(),
            })
    }
}

/// Makes the example rule two-way: the helpdesk owns the status (kintone's 状態),
/// kintone keeps the rest; the helpdesk's version and update time are read.
pub fn two_way(rules: &mut SyncRules) {
    let entity = rules
        .systems
        .get_mut("helpdesk")
        .and_then(|h| h.entities.get_mut("ticket"))
        .expect("the ticket entity");
    entity.revision_pointer = Some("/version".into());
    entity.changed_at_pointer = Some("/updated_at".into());
    let rule = rules
        .rules
        .iter_mut()
        .find(|r| r.name == RULE)
        .expect("the example rule");
    rule.direction = domain::rules::Direction::Both;
    let forward = serde_json::from_value(
        json!({"map": {"table": {"未対応": "open", "対応中": "in_progress", "完了": "closed"}}}),
    )
    .expect("a transform");
    let reverse = serde_json::from_value(
        json!({"map": {"table": {"open": "未対応", "in_progress": "対応中", "closed": "完了"}}}),
    )
    .expect("a transform");
    rule.fields.push(domain::rules::FieldMapping {
        source: "状態".into(),
        target: "status".into(),
        transforms: vec![forward],
        owner: Some("helpdesk".into()),
        reverse: vec![reverse],
        ..Default::default()
    });
}

/// The example `sync-rules.json` with every system pointed at `base_url`.
pub fn example_rules(base_url: &str) -> SyncRules {
    let text = include_str!("../../sync-rules.json");
    let mut rules =
        config::parse_rules("sync-rules.json", text).expect("the example rules are valid");
    for sys in rules.systems.values_mut() {
        sys.base_url = base_url.to_owned();
        // Tests make systems fail on purpose; do not wait long for them.
        sys.timeout_ms = Some(3_000);
    }
    rules
}

/// A rules file with its kintone system pointed at the sandbox at `base_url` and every
/// other system at the sandbox's dialect of the same name (`{base_url}/zendesk`).
pub fn dialect_rules(text: &str, base_url: &str) -> anyhow::Result<SyncRules> {
    let mut rules = config::parse_rules("example", text)?;
    for (name, sys) in rules.systems.iter_mut() {
        sys.base_url = match sys.kind {
            domain::rules::SystemKind::Kintone => base_url.to_owned(),
            _ => format!("{base_url}/{name}"),
        };
        sys.timeout_ms = Some(3_000);
    }
    Ok(rules)
}

/// A created database, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl TestDb {
    /// Creates a fresh database and migrates it.
    pub async fn create() -> anyhow::Result<TestDb> {
        TestDb::create_at(i64::MAX).await
    }

    /// Creates a fresh database with the migrations up to `last` applied.
    pub async fn create_at(last: i64) -> anyhow::Result<TestDb> {
        // The name carries its creation time, so that databases left behind by a test
        // that died can be recognised and dropped later.
        let now = chrono::Utc::now().timestamp();
        let name = format!(
            "rs_test_{now}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let admin = format!("{}/postgres", pg_server_url());
        let store = Store::connect(&admin, 1).await.with_context(|| {
            format!("Failed to reach PostgreSQL at {admin}: start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`")
        })?;
        drop_stale(&store, now).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(store.pool())
            .await?;
        store.pool().close().await;
        let url = format!("{}/{name}", pg_server_url());
        Store::connect(&url, 1).await?.migrate_to(last).await?;
        Ok(TestDb { name, url })
    }

    /// Drops the database.
    pub async fn drop_db(&self) -> anyhow::Result<()> {
        let admin = format!("{}/postgres", pg_server_url());
        let store = Store::connect(&admin, 1).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(store.pool())
        .await?;
        Ok(())
    }
}

/// Drops test databases left behind by tests that died: those created more than an
/// hour ago (their name says when) that nobody is connected to.
async fn drop_stale(admin: &Store, now: i64) {
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database d WHERE datname LIKE 'rs\\_test\\_%'
           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
    )
    .fetch_all(admin.pool())
    .await
    .unwrap_or_default();
    for name in stale {
        let created = name.split('_').nth(2).and_then(|t| t.parse::<i64>().ok());
        // A name without a time is from an older harness: stale by now.
        if created.is_none_or(|t| now - t > 3_600) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(admin.pool())
            .await;
        }
    }
}

/// Options for an environment.
#[derive(Clone)]
pub struct EnvOptions {
    /// Retry delay tiers (short in tests).
    pub retry_delays_ms: Vec<u64>,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// Prefetch per worker.
    pub prefetch: u16,
    /// How long an in-doubt create is looked for before it is made again.
    pub in_doubt_settle_ms: u64,
    /// Workers to start.
    pub workers: usize,
    /// Ingest's broker URL (a proxy in outage tests).
    pub ingest_amqp_url: Option<String>,
    /// Every component's broker URL (a proxy in broker outage tests).
    pub amqp_url: Option<String>,
    /// The workers' database URL template: `{db}` is replaced by the database name (a
    /// proxy in PostgreSQL outage tests).
    pub worker_database_url: Option<String>,
    /// Rules added to the example rules.
    pub extra_rules: Vec<domain::rules::RuleSpec>,
    /// A change to the rules (limits, windows) before anything starts.
    pub edit_rules: Option<fn(&mut SyncRules)>,
    /// A change to the service settings (retention, schedules) before anything starts.
    pub edit_settings: Option<fn(&mut Settings)>,
    /// Another rules file instead of the example (one of `deploy/examples/`): its
    /// kintone system is pointed at the sandbox, and every other system at the
    /// sandbox's dialect of the same name (`/zendesk`, `/hubspot`, `/freshdesk`).
    pub rules_text: Option<&'static str>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            retry_delays_ms: vec![200, 400, 800],
            max_attempts: 4,
            prefetch: 16,
            in_doubt_settle_ms: 1_500,
            workers: 1,
            ingest_amqp_url: None,
            amqp_url: None,
            worker_database_url: None,
            edit_rules: None,
            edit_settings: None,
            extra_rules: vec![],
            rules_text: None,
        }
    }
}

/// The sandbox's admin API (`/_admin/...`), for the tests, the bench and the chaos run:
/// every call fails unless the answer is a success, naming the path and the answer.
#[derive(Clone)]
pub struct SandboxAdmin {
    http: reqwest::Client,
    base: String,
}

impl SandboxAdmin {
    /// The admin API of the sandbox at `base`.
    pub fn new(http: &reqwest::Client, base: String) -> SandboxAdmin {
        SandboxAdmin {
            http: http.clone(),
            base,
        }
    }

    /// The sandbox's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `body` (if any) to `path` with `method`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("sandbox {path} answered {status}: {v}");
        }
        Ok(v)
    }

    /// POSTs `body` to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// PUTs `body` to `path`.
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// GETs `path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// DELETEs `path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// A running environment: sandbox, ingest, workers, an own database, an own prefix.
pub struct Env {
    /// The sandbox.
    pub sandbox: sandbox::Sandbox,
    /// The sandbox's secrets.
    pub sandbox_config: sandbox::SandboxConfig,
    /// The settings every component got.
    pub settings: Settings,
    /// The rules.
    pub rules: SyncRules,
    /// Ingest's base URL.
    pub ingest_url: String,
    /// The store (the environment's own database).
    pub store: Store,
    /// The database.
    pub db: TestDb,
    /// An HTTP client.
    pub http: reqwest::Client,
    ingest_stop: CancellationToken,
    ingest_task: JoinHandle<std::io::Result<()>>,
    workers: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    /// The admin API base URL of each worker started, in order.
    pub admin_urls: Vec<String>,
}

impl Env {
    /// Starts everything with default options.
    pub async fn start() -> anyhow::Result<Env> {
        Env::start_with(EnvOptions::default()).await
    }

    /// Starts everything.
    pub async fn start_with(opts: EnvOptions) -> anyhow::Result<Env> {
        // `RECORDSYNC_TEST_LOG=info` shows the components' logs while debugging a test.
        if let Ok(filter) = std::env::var("RECORDSYNC_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let sandbox_config = sandbox::SandboxConfig::default();
        let sandbox = sandbox::Sandbox::start(sandbox_config.clone()).await?;
        let mut rules = match opts.rules_text {
            None => example_rules(&sandbox.base_url),
            Some(text) => dialect_rules(text, &sandbox.base_url)?,
        };
        rules.rules.extend(opts.extra_rules.iter().cloned());
        if let Some(edit) = opts.edit_rules {
            edit(&mut rules);
        }
        let db = TestDb::create().await?;
        let prefix = format!("rs-test-{}", uuid::Uuid::new_v4().simple());
        let settings = Settings {
            amqp_url: opts.amqp_url.clone().unwrap_or_else(amqp_url),
            database_url: match &opts.worker_database_url {
                Some(template) => template.replace("{db}", &db.name),
                None => db.url.clone(),
            },
            queue_prefix: prefix,
            retry_delays_ms: opts.retry_delays_ms.clone(),
            max_attempts: opts.max_attempts,
            prefetch: opts.prefetch,
            // A small pool whatever the prefetch: nothing holds a connection while
            // another system is called.
            db_max_connections: 6,
            lease_ttl_ms: 3_000,
            in_doubt_settle_ms: opts.in_doubt_settle_ms,
            publish_timeout_ms: 2_000,
            // The ledger's metric is recounted often, so that a test sees it move.
            ledger_rollup_ms: 200,
            ..Settings::default()
        };
        let settings = match opts.edit_settings {
            Some(edit) => {
                let mut settings = settings;
                edit(&mut settings);
                settings
            }
            None => settings,
        };
        let secrets = secrets(&sandbox_config);

        let mut ingest_settings = settings.clone();
        if let Some(url) = &opts.ingest_amqp_url {
            ingest_settings.amqp_url = url.clone();
        }
        let ingest =
            ingest::Ingest::with_secrets(&ingest_settings, rules.clone(), lookup(&secrets))?;
        let broker = ingest.broker();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let ingest_url = format!("http://{}", listener.local_addr()?);
        let ingest_stop = CancellationToken::new();
        let ingest_task = tokio::spawn(ingest.run(listener, ingest_stop.clone()));
        tokio::time::timeout(Duration::from_secs(10), broker.wait_connected())
            .await
            .context("ingest did not connect to RabbitMQ within 10 s: is it running? (`rabbitmq-server -detached`)")?;

        let store = Store::connect(&db.url, 4).await?;
        let mut env = Env {
            sandbox,
            sandbox_config,
            settings,
            rules,
            ingest_url,
            store,
            db,
            http: http_client(),
            ingest_stop,
            ingest_task,
            workers: vec![],
            admin_urls: vec![],
        };
        env.setup_sandbox().await?;
        for _ in 0..opts.workers {
            env.start_worker().await?;
        }
        Ok(env)
    }

    /// How many creates were sent to the helpdesk (`POST /api/tickets`, whatever it
    /// answered: a fault may create and then fail).
    pub async fn ticket_posts(&self) -> anyhow::Result<usize> {
        Ok(self
            .request_log("helpdesk")
            .await?
            .iter()
            .filter(|e| e["method"] == "POST" && e["path"] == "/api/tickets")
            .count())
    }

    /// Asserts that work order `order` has exactly one ticket, made by the only create
    /// the helpdesk saw, and that the record's history says an in-doubt create was
    /// resolved `how` (e.g. `by search`).
    pub async fn assert_created_once_resolved(
        &self,
        order: &str,
        record_id: &str,
        how: &str,
    ) -> anyhow::Result<()> {
        // The write-back comes before the commit: wait for the committed story.
        self.settle("the in-doubt create resolved", || async {
            Ok(self
                .history(record_id)
                .await?
                .iter()
                .any(|h| h.starts_with("in_doubt_resolved")))
        })
        .await?;
        anyhow::ensure!(
            self.tickets_for(order).await?.len() == 1,
            "not exactly one ticket for {order}"
        );
        anyhow::ensure!(self.ticket_posts().await? == 1, "the create was sent again");
        let history = self.history(record_id).await?;
        anyhow::ensure!(
            history
                .iter()
                .any(|h| h.starts_with("in_doubt_resolved") && h.contains(how)),
            "no in-doubt create resolved {how}: {history:#?}"
        );
        Ok(())
    }

    /// A worker's step, built as the workers are but not consuming: tests drive it
    /// with commands, with no broker in between.
    pub fn processor(&self) -> anyhow::Result<std::sync::Arc<worker::step::Processor>> {
        self.processor_with(&self.rules)
    }

    /// [`Env::processor`] under other rules (a limit or a budget changed), against the
    /// same systems, database and queues.
    pub fn processor_with(
        &self,
        rules: &SyncRules,
    ) -> anyhow::Result<std::sync::Arc<worker::step::Processor>> {
        let secrets = secrets(&self.sandbox_config);
        let connectors = Connectors::build(rules, lookup(&secrets))?;
        let worker =
            worker::Worker::with_connectors(self.settings.clone(), rules.clone(), connectors)?;
        Ok(worker.processor())
    }

    /// Starts one more worker, with its admin API on port 0.
    pub async fn start_worker(&mut self) -> anyhow::Result<()> {
        let secrets = secrets(&self.sandbox_config);
        let connectors = Connectors::build(&self.rules, lookup(&secrets))?;
        let worker =
            worker::Worker::with_connectors(self.settings.clone(), self.rules.clone(), connectors)?;
        let broker = worker.broker();
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        self.admin_urls
            .push(format!("http://{}", admin.local_addr()?));
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(Some(admin), stop.clone()));
        tokio::time::timeout(Duration::from_secs(10), broker.wait_connected())
            .await
            .context("the worker did not connect to RabbitMQ")?;
        self.workers.push((stop, task));
        Ok(())
    }

    /// Stops every worker gracefully (in-flight events finish).
    pub async fn stop_workers(&mut self) -> anyhow::Result<()> {
        for (stop, task) in self.workers.drain(..) {
            stop.cancel();
            task.await??;
        }
        Ok(())
    }

    /// Kills the oldest worker as SIGKILL would: its work in flight is abandoned where
    /// it stands and its connection closes, so the broker redelivers what it held.
    pub async fn kill_worker(&mut self) {
        let (stop, task) = self.workers.remove(0);
        task.abort();
        let _ = task.await;
        stop.cancel();
    }

    /// The URL kintone webhooks go to.
    pub fn kintone_webhook_url(&self) -> String {
        format!(
            "{}/webhooks/kintone?token={KINTONE_WEBHOOK_TOKEN}",
            self.ingest_url
        )
    }

    async fn setup_sandbox(&self) -> anyhow::Result<()> {
        self.admin_post(
            "/_admin/kintone/apps",
            work_orders_app(Some(&self.kintone_webhook_url())),
        )
        .await?;
        Ok(())
    }

    /// The sandbox's admin API.
    pub fn sandbox_admin(&self) -> SandboxAdmin {
        SandboxAdmin::new(&self.http, self.sandbox.base_url.clone())
    }

    /// A confirm-mode publisher to the environment's queues, as the CLI commands that
    /// queue work (resync, rehydrate, import) open one.
    pub async fn publisher(&self) -> anyhow::Result<(queue::Publisher, queue::Names)> {
        let conn = queue::connect(&self.settings.amqp_url, "test-cli").await?;
        let publisher = queue::Publisher::open(&conn, Duration::from_secs(5)).await?;
        // The connection lives as long as the test process.
        std::mem::forget(conn);
        Ok((publisher, queue::Names::new(&self.settings.queue_prefix)))
    }

    /// The first worker's `/metrics` text.
    pub async fn worker_metrics(&self) -> anyhow::Result<String> {
        let admin = self.admin_urls.first().context("no worker was started")?;
        let resp = self.http.get(format!("{admin}/metrics")).send().await?;
        Ok(resp.error_for_status()?.text().await?)
    }

    /// What became of the scheduled runs' turns of one kind (`resync`, `reconcile`,
    /// `schema_check`) across every worker started: `ran`, `taken`, `busy`, `held`,
    /// `failed`, from each worker's `recordsync_worker_scheduled_runs_total`. Waiting
    /// until every worker has had its turn replaces waiting a while and hoping.
    pub async fn scheduled_turns(
        &self,
        kind: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let mut turns = std::collections::BTreeMap::new();
        let prefix = format!("recordsync_worker_scheduled_runs_total{{kind=\"{kind}\",result=\"");
        for admin in &self.admin_urls {
            let resp = self.http.get(format!("{admin}/metrics")).send().await?;
            for line in resp.error_for_status()?.text().await?.lines() {
                let Some(rest) = line.strip_prefix(&prefix) else {
                    continue;
                };
                let (result, count) = rest.split_once("\"} ").context("a sample line")?;
                *turns.entry(result.to_owned()).or_default() += count.trim().parse::<u64>()?;
            }
        }
        Ok(turns)
    }

    /// POSTs to a sandbox admin endpoint and returns the JSON answer.
    pub async fn admin_post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.sandbox_admin().post(path, &body).await
    }

    /// Waits until the sandbox fault `id` has caught a request (it stays listed, with
    /// its hits, while it has uses left).
    pub async fn fault_hit(&self, what: &str, id: &str, within: Duration) -> anyhow::Result<()> {
        wait_for(what, within, || async {
            let faults = self.admin_get("/_admin/faults").await?;
            Ok(faults["faults"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["id"] == id && f["hits"].as_u64() >= Some(1)))
        })
        .await
    }

    /// GETs a sandbox admin endpoint.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<Value> {
        self.sandbox_admin().get(path).await
    }

    /// A user creates a work order in kintone (a webhook follows). Returns its id.
    pub async fn kintone_create(&self, fields: Value) -> anyhow::Result<String> {
        self.kintone_add(fields, true).await
    }

    /// A work order created with no webhook (as a bulk import or a dropped webhook
    /// leaves it).
    pub async fn kintone_create_silently(&self, fields: Value) -> anyhow::Result<String> {
        self.kintone_add(fields, false).await
    }

    async fn kintone_add(&self, fields: Value, webhook: bool) -> anyhow::Result<String> {
        let v = self
            .admin_post(
                &format!("/_admin/kintone/apps/{APP}/records"),
                json!({"record": kintone_record(&fields), "webhook": webhook}),
            )
            .await?;
        Ok(v["id"].as_str().context("no id")?.to_owned())
    }

    /// A user edits a work order in kintone (a webhook follows).
    pub async fn kintone_edit(&self, id: &str, fields: Value) -> anyhow::Result<()> {
        self.kintone_change(id, fields, true).await
    }

    /// A work order edited with no webhook (a bulk update, or a webhook kintone dropped).
    pub async fn kintone_edit_silently(&self, id: &str, fields: Value) -> anyhow::Result<()> {
        self.kintone_change(id, fields, false).await
    }

    async fn kintone_change(&self, id: &str, fields: Value, webhook: bool) -> anyhow::Result<()> {
        self.sandbox_admin()
            .put(
                &format!("/_admin/kintone/apps/{APP}/records/{id}"),
                &json!({"record": kintone_record(&fields), "webhook": webhook}),
            )
            .await?;
        Ok(())
    }

    /// Whether the ticket id has been written back into a kintone work order, and the
    /// step that did it has committed (the write-back comes before the commit, so a
    /// test that reads the history next would otherwise race it).
    pub async fn written_back(&self, id: &str) -> anyhow::Result<bool> {
        let r = self.kintone_record(id).await?;
        let Some(ticket) = r["helpdesk_ticket_id"]["value"]
            .as_str()
            .filter(|v| !v.is_empty())
        else {
            return Ok(false);
        };
        let linked: Option<Option<String>> = sqlx::query_scalar(
            "SELECT target_id FROM sync_records WHERE rule = $1 AND source_record_id = $2",
        )
        .bind(RULE)
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(linked.flatten().as_deref() == Some(ticket))
    }

    /// Whether every one of these work orders has its ticket id written back.
    pub async fn all_written_back(&self, ids: &[String]) -> anyhow::Result<bool> {
        for id in ids {
            if !self.written_back(id).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A kintone record as the API returns it.
    pub async fn kintone_record(&self, id: &str) -> anyhow::Result<Value> {
        let v = self
            .admin_get(&format!("/_admin/kintone/apps/{APP}/records/{id}"))
            .await
            .with_context(|| format!("no kintone record {id}"))?;
        let record = v["record"].clone();
        anyhow::ensure!(record["$id"]["value"] == id, "not record {id}: {v}");
        Ok(record)
    }

    /// A work order and its ticket that were synced before: the kintone record (with
    /// the ticket id written back), the ticket, and the link in the store. Nothing is
    /// sent to ingest. Returns the kintone record id and the ticket id.
    pub async fn seed_linked(
        &self,
        work_order_no: &str,
        subject: &str,
    ) -> anyhow::Result<(String, String)> {
        let rule = self.rules.rule(RULE).context("the example rule")?;
        let id = self
            .kintone_create_silently(json!({"work_order_no": work_order_no, "件名": subject}))
            .await?;
        // The ticket holds what a sync wrote: the record's mapped values (defaults
        // included) and the lookup value; the record holds the ticket's id.
        let record = connectors::kintone::from_kintone(&self.kintone_record(&id).await?)
            .context("a kintone record")?;
        let values = domain::mapping::map_fields(&rule.fields, &record.fields)
            .map_err(|p| anyhow::anyhow!("{p:?}"))?;
        let mut seeded = values.clone();
        seeded.insert(
            rule.identity.target_field.clone(),
            Value::String(work_order_no.to_owned()),
        );
        let ticket = self.helpdesk_seed(Value::Object(seeded)).await?;
        self.kintone_edit_silently(&id, json!({"helpdesk_ticket_id": ticket}))
            .await?;
        let record = connectors::kintone::from_kintone(&self.kintone_record(&id).await?)
            .context("a kintone record")?;
        // The state a sync by this version would have left: both systems hold the
        // record's mapped values, at the record's revision.
        let (mut state, _) = domain::authority::initial(
            &rule.policies(),
            &rule.source.system,
            &rule.target.system,
            &values,
            Some(&values),
            record.revision,
        );
        domain::authority::wrote(&mut state, &rule.target.system, &values, None);
        let mut tx = self.store.begin_record(RULE, &id).await?;
        tx.save_state(
            Some(&ticket),
            Some(json!({"step": "seeded"})),
            record.revision,
            &values,
        );
        tx.save_authority_state(&serde_json::to_value(&state)?);
        tx.commit().await?;
        Ok((id, ticket))
    }

    /// The newest sequence number in the sandbox's request logs (both systems).
    async fn last_request(&self) -> anyhow::Result<u64> {
        let mut last = 0;
        for system in ["kintone", "helpdesk"] {
            for e in self.request_log(system).await? {
                last = last.max(e["seq"].as_u64().unwrap_or(0));
            }
        }
        Ok(last)
    }

    /// Waits until nothing is left to happen under `rule`, by conditions rather than a
    /// quiet spell: every webhook delivered (so every echo is queued), the work and
    /// delay queues empty, no delivery held by a consumer and not yet acknowledged
    /// (one waiting for its record's lease included), no lease on a record of the rule
    /// held, every delivery a worker took has its outcome in the ledger, and no request
    /// reached either system while that was checked (a step still running would have
    /// made one). Fails after 60 s, saying what was still going on.
    pub async fn quiet(&self, rule: &str) -> anyhow::Result<()> {
        let conn = queue::connect(&amqp_url(), "it-quiet").await?;
        let p = queue::Publisher::open(&conn, Duration::from_secs(2)).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            let before = self.last_request().await?;
            self.flush_webhooks().await?;
            let busy = self.busy(&p, rule).await?;
            if busy.is_empty() {
                // Asked only once everything else is still, as `rabbitmqctl` takes
                // about a second; then everything else is asked again, so that a
                // delivery given back (a consumer gone) between the two is not missed.
                let unacked = unacked(&self.settings.queue_prefix).await?;
                let busy = self.busy(&p, rule).await?;
                if unacked == 0 && busy.is_empty() && self.last_request().await? == before {
                    let _ = conn.close(200, "quiet".into()).await;
                    return Ok(());
                }
                last = format!("{unacked} unacknowledged deliveries {busy}");
            } else {
                last = busy;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = conn.close(200, "never quiet".into()).await;
        anyhow::bail!("never quiet within 60 s: {last}")
    }

    /// What is still going on under `rule`, cheaply: ready messages in the work and
    /// delay queues (a retry waiting out its delay is not done), leases held on the
    /// rule's records, deliveries without an outcome in the ledger. Empty when none.
    async fn busy(&self, p: &queue::Publisher, rule: &str) -> anyhow::Result<String> {
        let names = queue::Names::new(&self.settings.queue_prefix);
        let mut queues = vec![names.work_queue()];
        queues.extend((0..self.settings.retry_delays_ms.len()).map(|t| names.retry_queue(t)));
        let mut ready = 0;
        for q in &queues {
            ready += p.queue_depth(q).await?;
        }
        let leases: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM record_leases WHERE rule = $1 AND expires_at > now()",
        )
        .bind(rule)
        .fetch_one(self.store.pool())
        .await?;
        let open: i64 = self
            .store
            .ledger(Some(rule), Duration::ZERO)
            .await?
            .iter()
            .map(|l| l.in_flight + l.unaccounted)
            .sum();
        Ok(if ready == 0 && leases == 0 && open == 0 {
            String::new()
        } else {
            format!(
                "{ready} ready messages, {leases} leases held, {open} deliveries without an outcome"
            )
        })
    }

    /// Makes the helpdesk send its (signed) webhooks to ingest.
    pub async fn enable_helpdesk_webhooks(&self) -> anyhow::Result<()> {
        let url = format!("{}/webhooks/helpdesk", self.ingest_url);
        self.admin_post("/_admin/helpdesk/config", json!({"webhook_url": url}))
            .await?;
        Ok(())
    }

    /// An agent edits a ticket in the helpdesk (its API; a signed webhook follows when
    /// enabled).
    pub async fn helpdesk_edit(&self, ticket: &str, fields: Value) -> anyhow::Result<()> {
        let resp = self
            .http
            .patch(format!("{}/api/tickets/{ticket}", self.sandbox.base_url))
            .bearer_auth(&self.sandbox_config.helpdesk_token)
            .json(&fields)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("helpdesk edit answered {}", resp.status());
        }
        Ok(())
    }

    /// Seeds a helpdesk ticket directly (no webhook). Returns its id.
    pub async fn helpdesk_seed(&self, ticket: Value) -> anyhow::Result<String> {
        let v = self.admin_post("/_admin/helpdesk/tickets", ticket).await?;
        Ok(v["ticket"]["id"].to_string())
    }

    /// Every helpdesk ticket.
    pub async fn tickets(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.admin_get("/_admin/helpdesk/tickets").await?;
        Ok(v["tickets"].as_array().cloned().unwrap_or_default())
    }

    /// The tickets with this external id.
    pub async fn tickets_for(&self, external_id: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .tickets()
            .await?
            .into_iter()
            .filter(|t| t["external_id"] == external_id)
            .collect())
    }

    /// The sandbox's request log for a system.
    pub async fn request_log(&self, system: &str) -> anyhow::Result<Vec<Value>> {
        let v = self
            .admin_get(&format!("/_admin/log?system={system}"))
            .await?;
        Ok(v["entries"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the sandbox has delivered every webhook.
    pub async fn flush_webhooks(&self) -> anyhow::Result<()> {
        self.admin_post("/_admin/webhooks/flush", json!({})).await?;
        Ok(())
    }

    /// Waits until the source record `record_id` has an open conflict, and returns it.
    pub async fn open_conflict(&self, record_id: &str) -> anyhow::Result<store::ConflictRow> {
        let find = || async {
            Ok::<_, anyhow::Error>(
                self.store
                    .conflicts("open")
                    .await?
                    .into_iter()
                    .find(|c| c.source_record_id == record_id),
            )
        };
        self.settle("the conflict", || async { Ok(find().await?.is_some()) })
            .await?;
        find().await?.context("the conflict")
    }

    /// Waits until every webhook was delivered and `done` holds.
    pub async fn settle<F, Fut>(&self, what: &str, done: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        self.flush_webhooks().await?;
        wait_for(what, Duration::from_secs(30), done).await
    }

    /// A record's history summaries.
    pub async fn history(&self, record_id: &str) -> anyhow::Result<Vec<String>> {
        self.history_of(RULE, record_id).await
    }

    /// A record's history under `rule`, one `kind: summary` line per entry.
    pub async fn history_of(&self, rule: &str, record_id: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .store
            .history(rule, record_id)
            .await?
            .into_iter()
            .map(|h| format!("{}: {}", h.kind, h.summary))
            .collect())
    }

    /// Sends a webhook to ingest as a system would.
    pub async fn post_webhook(
        &self,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}{path_and_query}", self.ingest_url))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.body(body).send().await?;
        let status = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// Stops everything and drops the database and the queues.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.stop_workers().await?;
        self.ingest_stop.cancel();
        let _ = self.ingest_task.await;
        let topology = queue::Topology::new(
            &self.settings.queue_prefix,
            self.settings.retry_delays_ms.clone(),
        );
        let conn = queue::connect(&amqp_url(), "recordsync-tests-cleanup").await?;
        let p = queue::Publisher::open(&conn, Duration::from_secs(2)).await?;
        topology.delete(p.channel()).await?;
        self.store.pool().close().await;
        self.db.drop_db().await?;
        Ok(())
    }
}

/// Fields as a kintone record body: `{code: {"value": v}}`.
pub fn kintone_record(fields: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(obj) = fields.as_object() {
        for (k, v) in obj {
            out.insert(k.clone(), json!({ "value": v }));
        }
    }
    Value::Object(out)
}

/// Deliveries RabbitMQ handed to the consumers of the queues under `prefix` (the work
/// queue, the dead-letter drainer's queue) that were not acknowledged yet, as the
/// consuming channels themselves count them: `rabbitmqctl list_consumers` names the
/// channels, `rabbitmqctl list_channels` gives each one's unacknowledged count. The
/// queues' own count (`list_queues messages_unacknowledged`) will not do: for a quorum
/// queue RabbitMQ refreshes it every few seconds only (RabbitMQ 3.10 read 0 for about
/// 4 s while a delivery was held, and 1 for 3 s after its ack), and AMQP's passive
/// declare counts ready messages only. Needs `rabbitmqctl` for the local broker, as
/// the intake tests do.
pub async fn unacked(prefix: &str) -> anyhow::Result<u64> {
    let vhost = amqp_vhost(&amqp_url());
    let consumers = rabbitmqctl(&vhost, &["list_consumers", "queue_name", "channel_pid"]).await?;
    let ours = format!("{prefix}.");
    let channels: std::collections::BTreeSet<&str> = consumers
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(queue, _)| queue.starts_with(&ours))
        .map(|(_, channel)| channel.trim())
        .collect();
    if channels.is_empty() {
        return Ok(0);
    }
    let listed = rabbitmqctl(&vhost, &["list_channels", "pid", "messages_unacknowledged"]).await?;
    let mut unacked = 0;
    for line in listed.lines() {
        let Some((pid, count)) = line.split_once('\t') else {
            continue;
        };
        if channels.contains(pid.trim()) {
            unacked += count
                .trim()
                .parse::<u64>()
                .with_context(|| format!("rabbitmqctl list_channels: {line:?}"))?;
        }
    }
    Ok(unacked)
}

/// The virtual host of an AMQP URL (`/%2f` and no path are `/`).
fn amqp_vhost(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return "/".into();
    }
    path.replace("%2f", "/").replace("%2F", "/")
}

/// Runs `rabbitmqctl` on the local broker for `vhost`, table rows only.
async fn rabbitmqctl(vhost: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all: Vec<String> = vec![
        args[0].to_owned(),
        "-p".into(),
        vhost.to_owned(),
        "--quiet".into(),
        "--no-table-headers".into(),
    ];
    all.extend(args[1..].iter().map(|a| (*a).to_owned()));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("rabbitmqctl")
            .args(&all)
            .output()
    })
    .await?
    .context("run rabbitmqctl (the harness asks the local broker what its consumers hold)")?;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `done` every 50 ms until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, done: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    loop {
        if done().await? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
