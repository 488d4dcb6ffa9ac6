//! The queue message: versioned and tagged, so that a fleet running two versions
//! during a deploy can tell what it reads. It is its own type: neither a domain type
//! nor a database row.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every message on the work queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum QueueMessage {
    /// Version 1: a change announced by a system. Operators' resolutions and
    /// rehydrations also rode as version 1, told apart by their `event_type`; such
    /// messages, still queued from before version 2, decode as their command
    /// ([`QueueMessage::command`]).
    #[serde(rename = "1")]
    V1(EventV1),
    /// Version 2: a command, one variant per kind of work.
    #[serde(rename = "2")]
    V2(CommandV2),
}

/// The `event_type` a version-1 resolution carried.
pub const V1_RESOLVE: &str = "recordsync.resolve";
/// The `event_type` a version-1 rehydration carried.
pub const V1_REHYDRATE: &str = "recordsync.rehydrate";

/// A command: what the worker's step is asked to do, with the id that makes its
/// repeated deliveries recognisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandV2 {
    /// The command's id: a webhook's own id for a change, a fresh one otherwise. The
    /// step processes it at most once per rule.
    pub id: String,
    /// Carried through logs and every later hop.
    pub correlation_id: String,
    /// When it was issued (ingest's acceptance for a change).
    pub issued_at: DateTime<Utc>,
    /// What to do.
    pub command: Command,
}

/// One variant per kind of work. Every one goes through the same step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// A change announced by a system's webhook: every rule that reads or writes the
    /// system's app decides the record again.
    Change {
        /// The system that sent it.
        system: String,
        /// The app or entity it concerns.
        app: String,
        /// The record it concerns, in that system.
        record_id: String,
        /// The system's event type, e.g. `UPDATE_RECORD`.
        event_type: String,
        /// The payload as received, for audit; a hint, never the truth.
        payload: Value,
    },
    /// A source record found changed by a resync (modified since a cursor).
    Resync {
        /// The rule.
        rule: String,
        /// The source record.
        record_id: String,
        /// The revision the listing showed, when it shows one.
        revision: Option<i64>,
    },
    /// A repair of drift found by a reconcile.
    Repair {
        /// The rule.
        rule: String,
        /// The source record.
        record_id: String,
        /// What the reconcile found, in words.
        reason: String,
    },
    /// A person's resolution of a conflict.
    Resolve {
        /// The rule.
        rule: String,
        /// The source record.
        record_id: String,
        /// The conflict resolved.
        conflict_id: i64,
        /// Who resolved it (an admin token's name).
        by: String,
        /// What they chose.
        resolution: Resolution,
    },
    /// Refetch everything and resync in full, as if nothing had been synced before
    /// (the link is kept).
    Rehydrate {
        /// The rule.
        rule: String,
        /// The source record.
        record_id: String,
    },
    /// One row of a partner file, already checked: the record as the rule's `file`
    /// source holds it (the row is the canonical record, since the source has no API).
    Import {
        /// The rule.
        rule: String,
        /// The record: the row's lookup value.
        record_id: String,
        /// The file's name, for the history.
        file: String,
        /// The row's line in the file.
        line: u64,
        /// The row's values, by source field code.
        row: serde_json::Map<String, Value>,
    },
}

/// What a person chose to resolve a conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "choice", rename_all = "snake_case")]
pub enum Resolution {
    /// Link this target record (an identity conflict).
    Link {
        /// The target record.
        target_id: String,
    },
    /// Give the field this value everywhere (a manual-review conflict).
    Value {
        /// The canonical field.
        field: String,
        /// Its value.
        value: Value,
    },
}

impl Command {
    /// The record the command concerns (in the announcing system, for a change).
    pub fn record_id(&self) -> &str {
        match self {
            Command::Change { record_id, .. }
            | Command::Resync { record_id, .. }
            | Command::Repair { record_id, .. }
            | Command::Resolve { record_id, .. }
            | Command::Rehydrate { record_id, .. }
            | Command::Import { record_id, .. } => record_id,
        }
    }

    /// The rule a command names, when it names one (a change concerns every rule of
    /// its app).
    pub fn rule(&self) -> Option<&str> {
        match self {
            Command::Change { .. } => None,
            Command::Resync { rule, .. }
            | Command::Repair { rule, .. }
            | Command::Resolve { rule, .. }
            | Command::Rehydrate { rule, .. }
            | Command::Import { rule, .. } => Some(rule),
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Change { .. } => "change",
            Command::Resync { .. } => "resync",
            Command::Repair { .. } => "repair",
            Command::Resolve { .. } => "resolve",
            Command::Rehydrate { .. } => "rehydrate",
            Command::Import { .. } => "import",
        }
    }
}

/// A change announced by a system's webhook (or found by a resync).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventV1 {
    /// The event id: the webhook's own id (`webhook-id`, kintone's `id`), so that
    /// repeated deliveries of one webhook share it.
    pub event_id: String,
    /// The system that sent it.
    pub system: String,
    /// The app or entity it concerns.
    pub app: String,
    /// The record it concerns, when the webhook names one.
    pub record_id: String,
    /// The system's event type, e.g. `UPDATE_RECORD`.
    pub event_type: String,
    /// When ingest accepted it.
    pub received_at: DateTime<Utc>,
    /// Carried through logs and every later hop.
    pub correlation_id: String,
    /// The payload as received, kept for audit. It is a hint, never the truth.
    pub payload: Value,
}

