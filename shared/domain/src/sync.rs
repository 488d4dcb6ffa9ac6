//! The decision for one canonical source record under one rule: is it already synced,
//! can it be mapped, what must be written where. The worker performs the I/O around
//! these functions (fetching, searching, writing); the decisions are made here.

use serde_json::Value;

use crate::history::Entry;
use crate::record::{Fields, SourceRecord, value_text};
use crate::rules::RuleSpec;

/// What the store remembers of a source record under a rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriorState {
    /// The linked target record, once linked.
    pub target_id: Option<String>,
    /// The last source revision fully synced.
    pub source_revision: Option<i64>,
    /// The mapped values last written to the target.
    pub sent: Fields,
}

/// The fields a write sent with a value that the written record, as the target
/// answered it, does not hold at all (missing, or null): silently dropped. A value the
/// target changed (trimmed, reformatted) is its own business and is not named.
pub fn dropped_fields(sent: &Fields, answered: &Fields) -> Vec<String> {
    sent.iter()
        .filter(|(_, v)| !crate::record::is_empty(v))
        .filter(|(k, _)| answered.get(*k).is_none_or(Value::is_null))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Whether a canonical revision still needs syncing. `Err` holds the history entry of
/// the skip: the revision was already synced, or is older than one that was.
pub fn check_fresh(prior: &PriorState, source: &SourceRecord) -> Result<(), Entry> {
    match (prior.source_revision, source.revision) {
        (Some(synced), Some(current)) if current <= synced => {
            Err(Entry::stale_skipped(current, synced))
        }
        _ => Ok(()),
    }
}

/// The fields of the webhook payload that disagree with the canonical record, among
/// the fields the rule reads. The payload is a hint; this is only for the history.
pub fn payload_disagreements(rule: &RuleSpec, payload: &Fields, canonical: &Fields) -> Vec<Entry> {
    let mut read: Vec<&str> = rule.fields.iter().map(|f| f.source.as_str()).collect();
    read.push(rule.identity.source_field.as_str());
    read.dedup();
    read.into_iter()
        .filter_map(|field| {
            let p = payload.get(field)?;
            let c = canonical.get(field).unwrap_or(&Value::Null);
            (p != c).then(|| Entry::payload_disagreed(field, p, c))
        })
        .collect()
}

/// The write-back to make, if the rule asks for one and the source does not already
/// hold the target id: `(field, value)`.
pub fn write_back(
    rule: &RuleSpec,
    source: &SourceRecord,
    target_id: &str,
) -> Option<(String, String)> {
    let wb = rule.write_back.as_ref()?;
    let current = source.fields.get(&wb.field).and_then(value_text);
    (current.as_deref() != Some(target_id)).then(|| (wb.field.clone(), target_id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{
        FieldMapping, IdentitySpec, OnDelete, OnMissing, SourceSpec, TargetSpec, WriteBack,
    };
    use serde_json::json;

    fn rule() -> RuleSpec {
        RuleSpec {
            name: "wo".into(),
            source: SourceSpec {
                system: "kintone".into(),
                app: "101".into(),
            },
            target: TargetSpec {
                system: "helpdesk".into(),
                entity: "ticket".into(),
            },
            identity: IdentitySpec {
                source_field: "wo_no".into(),
                target_field: "external_id".into(),
                variants: vec![],
            },
            fields: vec![
                FieldMapping {
                    source: "件名".into(),
                    target: "subject".into(),
                    transforms: vec![],
                    required: true,
                    ..Default::default()
                },
                FieldMapping {
                    source: "status".into(),
                    target: "status".into(),
                    transforms: vec![],
                    required: false,
                    ..Default::default()
                },
            ],
            write_back: Some(WriteBack {
                field: "ticket_id".into(),
            }),
            on_missing: OnMissing::Create,
            on_delete: OnDelete::Ignore,
            deleted_flag: None,
            on_target_delete: Default::default(),
            target_deleted_flag: None,
            direction: Default::default(),
            resync: None,
            reconcile: None,
            on_schema_drift: Default::default(),
        }
    }

    fn f(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    fn src(rev: Option<i64>, v: Value) -> SourceRecord {
        SourceRecord {
            id: "5".into(),
            revision: rev,
            changed_at: None,
            fields: f(v),
        }
    }

    #[test]
    fn freshness_by_revision() {
        let prior = PriorState {
            source_revision: Some(5),
            ..Default::default()
        };
        assert!(check_fresh(&prior, &src(Some(6), json!({}))).is_ok());
        assert!(check_fresh(&prior, &src(Some(5), json!({}))).is_err());
        assert!(check_fresh(&prior, &src(Some(4), json!({}))).is_err());
        assert!(check_fresh(&prior, &src(None, json!({}))).is_ok());
        assert!(check_fresh(&PriorState::default(), &src(Some(1), json!({}))).is_ok());
    }

    #[test]
    fn write_back_only_when_different() {
        let r = rule();
        assert_eq!(
            write_back(&r, &src(Some(1), json!({})), "9"),
            Some(("ticket_id".into(), "9".into()))
        );
        assert_eq!(
            write_back(&r, &src(Some(1), json!({"ticket_id": "8"})), "9"),
            Some(("ticket_id".into(), "9".into()))
        );
        assert_eq!(
            write_back(&r, &src(Some(1), json!({"ticket_id": "9"})), "9"),
            None
        );
        assert_eq!(
            write_back(&r, &src(Some(1), json!({"ticket_id": 9})), "9"),
            None
        );
        let mut r2 = r.clone();
        r2.write_back = None;
        assert_eq!(write_back(&r2, &src(Some(1), json!({})), "9"), None);
    }

    #[test]
    fn payload_lies_are_reported_for_read_fields_only() {
        let payload = f(json!({"件名": "lie", "status": "open", "other": "x"}));
        let canonical = f(json!({"件名": "truth", "status": "open", "other": "y"}));
        let d = payload_disagreements(&rule(), &payload, &canonical);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].detail["field"], "件名");
    }

    #[test]
    fn a_field_sent_with_a_value_and_answered_without_one_was_dropped() {
        let f = |v: serde_json::Value| v.as_object().cloned().expect("object");
        let sent = f(
            serde_json::json!({"subject": "Pump", "priority": "high", "team": "ops", "note": "", "tags": []}),
        );
        let answered =
            f(serde_json::json!({"id": 7, "subject": "pump", "priority": null, "note": null}));
        // Changed (lower-cased) is the target's business; empty values sent say nothing.
        assert_eq!(dropped_fields(&sent, &answered), vec!["priority", "team"]);
        assert!(dropped_fields(&sent, &sent).is_empty());
    }
}
