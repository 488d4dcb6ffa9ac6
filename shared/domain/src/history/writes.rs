//! History entries for writes and why they did not happen: a create, an update (alone
//! or in bulk), nothing changed, the write-back, invalid or unstorable values, a target
//! that refused or dropped fields, a retry, a dead letter, parked work.

use serde_json::{Value, json};

use super::{Entry, Kind, entry, human_ms};
use crate::mapping::MappingProblem;
use crate::record::Fields;

/// Constructors for writes, and for what kept a write from happening.
impl Entry {
    /// A target record was created.
    pub fn created(target: &str, target_id: &str, fields: &Fields) -> Entry {
        entry(
            Kind::Created,
            format!(
                "created {target} record {target_id} with {} fields",
                fields.len()
            ),
            json!({"target_id": target_id, "fields": fields}),
        )
    }

    /// A target record was updated.
    pub fn updated(target: &str, target_id: &str, fields: &Fields) -> Entry {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        entry(
            Kind::Updated,
            format!("updated {target} record {target_id}: {}", names.join(", ")),
            json!({"target_id": target_id, "fields": fields}),
        )
    }

    /// Nothing mapped had changed.
    pub fn no_change(target: &str, target_id: &str) -> Entry {
        entry(
            Kind::NoChange,
            format!(
                "no mapped field changed since the last write to {target} record {target_id}; nothing written"
            ),
            json!({"target_id": target_id}),
        )
    }

    /// The target id was written back.
    pub fn written_back(system: &str, field: &str, value: &str) -> Entry {
        entry(
            Kind::WrittenBack,
            format!("wrote {value} back into {system} field {field}"),
            json!({"field": field, "value": value}),
        )
    }

    /// The write-back waited for the next change.
    pub fn write_back_deferred(system: &str, field: &str) -> Entry {
        entry(
            Kind::WriteBackDeferred,
            format!(
                "did not write back into {system} field {field}: the record changed since it was read; that change's webhook will carry the write-back"
            ),
            json!({"field": field}),
        )
    }

    /// The record cannot be mapped.
    pub fn invalid(problems: &[MappingProblem]) -> Entry {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        entry(
            Kind::ConflictOpened,
            format!(
                "the record cannot be synced: {}; nothing written",
                text.join("; ")
            ),
            json!({"reason": "invalid", "problems": problems}),
        )
    }

    /// PostgreSQL refused values the plan would have recorded: nothing was written
    /// anywhere.
    pub fn unstorable(fields: &[(String, String)]) -> Entry {
        let text: Vec<String> = fields
            .iter()
            .map(|(f, why)| format!("{f}: {why}"))
            .collect();
        let summary = if text.is_empty() {
            "the record cannot be stored (PostgreSQL refused its values); nothing written — a person must fix the data".to_owned()
        } else {
            format!(
                "the record cannot be stored: {}; nothing written — a person must fix the data",
                text.join("; ")
            )
        };
        let named: Vec<Value> = fields
            .iter()
            .map(|(f, why)| json!({"field": f, "reason": why}))
            .collect();
        entry(
            Kind::ConflictOpened,
            summary,
            json!({"reason": "unstorable", "fields": named}),
        )
    }

    /// The source's write-back field already holds another target record's id: it is
    /// not replaced.
    pub fn write_back_clash(system: &str, field: &str, held: &str, ours: &str) -> Entry {
        entry(
            Kind::ConflictOpened,
            format!(
                "{system} field {field} already holds {held}, not {ours}; it was not replaced — a person must decide which record this is"
            ),
            json!({"reason": "write_back_clash", "field": field, "held": held, "ours": ours}),
        )
    }

    /// The target refused a write as invalid.
    pub fn target_rejected(target: &str, status: u16, message: &str) -> Entry {
        entry(
            Kind::ConflictOpened,
            format!(
                "{target} refused the write ({status}: {message}); not retried — a person must fix the data"
            ),
            json!({"reason": "target_rejected", "status": status, "message": message}),
        )
    }

    /// The target answered a write without some of the fields sent: it dropped them
    /// without a word (an envelope, a field name or a permission the config gets
    /// wrong). The write stands; a person must look.
    pub fn target_dropped(target: &str, id: &str, fields: &[String]) -> Entry {
        entry(
            Kind::ConflictOpened,
            format!(
                "{target} record {id} was written, but the answer holds nothing for {}: {target} dropped {} without a word (check the entity's body_pointer, the field names and the API user's permissions)",
                fields.join(", "),
                if fields.len() == 1 { "it" } else { "them" }
            ),
            json!({"reason": "target_dropped", "target_id": id, "fields": fields}),
        )
    }

    /// A target record was updated as part of a bulk call.
    pub fn updated_in_bulk(target: &str, target_id: &str, fields: &Fields, batch: usize) -> Entry {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        entry(
            Kind::Updated,
            format!(
                "updated {target} record {target_id} in a bulk call of {batch}: {}",
                names.join(", ")
            ),
            json!({"target_id": target_id, "fields": fields, "bulk": batch}),
        )
    }

    /// A bulk call's answer did not confirm one record's update; it is written on its
    /// own instead.
    pub fn bulk_unconfirmed(target: &str, target_id: &str, why: &str) -> Entry {
        entry(
            Kind::RetryScheduled,
            format!(
                "the bulk update did not confirm {target} record {target_id} ({why}); writing it on its own"
            ),
            json!({"target_id": target_id, "bulk": "unconfirmed", "reason": why}),
        )
    }

    /// A retryable failure.
    pub fn retry_scheduled(error: &str, attempt: u32, delay_ms: u64) -> Entry {
        entry(
            Kind::RetryScheduled,
            format!(
                "attempt {attempt} failed ({error}); retrying in {}",
                human_ms(delay_ms)
            ),
            json!({"error": error, "attempt": attempt, "delay_ms": delay_ms}),
        )
    }

    /// The event was dead-lettered.
    pub fn dead_lettered(error: &str, attempts: u32) -> Entry {
        entry(
            Kind::DeadLettered,
            format!(
                "gave up after {attempts} attempts ({error}); the event is in the dead-letter queue and can be replayed"
            ),
            json!({"error": error, "attempts": attempts}),
        )
    }

    /// The work was parked.
    pub fn parked(why: &str, coalesced: i32) -> Entry {
        let latest = if coalesced > 1 {
            format!(
                "; {coalesced} changes wait for this record, only the latest state will be written"
            )
        } else {
            String::new()
        };
        entry(
            Kind::Parked,
            format!("parked: {why}{latest}"),
            json!({"why": why, "coalesced": coalesced}),
        )
    }
}
