//! The work on one record (or a batch of records) under one rule, without holding a
//! connection or a transaction while other systems are called.
//!
//! - A **lease** gives one worker in the fleet the record: a row with an owner, a
//!   fencing token and an expiry, taken and released in short statements and renewed
//!   in the background while the holder works.
//! - Reads go to the pool, one short statement each.
//! - Writes are **buffered** and applied by [`RecordTx::commit`] in one short
//!   transaction that first checks the fencing token: a holder whose lease expired
//!   and was taken by another worker (a paused or partitioned process) cannot commit.
//! - Outbound operations are committed as **intents** before they are sent
//!   ([`RecordTx::commit_intents`]), so a create whose outcome is in doubt is known to
//!   whoever takes the record next.

mod apply;
mod read;
use apply::{Write, apply_all};
pub use read::{LinkTaken, Memory, OpenOps, PendingCreate, Prior, SentOp, Unstorable};

use std::time::Duration;

use domain::history::Entry;
use domain::record::Fields;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use crate::{EventRef, Store, StoreError, q};

/// An outbound operation about to be sent.
#[derive(Debug, Clone)]
pub struct Intent {
    /// The system it goes to.
    pub system: String,
    /// `create`, `update` or `source` (a correction of the source record).
    pub kind: &'static str,
    /// Its idempotency key.
    pub key: String,
    /// The canonical fields and values it sends.
    pub fields: Fields,
    /// The version vector it carries.
    pub vv: Value,
}

/// The lease on one or more records of a rule, renewed in the background until it is
/// committed or dropped.
struct Lease {
    token: i64,
    records: Vec<String>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    done: bool,
}

/// The work on one record under one rule (or, for a flush, on several, one after the
/// other). Nothing it writes is visible to others until [`RecordTx::commit`];
/// dropping it discards the writes and releases the lease.
pub struct RecordTx {
    pool: PgPool,
    pub(crate) rule: String,
    pub(crate) record_id: String,
    lease: Lease,
    writes: Vec<Write>,
    /// Intents committed by this holder and not yet marked sent: at commit they are
    /// marked failed (the step ended without sending them).
    open_intents: Vec<i64>,
}

impl Store {
    /// Takes the lease on one record, waiting (without holding a connection) while
    /// another worker holds it.
    pub async fn begin_record(&self, rule: &str, record_id: &str) -> Result<RecordTx, StoreError> {
        let mut wait = Duration::from_millis(5);
        loop {
            if let Some(token) = self.try_lease(rule, record_id).await? {
                return Ok(self.holder(rule, vec![record_id.to_owned()], token));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(200));
        }
    }

    /// Takes the lease on one record if it is free, without waiting.
    pub async fn try_begin_record(
        &self,
        rule: &str,
        record_id: &str,
    ) -> Result<Option<RecordTx>, StoreError> {
        Ok(self
            .try_lease(rule, record_id)
            .await?
            .map(|token| self.holder(rule, vec![record_id.to_owned()], token)))
    }

