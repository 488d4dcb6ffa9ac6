//! Retention: the tables that grow with every event are pruned in bounded batches,
//! keeping what the ledger, the timelines, reconcile and the in-doubt creates need.
//!
//! - `deliveries` with `processed_events`: an event that has an outcome and was last
//!   seen before the cutoff is forgotten, both rows together, so that the ledger stays
//!   balanced. An event without an outcome (in flight, parked, dead-lettered or lost)
//!   is kept: it is what the ledger is there to show.
//! - `outbound_ops`: confirmed and failed operations before the cutoff, and sent ones
//!   that a later operation to the same record and system has replaced. A `pending`
//!   create (in doubt) is never pruned, nor the latest write to a system, which tells
//!   its webhook's echo from a change.
//!
//! The history is not pruned: its trigger refuses deletes (it is append-only), and
//! timelines read it.
//!
//! No index is added for the cutoffs: `deliveries.last_seen_at` changes with every
//! redelivery, and an index on it would end its updates' HOT path; a run scans what
//! retention keeps, which is bounded by retention.

use std::time::Duration;

use crate::{Store, StoreError, q};

/// How long each family is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events with an outcome (`deliveries`, `processed_events`).
    pub events: Duration,
    /// Settled outbound operations (`outbound_ops`).
    pub operations: Duration,
    /// Rows deleted per statement.
    pub batch: i64,
    /// Statements per table and run, so that one run stays bounded.
    pub max_batches: u32,
}

/// What one run pruned, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// `deliveries` rows (and as many `processed_events` rows, counted below).
    pub deliveries: u64,
    /// `processed_events` rows.
    pub processed_events: u64,
    /// `outbound_ops` rows.
    pub outbound_ops: u64,
}

impl Store {
    /// Prunes every family older than its retention, in batches of `batch` rows and at
    /// most `max_batches` statements a table, unless another worker is pruning now (an
    /// advisory lock held for the run). `None` when another worker has it.
    pub async fn prune(&self, keep: &Retention) -> Result<Option<Pruned>, StoreError> {
        let mut lock = self.pool.acquire().await.map_err(q("prune"))?;
        let mine: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('recordsync.prune'))")
                .fetch_one(&mut *lock)
                .await
                .map_err(q("claim the pruning"))?;
        if !mine {
            return Ok(None);
        }
        let pruned = self.prune_held(keep).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('recordsync.prune'))")
            .execute(&mut *lock)
            .await;
        pruned.map(Some)
    }

    async fn prune_held(&self, keep: &Retention) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        for _ in 0..keep.max_batches {
            let (deliveries, processed): (i64, i64) = sqlx::query_as(
                "WITH gone AS (
                    DELETE FROM deliveries d
                     WHERE (d.event_id, d.rule) IN (
                        SELECT d2.event_id, d2.rule FROM deliveries d2
                          JOIN processed_events p ON p.event_id = d2.event_id AND p.rule = d2.rule
                         WHERE d2.first_seen_at < now() - make_interval(secs => $1)
                           AND d2.last_seen_at < now() - make_interval(secs => $1)
                         LIMIT $2)
                    RETURNING d.event_id, d.rule
                 ), outcomes AS (
                    DELETE FROM processed_events p USING gone
                     WHERE p.event_id = gone.event_id AND p.rule = gone.rule
                    RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM outcomes)",
            )
            .bind(keep.events.as_secs_f64())
            .bind(keep.batch)
            .fetch_one(&self.pool)
            .await
            .map_err(q("prune deliveries"))?;
            pruned.deliveries += deliveries as u64;
            pruned.processed_events += processed as u64;
            if deliveries < keep.batch {
                break;
            }
        }
        for _ in 0..keep.max_batches {
            let n = sqlx::query(
                "DELETE FROM outbound_ops o
                  WHERE o.id IN (
                    SELECT o2.id FROM outbound_ops o2
                     WHERE o2.created_at < now() - make_interval(secs => $1)
                       AND (o2.status IN ('confirmed', 'failed')
                            OR (o2.status = 'sent' AND EXISTS (
                                SELECT 1 FROM outbound_ops later
                                 WHERE later.rule = o2.rule
                                   AND later.source_record_id = o2.source_record_id
                                   AND later.system = o2.system
                                   AND later.id > o2.id)))
                     LIMIT $2)",
            )
            .bind(keep.operations.as_secs_f64())
            .bind(keep.batch)
            .execute(&self.pool)
            .await
            .map_err(q("prune outbound operations"))?
            .rows_affected();
            pruned.outbound_ops += n;
            if (n as i64) < keep.batch {
                break;
            }
        }
        Ok(pruned)
    }
}
