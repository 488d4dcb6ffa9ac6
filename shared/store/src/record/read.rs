//! What a holder reads about its record, from the pool, one short statement each: the
//! step's memory, the prior state and open operations, and what a refused commit or
//! value was about.

use chrono::{DateTime, Utc};
use domain::record::Fields;
use domain::sync::PriorState;
use serde_json::Value;

use super::RecordTx;
use super::apply::Write;
use crate::{StoreError, q};

/// Counts a delivery of event `$1` under rule `$2` for record `$3` in the ledger
/// (`deliveries`): inserted on first sight, its last sight and count updated after.
macro_rules! seen {
    () => {
        "WITH seen AS (
            INSERT INTO deliveries (event_id, rule, source_record_id) VALUES ($1, $2, $3)
            ON CONFLICT (event_id, rule) DO UPDATE
               SET last_seen_at = now(), deliveries = deliveries.deliveries + 1) "
    };
}

/// A create committed as an intent and never confirmed: it may or may not have
/// happened.
#[derive(Debug, Clone)]
pub struct PendingCreate {
    /// The operation's id.
    pub id: i64,
    /// The idempotency key it was sent with.
    pub key: String,
    /// When it was last sent: the intent's commit, or its latest re-send.
    pub since: DateTime<Utc>,
}

/// An operation sent and not yet confirmed by the system it went to.
#[derive(Debug, Clone, PartialEq)]
pub struct SentOp {
    /// The system it went to.
    pub system: String,
    /// The operation's id.
    pub id: i64,
    /// The canonical fields and values it sent (a JSON object).
    pub fields: Value,
    /// The version vector it carried.
    pub vv: Value,
}

/// What a step starts from, read in one statement ([`RecordTx::memory`]).
#[derive(Debug, Clone)]
pub struct Memory {
    /// The event was already processed under the rule.
    pub processed: bool,
    /// The rule, or one of the systems asked about, is paused.
    pub paused: bool,
    /// The link, the last revision synced, the values last written.
    pub prior: PriorState,
    /// The field-authority state, when there is one.
    pub state: Option<Value>,
    /// Operations sent and not confirmed, oldest first.
    pub sent: Vec<SentOp>,
    /// The newest create still in doubt.
    pub pending_create: Option<PendingCreate>,
}

/// What is known of a record before a step ([`RecordTx::prior`]).
#[derive(Debug, Clone)]
pub struct Prior {
    /// The link, the last revision synced, the values last written.
    pub prior: PriorState,
    /// The field-authority state, when there is one.
    pub state: Option<Value>,
}

/// A record's open operations ([`RecordTx::open_ops`]).
#[derive(Debug, Clone)]
pub struct OpenOps {
    /// Operations sent to the rule's systems and not confirmed, oldest first.
    pub sent: Vec<SentOp>,
    /// The newest create still in doubt, if any.
    pub pending_create: Option<PendingCreate>,
}

/// The link a refused commit met ([`RecordTx::link_taken`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTaken {
    /// The target record the commit would have linked.
    pub target_id: String,
    /// The source record that holds the link to it.
    pub source_record_id: String,
}

/// A value PostgreSQL cannot store ([`RecordTx::unstorable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unstorable {
    /// The field that holds it.
    pub field: String,
    /// PostgreSQL's reason.
    pub reason: String,
}

/// The record's row in `sync_records`, as [`RecordTx::prior`] reads it.
#[derive(sqlx::FromRow)]
struct PriorRow {
    target_id: Option<String>,
    source_revision: Option<i64>,
    /// Always a JSON object (the column defaults to `{}`): anything else is an error.
    #[sqlx(json)]
    sent: Fields,
    state: Option<Value>,
}

/// The one row [`RecordTx::memory`] reads; the link's columns are NULL when the record
/// has none.
#[derive(sqlx::FromRow)]
struct MemoryRow {
    processed: bool,
    paused: bool,
    target_id: Option<String>,
    source_revision: Option<i64>,
    #[sqlx(json(nullable))]
    sent: Option<Fields>,
    state: Option<Value>,
    /// The open operations, aggregated as JSON objects ([`OpenOpRow`]'s fields).
    #[sqlx(json)]
    ops: Vec<OpenOpRow>,
}

/// An open operation (`sent` or `pending`), as a row or as the JSON object the memory
/// aggregates.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct OpenOpRow {
    id: i64,
    system: String,
    fields: Value,
    vv: Value,
    status: String,
    kind: String,
    #[serde(rename = "key")]
    idempotency_key: String,
    created_at: DateTime<Utc>,
}

/// The sent operations and the newest create in doubt among `ops`, oldest first.
fn open_ops(ops: Vec<OpenOpRow>) -> OpenOps {
    let mut sent = vec![];
    let mut pending_create = None;
    for o in ops {
        if o.status == "sent" {
            sent.push(SentOp {
                system: o.system,
                id: o.id,
                fields: o.fields,
                vv: o.vv,
            });
        } else if o.kind == "create" {
            pending_create = Some(PendingCreate {
                id: o.id,
                key: o.idempotency_key,
                since: o.created_at,
            });
        }
    }
    OpenOps {
        sent,
        pending_create,
    }
}