    /// Takes the lease on as many of `records` as are free, under one token, without
    /// waiting: a batch skips what another worker holds.
    pub(crate) async fn lease_free(
        &self,
        rule: &str,
        records: &[String],
    ) -> Result<Option<RecordTx>, StoreError> {
        if records.is_empty() {
            return Ok(None);
        }
        let token: i64 = sqlx::query_scalar("SELECT nextval('lease_tokens')")
            .fetch_one(&self.pool)
            .await
            .map_err(q("take a lease token"))?;
        let taken: Vec<String> = sqlx::query_scalar(
            "INSERT INTO record_leases (rule, source_record_id, owner, token, expires_at)
             SELECT $1, r, $3, $4, clock_timestamp() + $5 * interval '1 millisecond' FROM UNNEST($2::text[]) AS r
             ON CONFLICT (rule, source_record_id) DO UPDATE SET
                owner = EXCLUDED.owner, token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
             WHERE record_leases.expires_at < clock_timestamp()
             RETURNING source_record_id",
        )
        .bind(rule)
        .bind(records)
        .bind(&self.leases.owner)
        .bind(token)
        .bind(self.leases.ttl.as_millis() as f64)
        .fetch_all(&self.pool)
        .await
        .map_err(q("lease records"))?;
        if taken.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.holder(rule, taken, token)))
    }

    /// One attempt at the lease: its fencing token, or `None` while another holds it.
    async fn try_lease(&self, rule: &str, record_id: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO record_leases (rule, source_record_id, owner, token, expires_at)
             VALUES ($1, $2, $3, nextval('lease_tokens'), clock_timestamp() + $4 * interval '1 millisecond')
             ON CONFLICT (rule, source_record_id) DO UPDATE SET
                owner = EXCLUDED.owner, token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
             WHERE record_leases.expires_at < clock_timestamp()
             RETURNING token",
        )
        .bind(rule)
        .bind(record_id)
        .bind(&self.leases.owner)
        .bind(self.leases.ttl.as_millis() as f64)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("lease the record"))
    }

    fn holder(&self, rule: &str, records: Vec<String>, token: i64) -> RecordTx {
        let renewer = {
            let pool = self.pool.clone();
            let (rule, records, ttl) = (rule.to_owned(), records.clone(), self.leases.ttl);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let renewed = sqlx::query(
                        "UPDATE record_leases SET expires_at = clock_timestamp() + $4 * interval '1 millisecond'
                          WHERE rule = $1 AND source_record_id = ANY($2) AND token = $3",
                    )
                    .bind(&rule)
                    .bind(&records)
                    .bind(token)
                    .bind(ttl.as_millis() as f64)
                    .execute(&pool)
                    .await;
                    match renewed {
                        // Lost: the commit will say so.
                        Ok(r) if r.rows_affected() == 0 => return,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, rule, "could not renew a record lease");
                        }
                    }
                }
            })
        };
        RecordTx {
            pool: self.pool.clone(),
            rule: rule.to_owned(),
            record_id: records.first().cloned().unwrap_or_default(),
            lease: Lease {
                token,
                records,
                renewer: Some(renewer),
                done: false,
            },
            writes: vec![],
            open_intents: vec![],
        }
    }
}

impl Drop for RecordTx {
    fn drop(&mut self) {
        if let Some(r) = self.lease.renewer.take() {
            r.abort();
        }
        if self.lease.done {
            return;
        }
        // Not committed: release the lease so that the next holder need not wait for
        // its expiry. If this fails, the lease simply expires.
        let (pool, rule, records, token) = (
            self.pool.clone(),
            self.rule.clone(),
            std::mem::take(&mut self.lease.records),
            self.lease.token,
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = sqlx::query(
                    "DELETE FROM record_leases WHERE rule = $1 AND source_record_id = ANY($2) AND token = $3",
                )
                .bind(rule)
                .bind(records)
                .bind(token)
                .execute(&pool)
                .await;
            });
        }
    }
}

impl RecordTx {
    /// The record the next calls concern: a batch works through its records one after
    /// the other.
    pub fn switch_to(&mut self, record_id: &str) {
        record_id.clone_into(&mut self.record_id);
    }

    /// The records this holder leased (a batch may get fewer than it asked for).
    pub fn records(&self) -> &[String] {
        &self.lease.records
    }

    /// The lease's fencing token.
    pub fn token(&self) -> i64 {
        self.lease.token
    }

