//! The PostgreSQL store: the only crate that imports sqlx. Its rows are its own types;
//! it converts to and from the domain's at the boundary.
//!
//! Every decision about one source record runs under a [`RecordTx`]: a lease on
//! (rule, record) with a fencing token, so that the whole fleet processes one record
//! at a time, whatever the number of workers or their prefetch, without holding a
//! connection while other systems are called (see `record`).

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::history::Entry;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, SqlSafeStr, Transaction};

/// A store failure. [`StoreError::kind`] tells the worker what it means: PostgreSQL
/// unavailable (give the message back, stop taking more), the pool busy (give it back,
/// keep consuming), the record's lease lost (a later holder decides), or a
/// deterministic data error (no retry can help: a data-quality conflict).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed.
    #[error("PostgreSQL {op} failed: {source}")]
    Query {
        /// What was being done.
        op: &'static str,
        /// The sqlx error.
        #[source]
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error("PostgreSQL migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The record's lease expired and another worker took it: this holder's work is
    /// not committed.
    #[error(
        "the lease on {rule}/{record} was lost (it expired and another worker took it); nothing of this attempt was committed"
    )]
    LeaseLost {
        /// The rule.
        rule: String,
        /// The record.
        record: String,
    },
}

/// What a store failure means for the work that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// PostgreSQL cannot be reached or is shutting down.
    Unavailable,
    /// Every pooled connection is in use: backpressure, not an outage.
    Busy,
    /// The lease was lost: a later holder decides the record.
    LeaseLost,
    /// PostgreSQL refused the values (a data exception or a constraint): the same
    /// values will be refused again.
    Data,
    /// Anything else (a bug or a schema mismatch).
    Other,
}

impl StoreError {
    /// What the failure means.
    pub fn kind(&self) -> StoreErrorKind {
        let source = match self {
            StoreError::LeaseLost { .. } => return StoreErrorKind::LeaseLost,
            StoreError::Migrate(_) => return StoreErrorKind::Unavailable,
            StoreError::Query { source, .. } => source,
        };
        match source {
            sqlx::Error::PoolTimedOut => StoreErrorKind::Busy,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                match code.get(..2).unwrap_or_default() {
                    // Data exception, integrity constraint violation.
                    "22" | "23" => StoreErrorKind::Data,
                    // Connection exception, insufficient resources, operator
                    // intervention (shutdown), system error.
                    "08" | "53" | "57" | "58" => StoreErrorKind::Unavailable,
                    // Serialization failure or deadlock: try again.
                    "40" => StoreErrorKind::Busy,
                    _ => StoreErrorKind::Other,
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => StoreErrorKind::Unavailable,
            _ => StoreErrorKind::Other,
        }
    }

    /// The constraint PostgreSQL named, when it refused a write for one.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            StoreError::Query {
                source: sqlx::Error::Database(db),
                ..
            } => db.constraint(),
            _ => None,
        }
    }

    /// PostgreSQL's own words for a data error, when it is one.
    pub fn reason(&self) -> String {
        match self {
            StoreError::Query {
                source: sqlx::Error::Database(db),
                ..
            } => db.message().to_owned(),
            other => other.to_string(),
        }
    }
}

/// The unique index that allows one source record per target record and rule.
pub const ONE_SOURCE_PER_TARGET: &str = "sync_records_one_source_per_target";

