//! Acting on a plan: every outbound operation committed as an intent first, then
//! the creates, updates, source corrections and the write-back, each checked against
//! what the system answered.

use connectors::ConnectorError;
use domain::authority::{SyncState, wrote};
use domain::history::Entry;
use domain::plan::Side;
use domain::record::Fields;
use domain::rules::{OnDelete, OnTargetDelete, RuleSpec};
use domain::sync::write_back;
use serde_json::Value;
use store::{Intent, RecordTx, StoreErrorKind};

use super::{Done, Failure, Flow, InDoubt, Op, Planned, Processor, SavedState, Trigger};

impl Processor {
    /// Makes the planned writes to the target and the corrections to the source, one
    /// record at a time (the flush does target updates in bulk before this). Every
    /// write is first committed as an intent (transactional outbox), so that a value
    /// PostgreSQL cannot store stops the step before anything is sent, and a create
    /// whose answer is lost is known to the next holder of the record.
    pub(super) async fn perform(
        &self,
        rule: &RuleSpec,
        ev: &Trigger,
        tx: &mut RecordTx,
        mut planned: Planned,
        entries: &mut Vec<Entry>,
    ) -> Result<(Planned, Vec<Op>), Failure> {
        let target_ep = self
            .connectors
            .endpoint(&rule.target.system, &rule.target.entity)?;
        let source_ep = self
            .connectors
            .endpoint(&rule.source.system, &rule.source.app)?;
        let (target, source) = (
            self.limiter.limit(&target_ep),
            self.limiter.limit(&source_ep),
        );
        let key_base = planned.key_base.clone();
        let vv = serde_json::to_value(&planned.state.vv).unwrap_or_default();

        // The plan's operations, committed before any is sent.
        let mut intents = vec![];
        let mut reused_create = None;
        let target_op = match (&planned.target_id, &planned.in_doubt) {
            (None, Some(InDoubt::Again(pending))) => {
                reused_create = Some(pending.id);
                Some(("create", pending.key.clone()))
            }
            // A fresh create's key names the source revision it starts from: a retry
            // reuses the key its intent recorded (the in-doubt path above), and a
            // record created again after its target was deleted and unlinked gets a
            // new key, which an API that remembers keys would otherwise refuse.
            (None, _) => Some((
                "create",
                match planned.record.revision {
                    Some(r) => format!("{key_base}:create:r{r}"),
                    None => format!("{key_base}:create"),
                },
            )),
            (Some(id), _) if !planned.target_fields.is_empty() => Some((
                "update",
                write_key(
                    &key_base,
                    "update",
                    id,
                    &planned.target_fields,
                    ev,
                    &planned.state,
                ),
            )),
            (Some(_), _) => None,
        };
        if let Some((kind, key)) = &target_op
            && reused_create.is_none()
        {
            intents.push(Intent {
                system: rule.target.system.clone(),
                kind,
                key: key.clone(),
                fields: planned.target_fields.clone(),
                vv: vv.clone(),
            });
        }
        let source_key = (!planned.source_fields.is_empty()).then(|| {
            write_key(
                &key_base,
                "source",
                &planned.record.id,
                &planned.source_fields,
                ev,
                &planned.state,
            )
        });
        if let Some(key) = &source_key {
            intents.push(Intent {
                system: rule.source.system.clone(),
                kind: "source",
                key: key.clone(),
                fields: planned.source_fields.clone(),
                vv: vv.clone(),
            });
        }
        let mut ids = match tx.commit_intents(&intents).await {
            Ok(ids) => ids.into_iter(),
            Err(e) if e.kind() == StoreErrorKind::Data => {
                let mut all = planned.target_fields.clone();
                all.extend(planned.source_fields.clone());
                let mut bad: Vec<(String, String)> = tx
                    .unstorable(&all)
                    .await?
                    .into_iter()
                    .map(|u| (u.field, u.reason))
                    .collect();
                if bad.is_empty() {
                    bad.push(("the record".to_owned(), e.reason()));
                }
                return Err(Failure::Unstorable(bad));
            }
            Err(e) => return Err(e.into()),
        };

        if let Some(id) = reused_create {
            // The settle time of the next look counts from this send.
            tx.resend(id).await?;
        }
        let mut ops = vec![];
        if let Some((kind, key)) = target_op {
            let intent = match reused_create {
                Some(id) => Some(id),
                None => ids.next(),
            };
            if kind == "create" {
                // The key is the same for every attempt at this record's creation; a
                // target that ignores it is covered by the in-doubt resolution.
                let (id, rev, answered) = target
                    .call(|api| api.create_answered(&planned.target_fields, &key))
                    .await?;
                entries.push(Entry::created(target.system(), &id, &planned.target_fields));
                let dropped = verify(target.system(), &id, &planned.target_fields, answered);
                wrote(
                    &mut planned.state,
                    &rule.target.system,
                    &planned.target_fields,
                    rev,
                );
                ops.push(Op {
                    system: rule.target.system.clone(),
                    key,
                    fields: planned.target_fields.clone(),
                    vv: vv.clone(),
                    intent,
                    created: Some(id.clone()),
                    dropped,
                });
                planned.target_id = Some(id);
            } else {
                let id = planned.target_id.clone().expect("an update has a target");
                let (new_rev, answered) = target
                    .call(|api| api.update_answered(&id, &planned.target_fields, &key))
                    .await?;
                entries.push(Entry::updated(target.system(), &id, &planned.target_fields));
                let dropped = verify(target.system(), &id, &planned.target_fields, answered);
                wrote(
                    &mut planned.state,
                    &rule.target.system,
                    &planned.target_fields,
                    new_rev,
                );
                ops.push(Op {
                    system: rule.target.system.clone(),
                    key,
                    fields: planned.target_fields.clone(),
                    vv: vv.clone(),
                    intent,
                    created: None,
                    dropped,
                });
            }
        }
        if let Some(key) = source_key {
            let intent = ids.next();
            let fields = to_source(rule, &planned.source_fields);
            let base = planned
                .state
                .revisions
                .get(&rule.source.system)
                .copied()
                .or(planned.record.revision);
            match source
                .call(|api| api.update_checked(&planned.record.id, &fields, base, &key))
                .await?
            {
                Some(new_rev) => {
                    entries.push(Entry::updated(source.system(), &planned.record.id, &fields));
                    wrote(
                        &mut planned.state,
                        &rule.source.system,
                        &planned.source_fields,
                        new_rev,
                    );
                    if let Some(r) = new_rev {
                        planned.record.revision = Some(r);
                    }
                    ops.push(Op {
                        system: rule.source.system.clone(),
                        key,
                        fields: planned.source_fields.clone(),
                        vv,
                        intent,
                        created: None,
                        dropped: None,
                    });
                }
                // The source changed since it was read: decide again from its new state.
                None => {
                    return Err(ConnectorError::RevisionConflict {
                        system: rule.source.system.clone(),
                    }
                    .into());
                }
            }
        }
        Ok((planned, ops))
    }

