//! What a bench run creates and must remove: databases, queue prefixes (their queues
//! and exchange) and rules files. Everything is registered with the [`Janitor`] when it
//! is created, so that a failed or interrupted run still cleans up.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use domain::rules::SyncRules;
use tests::TestDb;

/// The retry tiers every bench topology is declared (and deleted) with.
pub const RETRY_DELAYS_MS: [u64; 3] = [1_000, 5_000, 30_000];

/// The topology of a bench prefix.
pub fn topology(prefix: &str) -> queue::Topology {
    queue::Topology::new(prefix, RETRY_DELAYS_MS.to_vec())
}

#[derive(Default)]
struct Pending {
    databases: Vec<TestDb>,
    prefixes: Vec<String>,
    files: Vec<PathBuf>,
}

/// Remembers what the run created and removes it.
#[derive(Default)]
pub struct Janitor {
    pending: Mutex<Pending>,
}

impl Janitor {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a fresh, migrated database; returns its URL.
    pub async fn database(&self) -> anyhow::Result<String> {
        let db = TestDb::create()
            .await
            .context("Failed to create the bench database")?;
        let url = db.url.clone();
        self.pending().databases.push(db);
        Ok(url)
    }

    /// A fresh queue prefix; its topology is deleted at clean-up.
    pub fn prefix(&self) -> String {
        let prefix = format!("rs-bench-{}", uuid::Uuid::new_v4().simple());
        self.pending().prefixes.push(prefix.clone());
        prefix
    }

    /// Deletes one prefix's queues and exchange now, and forgets it.
    pub async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<()> {
        self.pending().prefixes.retain(|p| p != prefix);
        delete_topologies(&[prefix.to_owned()]).await
    }

    /// Writes the rules to a temporary file; returns its path.
    pub fn rules_file(&self, rules: &SyncRules) -> anyhow::Result<PathBuf> {
        let path = std::env::temp_dir().join(format!(
            "recordsync-bench-rules-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        self.pending().files.push(path.clone());
        std::fs::write(&path, serde_json::to_vec_pretty(rules)?)
            .with_context(|| format!("Failed to write {}", path.display()))?;
        Ok(path)
    }

    /// Removes everything registered so far: deletes each prefix's queues and exchange,
    /// drops each database, removes each file. Returns the first failure, after trying
    /// everything.
    pub async fn clean(&self) -> anyhow::Result<()> {
        let Pending {
            databases,
            prefixes,
            files,
        } = std::mem::take(&mut *self.pending());
        let mut first_error: Option<anyhow::Error> = None;
        let mut note = |r: anyhow::Result<()>| {
            if let Err(e) = r {
                eprintln!("bench: clean-up: {e:#}");
                first_error.get_or_insert(e);
            }
        };
        if !prefixes.is_empty() {
            note(delete_topologies(&prefixes).await);
        }
        for db in databases {
            note(drop_patiently(&db).await);
        }
        for file in files {
            note(remove_file(&file));
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Drops a database, retrying for up to a minute while the server has no connection
/// slot left (other test runs on a shared server come and go).
async fn drop_patiently(db: &TestDb) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match db.drop_db().await {
            Ok(()) => {
                eprintln!("bench: dropped database {}", db.name);
                return Ok(());
            }
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!(
                    "bench: dropping database {} failed ({e}); retrying",
                    db.name
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "Failed to drop database {}; drop it with: psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE {} WITH (FORCE)'",
                    db.name, db.name
                )));
            }
        }
    }
}

fn remove_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("Failed to remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Deletes each prefix's queues and exchange. Each prefix is first declared (which is
/// idempotent), so that a prefix no process got to declare deletes cleanly too.
async fn delete_topologies(prefixes: &[String]) -> anyhow::Result<()> {
    let conn = queue::connect(&tests::amqp_url(), "recordsync-bench-cleanup")
        .await
        .context("Failed to reach RabbitMQ to delete the bench queues")?;
    let mut first_error = None;
    for prefix in prefixes {
        // A failed AMQP operation closes its channel, so each prefix gets its own.
        let deleted = async {
            let publisher = queue::Publisher::open(&conn, Duration::from_secs(5)).await?;
            let topology = topology(prefix);
            topology.declare(publisher.channel()).await?;
            topology.delete(publisher.channel()).await?;
            let _ = publisher.channel().close(200, "done".into()).await;
            anyhow::Ok(())
        }
        .await;
        if deleted.is_ok() {
            eprintln!("bench: deleted the queues and exchange of {prefix}");
        }
        if let Err(e) = deleted {
            first_error.get_or_insert(e.context(format!(
                "Failed to delete the queues and exchange of prefix {prefix}"
            )));
        }
    }
    let _ = conn.close(200, "done".into()).await;
    first_error.map_or(Ok(()), Err)
}

/// The environment of an ingest or worker child: settings and secrets.
pub struct ChildEnv {
    /// The queue prefix.
    pub prefix: String,
    /// The rules file.
    pub rules: PathBuf,
    /// The worker's database, if any.
    pub database_url: Option<String>,
    /// Unacknowledged messages per worker.
    pub prefetch: u16,
}

impl ChildEnv {
    /// The variables, as `RECORDSYNC_*` settings and the secrets the rules name.
    pub fn vars(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = vec![
            ("RECORDSYNC_AMQP_URL".into(), tests::amqp_url()),
            ("RECORDSYNC_QUEUE_PREFIX".into(), self.prefix.clone()),
            (
                "RECORDSYNC_RULES".into(),
                self.rules.to_string_lossy().into_owned(),
            ),
            (
                "RECORDSYNC_RETRY_DELAYS_MS".into(),
                RETRY_DELAYS_MS.map(|d| d.to_string()).join(","),
            ),
            // The pool keeps its default (a handful): nothing holds a connection while
            // another system is called, whatever the prefetch.
            ("RECORDSYNC_PREFETCH".into(), self.prefetch.to_string()),
        ];
        if let Some(url) = &self.database_url {
            vars.push(("RECORDSYNC_DATABASE_URL".into(), url.clone()));
        }
        vars.extend(tests::secrets(&sandbox::SandboxConfig::default()));
        vars
    }
}