fn q(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

/// The migrations, embedded in the binary, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "dead letters",
        include_str!("../migrations/0002_dead_letters.sql"),
    ),
    (3, "limiter", include_str!("../migrations/0003_limiter.sql")),
    (4, "parking", include_str!("../migrations/0004_parking.sql")),
    (
        5,
        "authority",
        include_str!("../migrations/0005_authority.sql"),
    ),
    (6, "leases", include_str!("../migrations/0006_leases.sql")),
    (
        7,
        "one source per target",
        include_str!("../migrations/0007_one_source_per_target.sql"),
    ),
    (8, "resync", include_str!("../migrations/0008_resync.sql")),
    (9, "ledger", include_str!("../migrations/0009_ledger.sql")),
    (
        10,
        "reconcile",
        include_str!("../migrations/0010_reconcile.sql"),
    ),
    (11, "resent", include_str!("../migrations/0011_resent.sql")),
    (
        12,
        "schema checks",
        include_str!("../migrations/0012_schema_checks.sql"),
    ),
    (
        13,
        "imports",
        include_str!("../migrations/0013_imports.sql"),
    ),
    (
        14,
        "api usage",
        include_str!("../migrations/0014_api_usage.sql"),
    ),
    (
        15,
        "rule renames",
        include_str!("../migrations/0015_rule_renames.sql"),
    ),
    (
        16,
        "parked commands",
        include_str!("../migrations/0016_parked_commands.sql"),
    ),
    (
        17,
        "ledger rollup",
        include_str!("../migrations/0017_ledger_rollup.sql"),
    ),
    (
        18,
        "unlogged leases",
        include_str!("../migrations/0018_unlogged_leases.sql"),
    ),
];

fn migrator() -> Migrator {
    migrator_to(i64::MAX)
}

fn migrator_to(last: i64) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .filter(|(version, _, _)| *version <= last)
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The store.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    leases: LeaseSettings,
}

/// How records are leased.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Who holds the leases this store takes (for operators reading the table).
    pub owner: String,
    /// How long a lease lasts unless renewed; a holder renews it every third of this.
    pub ttl: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            owner: format!(
                "{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            ttl: Duration::from_secs(30),
        }
    }
}

/// Where an event being processed came from: put on every history entry.
#[derive(Debug, Clone)]
pub struct EventRef {
    /// The event id.
    pub event_id: String,
    /// The correlation id.
    pub correlation_id: String,
}

/// A history row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    /// Its position.
    pub id: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The rule.
    pub rule: String,
    /// The source record.
    pub source_record_id: String,
    /// The event it belongs to.
    pub event_id: Option<String>,
    /// The kind.
    pub kind: String,
    /// The plain-language summary.
    pub summary: String,
    /// The facts.
    pub detail: Value,
}

/// A conflict row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConflictRow {
    /// Its id.
    pub id: i64,
    /// The rule.
    pub rule: String,
    /// The source record.
    pub source_record_id: String,
    /// The kind: `several_matches`, `no_match`, `no_lookup_value`, `invalid`,
    /// `target_rejected`.
    pub kind: String,
    /// The plain-language summary.
    pub summary: String,
    /// The facts (candidates, problems).
    pub detail: Value,
    /// `open`, `resolved` or `dismissed`.
    pub status: String,
    /// How many times it was seen while open.
    pub occurrences: i32,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
}

/// A link row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkRow {
    /// The rule.
    pub rule: String,
    /// The source record.
    pub source_record_id: String,
    /// The target record.
    pub target_id: Option<String>,
    /// How it was matched.
    pub matched_by: Option<Value>,
    /// The last source revision synced.
    pub source_revision: Option<i64>,
    /// The values last written.
    pub sent: Value,
    /// The field-authority state.
    pub state: Option<Value>,
}

fn link_row(r: &sqlx::postgres::PgRow) -> Result<LinkRow, StoreError> {
    Ok(LinkRow {
        rule: r.try_get("rule").map_err(q("read"))?,
        source_record_id: r.try_get("source_record_id").map_err(q("read"))?,
        target_id: r.try_get("target_id").map_err(q("read"))?,
        matched_by: r.try_get("matched_by").map_err(q("read"))?,
        source_revision: r.try_get("source_revision").map_err(q("read"))?,
        sent: r.try_get("sent").map_err(q("read"))?,
        state: r.try_get("state").map_err(q("read"))?,
    })
}

/// How long a pooled connection may sit idle before it is checked with a round trip
/// when taken again.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(30);

