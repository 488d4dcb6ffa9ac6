//! The one [`Context`] a command runs in: it opens what the command asks for, once and
//! only when asked, so a command that prints the schema reads no settings and a command
//! that asks for the store twice connects once.
//!
//! It holds the settings from the environment, the rules, the command line's own store
//! (a small pool, for the operator's commands), a [`worker::Worker`] built from the
//! settings and rules (for the commands that read the systems through its limits), and
//! the broker connection with a publisher. Each is opened in the order the command
//! asks, so a command fails on the same missing setting, rules file or server, with the
//! same message, as it always has.

use anyhow::Context as _;
use config::Settings;
use domain::rules::SyncRules;
use std::sync::OnceLock;
use store::Store;
use tokio::sync::OnceCell;
use worker::Worker;

/// What a command needs, opened lazily, each at most once.
#[derive(Default)]
pub struct Context {
    settings: OnceLock<Settings>,
    rules: OnceLock<SyncRules>,
    store: OnceCell<Store>,
    store_migrated: OnceCell<()>,
    worker: OnceLock<Worker>,
    worker_migrated: OnceCell<()>,
    broker: OnceCell<Broker>,
}

/// The command line's broker connection (kept while it publishes), a confirm-mode
/// publisher and the queue names.
pub struct Broker {
    _conn: queue::Connection,
    pub publisher: queue::Publisher,
    pub names: queue::Names,
}

impl Context {
    /// The settings, from the environment.
    pub fn settings(&self) -> anyhow::Result<&Settings> {
        get_or_try_init(&self.settings, || Ok(Settings::from_env()?))
    }

    /// The rules: the file the settings name, unless [`Context::use_rules`] gave others.
    pub fn rules(&self) -> anyhow::Result<&SyncRules> {
        get_or_try_init(&self.rules, || {
            Ok(config::load_rules(&self.settings()?.rules_path)?)
        })
    }

    /// Use these rules instead of reading the file the settings name: `check-config`'s
    /// file, or the rules `run` checked for their secrets. Call it before anything asks
    /// for the rules.
    pub fn use_rules(&self, rules: SyncRules) {
        if self.rules.set(rules).is_err() {
            unreachable!("the rules were read before use_rules");
        }
    }

    /// The command line's own store: connected, with a pool of two, not migrated (the
    /// operator's commands).
    pub async fn store(&self) -> anyhow::Result<&Store> {
        self.store
            .get_or_try_init(|| async {
                Store::connect(&self.settings()?.database_url, 2)
                    .await
                    .context("Failed to connect to PostgreSQL")
            })
            .await
    }

    /// [`Context::store`], with the database migrated (the commands that move what is
    /// stored, and `migrate`).
    pub async fn migrated_store(&self) -> anyhow::Result<&Store> {
        let store = self.store().await?;
        self.store_migrated
            .get_or_try_init(|| async { store.migrate().await.context("Failed to migrate") })
            .await?;
        Ok(store)
    }

    /// A worker built from the settings and the rules, not running: its processor reads
    /// the systems through the fleet-wide limits. Its store connects when first used.
    pub fn worker(&self) -> anyhow::Result<&Worker> {
        get_or_try_init(&self.worker, || {
            Worker::new(self.settings()?.clone(), self.rules()?.clone())
        })
    }

    /// [`Context::worker`], with its database migrated (the commands that write runs,
    /// cursors or commands).
    pub async fn migrated_worker(&self) -> anyhow::Result<&Worker> {
        let worker = self.worker()?;
        self.worker_migrated
            .get_or_try_init(|| async {
                worker
                    .store()
                    .migrate()
                    .await
                    .context("Failed to reach PostgreSQL")
            })
            .await?;
        Ok(worker)
    }

    /// [`Context::worker`], given up to be run.
    pub fn into_worker(mut self) -> anyhow::Result<Worker> {
        self.worker()?;
        self.worker.take().context("the worker was just built")
    }

    /// The broker: connected, with a confirm-mode publisher and the queue names.
    pub async fn broker(&self) -> anyhow::Result<&Broker> {
        self.broker
            .get_or_try_init(|| async {
                let settings = self.settings()?;
                let (conn, _) = queue::connect_any(&settings.amqp_url, 0, "recordsync-cli")
                    .await
                    .context("Failed to connect to RabbitMQ")?;
                let publisher = queue::Publisher::open(
                    &conn,
                    std::time::Duration::from_millis(settings.publish_timeout_ms),
                )
                .await?;
                Ok(Broker {
                    _conn: conn,
                    publisher,
                    names: queue::Names::new(&settings.queue_prefix),
                })
            })
            .await
    }
}

/// The cell's value, made by `init` if the cell is empty (`OnceLock::get_or_try_init`
/// is not stable).
fn get_or_try_init<T>(
    cell: &OnceLock<T>,
    init: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<&T> {
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    let value = init()?;
    Ok(cell.get_or_init(|| value))
}
