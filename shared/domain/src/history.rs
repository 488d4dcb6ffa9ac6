//! The append-only history: every webhook, fetch, match, decision, conflict, write and
//! retry, each with a plain-language summary written when it happens. Timelines are
//! rendered from these entries, never from logs.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::identity::MatchStep;
use crate::mapping::MappingProblem;
use crate::record::Fields;

/// What kind of step an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A webhook was taken from the queue for a rule.
    WebhookReceived,
    /// A delivery of an event already processed was skipped.
    DuplicateSkipped,
    /// The canonical record was read from the source.
    Fetched,
    /// The webhook payload disagreed with the canonical record; the canonical won.
    PayloadDisagreed,
    /// The source revision was already synced (or older): nothing to do.
    StaleSkipped,
    /// Identity resolution linked a target record.
    Matched,
    /// A target record was created.
    Created,
    /// A target record was updated.
    Updated,
    /// The mapped fields had not changed since the last write.
    NoChange,
    /// The target id was written back into the source record.
    WrittenBack,
    /// The write-back waited: the source record changed since it was read.
    WriteBackDeferred,
    /// Nothing matched and the rule says to skip.
    Skipped,
    /// A data-quality conflict was opened.
    ConflictOpened,
    /// A retryable failure; the event will be tried again later.
    RetryScheduled,
    /// The event was dead-lettered.
    DeadLettered,
    /// The source record no longer exists.
    SourceDeleted,
    /// The work waits: the rule or a system is paused, or the target's write window
    /// is closed.
    Parked,
    /// What an observation was, when nothing changed.
    Classified,
    /// The verdict on one changed field.
    Decided,
    /// A person resolved a conflict.
    Resolved,
    /// A create whose outcome was in doubt was resolved before anything was created.
    InDoubtResolved,
    /// A person linked a record outside a conflict's candidates, with a reason.
    OverrideChosen,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WebhookReceived => "webhook_received",
            Kind::DuplicateSkipped => "duplicate_skipped",
            Kind::Fetched => "fetched",
            Kind::PayloadDisagreed => "payload_disagreed",
            Kind::StaleSkipped => "stale_skipped",
            Kind::Matched => "matched",
            Kind::Created => "created",
            Kind::Updated => "updated",
            Kind::NoChange => "no_change",
            Kind::WrittenBack => "written_back",
            Kind::WriteBackDeferred => "write_back_deferred",
            Kind::Skipped => "skipped",
            Kind::ConflictOpened => "conflict_opened",
            Kind::RetryScheduled => "retry_scheduled",
            Kind::DeadLettered => "dead_lettered",
            Kind::SourceDeleted => "source_deleted",
            Kind::Parked => "parked",
            Kind::Classified => "classified",
            Kind::Decided => "decided",
            Kind::Resolved => "resolved",
            Kind::InDoubtResolved => "in_doubt_resolved",
            Kind::OverrideChosen => "override_chosen",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One history entry, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The kind of step.
    pub kind: Kind,
    /// One plain-language line an operator can read.
    pub summary: String,
    /// The facts behind the summary, for tools.
    pub detail: Value,
}

fn entry(kind: Kind, summary: String, detail: Value) -> Entry {
    Entry {
        kind,
        summary,
        detail,
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Null => "nothing".to_owned(),
        other => other.to_string(),
    }
}

/// Constructors, one per kind, so that every summary reads the same way.
impl Entry {
    /// A webhook of `event_type` from `system` was taken for this rule.
    pub fn webhook_received(system: &str, event_type: &str, event_id: &str, attempt: u32) -> Entry {
        let again = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        // Commands that are not webhooks say what they are.
        let what = match (system, event_type) {
            ("operator", "resolution") => "an operator's resolution received".to_owned(),
            (_, "recordsync.rehydrate") => format!("rehydration of this {system} record asked"),
            (_, "resync") => format!("a resync found this {system} record changed"),
            (_, "repair") => format!("a reconcile asked to repair this {system} record"),
            _ => format!("{system} webhook {event_type} received"),
        };
        entry(
            Kind::WebhookReceived,
            format!("{what}{again}"),
            json!({"system": system, "event_type": event_type, "event_id": event_id, "attempt": attempt}),
        )
    }