/// The pool's settings. A connection taken from the pool is not pinged first (sqlx's
/// default, one more round trip per checkout on the hot path) unless it sat idle for
/// [`IDLE_BEFORE_PING`]: a connection that broke meanwhile fails its first statement
/// instead, which the worker treats as PostgreSQL being unavailable (the message is
/// given back, no attempt counted), and sqlx closes it when it is returned.
fn pool_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_PING {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl Store {
    /// Connects. `acquire_timeout` bounds how long a caller waits for a connection
    /// when PostgreSQL is down.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(q("parse the database URL"))?;
        let pool = pool_options(max_connections, Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(q("connect"))?;
        Ok(Store {
            pool,
            leases: LeaseSettings::default(),
        })
    }

    /// Connects without checking that PostgreSQL answers (workers start while it is
    /// down and wait). Nothing holds a connection across a call to another system, so
    /// a small pool serves any number of events in flight; a caller waits up to
    /// `acquire_timeout` for a free connection, and a pool still busy after that is
    /// backpressure ([`StoreErrorKind::Busy`]), not an outage.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(q("parse the database URL"))?;
        let pool =
            pool_options(max_connections, Duration::from_secs(10)).connect_lazy_with(options);
        Ok(Store {
            pool,
            leases: LeaseSettings::default(),
        })
    }

    /// The same store with other lease settings.
    pub fn with_leases(mut self, leases: LeaseSettings) -> Store {
        self.leases = leases;
        self
    }

    /// Applies the embedded migrations (idempotent, with a lock against concurrent
    /// workers).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Applies the migrations up to `last` only: an upgrade test starts from an older
    /// schema, puts old data in it, then migrates the rest.
    pub async fn migrate_to(&self, last: i64) -> Result<(), StoreError> {
        migrator_to(last).run(&self.pool).await?;
        Ok(())
    }

    /// Whether PostgreSQL answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(q("ping"))
    }

    /// Appends history entries outside a record transaction (retries, dead letters).
    pub async fn append(
        &self,
        rule: &str,
        record_id: &str,
        ev: &EventRef,
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        insert_history(&mut tx, rule, record_id, ev, entries).await?;
        tx.commit().await.map_err(q("commit"))
    }

    /// A record's history, oldest first.
    pub async fn history(
        &self,
        rule: &str,
        record_id: &str,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        // Under every name the rule had: a rename leaves the history where it was.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} SELECT id, at, rule, source_record_id, event_id, kind, summary, detail FROM history
             WHERE rule IN (SELECT n FROM names) AND source_record_id = $2 ORDER BY id",
            renames::NAMES
        )))
        .bind(rule)
        .bind(record_id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read history"))?;
        rows.iter().map(history_row).collect()
    }

    /// A rule's latest history entries, newest first.
    pub async fn rule_history(
        &self,
        rule: &str,
        limit: i64,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} SELECT id, at, rule, source_record_id, event_id, kind, summary, detail FROM history
             WHERE rule IN (SELECT n FROM names) ORDER BY id DESC LIMIT $2",
            renames::NAMES
        )))
        .bind(rule)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read a rule's history"))?;
        rows.iter().map(history_row).collect()
    }

    /// How many history entries of each kind exist, for one rule or for all.
    pub async fn history_counts(
        &self,
        rule: Option<&str>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} SELECT kind, count(*) FROM history
              WHERE $1::text IS NULL OR rule IN (SELECT n FROM names) GROUP BY kind ORDER BY kind",
            renames::NAMES
        )))
        .bind(rule)
        .fetch_all(&self.pool)
        .await
        .map_err(q("count history"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(q("read"))?,
                    r.try_get(1).map_err(q("read"))?,
                ))
            })
            .collect()
    }

    /// The source records of a rule synced at or after `since`.
    pub async fn synced_since(
        &self,
        rule: &str,
        since: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT source_record_id FROM sync_records WHERE rule = $1 AND updated_at >= $2",
        )
        .bind(rule)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read the records synced since"))?;
        Ok(ids.into_iter().collect())
    }

    /// The links, with how each was matched.
    pub async fn links(&self, rule: &str) -> Result<Vec<LinkRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT rule, source_record_id, target_id, matched_by, source_revision, sent, state FROM sync_records
             WHERE rule = $1 ORDER BY source_record_id",
        )
        .bind(rule)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read links"))?;
        rows.iter().map(link_row).collect()
    }

    /// One source record's link under a rule, if it has one.
    pub async fn link(&self, rule: &str, record_id: &str) -> Result<Option<LinkRow>, StoreError> {
        let row = sqlx::query(
            "SELECT rule, source_record_id, target_id, matched_by, source_revision, sent, state FROM sync_records
             WHERE rule = $1 AND source_record_id = $2",
        )
        .bind(rule)
        .bind(record_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("read a link"))?;
        row.as_ref().map(link_row).transpose()
    }

    /// The records an operator may mean by `id` under `rules`: a source record of
    /// that id (linked, or with a history only) or the source record linked to a
    /// target record of that id, as `(rule, source record, target record)`, at most
    /// `limit`.
    pub async fn find_records(
        &self,
        rules: &[String],
        id: &str,
        limit: i64,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.rule, s.source_record_id, s.target_id
               FROM unnest($1::text[]) AS r(rule)
               JOIN sync_records s ON s.rule = r.rule AND (s.source_record_id = $2 OR s.target_id = $2)
             UNION
             SELECT DISTINCT h.rule, h.source_record_id, NULL
               FROM unnest($1::text[]) AS r(rule)
               JOIN history h ON h.rule = r.rule AND h.source_record_id = $2
              WHERE NOT EXISTS (SELECT 1 FROM sync_records s
                                 WHERE s.rule = h.rule AND s.source_record_id = h.source_record_id)
             ORDER BY 1, 2 LIMIT $3",
        )
        .bind(rules)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("find records"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(q("read"))?,
                    r.try_get(1).map_err(q("read"))?,
                    r.try_get(2).map_err(q("read"))?,
                ))
            })
            .collect()
    }

    /// Links made outside the step, in one statement: `(source record, target record,
    /// source revision)` under `rule`, as a sync would have left them without their
    /// authority state (the next step observes both sides as a first link does). For
    /// seeding a large rule (the reconcile bench) and for importing links.
    pub async fn insert_links(
        &self,
        rule: &str,
        links: &[(String, String, Option<i64>)],
    ) -> Result<u64, StoreError> {
        let sources: Vec<&str> = links.iter().map(|l| l.0.as_str()).collect();
        let targets: Vec<&str> = links.iter().map(|l| l.1.as_str()).collect();
        let revisions: Vec<Option<i64>> = links.iter().map(|l| l.2).collect();
        let done = sqlx::query(
            "INSERT INTO sync_records (rule, source_record_id, target_id, matched_by, source_revision, linked_at)
             SELECT $1, s, t, '{\"step\": \"imported\"}'::jsonb, r, now()
             FROM unnest($2::text[], $3::text[], $4::bigint[]) AS l(s, t, r)
             ON CONFLICT (rule, source_record_id) DO NOTHING",
        )
        .bind(rule)
        .bind(&sources)
        .bind(&targets)
        .bind(&revisions)
        .execute(&self.pool)
        .await
        .map_err(q("insert links"))?;
        Ok(done.rows_affected())
    }

    /// One conflict.
    pub async fn conflict(&self, id: i64) -> Result<Option<ConflictRow>, StoreError> {
        let rows = self.conflicts_where("id = $1", id).await?;
        Ok(rows.into_iter().next())
    }

    async fn conflicts_where(
        &self,
        condition: &'static str,
        id: i64,
    ) -> Result<Vec<ConflictRow>, StoreError> {
        let sql = format!(
            "SELECT id, rule, source_record_id, kind, summary, detail, status, occurrences, opened_at FROM conflicts WHERE {condition}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read a conflict"))?;
        rows.iter().map(conflict_row).collect()
    }

    /// Dismisses an open conflict; returns whether it was open.
    pub async fn dismiss_conflict(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE conflicts SET status = 'dismissed', closed_at = now(), updated_at = now() WHERE id = $1 AND status = 'open'")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("dismiss a conflict"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The source record linked to a target record under a rule.
    pub async fn source_for_target(
        &self,
        rule: &str,
        target_id: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT source_record_id FROM sync_records WHERE rule = $1 AND target_id = $2 LIMIT 1",
        )
        .bind(rule)
        .bind(target_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("find the linked record"))
    }

    /// The outbound operations of a record, oldest first: `(system, status, fields)`.
    pub async fn ops(
        &self,
        rule: &str,
        record_id: &str,
    ) -> Result<Vec<(String, String, Value)>, StoreError> {
        let rows = sqlx::query("SELECT system, status, fields FROM outbound_ops WHERE rule = $1 AND source_record_id = $2 ORDER BY id")
            .bind(rule)
            .bind(record_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read outbound operations"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(q("read"))?,
                    r.try_get(1).map_err(q("read"))?,
                    r.try_get(2).map_err(q("read"))?,
                ))
            })
            .collect()
    }

    /// Conflicts with a status (`open`, `resolved`, `dismissed`), oldest first.
    pub async fn conflicts(&self, status: &str) -> Result<Vec<ConflictRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, rule, source_record_id, kind, summary, detail, status, occurrences, opened_at
             FROM conflicts WHERE status = $1 ORDER BY id",
        )
        .bind(status)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read conflicts"))?;
        rows.iter().map(conflict_row).collect()
    }

    /// How many events were processed for a rule.
    pub async fn processed_count(&self, rule: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE rule = $1")
            .bind(rule)
            .fetch_one(&self.pool)
            .await
            .map_err(q("count processed events"))
    }

    /// The pool, for tests and tooling.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

