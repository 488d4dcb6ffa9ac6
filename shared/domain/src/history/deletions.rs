//! History entries for deleted records: a target record gone or unlinked, a source
//! record gone, and what the rule's `on_delete` or `on_target_delete` did about it.

use serde_json::{Value, json};

use super::{Entry, Kind, entry, show};

/// Constructors for deleted records, on either side.
impl Entry {
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
