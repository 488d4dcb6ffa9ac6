//! What set a step going for one record, typed end to end: the command's id and trace,
//! the system and app it concerns, the record, and the kind of work ([`Work`]). Parked
//! work is stored as the command it came from ([`Trigger::parked`]) and read back with
//! [`Trigger::unparked`].

use chrono::{DateTime, Utc};
use domain::rules::RuleSpec;
use queue::{Command, CommandV2, QueueMessage, Resolution};
use serde_json::{Map, Value};

/// What set the step going for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The command's id: a webhook's own id, or a resync's, repair's, import's id.
    pub event_id: String,
    /// Carried through logs and every later hop.
    pub correlation_id: String,
    /// When the command was issued (ingest accepted the webhook).
    pub issued_at: DateTime<Utc>,
    /// The system that announced it (the rule's source for every command but a
    /// change).
    pub system: String,
    /// The app or entity it concerns.
    pub app: String,
    /// The record, in `system`.
    pub record_id: String,
    /// The kind of work.
    pub work: Work,
}

/// The kind of work a step does for a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// A system's change, announced by its webhook: the event type and the payload,
    /// which is a hint, never the truth.
    Change {
        /// The system's event type, e.g. `UPDATE_RECORD`.
        event_type: String,
        /// The payload as received.
        payload: Value,
    },
    /// A source record a resync found changed.
    Resync {
        /// The revision the listing showed.
        revision: Option<i64>,
    },
    /// A reconcile found the systems apart: decide from both as they are.
    Repair {
        /// What the reconcile found, in words.
        reason: String,
    },
    /// One row of a partner file: the canonical record of a `file` source.
    Import {
        /// The file's name.
        file: String,
        /// The row's line.
        line: u64,
        /// The row's values by source field code.
        row: Map<String, Value>,
    },
    /// Refetch everything and resync, as if nothing had been synced (the link kept).
    Rehydrate,
    /// A person's resolution of a conflict.
    Resolve {
        /// The conflict resolved.
        conflict_id: i64,
        /// Who resolved it (an admin token's name).
        by: String,
        /// What they chose.
        resolution: Resolution,
    },
}

impl Work {
    /// The event type the timeline shows for it (the same words version-1 events
    /// carried).
    pub fn event_type(&self) -> &str {
        match self {
            Work::Change { event_type, .. } => event_type,
            Work::Resync { .. } => "resync",
            Work::Repair { .. } => "repair",
            Work::Import { .. } => "import",
            Work::Rehydrate => queue::message::V1_REHYDRATE,
            Work::Resolve { .. } => "resolution",
        }
    }
}

impl Trigger {
    /// The trigger of a change command, under every rule of its app.
    pub fn change(cmd: &CommandV2) -> Option<Trigger> {
        let Command::Change {
            system,
            app,
            record_id,
            event_type,
            payload,
        } = &cmd.command
        else {
            return None;
        };
        // A version-1 rehydration rode as a change marked by its event type.
        let work = if event_type == queue::message::V1_REHYDRATE {
            Work::Rehydrate
        } else {
            Work::Change {
                event_type: event_type.clone(),
                payload: payload.clone(),
            }
        };
        Some(Trigger::new(cmd, system, app, record_id, work))
    }

    /// The trigger of a command that names `rule` (every kind but a change): it
    /// concerns the rule's source record.
    pub fn of_rule(cmd: &CommandV2, rule: &RuleSpec) -> Option<Trigger> {
        let (record_id, work) = match &cmd.command {
            Command::Change { .. } => return None,
            Command::Resolve {
                record_id,
                conflict_id,
                by,
                resolution,
                ..
            } => (
                record_id,
                Work::Resolve {
                    conflict_id: *conflict_id,
                    by: by.clone(),
                    resolution: resolution.clone(),
                },
            ),
            Command::Rehydrate { record_id, .. } => (record_id, Work::Rehydrate),
            Command::Resync {
                record_id,
                revision,
                ..
            } => (
                record_id,
                Work::Resync {
                    revision: *revision,
                },
            ),
            Command::Repair {
                record_id, reason, ..
            } => (
                record_id,
                Work::Repair {
                    reason: reason.clone(),
                },
            ),
            Command::Import {
                record_id,
                file,
                line,
                row,
                ..
            } => (
                record_id,
                Work::Import {
                    file: file.clone(),
                    line: *line,
                    row: row.clone(),
                },
            ),
        };
        Some(Trigger::new(
            cmd,
            &rule.source.system,
            &rule.source.app,
            record_id,
            work,
        ))
    }

    fn new(cmd: &CommandV2, system: &str, app: &str, record_id: &str, work: Work) -> Trigger {
        Trigger {
            event_id: cmd.id.clone(),
            correlation_id: cmd.correlation_id.clone(),
            issued_at: cmd.issued_at,
            system: system.to_owned(),
            app: app.to_owned(),
            record_id: record_id.to_owned(),
            work,
        }
    }

