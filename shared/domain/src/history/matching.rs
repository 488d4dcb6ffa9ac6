//! History entries for identity resolution: a target record linked, nothing matched,
//! several candidates, a target already linked elsewhere, an in-doubt create found or
//! not, and a person's override.

use serde_json::json;

use super::{Entry, Kind, entry, human_ms};
use crate::identity::MatchStep;

/// Constructors for identity resolution and its outcomes.
impl Entry {
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
}
