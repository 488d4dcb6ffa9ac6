//! The PostgreSQL store: the only crate that imports sqlx. Its rows are its own types;
//! it converts to and from the domain's at the boundary.
//!
//! Every decision about one source record runs inside a [`RecordTx`]: a transaction
//! holding an advisory lock on (rule, record), so that the whole fleet processes one
//! record at a time, whatever the number of workers or their prefetch.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::history::Entry;
use domain::record::Fields;
use domain::sync::PriorState;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, SqlSafeStr, Transaction};

/// A store failure. All of them mean "the database is not available or not working":
/// the worker gives the message back and tries again later, without counting an
/// attempt.
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
}

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
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
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

impl Store {
    /// Connects. `acquire_timeout` bounds how long a caller waits for a connection
    /// when PostgreSQL is down.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(q("parse the database URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(q("connect"))?;
        Ok(Store { pool })
    }

    /// Connects without checking that PostgreSQL answers (workers start while it is
    /// down and wait).
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(q("parse the database URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Store { pool })
    }

    /// Applies the embedded migrations (idempotent, with a lock against concurrent
    /// workers).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator().run(&self.pool).await?;
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

    /// Starts the transaction for one record, holding its advisory lock until commit.
    pub async fn begin_record(&self, rule: &str, record_id: &str) -> Result<RecordTx, StoreError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 0))")
            .bind(rule)
            .bind(record_id)
            .execute(&mut *tx)
            .await
            .map_err(q("lock the record"))?;
        Ok(RecordTx {
            tx,
            rule: rule.to_owned(),
            record_id: record_id.to_owned(),
        })
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
        let rows = sqlx::query(
            "SELECT id, at, rule, source_record_id, event_id, kind, summary, detail FROM history
             WHERE rule = $1 AND source_record_id = $2 ORDER BY id",
        )
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
        let rows = sqlx::query(
            "SELECT id, at, rule, source_record_id, event_id, kind, summary, detail FROM history
             WHERE rule = $1 ORDER BY id DESC LIMIT $2",
        )
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
        let rows = sqlx::query(
            "SELECT kind, count(*) FROM history WHERE $1::text IS NULL OR rule = $1 GROUP BY kind ORDER BY kind",
        )
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
        rows.iter()
            .map(|r| {
                Ok(LinkRow {
                    rule: r.try_get("rule").map_err(q("read"))?,
                    source_record_id: r.try_get("source_record_id").map_err(q("read"))?,
                    target_id: r.try_get("target_id").map_err(q("read"))?,
                    matched_by: r.try_get("matched_by").map_err(q("read"))?,
                    source_revision: r.try_get("source_revision").map_err(q("read"))?,
                    sent: r.try_get("sent").map_err(q("read"))?,
                    state: r.try_get("state").map_err(q("read"))?,
                })
            })
            .collect()
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
mod limiter;
mod parking;
pub use dead::{DeadFilter, DeadLetterRow, NewDeadLetter};
pub use parking::ParkedRow;

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
    for e in entries {
        sqlx::query(
            "INSERT INTO history (rule, source_record_id, event_id, correlation_id, kind, summary, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(rule)
        .bind(record_id)
        .bind(&ev.event_id)
        .bind(&ev.correlation_id)
        .bind(e.kind.as_str())
        .bind(&e.summary)
        .bind(&e.detail)
        .execute(&mut **tx)
        .await
        .map_err(q("append history"))?;
    }
    Ok(())
}

/// The transaction of one record under one rule. Nothing is visible to others until
/// [`RecordTx::commit`]; dropping it rolls back and releases the lock.
pub struct RecordTx {
    tx: Transaction<'static, Postgres>,
    rule: String,
    record_id: String,
}

