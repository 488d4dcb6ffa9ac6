//! Reconcile runs, and the records a run must leave alone because they are moving.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::{Store, StoreError, q};

/// A stored reconcile run.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReconcileRun {
    /// Its id.
    pub id: i64,
    /// The rule.
    pub rule: String,
    /// When it started (the point in time it compared).
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Whether it only reported.
    pub dry_run: bool,
    /// Its figures.
    pub summary: Value,
    /// The differences it found (a sample).
    pub differences: Value,
}

impl Store {
    /// The rule's records that are moving, which a reconcile leaves out so that nothing
    /// merely late is "repaired": written by a step within `settle`, with an event seen
    /// within `settle` and no outcome yet, leased now, or parked.
    pub async fn busy_records(
        &self,
        rule: &str,
        settle: Duration,
    ) -> Result<HashSet<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT source_record_id FROM sync_records
              WHERE rule = $1 AND updated_at > now() - make_interval(secs => $2)
             UNION
             SELECT d.source_record_id FROM deliveries d
               LEFT JOIN processed_events p ON p.event_id = d.event_id AND p.rule = d.rule
              WHERE d.rule = $1 AND p.event_id IS NULL AND d.source_record_id IS NOT NULL
                AND d.last_seen_at > now() - make_interval(secs => $2)
             UNION
             SELECT source_record_id FROM record_leases WHERE rule = $1 AND expires_at > now()
             UNION
             SELECT source_record_id FROM parked WHERE rule = $1",
        )
        .bind(rule)
        .bind(settle.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(q("read the records in flight"))?;
        Ok(ids.into_iter().collect())
    }

    /// Stores a finished run; returns its id.
    pub async fn reconcile_insert(
        &self,
        rule: &str,
        started_at: DateTime<Utc>,
        dry_run: bool,
        summary: &Value,
        differences: &Value,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO reconcile_runs (rule, started_at, dry_run, summary, differences)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(rule)
        .bind(started_at)
        .bind(dry_run)
        .bind(summary)
        .bind(differences)
        .fetch_one(&self.pool)
        .await
        .map_err(q("store a reconcile run"))
    }

    /// The latest runs, newest first, of one rule or of all.
    pub async fn reconcile_runs(
        &self,
        rule: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ReconcileRun>, StoreError> {
        sqlx::query_as::<_, ReconcileRun>(
            "SELECT id, rule, started_at, finished_at, dry_run, summary, differences
               FROM reconcile_runs WHERE $1::text IS NULL OR rule = $1
              ORDER BY id DESC LIMIT $2",
        )
        .bind(rule)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read reconcile runs"))
    }
}