    /// One side's record is gone (`gone`); the rule acts on the other side's: deletes
    /// it (and the link is forgotten) or writes the rule's flag into it (the link is
    /// kept). The intent is committed before anything is sent.
    pub(super) async fn gone(
        &self,
        rule: &RuleSpec,
        tx: &mut RecordTx,
        gone: Side,
        record_id: &str,
        target_id: &str,
        entries: &mut Vec<Entry>,
    ) -> Result<Flow, Failure> {
        // The other side: its system, endpoint, the record acted on, the flag if the
        // rule flags, and the key prefix of the intent.
        let (gone_system, system, app, id, flag, what) = match gone {
            Side::Source => (
                &rule.source.system,
                &rule.target.system,
                &rule.target.entity,
                target_id,
                rule.deleted_flag
                    .as_ref()
                    .filter(|_| rule.on_delete == OnDelete::Flag),
                "",
            ),
            Side::Target => (
                &rule.target.system,
                &rule.source.system,
                &rule.source.app,
                record_id,
                rule.target_deleted_flag
                    .as_ref()
                    .filter(|_| rule.on_target_delete == OnTargetDelete::Flag),
                "target-",
            ),
        };
        let endpoint = self.connectors.endpoint(system, app)?;
        let other = self.limiter.limit(&endpoint);
        let (kind, key, fields) = match flag {
            Some(f) => {
                let mut fields = Fields::new();
                fields.insert(f.field.clone(), f.value.clone());
                (
                    "update",
                    format!("{}:{record_id}:{what}deleted-flag", rule.name),
                    fields,
                )
            }
            None => (
                "delete",
                match gone {
                    Side::Source => format!("{}:{record_id}:delete", rule.name),
                    Side::Target => format!("{}:{record_id}:delete-source", rule.name),
                },
                Fields::new(),
            ),
        };
        let ids = tx
            .commit_intents(&[Intent {
                system: system.clone(),
                kind,
                key: key.clone(),
                fields: fields.clone(),
                vv: Value::Null,
            }])
            .await?;
        let entry = match flag {
            Some(f) => {
                other.call(|api| api.update(id, &fields, &key)).await?;
                Entry::source_deleted_flagged(gone_system, system, id, &f.field, &f.value)
            }
            None => {
                let existed = other.call(|api| api.delete(id)).await?;
                Entry::source_deleted_target_deleted(gone_system, system, id, existed)
            }
        };
        tx.ops_sent(&ids, None, None);
        entries.push(entry);
        Ok(Flow::Finish(Done::Deleted))
    }

