//! The PostgreSQL store: the only crate that imports sqlx. Its rows are its own types;
//! it converts to and from the domain's at the boundary.
//!
//! Every decision about one source record runs under a [`RecordTx`]: a lease on
//! (rule, record) with a fencing token, so that the whole fleet processes one record
//! at a time, whatever the number of workers or their prefetch, without holding a
//! connection while other systems are called (see `record`).

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, SqlSafeStr};

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

    /// The pool, for tests and tooling.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

mod conflicts;
mod dead;
mod events;
mod history;
mod imports;
mod ledger;
mod limiter;
mod links;
mod parking;
mod reconcile;
mod record;
mod renames;
mod resync;
mod retention;
mod rows;
mod schema;
mod usage;
pub use dead::{DeadFilter, DeadLetterRow, NewDeadLetter};
pub use imports::ImportRun;
pub use ledger::{Ledger, RollupRow, Unaccounted};
pub use parking::{Batch, ParkedRow, PausedRow};
pub use reconcile::ReconcileRun;
pub use record::{
    Intent, LinkTaken, Memory, OpenOps, PendingCreate, Prior, RecordTx, SentOp, Unstorable,
};
pub use renames::{Moved, RenameError};
pub use resync::ResyncCursor;
pub use retention::{Pruned, Retention};
pub use rows::{ConflictRow, FoundRecord, HistoryCount, HistoryRow, LinkRow, OutboundOpRow};
pub use schema::{NewSchemaCheck, SchemaCheckRow};