    /// Commits the operations about to be sent, in one short transaction that checks
    /// the lease; returns their ids in order. A value PostgreSQL cannot store fails
    /// here, before anything is sent.
    pub async fn commit_intents(&mut self, intents: &[Intent]) -> Result<Vec<i64>, StoreError> {
        if intents.is_empty() {
            return Ok(vec![]);
        }
        // One statement: inserted only while the lease is still this holder's.
        let systems: Vec<&str> = intents.iter().map(|i| i.system.as_str()).collect();
        let keys: Vec<&str> = intents.iter().map(|i| i.key.as_str()).collect();
        let fields: Vec<Value> = intents
            .iter()
            .map(|i| Value::Object(i.fields.clone()))
            .collect();
        let vvs: Vec<&Value> = intents.iter().map(|i| &i.vv).collect();
        let kinds: Vec<&str> = intents.iter().map(|i| i.kind).collect();
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO outbound_ops (rule, source_record_id, system, idempotency_key, fields, vv, status, kind)
             SELECT $1, $2, i.system, i.key, i.fields, i.vv, 'pending', i.kind
               FROM UNNEST($3::text[], $4::text[], $5::jsonb[], $6::jsonb[], $7::text[])
                    WITH ORDINALITY AS i(system, key, fields, vv, kind, n)
              WHERE (SELECT count(*) FROM record_leases
                      WHERE rule = $1 AND source_record_id = ANY($8) AND token = $9) = $10
              ORDER BY i.n
             RETURNING id",
        )
        .bind(&self.rule)
        .bind(&self.record_id)
        .bind(systems)
        .bind(keys)
        .bind(fields)
        .bind(vvs)
        .bind(kinds)
        .bind(&self.lease.records)
        .bind(self.lease.token)
        .bind(self.lease.records.len() as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(q("commit the outbound operations"))?;
        if ids.len() != intents.len() {
            return Err(StoreError::LeaseLost {
                rule: self.rule.clone(),
                record: self.lease.records.join(","),
            });
        }
        // Ids grow with the insertion order, which follows the intents'.
        ids.sort_unstable();
        self.open_intents.extend(&ids);
        Ok(ids)
    }