mod dead;
mod imports;
mod ledger;
mod limiter;
mod parking;
mod reconcile;
mod record;
mod renames;
mod resync;
mod retention;
mod schema;
mod usage;
pub use dead::{DeadFilter, DeadLetterRow, NewDeadLetter};
pub use imports::ImportRun;
pub use ledger::{Ledger, Unaccounted};
pub use parking::ParkedRow;
pub use reconcile::ReconcileRun;
pub use record::{Intent, Memory, PendingCreate, RecordTx};
pub use renames::RenameError;
pub use resync::ResyncCursor;
pub use retention::{Pruned, Retention};
pub use schema::{NewSchemaCheck, SchemaCheckRow};

fn conflict_row(r: &sqlx::postgres::PgRow) -> Result<ConflictRow, StoreError> {
    Ok(ConflictRow {
        id: r.try_get("id").map_err(q("read"))?,
        rule: r.try_get("rule").map_err(q("read"))?,
        source_record_id: r.try_get("source_record_id").map_err(q("read"))?,
        kind: r.try_get("kind").map_err(q("read"))?,
        summary: r.try_get("summary").map_err(q("read"))?,
        detail: r.try_get("detail").map_err(q("read"))?,
        status: r.try_get("status").map_err(q("read"))?,
        occurrences: r.try_get("occurrences").map_err(q("read"))?,
        opened_at: r.try_get("opened_at").map_err(q("read"))?,
    })
}