    /// A repair command from a reconcile run, with what the run found.
    pub fn repair_asked(system: &str, reason: &str, event_id: &str, attempt: u32) -> Entry {
        let mut e = Entry::webhook_received(system, "repair", event_id, attempt);
        e.summary = format!("{}: {reason}", e.summary);
        e.detail["reason"] = json!(reason);
        e
    }

    /// A row of a partner file, imported as the record of a `file` source.
    pub fn imported(system: &str, file: &str, line: u64, event_id: &str, attempt: u32) -> Entry {
        let mut e = Entry::webhook_received(system, "import", event_id, attempt);
        e.summary = format!(
            "imported from {system}'s file {file}, line {line}{}",
            if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            }
        );
        e.detail["file"] = json!(file);
        e.detail["line"] = json!(line);
        e
    }

    /// A delivery of an already processed event.
    pub fn duplicate_skipped(event_id: &str) -> Entry {
        entry(
            Kind::DuplicateSkipped,
            format!("event {event_id} was already processed; this delivery was skipped"),
            json!({"event_id": event_id}),
        )
    }

    /// The canonical record was fetched.
    pub fn fetched(system: &str, revision: Option<i64>) -> Entry {
        let rev = revision
            .map(|r| format!(" at revision {r}"))
            .unwrap_or_default();
        entry(
            Kind::Fetched,
            format!("fetched the record from {system}{rev}"),
            json!({"system": system, "revision": revision}),
        )
    }

    /// The payload said one thing, the source another.
    pub fn payload_disagreed(field: &str, payload: &Value, canonical: &Value) -> Entry {
        entry(
            Kind::PayloadDisagreed,
            format!(
                "webhook payload carried {} for {field}, the source says {} — kept the source's value",
                show(payload),
                show(canonical)
            ),
            json!({"field": field, "payload": payload, "canonical": canonical}),
        )
    }

    /// Revision `current` was already synced at `synced`.
    pub fn stale_skipped(current: i64, synced: i64) -> Entry {
        let why = if current == synced {
            format!("revision {current} was already synced")
        } else {
            format!("revision {current} is older than revision {synced}, which was already synced")
        };
        entry(
            Kind::StaleSkipped,
            format!("{why}; nothing written"),
            json!({"revision": current, "synced_revision": synced}),
        )
    }

    /// A target record was linked.
    pub fn matched(target: &str, target_id: &str, step: &MatchStep, value: Option<&str>) -> Entry {
        let by = match value {
            Some(v) => format!("{step} \"{v}\""),
            None => step.to_string(),
        };
        entry(
            Kind::Matched,
            format!("matched {target} record {target_id} by {by}"),
            json!({"target_id": target_id, "match": step, "value": value}),
        )
    }

    /// Nothing in the target matched any of the values searched (the lookup value and
    /// its variants, in order).
    pub fn nothing_matched(target: &str, field: &str, values: &[String]) -> Entry {
        let searched: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
        entry(
            Kind::Matched,
            format!(
                "no {target} record matched: searched {field} for {}",
                searched.join(", then ")
            ),
            json!({"field": field, "searched": values}),
        )
    }

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

    /// Nothing matched and the rule skips.
    pub fn skipped_no_match(value: &str) -> Entry {
        entry(
            Kind::Skipped,
            format!(
                "no target record matches \"{value}\" and the rule does not create one; nothing written"
            ),
            json!({"value": value}),
        )
    }

    /// Several candidates matched.
    pub fn ambiguous(step: &MatchStep, value: &str, candidates: &[String]) -> Entry {
        entry(
            Kind::ConflictOpened,
            format!(
                "{} target records match {step} \"{value}\" ({}); nothing written — a person must choose",
                candidates.len(),
                candidates.join(", ")
            ),
            json!({"reason": "several_matches", "match": step, "value": value, "candidates": candidates}),
        )
    }

    /// The target record found is already linked to another source record: linking
    /// it again would make two records overwrite each other.
    pub fn already_linked(target: &str, target_id: &str, other: &str, how: &str) -> Entry {
        entry(
            Kind::ConflictOpened,
            format!(
                "{target} record {target_id} ({how}) is already linked to source record {other}; two source records are never linked to one target record, so nothing was written — a person must choose"
            ),
            json!({"reason": "already_linked", "target_id": target_id, "linked_to": other, "found_by": how}),
        )
    }

    /// Nothing matched and the rule asks a person.
    pub fn no_match_conflict(value: &str) -> Entry {
        entry(
            Kind::ConflictOpened,
            format!("no target record matches \"{value}\"; the rule asks a person to decide"),
            json!({"reason": "no_match", "value": value}),
        )
    }

    /// The lookup field is empty.
    pub fn no_lookup_value(field: &str) -> Entry {
        entry(
            Kind::ConflictOpened,
            format!(
                "the lookup field {field} is empty, so the record cannot be matched; nothing written"
            ),
            json!({"reason": "no_lookup_value", "field": field}),
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

    /// A create whose outcome was in doubt (sent, never confirmed) was found to have
    /// happened: `how` is `write-back field`, `search` or `the target's record of the
    /// key`.
    pub fn in_doubt_found(target: &str, target_id: &str, key: &str, how: &str) -> Entry {
        entry(
            Kind::InDoubtResolved,
            format!(
                "an earlier create of this record was in doubt; found it as {target} record {target_id} by {how}, so nothing was created again"
            ),
            json!({"target_id": target_id, "idempotency_key": key, "resolved_by": how, "created_again": false}),
        )
    }

    /// A create whose outcome was in doubt left no trace after `waited_ms`: it is made
    /// again, with the same idempotency key.
    pub fn in_doubt_not_found(target: &str, key: &str, waited_ms: i64) -> Entry {
        entry(
            Kind::InDoubtResolved,
            format!(
                "an earlier create of this record was in doubt; after {} neither the write-back field nor a search of {target} shows it, so it is created again with the same idempotency key",
                human_ms(waited_ms.max(0) as u64)
            ),
            json!({"idempotency_key": key, "resolved_by": "no trace", "created_again": true, "waited_ms": waited_ms}),
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

    /// A person chose a target record outside a conflict's candidates, by override:
    /// recorded before the resolution is applied, with their reason.
    pub fn override_chosen(
        actor: &str,
        system: &str,
        target_id: &str,
        candidates: &[String],
        reason: &str,
    ) -> Entry {
        entry(
            Kind::OverrideChosen,
            format!(
                "{actor} chose {system} record {target_id}, which is not among the candidates ({}), by override: {reason}",
                candidates.join(", ")
            ),
            json!({
                "override": true,
                "by": actor,
                "target_id": target_id,
                "candidates": candidates,
                "reason": reason,
            }),
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

    /// What an observation of a system turned out to be, when nothing changes.
    pub fn classified(
        system: &str,
        class: crate::authority::Classification,
        revision: Option<i64>,
    ) -> Entry {
        use crate::authority::Classification as C;
        let rev = revision
            .map(|r| format!(" revision {r}"))
            .unwrap_or_default();
        let summary = match class {
            C::Duplicate => format!("{system}{rev} was already seen (duplicate); nothing to do"),
            C::Stale => {
                format!("{system}{rev} is older than what was already seen (stale); nothing to do")
            }
            C::Confirmation => {
                format!("{system}{rev} is our own write coming back (confirmation); nothing to do")
            }
            C::NoChange => format!("{system}{rev} changed no mapped field; nothing to do"),
            C::NewChange => format!("{system}{rev} carried a new change"),
            C::Concurrent => {
                format!("{system}{rev} carried a change made without seeing the latest one")
            }
        };
        entry(
            Kind::Classified,
            summary,
            json!({"system": system, "class": class.as_str(), "revision": revision}),
        )
    }

    /// The verdict on one field a system changed, in the words of the seed's timeline.
    pub fn field_outcome(
        system: &str,
        o: &crate::authority::FieldOutcome,
        others: &[&str],
    ) -> Entry {
        use crate::authority::Verdict as V;
        use crate::versions::Relation;
        let carried = format!("{system} carried {} for {}", show(&o.incoming), o.field);
        let relation = match (&o.relation, &o.last_change) {
            (Relation::Concurrent, Some(fv)) => {
                format!(" — concurrent with {}'s change {}", fv.by, fv.vv)
            }
            _ => String::new(),
        };
        let why = format!(
            "{} is owned by {}, {}",
            o.field,
            o.owner,
            o.strategy.as_str()
        );
        let to = if others.is_empty() {
            String::new()
        } else {
            format!("; written to {}", others.join(", "))
        };
        let summary = match &o.verdict {
            V::Accepted => format!("{carried} — accepted ({why}){to}"),
            V::Refused { .. } => format!(
                "{carried}{relation} — refused, kept {} ({why}) — correction queued",
                show(&o.after)
            ),
            V::Invalid { reason } => format!(
                "{carried} — refused: {reason}; kept {} — correction queued",
                show(&o.after)
            ),
            V::ConcurrentWon => {
                format!("{carried}{relation} — accepted as the latest valid change ({why}){to}")
            }
            V::ConcurrentLost => format!(
                "{carried}{relation} — kept {}, the later change ({why}) — correction queued",
                show(&o.after)
            ),
            V::Merged => format!(
                "{carried}{relation} — merged into {} ({why}){to}",
                show(&o.after)
            ),
            V::ManualReview => format!(
                "{carried}{relation} — kept {} until a person decides ({why}); conflict opened",
                show(&o.after)
            ),
        };
        entry(
            Kind::Decided,
            summary,
            serde_json::to_value(o).unwrap_or_default(),
        )
    }

    /// A conflict was resolved by a person.
    pub fn resolved(field: &str, value: &Value, by: &str) -> Entry {
        entry(
            Kind::Resolved,
            format!(
                "{by} resolved {field}: {} — written to every system",
                show(value)
            ),
            json!({"field": field, "value": value, "by": by}),
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

    /// A target record no source record is linked to.
    pub fn unlinked(system: &str, id: &str) -> Entry {
        entry(
            Kind::Skipped,
            format!(
                "{system} record {id} is linked to no source record under this rule; nothing to do"
            ),
            json!({"system": system, "id": id}),
        )
    }

    /// The target record is gone.
    pub fn target_deleted_unlinked(system: &str, id: &str) -> Entry {
        entry(
            Kind::SourceDeleted,
            format!(
                "{system} record {id} no longer exists; the link was removed, so the next change matches afresh"
            ),
            json!({"system": system, "id": id, "unlinked": true}),
        )
    }

    /// A linked target record is gone and the rule asks a person what to do.
    pub fn target_deleted_for_review(system: &str, id: &str) -> Entry {
        entry(
            Kind::ConflictOpened,
            format!(
                "{system} record {id} no longer exists; the link was kept — the rule asks a person to decide"
            ),
            json!({"reason": "target_deleted", "system": system, "id": id, "unlinked": false}),
        )
    }

    /// A linked target record is gone and the source record already holds the rule's
    /// flag (`on_target_delete: flag`): nothing is written again.
    pub fn target_deleted_already_flagged(system: &str, id: &str, source: &str) -> Entry {
        entry(
            Kind::SourceDeleted,
            format!(
                "{system} record {id} no longer exists; the {source} record is flagged already, so nothing was written"
            ),
            json!({"system": system, "id": id, "unlinked": false, "flagged": "before"}),
        )
    }

    /// A linked target record is gone; the link is kept (`on_target_delete: ignore`).
    pub fn target_deleted(system: &str, id: &str) -> Entry {
        entry(
            Kind::SourceDeleted,
            format!("{system} record {id} no longer exists; the link was kept"),
            json!({"system": system, "id": id}),
        )
    }

    /// The source record is gone and the rule asks a person what becomes of the
    /// target record.
    pub fn source_deleted_for_review(system: &str, target: Option<&str>) -> Entry {
        let kept = match target {
            Some(id) => format!("target record {id} and its link were kept"),
            None => "nothing was linked".to_owned(),
        };
        entry(
            Kind::SourceDeleted,
            format!(
                "the record no longer exists in {system}; {kept} — the rule asks a person to decide"
            ),
            json!({"system": system, "unlinked": false, "review": true, "target_id": target}),
        )
    }

    /// The source record is gone, and so is now its target record (`on_delete:
    /// delete_target`); the link is forgotten.
    pub fn source_deleted_target_deleted(
        system: &str,
        target: &str,
        id: &str,
        existed: bool,
    ) -> Entry {
        let what = if existed {
            format!("{target} record {id} was deleted too")
        } else {
            format!("{target} record {id} was already gone")
        };
        entry(
            Kind::SourceDeleted,
            format!("the record no longer exists in {system}; {what}, and the link was removed"),
            json!({"system": system, "unlinked": true, "target_deleted": id, "existed": existed}),
        )
    }

    /// The source record is gone; its target record is kept, flagged (`on_delete:
    /// flag`).
    pub fn source_deleted_flagged(
        system: &str,
        target: &str,
        id: &str,
        field: &str,
        value: &Value,
    ) -> Entry {
        entry(
            Kind::SourceDeleted,
            format!(
                "the record no longer exists in {system}; {target} record {id} was kept, with {field} set to {}",
                show(value)
            ),
            json!({"system": system, "unlinked": false, "flagged": {"field": field, "value": value}, "target_id": id}),
        )
    }

    /// The source record is gone.
    pub fn source_deleted(system: &str, unlinked: bool) -> Entry {
        let what = if unlinked {
            "the link was removed"
        } else {
            "the target record was kept"
        };
        entry(
            Kind::SourceDeleted,
            format!("the record no longer exists in {system}; {what}"),
            json!({"system": system, "unlinked": unlinked}),
        )
    }
}

/// Milliseconds as a short human duration: `250 ms`, `4 s`, `2 min`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} min", ms / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_as_sentences() {
        let e = Entry::matched(
            "helpdesk",
            "17",
            &MatchStep::Variant {
                index: 0,
                description: "without prefix \"WO-\"".into(),
            },
            Some("1234"),
        );
        assert_eq!(
            e.summary,
            "matched helpdesk record 17 by variant 1 (without prefix \"WO-\") \"1234\""
        );
        assert_eq!(e.kind.as_str(), "matched");
        let e = Entry::ambiguous(&MatchStep::Lookup, "55", &["3".into(), "8".into()]);
        assert_eq!(
            e.summary,
            "2 target records match lookup value \"55\" (3, 8); nothing written — a person must choose"
        );
        let e = Entry::payload_disagreed("件名", &json!("lie"), &json!("truth"));
        assert_eq!(
            e.summary,
            "webhook payload carried \"lie\" for 件名, the source says \"truth\" — kept the source's value"
        );
        assert_eq!(
            Entry::stale_skipped(3, 5).summary,
            "revision 3 is older than revision 5, which was already synced; nothing written"
        );
        assert_eq!(
            Entry::stale_skipped(5, 5).summary,
            "revision 5 was already synced; nothing written"
        );
        assert_eq!(
            Entry::retry_scheduled("helpdesk answered 503", 2, 4000).summary,
            "attempt 2 failed (helpdesk answered 503); retrying in 4 s"
        );
        let e = Entry::already_linked("helpdesk", "17", "kt-2", "matched by lookup value");
        assert_eq!(
            e.summary,
            "helpdesk record 17 (matched by lookup value) is already linked to source record kt-2; two source records are never linked to one target record, so nothing was written — a person must choose"
        );
        assert_eq!(e.detail["reason"], "already_linked");
        assert_eq!(e.detail["linked_to"], "kt-2");
        assert_eq!(
            Entry::webhook_received("kintone", "resync", "resync:r:1:3", 2).summary,
            "a resync found this kintone record changed (attempt 2)"
        );
        assert_eq!(
            Entry::webhook_received("operator", "resolution", "res-1", 1).summary,
            "an operator's resolution received"
        );
        assert_eq!(
            Entry::webhook_received("kintone", "UPDATE_RECORD", "e1", 1).summary,
            "kintone webhook UPDATE_RECORD received"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(human_ms(250), "250 ms");
        assert_eq!(human_ms(999), "999 ms");
        assert_eq!(human_ms(1_000), "1 s");
        assert_eq!(human_ms(4_000), "4 s");
        assert_eq!(human_ms(119_999), "119 s");
        assert_eq!(human_ms(120_000), "2 min");
        assert_eq!(human_ms(180_000), "3 min");
    }

    #[test]
    fn commands_that_are_not_webhooks_say_what_they_are() {
        assert_eq!(
            Entry::webhook_received("kintone", "recordsync.rehydrate", "r-1", 1).summary,
            "rehydration of this kintone record asked"
        );
        assert_eq!(
            Entry::repair_asked("helpdesk", "subject differs", "rep-1", 1).summary,
            "a reconcile asked to repair this helpdesk record: subject differs"
        );
        assert_eq!(Kind::WebhookReceived.to_string(), "webhook_received");
        assert_eq!(Kind::Parked.to_string(), Kind::Parked.as_str());
    }

    #[test]
    fn parked_work_says_when_changes_were_coalesced() {
        assert_eq!(
            Entry::parked("rule paused", 1).summary,
            "parked: rule paused"
        );
        assert_eq!(
            Entry::parked("rule paused", 0).summary,
            "parked: rule paused"
        );
        assert_eq!(
            Entry::parked("rule paused", 3).summary,
            "parked: rule paused; 3 changes wait for this record, only the latest state will be written"
        );
    }
}

/// A time zone for rendering times to people: an IANA name (`Asia/Tokyo`), `UTC` by
/// default.
pub fn time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.trim().parse::<chrono_tz::Tz>().map_err(|_| {
        format!("{name:?} is not an IANA time zone (e.g. UTC, Asia/Tokyo, Europe/Berlin)")
    })
}

/// `at` as a person reads it in `tz`, to the second, with the zone's offset at that
/// moment: `2026-11-30T21:31:45+09:00`, or `…Z` in UTC.
pub fn local_time(at: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    at.with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod time_tests {
    use super::*;

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn times_render_in_the_zone_with_its_offset_at_that_moment() {
        let tokyo = time_zone("Asia/Tokyo").unwrap();
        assert_eq!(
            local_time(at("2026-11-30T12:31:45.987Z"), tokyo),
            "2026-11-30T21:31:45+09:00"
        );
        let utc = time_zone("UTC").unwrap();
        assert_eq!(
            local_time(at("2026-11-30T12:31:45Z"), utc),
            "2026-11-30T12:31:45Z"
        );
        // Berlin's offset follows daylight saving time: +01:00 in winter, +02:00 in summer.
        let berlin = time_zone(" Europe/Berlin ").unwrap();
        assert_eq!(
            local_time(at("2026-01-15T12:00:00Z"), berlin),
            "2026-01-15T13:00:00+01:00"
        );
        assert_eq!(
            local_time(at("2026-07-15T12:00:00Z"), berlin),
            "2026-07-15T14:00:00+02:00"
        );
        // Crossing midnight changes the date.
        assert_eq!(
            local_time(at("2026-11-30T15:00:00Z"), tokyo),
            "2026-12-01T00:00:00+09:00"
        );
    }

    #[test]
    fn an_unknown_zone_is_named() {
        let e = time_zone("Mars/Olympus").unwrap_err();
        assert!(
            e.contains("\"Mars/Olympus\" is not an IANA time zone"),
            "{e}"
        );
        assert!(time_zone("").is_err());
    }
}
