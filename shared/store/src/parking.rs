//! Pausing, and parked work: what waits for a paused rule or system, or for a target's
//! write window, one row per record (the latest event wins).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{RecordTx, Store, StoreError, q};

/// A parked record.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct ParkedRow {
    /// The rule.
    pub rule: String,
    /// The record.
    pub source_record_id: String,
    /// The latest event, as the queue carried it.
    pub event: Value,
    /// `paused` or `window`.
    pub reason: String,
    /// How many events were coalesced into this row.
    pub events: i32,
    /// When the first of them was parked.
    pub first_parked_at: DateTime<Utc>,
}

/// A pause ([`Store::paused`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct PausedRow {
    /// `rule` or `system`.
    pub scope: String,
    /// The rule's or the system's name.
    pub name: String,
}

/// A batch of parked work taken by [`Store::begin_batch`].
pub struct Batch {
    /// The lease on the batch's records; its commit removes them from the parked table.
    pub tx: RecordTx,
    /// The parked rows it holds, oldest first.
    pub parked: Vec<ParkedRow>,
}

impl Store {
    /// Pauses a rule or a system (`scope` is `rule` or `system`).
    pub async fn pause(
        &self,
        scope: &str,
        name: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO paused (scope, name, reason) VALUES ($1, $2, $3) ON CONFLICT (scope, name) DO UPDATE SET reason = EXCLUDED.reason")
            .bind(scope)
            .bind(name)
            .bind(reason)
            .execute(&self.pool)
            .await
            .map_err(q("pause"))?;
        Ok(())
    }

    /// Resumes a rule or a system; its parked work is flushed by the workers.
    pub async fn resume(&self, scope: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM paused WHERE scope = $1 AND name = $2")
            .bind(scope)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(q("resume"))?;
        Ok(done.rows_affected() == 1)
    }

    /// What is paused, by scope and name.
    pub async fn paused(&self) -> Result<Vec<PausedRow>, StoreError> {
        sqlx::query_as::<_, PausedRow>("SELECT scope, name FROM paused ORDER BY scope, name")
            .fetch_all(&self.pool)
            .await
            .map_err(q("read what is paused"))
    }

    /// The parked records of a rule (or of every rule), oldest first.
    pub async fn parked(&self, rule: Option<&str>) -> Result<Vec<ParkedRow>, StoreError> {
        sqlx::query_as::<_, ParkedRow>(
            "SELECT * FROM parked WHERE $1::text IS NULL OR rule = $1 ORDER BY first_parked_at",
        )
        .bind(rule)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read parked work"))
    }

    /// The rules that have parked work.
    pub async fn parked_rules(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT DISTINCT rule FROM parked")
            .fetch_all(&self.pool)
            .await
            .map_err(q("read parked rules"))
    }

    /// Starts a batch: leases up to `limit` parked records of a rule (skipping those
    /// another worker holds). The batch's commit removes them from the parked table;
    /// if it is dropped instead, they stay parked as they were.
    pub async fn begin_batch(&self, rule: &str, limit: i64) -> Result<Option<Batch>, StoreError> {
        let parked = sqlx::query_as::<_, ParkedRow>(
            "SELECT * FROM parked WHERE rule = $1 ORDER BY first_parked_at LIMIT $2",
        )
        .bind(rule)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read parked work"))?;
        let ids: Vec<String> = parked.iter().map(|p| p.source_record_id.clone()).collect();
        let Some(mut tx) = self.lease_free(rule, &ids).await? else {
            return Ok(None);
        };
        // Read again under the lease: between the first read and the lease, a step may
        // have parked a later event for one of them (replacing the one read, which it
        // marked coalesced). Parking needs the record's lease, so this read is final.
        let taken = sqlx::query_as::<_, ParkedRow>(
            "SELECT * FROM parked WHERE rule = $1 AND source_record_id = ANY($2)
             ORDER BY first_parked_at",
        )
        .bind(rule)
        .bind(tx.records())
        .fetch_all(&self.pool)
        .await
        .map_err(q("read parked work"))?;
        drop(parked);
        for p in &taken {
            tx.switch_to(&p.source_record_id);
            tx.unpark();
        }
        Ok(Some(Batch { tx, parked: taken }))
    }
}