fn history_row(r: &sqlx::postgres::PgRow) -> Result<HistoryRow, StoreError> {
    Ok(HistoryRow {
        id: r.try_get("id").map_err(q("read"))?,
        at: r.try_get("at").map_err(q("read"))?,
        rule: r.try_get("rule").map_err(q("read"))?,
        source_record_id: r.try_get("source_record_id").map_err(q("read"))?,
        event_id: r.try_get("event_id").map_err(q("read"))?,
        kind: r.try_get("kind").map_err(q("read"))?,
        summary: r.try_get("summary").map_err(q("read"))?,
        detail: r.try_get("detail").map_err(q("read"))?,
    })
}

async fn insert_history(
    tx: &mut Transaction<'static, Postgres>,
    rule: &str,
    record_id: &str,
    ev: &EventRef,
    entries: &[Entry],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    // One statement for all of them.
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let summaries: Vec<&str> = entries.iter().map(|e| e.summary.as_str()).collect();
    let details: Vec<&Value> = entries.iter().map(|e| &e.detail).collect();
    sqlx::query(
        "INSERT INTO history (rule, source_record_id, event_id, correlation_id, kind, summary, detail)
         SELECT $1, $2, $3, $4, k, s, d FROM UNNEST($5::text[], $6::text[], $7::jsonb[]) WITH ORDINALITY AS e(k, s, d, n)
         ORDER BY n",
    )
    .bind(rule)
    .bind(record_id)
    .bind(&ev.event_id)
    .bind(&ev.correlation_id)
    .bind(kinds)
    .bind(summaries)
    .bind(details)
    .execute(&mut **tx)
    .await
    .map_err(q("append history"))?;
    Ok(())
}
