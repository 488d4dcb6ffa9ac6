//! The end of a step: what a flow decided saved for the record (`finish`), the fenced
//! commit with a refusal by PostgreSQL turned into a data-quality conflict (`commit`),
//! and a data failure turned into a conflict flow with the story so far (`settle`).

use domain::history::Entry;
use domain::rules::RuleSpec;
use serde_json::Value;
use store::{EventRef, RecordTx, StoreError, StoreErrorKind};

use super::effects::rejected;
use super::{Done, Failure, Flow, SavedState};
use crate::classify::{self, Action};

/// Saves what a flow decided for the transaction's current record, its history, and
/// the processed mark. The caller commits.
pub(super) async fn finish(
    tx: &mut RecordTx,
    evref: &EventRef,
    received: Entry,
    entries: Vec<Entry>,
    flow: Flow,
) -> Result<Done, StoreError> {
    let done = match flow {
        Flow::Finish(done) => {
            if done == Done::Deleted && entries.last().is_some_and(|e| e.detail["unlinked"] == true)
            {
                tx.forget();
            }
            done
        }
        Flow::Stale { confirmed } => {
            if !confirmed.is_empty() {
                tx.confirm_ops(&confirmed);
            }
            Done::Stale
        }
        Flow::Conflict { kind } => {
            // The last entry says why: it is the conflict's summary.
            if let Some(last) = entries.last() {
                tx.open_conflict(kind, last);
            }
            Done::Conflict
        }
        Flow::Synced { done, state } => {
            let SavedState {
                target_id,
                matched_by,
                revision,
                authority,
                ops,
                confirmed,
                review,
                clash,
                dropped,
                found,
            } = *state;
            tx.save_state(
                target_id.as_deref(),
                matched_by,
                revision,
                &authority.canonical,
            );
            if target_id.is_some() {
                tx.save_authority_state(
                    &serde_json::to_value(&authority).expect("a state serializes"),
                );
            }
            for op in &ops {
                match op.intent {
                    Some(id) => tx.ops_sent(&[id], op.created.as_deref(), None),
                    None => tx.record_op(
                        &op.system,
                        &op.key,
                        &Value::Object(op.fields.clone()),
                        &op.vv,
                    ),
                }
            }
            if let Some((id, how)) = found {
                tx.ops_sent(&[id], target_id.as_deref(), Some(how));
            }
            if let Some(c) = &clash {
                tx.open_conflict("write_back_clash", c);
            }
            if let Some(d) = &dropped {
                tx.open_conflict("target_dropped", d);
            }
            if !confirmed.is_empty() {
                tx.confirm_ops(&confirmed);
            }
            if let Some(r) = &review {
                tx.open_conflict("manual_review", r);
            }
            done
        }
    };
    let mut all = vec![received];
    all.extend(entries);
    tx.append(evref, &all);
    tx.mark_processed(&evref.event_id, done.as_str());
    Ok(done)
}

/// Commits the step. When PostgreSQL refuses what it would store (a data error, the
/// same on every attempt), the record becomes a data-quality conflict instead: the
/// story is replaced by the refusal, which names PostgreSQL's reason, and the event is
/// marked processed, so that the consumer goes on.
pub(super) async fn commit(
    tx: &mut RecordTx,
    evref: &EventRef,
    received: Entry,
    done: Done,
) -> Result<Done, StoreError> {
    match tx.commit().await {
        Ok(()) => Ok(done),
        Err(e) if e.kind() == StoreErrorKind::Data => {
            let (kind, refusal) = match tx.link_taken(&e).await? {
                Some(store::LinkTaken {
                    target_id,
                    source_record_id: other,
                }) => {
                    tracing::warn!(%target_id, %other, "the target record was linked to another record at the same moment; a conflict is opened for a person");
                    let entry =
                        Entry::already_linked("target", &target_id, &other, "linked meanwhile");
                    ("already_linked", entry)
                }
                None => {
                    tracing::error!(error = %e, "PostgreSQL refused the record's values; a conflict is opened for a person");
                    let entry =
                        Entry::unstorable(&[("the record's history".to_owned(), e.reason())]);
                    ("unstorable", entry)
                }
            };
            tx.discard_writes();
            tx.open_conflict(kind, &refusal);
            tx.append(evref, &[received, refusal]);
            tx.mark_processed(&evref.event_id, Done::Conflict.as_str());
            tx.commit().await?;
            Ok(Done::Conflict)
        }
        Err(e) => Err(e),
    }
}

/// A failure that is the data's fault, as a conflict flow with the story so far; any
/// other failure as it is.
pub(super) fn settle(
    rule: &RuleSpec,
    result: Result<Flow, Failure>,
    entries: &mut Vec<Entry>,
) -> Result<Flow, Failure> {
    match result {
        Ok(flow) => Ok(flow),
        Err(Failure::Connector(e)) if classify::connector(&e) == Action::Conflict => {
            Ok(rejected(rule, &e, entries))
        }
        Err(Failure::Unstorable(fields)) => {
            // The entries may carry the very values PostgreSQL refuses.
            entries.retain(|e| {
                !(e.summary.contains('\u{0}') || e.detail.to_string().contains("\\u0000"))
            });
            entries.push(Entry::unstorable(&fields));
            Ok(Flow::Conflict { kind: "unstorable" })
        }
        Err(e) => Err(e),
    }
}
