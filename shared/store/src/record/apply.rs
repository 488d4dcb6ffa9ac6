//! The buffered writes of a record's step and how the commit applies them.

use serde_json::Value;
use sqlx::{Postgres, Transaction};

use crate::history::insert_history;
use crate::{EventRef, StoreError, q};
use domain::history::Entry;

/// A write applied at commit.
pub(super) enum Write {
    SaveState {
        record: String,
        target_id: Option<String>,
        matched_by: Option<Value>,
        source_revision: Option<i64>,
        sent: Value,
    },
    SaveAuthority {
        record: String,
        state: Value,
    },
    RecordOp {
        record: String,
        system: String,
        key: String,
        fields: Value,
        vv: Value,
    },
    OpsSent {
        ids: Vec<i64>,
        target_id: Option<String>,
        resolved_by: Option<String>,
    },
    OpsStatus {
        ids: Vec<i64>,
        status: &'static str,
    },
    ResolveConflict {
        record: String,
        id: i64,
    },
    Forget {
        record: String,
    },
    OpenConflict {
        record: String,
        kind: String,
        summary: String,
        detail: Value,
    },
    Append {
        record: String,
        ev: EventRef,
        entries: Vec<Entry>,
    },
    MarkProcessed {
        event_id: String,
        outcome: String,
    },
    Park {
        record: String,
        event: Value,
        event_id: String,
        decides_afresh: bool,
        reason: String,
    },
    Unpark {
        record: String,
    },
}

/// Applies the writes in order, with fewer statements than writes where two can be
/// one: a record's state and its authority state are saved by one upsert, and a
/// step's history, with its operations marked sent, is written by the statement that
/// marks its event processed.
pub(super) async fn apply_all(
    tx: &mut Transaction<'static, Postgres>,
    rule: &str,
    writes: &[Write],
) -> Result<(), StoreError> {
    let mut skip = vec![false; writes.len()];
    // The operations marked sent ride along with the closing statement when nothing
    // else changes an operation's status in this commit (the parts of one statement
    // have no order).
    let closes = (1..writes.len()).any(|i| {
        matches!(writes[i], Write::MarkProcessed { .. })
            && matches!(&writes[i - 1], Write::Append { entries, .. } if !entries.is_empty())
    });
    let sent: Vec<usize> = (0..writes.len())
        .filter(|&i| matches!(writes[i], Write::OpsSent { .. }))
        .collect();
    let statuses = writes.iter().any(|w| matches!(w, Write::OpsStatus { .. }));
    let folded = (closes && sent.len() == 1 && !statuses).then(|| sent[0]);
    if let Some(k) = folded {
        skip[k] = true;
    }
    for (i, w) in writes.iter().enumerate() {
        if skip[i] {
            continue;
        }
        match w {
            Write::SaveState { record, .. } => {
                // The record's last authority state rides along.
                let authority = writes.iter().enumerate().rev().find_map(|(j, a)| match a {
                    Write::SaveAuthority { record: r, state } if r == record => Some((j, state)),
                    _ => None,
                });
                if let Some((j, _)) = authority {
                    for (k, a) in writes.iter().enumerate() {
                        if matches!(a, Write::SaveAuthority { record: r, .. } if r == record) {
                            skip[k] = true;
                        }
                    }
                    skip[j] = true;
                }
                save_state(tx, rule, w, authority.map(|(_, s)| s)).await?;
            }
            Write::MarkProcessed { event_id, outcome } => {
                // The history just before is appended by the same statement.
                match i.checked_sub(1).map(|j| &writes[j]) {
                    Some(Write::Append {
                        record,
                        ev,
                        entries,
                    }) if !entries.is_empty() => {
                        let sent = folded.map(|k| &writes[k]);
                        append_and_mark(tx, rule, record, ev, entries, event_id, outcome, sent)
                            .await?;
                    }
                    _ => apply(tx, rule, w).await?,
                }
            }
            Write::Append { .. }
                if matches!(writes.get(i + 1), Some(Write::MarkProcessed { .. })) =>
            {
                // Written with the next write (above).
            }
            _ => apply(tx, rule, w).await?,
        }
    }
    Ok(())
}