impl RecordTx {
    /// The record the next calls concern: a batch transaction locks several records
    /// and works through them one after the other.
    pub fn switch_to(&mut self, record_id: &str) {
        record_id.clone_into(&mut self.record_id);
    }
    /// Whether this event was already processed under this rule.
    pub async fn already_processed(&mut self, event_id: &str) -> Result<bool, StoreError> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM processed_events WHERE event_id = $1 AND rule = $2")
                .bind(event_id)
                .bind(&self.rule)
                .fetch_optional(&mut *self.tx)
                .await
                .map_err(q("check processed events"))?;
        Ok(found.is_some())
    }

    /// What is known of the record.
    pub async fn prior(&mut self) -> Result<PriorState, StoreError> {
        let row = sqlx::query("SELECT target_id, source_revision, sent, state FROM sync_records WHERE rule = $1 AND source_record_id = $2")
            .bind(&self.rule)
            .bind(&self.record_id)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(q("read the record's state"))?;
        let Some(row) = row else {
            return Ok(PriorState::default());
        };
        let sent: Value = row.try_get("sent").map_err(q("read"))?;
        Ok(PriorState {
            target_id: row.try_get("target_id").map_err(q("read"))?,
            source_revision: row.try_get("source_revision").map_err(q("read"))?,
            sent: match sent {
                Value::Object(m) => m,
                _ => Fields::new(),
            },
        })
    }

    /// Saves the record's link and sync state.
    pub async fn save_state(
        &mut self,
        target_id: Option<&str>,
        matched_by: Option<Value>,
        source_revision: Option<i64>,
        sent: &Fields,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sync_records (rule, source_record_id, target_id, matched_by, source_revision, sent, linked_at)
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $3::text IS NULL THEN NULL ELSE now() END)
             ON CONFLICT (rule, source_record_id) DO UPDATE SET
                target_id = EXCLUDED.target_id,
                matched_by = COALESCE(EXCLUDED.matched_by, sync_records.matched_by),
                source_revision = GREATEST(EXCLUDED.source_revision, sync_records.source_revision),
                sent = EXCLUDED.sent,
                linked_at = CASE WHEN sync_records.target_id IS DISTINCT FROM EXCLUDED.target_id
                                 THEN EXCLUDED.linked_at ELSE sync_records.linked_at END,
                updated_at = now()",
        )
        .bind(&self.rule)
        .bind(&self.record_id)
        .bind(target_id)
        .bind(matched_by)
        .bind(source_revision)
        .bind(Value::Object(sent.clone()))
        .execute(&mut *self.tx)
        .await
        .map_err(q("save the record's state"))?;
        Ok(())
    }

    /// The record's field-authority state, when it has one.
    pub async fn authority_state(&mut self) -> Result<Option<Value>, StoreError> {
        let v: Option<Option<Value>> = sqlx::query_scalar(
            "SELECT state FROM sync_records WHERE rule = $1 AND source_record_id = $2",
        )
        .bind(&self.rule)
        .bind(&self.record_id)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(q("read the record's authority state"))?;
        Ok(v.flatten())
    }

    /// Saves the record's field-authority state (the row must exist).
    pub async fn save_authority_state(&mut self, state: &Value) -> Result<(), StoreError> {
        sqlx::query("UPDATE sync_records SET state = $3, updated_at = now() WHERE rule = $1 AND source_record_id = $2")
            .bind(&self.rule)
            .bind(&self.record_id)
            .bind(state)
            .execute(&mut *self.tx)
            .await
            .map_err(q("save the record's authority state"))?;
        Ok(())
    }

    /// Records an outbound operation as sent.
    pub async fn record_op(
        &mut self,
        system: &str,
        key: &str,
        fields: &Value,
        vv: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO outbound_ops (rule, source_record_id, system, idempotency_key, fields, vv) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&self.rule)
            .bind(&self.record_id)
            .bind(system)
            .bind(key)
            .bind(fields)
            .bind(vv)
            .execute(&mut *self.tx)
            .await
            .map_err(q("record an outbound operation"))?;
        Ok(())
    }

    /// The operations sent to `system` for this record and not yet confirmed:
    /// `(id, fields, vv)`.
    pub async fn sent_ops(&mut self, system: &str) -> Result<Vec<(i64, Value, Value)>, StoreError> {
        let rows = sqlx::query("SELECT id, fields, vv FROM outbound_ops WHERE rule = $1 AND source_record_id = $2 AND system = $3 AND status = 'sent' ORDER BY id")
            .bind(&self.rule)
            .bind(&self.record_id)
            .bind(system)
            .fetch_all(&mut *self.tx)
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

    /// Marks operations confirmed by the target's own read-back or webhook.
    pub async fn confirm_ops(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbound_ops SET status = 'confirmed', confirmed_at = now() WHERE id = ANY($1)",
        )
        .bind(ids)
        .execute(&mut *self.tx)
        .await
        .map_err(q("confirm outbound operations"))?;
        Ok(())
    }

    /// Marks an open conflict of this record resolved.
    pub async fn resolve_conflict(&mut self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE conflicts SET status = 'resolved', closed_at = now(), updated_at = now()
              WHERE id = $1 AND rule = $2 AND source_record_id = $3 AND status = 'open'",
        )
        .bind(id)
        .bind(&self.rule)
        .bind(&self.record_id)
        .execute(&mut *self.tx)
        .await
        .map_err(q("resolve a conflict"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes the link (on source deletion with `unlink`).
    pub async fn forget(&mut self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sync_records WHERE rule = $1 AND source_record_id = $2")
            .bind(&self.rule)
            .bind(&self.record_id)
            .execute(&mut *self.tx)
            .await
            .map_err(q("remove the link"))?;
        Ok(())
    }

    /// Opens a conflict of `kind` (or counts one more occurrence of the open one).
    pub async fn open_conflict(&mut self, kind: &str, entry: &Entry) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO conflicts (rule, source_record_id, kind, summary, detail) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (rule, source_record_id, kind) WHERE status = 'open' DO UPDATE SET
                summary = EXCLUDED.summary, detail = EXCLUDED.detail,
                occurrences = conflicts.occurrences + 1, updated_at = now()
             RETURNING id",
        )
        .bind(&self.rule)
        .bind(&self.record_id)
        .bind(kind)
        .bind(&entry.summary)
        .bind(&entry.detail)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(q("open a conflict"))
    }

    /// Appends history entries.
    pub async fn append(&mut self, ev: &EventRef, entries: &[Entry]) -> Result<(), StoreError> {
        insert_history(&mut self.tx, &self.rule, &self.record_id, ev, entries).await
    }

    /// Marks the event processed under this rule.
    pub async fn mark_processed(
        &mut self,
        event_id: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO processed_events (event_id, rule, outcome) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(event_id)
            .bind(&self.rule)
            .bind(outcome)
            .execute(&mut *self.tx)
            .await
            .map_err(q("mark the event processed"))?;
        Ok(())
    }

    /// Commits everything and releases the record's lock.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(q("commit"))
    }
}