/// A message that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("undecodable message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl QueueMessage {
    /// The message as JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a queue message serializes")
    }

    /// Reads a message.
    pub fn decode(bytes: &[u8]) -> Result<QueueMessage, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The event id.
    pub fn event_id(&self) -> &str {
        match self {
            QueueMessage::V1(e) => &e.event_id,
            QueueMessage::V2(c) => &c.id,
        }
    }

    /// The message as a command. A version-1 message is a change, unless it is one of
    /// the operators' resolutions or rehydrations that rode as version 1 (told apart by
    /// `event_type`, with the rule and the choice in the payload); `None` when such a
    /// message lacks what its command needs.
    pub fn command(self) -> Option<CommandV2> {
        let e = match self {
            QueueMessage::V2(c) => return Some(c),
            QueueMessage::V1(e) => e,
        };
        let text = |k: &str| e.payload.get(k).and_then(Value::as_str).map(str::to_owned);
        let command = match e.event_type.as_str() {
            V1_RESOLVE => Command::Resolve {
                rule: text("rule")?,
                record_id: e.record_id.clone(),
                conflict_id: e.payload.get("conflict_id").and_then(Value::as_i64)?,
                by: text("by").unwrap_or_else(|| "an operator".to_owned()),
                resolution: match text("target_id") {
                    Some(target_id) => Resolution::Link { target_id },
                    None => Resolution::Value {
                        field: text("field")?,
                        value: e.payload.get("value").cloned().unwrap_or(Value::Null),
                    },
                },
            },
            // A version-1 rehydration named no rule but the app: it stays a change of
            // every rule of the app, marked by its event type, as it was processed.
            _ => Command::Change {
                system: e.system,
                app: e.app,
                record_id: e.record_id,
                event_type: e.event_type,
                payload: e.payload,
            },
        };
        Some(CommandV2 {
            id: e.event_id,
            correlation_id: e.correlation_id,
            issued_at: e.received_at,
            command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wire_format_is_tagged_and_stable() {
        let m = QueueMessage::V1(EventV1 {
            event_id: "e1".into(),
            system: "kintone".into(),
            app: "101".into(),
            record_id: "5".into(),
            event_type: "UPDATE_RECORD".into(),
            received_at: "2026-11-22T10:08:00Z".parse().unwrap(),
            correlation_id: "c1".into(),
            payload: json!({"a": 1}),
        });
        let v: Value = serde_json::from_slice(&m.encode()).unwrap();
        assert_eq!(v["version"], "1");
        assert_eq!(v["event_id"], "e1");
        assert_eq!(v["received_at"], "2026-11-22T10:08:00Z");
        assert_eq!(QueueMessage::decode(&m.encode()).unwrap(), m);
        assert!(QueueMessage::decode(br#"{"version":"9","event_id":"x"}"#).is_err());
        assert!(QueueMessage::decode(b"not json").is_err());
    }

    #[test]
    fn commands_are_tagged_by_version_and_kind() {
        let m = QueueMessage::V2(CommandV2 {
            id: "r1".into(),
            correlation_id: "c1".into(),
            issued_at: "2026-11-29T10:00:00Z".parse().unwrap(),
            command: Command::Resolve {
                rule: "wo".into(),
                record_id: "5".into(),
                conflict_id: 7,
                by: "olga".into(),
                resolution: Resolution::Link {
                    target_id: "42".into(),
                },
            },
        });
        let v: Value = serde_json::from_slice(&m.encode()).unwrap();
        assert_eq!(v["version"], "2");
        assert_eq!(v["command"]["kind"], "resolve");
        assert_eq!(v["command"]["resolution"]["choice"], "link");
        assert_eq!(QueueMessage::decode(&m.encode()).unwrap(), m);
        assert_eq!(
            m.clone().command(),
            Some(match m {
                QueueMessage::V2(c) => c,
                QueueMessage::V1(_) => unreachable!(),
            })
        );
    }

    fn v1(event_type: &str, payload: Value) -> QueueMessage {
        QueueMessage::V1(EventV1 {
            event_id: "e1".into(),
            system: "kintone".into(),
            app: "101".into(),
            record_id: "5".into(),
            event_type: event_type.into(),
            received_at: "2026-11-22T10:08:00Z".parse().unwrap(),
            correlation_id: "c1".into(),
            payload,
        })
    }

    #[test]
    fn version_1_messages_still_queued_decode_as_their_commands() {
        let change = v1("UPDATE_RECORD", json!({"record": {}}))
            .command()
            .unwrap();
        assert_eq!(change.id, "e1");
        assert_eq!(
            change.command,
            Command::Change {
                system: "kintone".into(),
                app: "101".into(),
                record_id: "5".into(),
                event_type: "UPDATE_RECORD".into(),
                payload: json!({"record": {}}),
            }
        );
        let link = v1(
            V1_RESOLVE,
            json!({"rule": "wo", "conflict_id": 3, "target_id": "42", "by": "olga"}),
        )
        .command()
        .unwrap();
        assert_eq!(
            link.command,
            Command::Resolve {
                rule: "wo".into(),
                record_id: "5".into(),
                conflict_id: 3,
                by: "olga".into(),
                resolution: Resolution::Link {
                    target_id: "42".into()
                },
            }
        );
        let value = v1(
            V1_RESOLVE,
            json!({"rule": "wo", "conflict_id": 3, "field": "email", "value": "a@b"}),
        )
        .command()
        .unwrap();
        assert!(matches!(
            value.command,
            Command::Resolve { resolution: Resolution::Value { ref field, .. }, ref by, .. }
                if field == "email" && by == "an operator"
        ));
        let rehydrate = v1(V1_REHYDRATE, Value::Null).command().unwrap();
        assert!(matches!(
            rehydrate.command,
            Command::Change { ref event_type, .. } if event_type == V1_REHYDRATE
        ));
        // A resolution without its rule cannot be carried out.
        assert!(
            v1(V1_RESOLVE, json!({"conflict_id": 3}))
                .command()
                .is_none()
        );
    }
}