async fn save_state(
    tx: &mut Transaction<'static, Postgres>,
    rule: &str,
    w: &Write,
    authority: Option<&Value>,
) -> Result<(), StoreError> {
    let Write::SaveState {
        record,
        target_id,
        matched_by,
        source_revision,
        sent,
    } = w
    else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO sync_records (rule, source_record_id, target_id, matched_by, source_revision, sent, linked_at, state)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $3::text IS NULL THEN NULL ELSE now() END, $7)
         ON CONFLICT (rule, source_record_id) DO UPDATE SET
            target_id = EXCLUDED.target_id,
            matched_by = COALESCE(EXCLUDED.matched_by, sync_records.matched_by),
            source_revision = GREATEST(EXCLUDED.source_revision, sync_records.source_revision),
            sent = EXCLUDED.sent,
            linked_at = CASE WHEN sync_records.target_id IS DISTINCT FROM EXCLUDED.target_id
                             THEN EXCLUDED.linked_at ELSE sync_records.linked_at END,
            state = CASE WHEN $8 THEN EXCLUDED.state ELSE sync_records.state END,
            updated_at = now()",
    )
    .bind(rule)
    .bind(record)
    .bind(target_id)
    .bind(matched_by)
    .bind(source_revision)
    .bind(sent)
    .bind(authority)
    .bind(authority.is_some())
    .execute(&mut **tx)
    .await
    .map_err(q("save the record's state"))?;
    Ok(())
}

/// A step's history, its operations marked sent (`sent`, an [`Write::OpsSent`]) and
/// its event marked processed, in one statement.
#[allow(clippy::too_many_arguments)]
async fn append_and_mark(
    tx: &mut Transaction<'static, Postgres>,
    rule: &str,
    record: &str,
    ev: &EventRef,
    entries: &[Entry],
    event_id: &str,
    outcome: &str,
    sent: Option<&Write>,
) -> Result<(), StoreError> {
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let summaries: Vec<&str> = entries.iter().map(|e| e.summary.as_str()).collect();
    let details: Vec<&Value> = entries.iter().map(|e| &e.detail).collect();
    let (ids, target_id, resolved_by) = match sent {
        Some(Write::OpsSent {
            ids,
            target_id,
            resolved_by,
        }) => (ids.as_slice(), target_id.as_deref(), resolved_by.as_deref()),
        _ => (&[][..], None, None),
    };
    sqlx::query(
        "WITH story AS (
            INSERT INTO history (rule, source_record_id, event_id, correlation_id, kind, summary, detail)
            SELECT $1, $2, $3, $4, k, s, d FROM UNNEST($5::text[], $6::text[], $7::jsonb[]) WITH ORDINALITY AS e(k, s, d, n)
            ORDER BY n
         ),
         sent AS (
            UPDATE outbound_ops SET status = 'sent', target_id = COALESCE($11, target_id), resolved_by = $12
             WHERE id = ANY($10)
         )
         INSERT INTO processed_events (event_id, rule, outcome) VALUES ($8, $1, $9) ON CONFLICT DO NOTHING",
    )
    .bind(rule)
    .bind(record)
    .bind(&ev.event_id)
    .bind(&ev.correlation_id)
    .bind(kinds)
    .bind(summaries)
    .bind(details)
    .bind(event_id)
    .bind(outcome)
    .bind(ids)
    .bind(target_id)
    .bind(resolved_by)
    .execute(&mut **tx)
    .await
    .map_err(q("append history and mark the event processed"))?;
    Ok(())
}

