//! Dead letters: stored when drained from the dead-letter queue, listed with filters,
//! replayed (marked, the body republished by the caller) and purged.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::QueryBuilder;

use crate::{Store, StoreError, q};

/// A dead letter to store.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    /// A unique id given when it was dead-lettered (repeat deliveries share it).
    pub dead_id: String,
    /// The event id, when the body could be read.
    pub event_id: Option<String>,
    /// The rule being processed.
    pub rule: Option<String>,
    /// The source system.
    pub system: Option<String>,
    /// The app.
    pub app: Option<String>,
    /// The record.
    pub record_id: Option<String>,
    /// The error class (`server`, `transport`, `undecodable`, `poison`, …).
    pub class: String,
    /// The last error, in words.
    pub reason: String,
    /// Attempts made.
    pub attempts: i32,
    /// The attempt history that travelled with the message.
    pub history: Value,
    /// The message body, as it was.
    pub body: Vec<u8>,
}

/// A stored dead letter.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeadLetterRow {
    /// Its id.
    pub id: i64,
    /// The event id.
    pub event_id: Option<String>,
    /// The rule.
    pub rule: Option<String>,
    /// The source system.
    pub system: Option<String>,
    /// The app.
    pub app: Option<String>,
    /// The record.
    pub record_id: Option<String>,
    /// The error class.
    pub class: String,
    /// The last error.
    pub reason: String,
    /// Attempts made.
    pub attempts: i32,
    /// The attempt history.
    pub history: Value,
    /// When it was dead-lettered (stored).
    pub dead_at: DateTime<Utc>,
    /// `dead` or `replayed`.
    pub status: String,
    /// The body, only for a single dead letter: a list does not select the column, and
    /// a row without it has an empty body.
    #[serde(skip)]
    #[sqlx(default)]
    pub body: Vec<u8>,
}

/// Which dead letters: every field that is set must match.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct DeadFilter {
    /// Only these ids.
    #[serde(default)]
    pub ids: Vec<i64>,
    /// The rule.
    pub rule: Option<String>,
    /// The source system.
    pub system: Option<String>,
    /// The error class.
    pub class: Option<String>,
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub until: Option<DateTime<Utc>>,
    /// `dead` (the default) or `replayed`.
    pub status: Option<String>,
}

impl DeadFilter {
    fn push_where(&self, qb: &mut QueryBuilder<sqlx::Postgres>) {
        qb.push(" WHERE status = ")
            .push_bind(self.status.clone().unwrap_or_else(|| "dead".into()));
        if !self.ids.is_empty() {
            qb.push(" AND id = ANY(")
                .push_bind(self.ids.clone())
                .push(")");
        }
        if let Some(v) = &self.rule {
            qb.push(" AND rule = ").push_bind(v.clone());
        }
        if let Some(v) = &self.system {
            qb.push(" AND system = ").push_bind(v.clone());
        }
        if let Some(v) = &self.class {
            qb.push(" AND class = ").push_bind(v.clone());
        }
        if let Some(v) = self.since {
            qb.push(" AND dead_at >= ").push_bind(v);
        }
        if let Some(v) = self.until {
            qb.push(" AND dead_at < ").push_bind(v);
        }
    }
}

impl Store {
    /// Stores a dead letter; a repeat of the same `dead_id` is ignored. Returns whether
    /// it was new.
    pub async fn insert_dead_letter(&self, d: &NewDeadLetter) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO dead_letters (dead_id, event_id, rule, system, app, record_id, class, reason, attempts, history, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (dead_id) DO NOTHING",
        )
        .bind(&d.dead_id)
        .bind(&d.event_id)
        .bind(&d.rule)
        .bind(&d.system)
        .bind(&d.app)
        .bind(&d.record_id)
        .bind(&d.class)
        .bind(&d.reason)
        .bind(d.attempts)
        .bind(&d.history)
        .bind(&d.body)
        .execute(&self.pool)
        .await
        .map_err(q("store a dead letter"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Dead letters matching a filter, oldest first, without bodies.
    pub async fn dead_letters(
        &self,
        filter: &DeadFilter,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        let mut qb = QueryBuilder::new(
            "SELECT id, event_id, rule, system, app, record_id, class, reason, attempts, history, dead_at, status FROM dead_letters",
        );
        filter.push_where(&mut qb);
        qb.push(" ORDER BY id LIMIT ").push_bind(limit);
        qb.build_query_as::<DeadLetterRow>()
            .fetch_all(&self.pool)
            .await
            .map_err(q("list dead letters"))
    }

    /// How many dead letters match a filter.
    pub async fn count_dead_letters(&self, filter: &DeadFilter) -> Result<i64, StoreError> {
        let mut qb = QueryBuilder::new("SELECT count(*) FROM dead_letters");
        filter.push_where(&mut qb);
        qb.build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(q("count dead letters"))
    }

    /// One dead letter with its body.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetterRow>, StoreError> {
        sqlx::query_as::<_, DeadLetterRow>("SELECT * FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("read a dead letter"))
    }

    /// Marks a dead letter replayed.
    pub async fn mark_replayed(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE dead_letters SET status = 'replayed', replayed_at = now() WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(q("mark a dead letter replayed"))?;
        Ok(())
    }

    /// Deletes the dead letters matching a filter; returns how many. The events of the
    /// purged letters not replayed are done for good: the ledger counts them `purged`.
    pub async fn purge_dead_letters(&self, filter: &DeadFilter) -> Result<u64, StoreError> {
        let mut qb = QueryBuilder::new("WITH gone AS (DELETE FROM dead_letters");
        filter.push_where(&mut qb);
        qb.push(
            " RETURNING event_id, status),
             marked AS (
                INSERT INTO processed_events (event_id, rule, outcome)
                SELECT d.event_id, d.rule, 'purged' FROM deliveries d
                  JOIN gone g ON g.event_id = d.event_id AND g.status = 'dead'
                ON CONFLICT DO NOTHING)
             SELECT count(*) FROM gone",
        );
        let n: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(q("purge dead letters"))?;
        u64::try_from(n).map_err(|e| StoreError::Query {
            op: "purge dead letters",
            source: sqlx::Error::Decode(Box::new(e)),
        })
    }
}