    /// After the writes: the write-back into the source, and the state to save.
    pub(super) async fn finish_write(
        &self,
        rule: &RuleSpec,
        performed: (Planned, Vec<Op>),
        entries: &mut Vec<Entry>,
    ) -> Result<Flow, Failure> {
        let (mut planned, ops) = performed;
        let source = self
            .connectors
            .endpoint(&rule.source.system, &rule.source.app)?;
        let source = self.limiter.limit(&source);
        let target_id = planned
            .target_id
            .clone()
            .expect("a target id after the writes");
        let record = &planned.record;
        let mut revision = record.revision;
        let wrote_something = !ops.is_empty();
        let mut clash = None;
        let held = rule
            .write_back
            .as_ref()
            .and_then(|wb| Some((wb.field.clone(), record.text(&wb.field)?)))
            .filter(|(_, v)| !v.trim().is_empty() && *v != target_id);
        if let (Some((field, held)), Some(_)) = (&held, &planned.matched_by) {
            // This step made the link, and the source already names another target
            // record: never silently replace it.
            let e = Entry::write_back_clash(source.system(), field, held, &target_id);
            entries.push(e.clone());
            clash = Some(e);
        } else if let Some((field, value)) = write_back(rule, record, &target_id) {
            // Revision-checked, so that a change made since we read the record is never
            // overwritten or mistaken for ours; `None` when the record changed
            // meanwhile: that change's own webhook will carry the write-back.
            match source
                .call(|api| api.write_field(&record.id, &field, &value, record.revision))
                .await?
            {
                Some(new_revision) => {
                    entries.push(Entry::written_back(source.system(), &field, &value));
                    // Our own write: its webhook will find this revision already seen.
                    revision = Some(new_revision);
                    wrote(
                        &mut planned.state,
                        &rule.source.system,
                        &Fields::new(),
                        Some(new_revision),
                    );
                }
                None => entries.push(Entry::write_back_deferred(source.system(), &field)),
            }
        }
        // The first write the target kept only part of, if any: a conflict with the link.
        let dropped = ops.iter().find_map(|o| o.dropped.clone());
        if let Some(d) = &dropped {
            entries.push(d.clone());
        }
        let done = if wrote_something || revision != record.revision {
            Done::Synced
        } else {
            Done::Unchanged
        };
        let state = SavedState {
            target_id: Some(target_id),
            matched_by: planned.matched_by,
            revision: revision.max(planned.state.revisions.get(&rule.source.system).copied()),
            authority: planned.state,
            ops,
            confirmed: planned.confirmed,
            review: planned.review,
            clash,
            dropped,
            found: match planned.in_doubt {
                Some(InDoubt::Found(id, how)) => Some((id, how)),
                _ => None,
            },
        };
        Ok(Flow::Synced {
            done,
            state: Box::new(state),
        })
    }
}

/// What a write's answer says of the fields sent: the conflict entry naming the ones
/// it holds nothing for (`domain::sync::dropped_fields`), if any. A system that
/// answers no record (kintone) cannot be checked here.
fn verify(system: &str, id: &str, sent: &Fields, answered: Option<Fields>) -> Option<Entry> {
    let dropped = domain::sync::dropped_fields(sent, &answered?);
    (!dropped.is_empty()).then(|| Entry::target_dropped(system, id, &dropped))
}

pub(super) fn connector_system(e: &ConnectorError) -> Option<&str> {
    match e {
        ConnectorError::Rejected { system, .. } => Some(system),
        _ => None,
    }
}

/// The idempotency key of a write: a retry of the same event making the same write
/// (record, fields, values, version) gets the same key, so the target recognises it;
/// any other write, even of the same values later on, gets another.
pub(super) fn write_key(
    key_base: &str,
    what: &str,
    id: &str,
    fields: &Fields,
    ev: &Trigger,
    state: &SyncState,
) -> String {
    use sha2::Digest;
    let body =
        serde_json::to_vec(&(id, fields, &ev.event_id, &state.vv)).expect("fields serialize");
    let digest = sha2::Sha256::digest(&body);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{key_base}:{what}:{hex}")
}

/// A data-quality refusal from a system: a conflict, with the story so far kept.
pub(super) fn rejected(rule: &RuleSpec, e: &ConnectorError, entries: &mut Vec<Entry>) -> Flow {
    let (status, message) = match e {
        ConnectorError::Rejected {
            status, message, ..
        } => (*status, message.clone()),
        other => (0, other.to_string()),
    };
    let system = connector_system(e)
        .unwrap_or(&rule.target.system)
        .to_owned();
    entries.push(Entry::target_rejected(&system, status, &message));
    Flow::Conflict { kind: "rejected" }
}

/// Canonical values in the source's form and field codes (`reverse` transforms).
pub(super) fn to_source(rule: &RuleSpec, canonical: &Fields) -> Fields {
    let mut out = Fields::new();
    for m in &rule.fields {
        let Some(v) = canonical.get(&m.target) else {
            continue;
        };
        let mut v = v.clone();
        for t in &m.reverse {
            match t.apply(v.clone()) {
                Ok(x) => v = x,
                Err(_) => break,
            }
        }
        out.insert(m.source.clone(), v);
    }
    out
}