async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    rule: &str,
    w: &Write,
) -> Result<(), StoreError> {
    match w {
        Write::SaveState { .. } => save_state(tx, rule, w, None).await?,
        Write::SaveAuthority { record, state } => {
            sqlx::query("UPDATE sync_records SET state = $3, updated_at = now() WHERE rule = $1 AND source_record_id = $2")
                .bind(rule)
                .bind(record)
                .bind(state)
                .execute(&mut **tx)
                .await
                .map_err(q("save the record's authority state"))?;
        }
        Write::RecordOp {
            record,
            system,
            key,
            fields,
            vv,
        } => {
            sqlx::query("INSERT INTO outbound_ops (rule, source_record_id, system, idempotency_key, fields, vv) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(rule)
                .bind(record)
                .bind(system)
                .bind(key)
                .bind(fields)
                .bind(vv)
                .execute(&mut **tx)
                .await
                .map_err(q("record an outbound operation"))?;
        }
        Write::OpsSent {
            ids,
            target_id,
            resolved_by,
        } => {
            sqlx::query(
                "UPDATE outbound_ops SET status = 'sent', target_id = COALESCE($2, target_id), resolved_by = $3 WHERE id = ANY($1)",
            )
            .bind(ids)
            .bind(target_id)
            .bind(resolved_by)
            .execute(&mut **tx)
            .await
            .map_err(q("mark operations sent"))?;
        }
        Write::OpsStatus { ids, status } => {
            sqlx::query(
                "UPDATE outbound_ops SET status = $2, confirmed_at = CASE WHEN $2 = 'confirmed' THEN now() ELSE confirmed_at END WHERE id = ANY($1)",
            )
            .bind(ids)
            .bind(status)
            .execute(&mut **tx)
            .await
            .map_err(q("update outbound operations"))?;
        }
        Write::ResolveConflict { record, id } => {
            sqlx::query(
                "UPDATE conflicts SET status = 'resolved', closed_at = now(), updated_at = now()
                  WHERE id = $1 AND rule = $2 AND source_record_id = $3 AND status = 'open'",
            )
            .bind(id)
            .bind(rule)
            .bind(record)
            .execute(&mut **tx)
            .await
            .map_err(q("resolve a conflict"))?;
        }
        Write::Forget { record } => {
            sqlx::query("DELETE FROM sync_records WHERE rule = $1 AND source_record_id = $2")
                .bind(rule)
                .bind(record)
                .execute(&mut **tx)
                .await
                .map_err(q("remove the link"))?;
        }
        Write::OpenConflict {
            record,
            kind,
            summary,
            detail,
        } => {
            sqlx::query(
                "INSERT INTO conflicts (rule, source_record_id, kind, summary, detail) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (rule, source_record_id, kind) WHERE status = 'open' DO UPDATE SET
                    summary = EXCLUDED.summary, detail = EXCLUDED.detail,
                    occurrences = conflicts.occurrences + 1, updated_at = now()",
            )
            .bind(rule)
            .bind(record)
            .bind(kind)
            .bind(summary)
            .bind(detail)
            .execute(&mut **tx)
            .await
            .map_err(q("open a conflict"))?;
        }
        Write::Append {
            record,
            ev,
            entries,
        } => insert_history(tx, rule, record, ev, entries).await?,
        Write::MarkProcessed { event_id, outcome } => {
            sqlx::query("INSERT INTO processed_events (event_id, rule, outcome) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(event_id)
                .bind(rule)
                .bind(outcome)
                .execute(&mut **tx)
                .await
                .map_err(q("mark the event processed"))?;
        }
        Write::Park {
            record,
            event,
            event_id,
            decides_afresh,
            reason,
        } => {
            // One event waits per record: the flush reads the record once, for it. The
            // other is done, and the ledger counts it as coalesced. The later event
            // waits, unless the parked one is a repair or a rehydration and the later
            // one is not: those decide from both systems as they are, which a plain
            // change would not (and they read the record as it is then anyway).
            sqlx::query(
                "WITH prev AS (
                    SELECT p.event_id, p.decides_afresh FROM parked p
                     WHERE p.rule = $1 AND p.source_record_id = $2
                 ), keep AS (
                    SELECT COALESCE(bool_or(prev.decides_afresh AND NOT $6), false) AS old FROM prev
                 ), superseded AS (
                    INSERT INTO processed_events (event_id, rule, outcome)
                    SELECT CASE WHEN keep.old THEN $5 ELSE prev.event_id END, $1, 'coalesced'
                      FROM prev, keep
                     WHERE prev.event_id IS DISTINCT FROM $5
                       AND prev.event_id IS NOT NULL
                    ON CONFLICT DO NOTHING)
                 INSERT INTO parked (rule, source_record_id, event, reason, event_id, decides_afresh)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (rule, source_record_id) DO UPDATE SET
                    event = CASE WHEN (SELECT old FROM keep) THEN parked.event ELSE EXCLUDED.event END,
                    event_id = CASE WHEN (SELECT old FROM keep) THEN parked.event_id ELSE EXCLUDED.event_id END,
                    decides_afresh = CASE WHEN (SELECT old FROM keep) THEN parked.decides_afresh ELSE EXCLUDED.decides_afresh END,
                    reason = EXCLUDED.reason,
                    events = parked.events + 1, parked_at = now()",
            )
            .bind(rule)
            .bind(record)
            .bind(event)
            .bind(reason)
            .bind(event_id)
            .bind(decides_afresh)
            .execute(&mut **tx)
            .await
            .map_err(q("park"))?;
        }
        Write::Unpark { record } => {
            sqlx::query("DELETE FROM parked WHERE rule = $1 AND source_record_id = $2")
                .bind(rule)
                .bind(record)
                .execute(&mut **tx)
                .await
                .map_err(q("take parked work"))?;
        }
    }
    Ok(())
}