    /// Records that the create still in doubt (`id`) is about to be sent again, before
    /// it is: whoever finds it pending next waits the settle time from now. Fenced by
    /// the lease, as the intents are.
    pub async fn resend(&mut self, id: i64) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbound_ops SET resent_at = now()
              WHERE id = $1 AND status = 'pending'
                AND (SELECT count(*) FROM record_leases
                      WHERE rule = $2 AND source_record_id = ANY($3) AND token = $4) = $5",
        )
        .bind(id)
        .bind(&self.rule)
        .bind(&self.lease.records)
        .bind(self.lease.token)
        .bind(self.lease.records.len() as i64)
        .execute(&self.pool)
        .await
        .map_err(q("record a create sent again"))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::LeaseLost {
                rule: self.rule.clone(),
                record: self.lease.records.join(","),
            });
        }
        Ok(())
    }

    /// Marks committed intents sent (the target answered), with the record they
    /// created and how an in-doubt create was resolved.
    pub fn ops_sent(&mut self, ids: &[i64], target_id: Option<&str>, resolved_by: Option<&str>) {
        self.open_intents.retain(|i| !ids.contains(i));
        self.writes.push(Write::OpsSent {
            ids: ids.to_vec(),
            target_id: target_id.map(str::to_owned),
            resolved_by: resolved_by.map(str::to_owned),
        });
    }

    /// Marks an in-doubt create as not having happened (it is created again under a
    /// new intent).
    pub fn op_abandoned(&mut self, id: i64) {
        self.writes.push(Write::OpsStatus {
            ids: vec![id],
            status: "failed",
        });
    }

    /// Saves the record's link and sync state.
    pub fn save_state(
        &mut self,
        target_id: Option<&str>,
        matched_by: Option<Value>,
        source_revision: Option<i64>,
        sent: &Fields,
    ) {
        self.writes.push(Write::SaveState {
            record: self.record_id.clone(),
            target_id: target_id.map(str::to_owned),
            matched_by,
            source_revision,
            sent: Value::Object(sent.clone()),
        });
    }

    /// Saves the record's field-authority state.
    pub fn save_authority_state(&mut self, state: &Value) {
        self.writes.push(Write::SaveAuthority {
            record: self.record_id.clone(),
            state: state.clone(),
        });
    }

    /// Records an outbound operation as sent (one that had no intent: a bulk call).
    pub fn record_op(&mut self, system: &str, key: &str, fields: &Value, vv: &Value) {
        self.writes.push(Write::RecordOp {
            record: self.record_id.clone(),
            system: system.to_owned(),
            key: key.to_owned(),
            fields: fields.clone(),
            vv: vv.clone(),
        });
    }

    /// Marks operations confirmed by the target's own read-back or webhook.
    pub fn confirm_ops(&mut self, ids: &[i64]) {
        self.writes.push(Write::OpsStatus {
            ids: ids.to_vec(),
            status: "confirmed",
        });
    }

    /// Marks an open conflict of this record resolved.
    pub fn resolve_conflict(&mut self, id: i64) {
        self.writes.push(Write::ResolveConflict {
            record: self.record_id.clone(),
            id,
        });
    }

    /// Removes the link (on source deletion with `unlink`).
    pub fn forget(&mut self) {
        self.writes.push(Write::Forget {
            record: self.record_id.clone(),
        });
    }

    /// Opens a conflict of `kind` (or counts one more occurrence of the open one).
    pub fn open_conflict(&mut self, kind: &str, entry: &Entry) {
        self.writes.push(Write::OpenConflict {
            record: self.record_id.clone(),
            kind: kind.to_owned(),
            summary: entry.summary.clone(),
            detail: entry.detail.clone(),
        });
    }

    /// Appends history entries.
    pub fn append(&mut self, ev: &EventRef, entries: &[Entry]) {
        self.writes.push(Write::Append {
            record: self.record_id.clone(),
            ev: ev.clone(),
            entries: entries.to_vec(),
        });
    }

    /// Marks the event processed under this rule.
    pub fn mark_processed(&mut self, event_id: &str, outcome: &str) {
        self.writes.push(Write::MarkProcessed {
            event_id: event_id.to_owned(),
            outcome: outcome.to_owned(),
        });
    }

    /// Parks the work for this record: `event` is what the flush reads back, stored
    /// under `event_id`. The latest work replaces an earlier one, unless the earlier one
    /// `decides_afresh` (a repair, a rehydration) and the later one does not. Returns
    /// how many events the parked row will stand for.
    pub async fn park(
        &mut self,
        event: &Value,
        event_id: &str,
        decides_afresh: bool,
        reason: &str,
    ) -> Result<i32, StoreError> {
        let before: Option<i32> = sqlx::query_scalar(
            "SELECT events FROM parked WHERE rule = $1 AND source_record_id = $2",
        )
        .bind(&self.rule)
        .bind(&self.record_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("read parked work"))?;
        self.writes.push(Write::Park {
            record: self.record_id.clone(),
            event: event.clone(),
            event_id: event_id.to_owned(),
            decides_afresh,
            reason: reason.to_owned(),
        });
        Ok(before.unwrap_or(0) + 1)
    }

    /// Removes this record's parked work (a flush took it).
    pub fn unpark(&mut self) {
        self.writes.push(Write::Unpark {
            record: self.record_id.clone(),
        });
    }

    /// Drops the buffered writes (a commit refused them): the caller buffers others.
    pub fn discard_writes(&mut self) {
        self.writes.clear();
    }

    /// Releases the lease inside the commit's transaction, which fails if it is no
    /// longer this holder's (the delete locks the rows until the commit).
    async fn release_lease(
        &self,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), StoreError> {
        let held = sqlx::query(
            "DELETE FROM record_leases WHERE rule = $1 AND source_record_id = ANY($2) AND token = $3 RETURNING 1",
        )
            .bind(&self.rule)
            .bind(&self.lease.records)
            .bind(self.lease.token)
            .fetch_all(&mut **tx)
            .await
            .map_err(q("check the lease"))?;
        if held.len() != self.lease.records.len() {
            return Err(StoreError::LeaseLost {
                rule: self.rule.clone(),
                record: self.lease.records.join(","),
            });
        }
        Ok(())
    }

    /// Applies every buffered write and releases the lease, in one short transaction
    /// that first checks the fencing token. On failure nothing is applied, the writes
    /// stay buffered and the lease stays held (until dropped).
    pub async fn commit(&mut self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        self.release_lease(&mut tx).await?;
        if !self.open_intents.is_empty() {
            // Committed intents this holder never sent: the step ended before them
            // (a refusal), so they did not happen.
            sqlx::query("UPDATE outbound_ops SET status = 'failed' WHERE id = ANY($1)")
                .bind(&self.open_intents)
                .execute(&mut *tx)
                .await
                .map_err(q("close unsent operations"))?;
        }
        apply_all(&mut tx, &self.rule, &self.writes).await?;
        tx.commit().await.map_err(q("commit"))?;
        self.lease.done = true;
        self.writes.clear();
        self.open_intents.clear();
        if let Some(r) = self.lease.renewer.take() {
            r.abort();
        }
        Ok(())
    }
}