impl RecordTx {
    /// Whether the event was already processed under the rule. The read counts the
    /// delivery for the ledger, as [`RecordTx::memory`] does.
    pub async fn already_processed(&mut self, event_id: &str) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar(concat!(
            seen!(),
            "SELECT 1 FROM processed_events WHERE event_id = $1 AND rule = $2"
        ))
        .bind(event_id)
        .bind(&self.rule)
        .bind(&self.record_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("check processed events"))?;
        Ok(found.is_some())
    }

    /// What is known of the record: its link, the last revision synced, the values
    /// last written, and its field-authority state.
    pub async fn prior(&mut self) -> Result<Prior, StoreError> {
        let row = sqlx::query_as::<_, PriorRow>("SELECT target_id, source_revision, sent, state FROM sync_records WHERE rule = $1 AND source_record_id = $2")
            .bind(&self.rule)
            .bind(&self.record_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("read the record's state"))?;
        let Some(row) = row else {
            return Ok(Prior {
                prior: PriorState::default(),
                state: None,
            });
        };
        Ok(Prior {
            prior: PriorState {
                target_id: row.target_id,
                source_revision: row.source_revision,
                sent: row.sent,
            },
            state: row.state,
        })
    }

    /// Everything a step starts from, in one statement: whether the event was already
    /// processed under the rule, whether the rule or one of `systems` is paused, the
    /// record's link and state, and its open operations (as [`RecordTx::prior`] and
    /// [`RecordTx::open_ops`] would read them).
    pub async fn memory(&mut self, event_id: &str, systems: &[&str]) -> Result<Memory, StoreError> {
        let systems: Vec<String> = systems.iter().map(|s| (*s).to_owned()).collect();
        let row = sqlx::query_as::<_, MemoryRow>(concat!(
            seen!(),
            "SELECT
                EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1 AND rule = $2) AS processed,
                EXISTS (SELECT 1 FROM paused WHERE (scope = 'rule' AND name = $2) OR (scope = 'system' AND name = ANY($4))) AS paused,
                s.target_id, s.source_revision, s.sent, s.state,
                COALESCE((SELECT json_agg(json_build_object(
                        'id', o.id, 'system', o.system, 'fields', o.fields, 'vv', o.vv,
                        'status', o.status, 'kind', o.kind, 'key', o.idempotency_key,
                        'created_at', COALESCE(o.resent_at, o.created_at)) ORDER BY o.id)
                    FROM outbound_ops o
                   WHERE o.rule = $2 AND o.source_record_id = $3 AND o.status IN ('sent', 'pending')),
                  '[]'::json) AS ops
             FROM (SELECT 1) AS one
             LEFT JOIN sync_records s ON s.rule = $2 AND s.source_record_id = $3"
        ))
        .bind(event_id)
        .bind(&self.rule)
        .bind(&self.record_id)
        .bind(systems)
        .fetch_one(&self.pool)
        .await
        .map_err(q("read the record's memory"))?;
        let ops = open_ops(row.ops);
        Ok(Memory {
            processed: row.processed,
            paused: row.paused,
            prior: PriorState {
                target_id: row.target_id,
                source_revision: row.source_revision,
                // NULL only where the LEFT JOIN found no link (the column is NOT NULL):
                // nothing was written yet.
                sent: row.sent.unwrap_or_else(Fields::new),
            },
            state: row.state,
            sent: ops.sent,
            pending_create: ops.pending_create,
        })
    }

    /// The operations sent to the rule's systems for this record and not yet
    /// confirmed, oldest first; and the newest create still in doubt, if any.
    pub async fn open_ops(&mut self) -> Result<OpenOps, StoreError> {
        let rows = sqlx::query_as::<_, OpenOpRow>(
            "SELECT id, system, fields, vv, status, kind, idempotency_key, COALESCE(resent_at, created_at) AS created_at FROM outbound_ops
              WHERE rule = $1 AND source_record_id = $2 AND status IN ('sent', 'pending') ORDER BY id",
        )
        .bind(&self.rule)
        .bind(&self.record_id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read outbound operations"))?;
        Ok(open_ops(rows))
    }

    /// Whether the rule, or one of its systems, is paused.
    pub async fn is_paused(&mut self, systems: &[&str]) -> Result<bool, StoreError> {
        let systems: Vec<String> = systems.iter().map(|s| (*s).to_owned()).collect();
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM paused WHERE (scope = 'rule' AND name = $1) OR (scope = 'system' AND name = ANY($2)))",
        )
        .bind(&self.rule)
        .bind(systems)
        .fetch_one(&self.pool)
        .await
        .map_err(q("check whether paused"))
    }

    /// Which of `fields` PostgreSQL cannot store, with its reason: asked after a data
    /// error, to name the field.
    pub async fn unstorable(&self, fields: &Fields) -> Result<Vec<Unstorable>, StoreError> {
        let mut bad = vec![];
        for (name, value) in fields {
            if let Err(e) = sqlx::query("SELECT $1::jsonb")
                .bind(value)
                .execute(&self.pool)
                .await
            {
                let e = StoreError::Query {
                    op: "check a value",
                    source: e,
                };
                if e.kind() != crate::StoreErrorKind::Data {
                    return Err(e);
                }
                bad.push(Unstorable {
                    field: name.clone(),
                    reason: e.reason(),
                });
            }
        }
        Ok(bad)
    }

    /// When the commit was refused because the link it saves is another record's (the
    /// index allowing one source record per target, met by a race): the target record
    /// and the source record that holds it.
    pub async fn link_taken(&self, refused: &StoreError) -> Result<Option<LinkTaken>, StoreError> {
        if refused.constraint() != Some(crate::ONE_SOURCE_PER_TARGET) {
            return Ok(None);
        }
        let Some(target_id) = self.writes.iter().rev().find_map(|w| match w {
            Write::SaveState { target_id, .. } => target_id.clone(),
            _ => None,
        }) else {
            return Ok(None);
        };
        let other: Option<String> = sqlx::query_scalar(
            "SELECT source_record_id FROM sync_records WHERE rule = $1 AND target_id = $2",
        )
        .bind(&self.rule)
        .bind(&target_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("find the linked record"))?;
        Ok(other.map(|source_record_id| LinkTaken {
            target_id,
            source_record_id,
        }))
    }
}