    /// The command this trigger came from, under `rule`, as parked work stores it.
    pub fn command(&self, rule: &str) -> CommandV2 {
        let rule = rule.to_owned();
        let record_id = self.record_id.clone();
        let command = match &self.work {
            Work::Change {
                event_type,
                payload,
            } => Command::Change {
                system: self.system.clone(),
                app: self.app.clone(),
                record_id,
                event_type: event_type.clone(),
                payload: payload.clone(),
            },
            Work::Resync { revision } => Command::Resync {
                rule,
                record_id,
                revision: *revision,
            },
            Work::Repair { reason } => Command::Repair {
                rule,
                record_id,
                reason: reason.clone(),
            },
            Work::Import { file, line, row } => Command::Import {
                rule,
                record_id,
                file: file.clone(),
                line: *line,
                row: row.clone(),
            },
            Work::Rehydrate => Command::Rehydrate { rule, record_id },
            Work::Resolve {
                conflict_id,
                by,
                resolution,
            } => Command::Resolve {
                rule,
                record_id,
                conflict_id: *conflict_id,
                by: by.clone(),
                resolution: resolution.clone(),
            },
        };
        CommandV2 {
            id: self.event_id.clone(),
            correlation_id: self.correlation_id.clone(),
            issued_at: self.issued_at,
            command,
        }
    }

    /// The parked-table form of this trigger under `rule`: the versioned queue message
    /// of its command.
    pub fn parked(&self, rule: &str) -> Value {
        serde_json::to_value(QueueMessage::V2(self.command(rule))).expect("a command serializes")
    }

    /// A parked row read back as the trigger it was, under `rule` (rows parked by an
    /// earlier release hold a version-1 event, which reads as its command). `None` for
    /// a row that is neither.
    pub fn unparked(stored: &Value, rule: &RuleSpec) -> Option<Trigger> {
        let cmd = serde_json::from_value::<QueueMessage>(stored.clone())
            .ok()?
            .command()?;
        match &cmd.command {
            Command::Change { .. } => Trigger::change(&cmd),
            _ => Trigger::of_rule(&cmd, rule),
        }
    }

    /// Whether it asks for everything to be refetched and synced as if nothing had
    /// been before.
    pub fn rehydrating(&self) -> bool {
        matches!(self.work, Work::Rehydrate)
    }

    /// Whether it is a reconcile's repair.
    pub fn repairing(&self) -> bool {
        matches!(self.work, Work::Repair { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule() -> RuleSpec {
        serde_json::from_value(json!({
            "name": "wo",
            "source": {"system": "kintone", "app": "101"},
            "target": {"system": "helpdesk", "entity": "tickets"},
            "identity": {"source_field": "po", "target_field": "external_id"},
            "fields": []
        }))
        .expect("a minimal rule")
    }

    fn cmd(command: Command) -> CommandV2 {
        CommandV2 {
            id: "e1".into(),
            correlation_id: "c1".into(),
            issued_at: "2026-12-07T10:00:00Z".parse().unwrap(),
            command,
        }
    }

    #[test]
    fn every_kind_survives_parking_and_keeps_its_words() {
        let rule = rule();
        let kinds = [
            cmd(Command::Resync {
                rule: "wo".into(),
                record_id: "5".into(),
                revision: Some(7),
            }),
            cmd(Command::Repair {
                rule: "wo".into(),
                record_id: "5".into(),
                reason: "status apart".into(),
            }),
            cmd(Command::Rehydrate {
                rule: "wo".into(),
                record_id: "5".into(),
            }),
            cmd(Command::Import {
                rule: "wo".into(),
                record_id: "5".into(),
                file: "f.csv".into(),
                line: 3,
                row: json!({"po": "5"}).as_object().cloned().unwrap(),
            }),
        ];
        let resolve = cmd(Command::Resolve {
            rule: "wo".into(),
            record_id: "5".into(),
            conflict_id: 3,
            by: "olga".into(),
            resolution: Resolution::Link {
                target_id: "42".into(),
            },
        });
        let kinds = [kinds.as_slice(), &[resolve]].concat();
        let words = [
            "resync",
            "repair",
            "recordsync.rehydrate",
            "import",
            "resolution",
        ];
        for (c, word) in kinds.iter().zip(words) {
            let t = Trigger::of_rule(c, &rule).expect("a rule's command");
            assert_eq!(t.system, "kintone");
            assert_eq!(t.app, "101");
            assert_eq!(t.work.event_type(), word);
            assert_eq!(Trigger::unparked(&t.parked("wo"), &rule), Some(t.clone()));
            assert_eq!(&t.command("wo"), c, "the command comes back as it was");
            assert!(Trigger::change(c).is_none());
        }
        let change = cmd(Command::Change {
            system: "helpdesk".into(),
            app: "tickets".into(),
            record_id: "42".into(),
            event_type: "ticket.updated".into(),
            payload: json!({"id": 42}),
        });
        let t = Trigger::change(&change).expect("a change");
        assert_eq!(t.system, "helpdesk");
        assert_eq!(t.work.event_type(), "ticket.updated");
        assert!(!t.rehydrating() && !t.repairing());
        assert_eq!(Trigger::unparked(&t.parked("wo"), &rule), Some(t));
        assert!(Trigger::of_rule(&change, &rule).is_none());
    }

    #[test]
    fn a_version_1_rehydration_and_a_version_1_parked_row_read_as_before() {
        let rule = rule();
        let v1 = json!({
            "version": "1",
            "event_id": "e9",
            "system": "kintone",
            "app": "101",
            "record_id": "5",
            "event_type": "recordsync.rehydrate",
            "received_at": "2026-12-07T10:00:00Z",
            "correlation_id": "c9",
            "payload": {}
        });
        let t = Trigger::unparked(&v1, &rule).expect("a version-1 row reads");
        assert!(t.rehydrating());
        assert_eq!(t.event_id, "e9");
        assert_eq!(t.work.event_type(), "recordsync.rehydrate");
        assert!(Trigger::unparked(&json!({"version": "9"}), &rule).is_none());
    }
}
