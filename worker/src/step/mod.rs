//! The step: every command (a change, a resync item, a repair, a resolution, a
//! rehydration) goes through [`Processor::step`]. Under the record's lease it loads
//! what the store knows, fetches the canonical record and plans (`plan`), commits the
//! plan's operations as intents and performs them (`effects`), and commits state,
//! link, history and the processed mark in one fenced transaction (here). Parked work
//! is flushed in bulk (`flush`).

mod commit;
mod effects;
mod flush;
mod memory;
mod plan;
mod trigger;

pub use trigger::{Trigger, Work};

use std::collections::BTreeMap;

use connectors::Connectors;
use domain::authority::SyncState;
use domain::history::Entry;
pub use domain::plan::Side;
use domain::plan::Unconfirmed;
use domain::record::{Fields, SourceRecord};
use domain::rules::{RuleSpec, SyncRules};
use domain::sync::PriorState;
use queue::{CommandV2, Resolution};
use serde_json::{Value, json};
use store::{EventRef, PendingCreate, RecordTx, Store};

use commit::{commit, finish, settle};
use memory::load;

pub use crate::classify::Failure;
use crate::limiter::Limiter;

/// How processing ended when it ended well: the message can be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Target written (created, updated or written back).
    Synced,
    /// Nothing needed writing.
    Unchanged,
    /// The event was already processed.
    Duplicate,
    /// The revision was already synced.
    Stale,
    /// A data-quality conflict was opened.
    Conflict,
    /// Nothing matched and the rule skips.
    Skipped,
    /// The source record is gone.
    Deleted,
    /// The work waits in PostgreSQL (paused, or outside a write window).
    Parked,
}

impl Done {
    /// The label for metrics and the processed mark.
    pub fn as_str(self) -> &'static str {
        match self {
            Done::Synced => "synced",
            Done::Unchanged => "unchanged",
            Done::Duplicate => "duplicate",
            Done::Stale => "stale",
            Done::Conflict => "conflict",
            Done::Skipped => "skipped",
            Done::Deleted => "deleted",
            Done::Parked => "parked",
        }
    }
}

/// What the processing step needs.
pub struct Processor {
    /// The fleet-wide limiter every request goes through.
    pub limiter: Limiter,
    /// The rules.
    pub rules: SyncRules,
    /// The connectors.
    pub connectors: Connectors,
    /// The store.
    pub store: Store,
    /// How long a create in doubt is looked for (write-back field, search) before it
    /// is made again: longer than the slowest target's search lag.
    pub in_doubt_settle: std::time::Duration,
    /// The worker's metrics, for what the step finds on the way (absent source fields).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// What the connector part decided, before it is committed.
enum Flow {
    Finish(Done),
    /// Nothing new, but the source's revision confirms these writes sent to it.
    Stale {
        confirmed: Vec<i64>,
    },
    Conflict {
        kind: &'static str,
    },
    Synced {
        done: Done,
        state: Box<SavedState>,
    },
}

/// What is saved for a record after a decision.
struct SavedState {
    target_id: Option<String>,
    matched_by: Option<Value>,
    revision: Option<i64>,
    authority: SyncState,
    ops: Vec<Op>,
    confirmed: Vec<i64>,
    /// A manual-review conflict to open with the others' entries.
    review: Option<Entry>,
    /// A write-back that would have replaced another id: a conflict to open.
    clash: Option<Entry>,
    /// A write the target kept only part of: a conflict to open.
    dropped: Option<Entry>,
    /// An in-doubt create found to have happened: `(operation, how)`.
    found: Option<(i64, &'static str)>,
}

/// An outbound operation made.
struct Op {
    system: String,
    key: String,
    fields: Fields,
    vv: Value,
    /// Its committed intent (none for a bulk call).
    intent: Option<i64>,
    /// The record it created.
    created: Option<String>,
    /// A write the target answered without some of the fields sent: the conflict
    /// entry naming them.
    dropped: Option<Entry>,
}

/// Writes decided but not yet made, and the state they lead to.
struct Planned {
    /// The source record as read (for the write-back and revision checks).
    record: SourceRecord,
    /// The target record, or `None` to create one.
    target_id: Option<String>,
    /// What to write to the target (canonical names).
    target_fields: Fields,
    /// What to write back into the source (canonical names).
    source_fields: Fields,
    /// The state after the decision, before the writes.
    state: SyncState,
    matched_by: Option<Value>,
    key_base: String,
    confirmed: Vec<i64>,
    review: Option<Entry>,
    /// An in-doubt create: found to have happened `(operation, how)`, or to be made
    /// again under its own intent and key.
    in_doubt: Option<InDoubt>,
}

/// What became of an in-doubt create.
enum InDoubt {
    /// It happened: linked, not created again.
    Found(i64, &'static str),
    /// No trace after the settle time: created again with the same key.
    Again(PendingCreate),
}

/// What deciding ended with: finished without a write, or planned writes.
enum Decision {
    Flow(Flow),
    Planned(Box<Planned>),
    /// One side's record is gone and the rule acts on the other side's: the target
    /// record when the source is gone (`on_delete: delete_target` or `flag`), the
    /// source record when a two-way rule's target is gone (`on_target_delete:
    /// delete_source` or `flag`).
    Gone {
        gone: Side,
        record_id: String,
        target_id: String,
    },
}

/// What a decision starts from: the store's memory of the record.
struct Known {
    prior: PriorState,
    state: Option<SyncState>,
    /// Per system, the operations sent to it and not confirmed.
    unconfirmed: BTreeMap<String, Unconfirmed>,
    /// A create committed and never confirmed: it may have happened.
    pending_create: Option<PendingCreate>,
}

impl Processor {
    /// The step: every kind of work, whichever path it came by (a delivery, and in
    /// time resync and reconcile), is a command, and goes through here. It returns
    /// the outcome per rule; tests call it directly with the sandbox and a database.
    /// A command already done under a rule is recognised by its id and skipped, so a
    /// retry after a partial failure is safe.
    pub async fn step(
        &self,
        cmd: &CommandV2,
        attempt: u32,
    ) -> Result<Vec<(String, Done)>, Failure> {
        if let Some(trigger) = Trigger::change(cmd) {
            return self.change(&trigger, attempt).await;
        }
        // The rest concern one rule's source record: decided from the canonical
        // record, as a change would be (a resolution first applies the choice).
        let Some(spec) = cmd.command.rule().and_then(|r| self.rules.rule(r)) else {
            return Ok(vec![]);
        };
        let Some(trigger) = Trigger::of_rule(cmd, spec) else {
            return Ok(vec![]);
        };
        let done = match &trigger.work {
            Work::Resolve {
                conflict_id,
                by,
                resolution,
            } => {
                self.resolve_conflict(spec, &trigger, *conflict_id, by, resolution, attempt)
                    .await?
            }
            _ => {
                self.process_rule(spec, Side::Source, &trigger, attempt)
                    .await?
            }
        };
        Ok(vec![(spec.name.clone(), done)])
    }

    /// A change under every rule that reads or writes its system's app.
    async fn change(&self, ev: &Trigger, attempt: u32) -> Result<Vec<(String, Done)>, Failure> {
        let mut outcomes = vec![];
        let rules: Vec<&RuleSpec> = self.rules.rules_for(&ev.system, &ev.app).collect();
        for rule in rules {
            let side = if rule.source.system == ev.system && rule.source.app == ev.app {
                Side::Source
            } else {
                Side::Target
            };
            let done = self.process_rule(rule, side, ev, attempt).await?;
            outcomes.push((rule.name.clone(), done));
        }
        Ok(outcomes)
    }

    async fn process_rule(
        &self,
        rule: &RuleSpec,
        side: Side,
        ev: &Trigger,
        attempt: u32,
    ) -> Result<Done, Failure> {
        let evref = EventRef {
            event_id: ev.event_id.clone(),
            correlation_id: ev.correlation_id.clone(),
        };
        let record_id = match side {
            Side::Source => ev.record_id.clone(),
            Side::Target => match self
                .store
                .source_for_target(&rule.name, &ev.record_id)
                .await?
            {
                Some(id) => id,
                None => {
                    // A target record no source record is linked to: this rule has nothing
                    // to say about it. It is kept in the history under its own name.
                    let key = format!("{}:{}", ev.system, ev.record_id);
                    let mut tx = self.store.begin_record(&rule.name, &key).await?;
                    if !tx.already_processed(&ev.event_id).await? {
                        let note = Entry::unlinked(&ev.system, &ev.record_id);
                        tx.append(&evref, &[note]);
                        tx.mark_processed(&ev.event_id, Done::Unchanged.as_str());
                    }
                    tx.commit().await?;
                    return Ok(Done::Unchanged);
                }
            },
        };
        let mut tx = self.store.begin_record(&rule.name, &record_id).await?;
        // One statement: processed already? paused? the record's link, state and
        // open operations.
        let memory = tx
            .memory(&ev.event_id, &[&rule.source.system, &rule.target.system])
            .await?;
        if memory.processed {
            tx.append(&evref, &[Entry::duplicate_skipped(&ev.event_id)]);
            tx.commit().await?;
            return Ok(Done::Duplicate);
        }
        let received = match &ev.work {
            Work::Repair { reason } => {
                Entry::repair_asked(&ev.system, reason, &ev.event_id, attempt)
            }
            Work::Import { file, line, .. } => {
                Entry::imported(&ev.system, file, *line, &ev.event_id, attempt)
            }
            work => Entry::webhook_received(&ev.system, work.event_type(), &ev.event_id, attempt),
        };
        if let Some(why) = self.blocked(rule, memory.paused) {
            // Nothing is fetched or written: the latest event waits in PostgreSQL.
            let afresh = ev.rehydrating() || ev.repairing();
            let coalesced = tx
                .park(&ev.parked(&rule.name), &ev.event_id, afresh, why.0)
                .await?;
            tx.append(&evref, &[received, Entry::parked(&why.1, coalesced)]);
            tx.commit().await?;
            return Ok(Done::Parked);
        }
        let known = Known::from_memory(rule, memory);
        let mut entries = vec![];
        let result = self
            .sync_one(rule, side, &record_id, ev, &mut tx, &known, &mut entries)
            .await;
        // On any other failure the buffered writes are dropped with the lease; nothing
        // of this attempt is kept but its committed intents and the retry entry the
        // runner writes.
        let flow = settle(rule, result, &mut entries)?;
        let done = finish(&mut tx, &evref, received.clone(), entries, flow).await?;
        Ok(commit(&mut tx, &evref, received, done).await?)
    }

    /// Applies a person's resolution of a conflict through the normal outbound path:
    /// a field's value (manual review), or the target record to link (identity).
    async fn resolve_conflict(
        &self,
        rule: &RuleSpec,
        ev: &Trigger,
        conflict_id: i64,
        by: &str,
        resolution: &Resolution,
        attempt: u32,
    ) -> Result<Done, Failure> {
        let evref = EventRef {
            event_id: ev.event_id.clone(),
            correlation_id: ev.correlation_id.clone(),
        };
        let mut tx = self.store.begin_record(&rule.name, &ev.record_id).await?;
        if tx.already_processed(&ev.event_id).await? {
            tx.commit().await?;
            return Ok(Done::Duplicate);
        }
        let received = Entry::webhook_received("operator", "resolution", &ev.event_id, attempt);
        let mut entries = vec![];
        if let Resolution::Link { target_id } = resolution {
            // Checked again under the record's lease: since the operator chose, the
            // target record may have been linked to another source record.
            if let Some(other) = self.store.source_for_target(&rule.name, target_id).await?
                && other != ev.record_id
            {
                let refusal = Entry::target_rejected(
                    &rule.target.system,
                    409,
                    &format!(
                        "record {target_id} is already linked to source record {other}; the resolution was not applied"
                    ),
                );
                tx.open_conflict("resolution_refused", &refusal);
                tx.append(&evref, &[received, refusal]);
                tx.mark_processed(&ev.event_id, Done::Conflict.as_str());
                tx.commit().await?;
                return Ok(Done::Conflict);
            }
            // An identity conflict: link the chosen record, then sync in full.
            tx.save_state(
                Some(target_id),
                Some(json!({"step": "chosen by a person"})),
                None,
                &Fields::new(),
            );
            entries.push(Entry::resolved("the link", &json!(target_id), by));
            // The link is saved with the step's commit; the decision starts from it.
            let mut known = load(&mut tx, rule).await?;
            known.prior.target_id = Some(target_id.clone());
            let mut again = ev.clone();
            again.work = Work::Rehydrate;
            let result = self
                .sync_one(
                    rule,
                    Side::Source,
                    &ev.record_id,
                    &again,
                    &mut tx,
                    &known,
                    &mut entries,
                )
                .await;
            let flow = settle(rule, result, &mut entries)?;
            tx.resolve_conflict(conflict_id);
            let done = finish(&mut tx, &evref, received.clone(), entries, flow).await?;
            return Ok(commit(&mut tx, &evref, received, done).await?);
        }
        let (field, value) = match resolution {
            Resolution::Value { field, value } => (field.clone(), value.clone()),
            // Handled above.
            Resolution::Link { .. } => return Ok(Done::Unchanged),
        };
        let known = load(&mut tx, rule).await?;
        // A resolution with nothing to apply to is still done: the ledger accounts for
        // it.
        let (Some(target_id), Some(mut state)) =
            (known.prior.target_id.clone(), known.state.clone())
        else {
            tx.mark_processed(&ev.event_id, Done::Unchanged.as_str());
            tx.commit().await?;
            return Ok(Done::Unchanged);
        };
        let source = self
            .connectors
            .endpoint(&rule.source.system, &rule.source.app)?;
        let Some(record) = self
            .limiter
            .limit(&source)
            .call(|api| api.fetch(&ev.record_id))
            .await?
        else {
            tx.mark_processed(&ev.event_id, Done::Deleted.as_str());
            tx.commit().await?;
            return Ok(Done::Deleted);
        };
        state.revisions.insert(
            rule.source.system.clone(),
            record.revision.unwrap_or_default(),
        );
        state.canonical.insert(field.clone(), value.clone());
        state.vv.bump("operator");
        state.field_versions.insert(
            field.clone(),
            domain::authority::FieldVersion {
                vv: state.vv.clone(),
                by: "operator".into(),
                at: Some(chrono::Utc::now()),
            },
        );
        entries.push(Entry::resolved(&field, &value, by));
        let mut writes = Fields::new();
        writes.insert(field, value);
        let planned = Planned {
            record,
            target_id: Some(target_id),
            target_fields: writes.clone(),
            source_fields: writes,
            state,
            matched_by: None,
            key_base: format!("{}:{}:resolution:{conflict_id}", rule.name, ev.record_id),
            confirmed: vec![],
            review: None,
            in_doubt: None,
        };
        let result = async {
            let performed = self
                .perform(rule, ev, &mut tx, planned, &mut entries)
                .await?;
            self.finish_write(rule, performed, &mut entries).await
        }
        .await;
        let flow = settle(rule, result, &mut entries)?;
        tx.resolve_conflict(conflict_id);
        let done = finish(&mut tx, &evref, received.clone(), entries, flow).await?;
        Ok(commit(&mut tx, &evref, received, done).await?)
    }

    /// Why the rule's work must wait, if it must: `(reason code, words)`.
    fn blocked(&self, rule: &RuleSpec, paused: bool) -> Option<(&'static str, String)> {
        if paused {
            return Some((
                "paused",
                format!("rule {} or one of its systems is paused", rule.name),
            ));
        }
        self.window_closed(rule).map(|w| ("window", w))
    }

    /// Words for a closed write window of the rule's target, if it is closed.
    fn window_closed(&self, rule: &RuleSpec) -> Option<String> {
        let windows = self
            .rules
            .systems
            .get(&rule.target.system)?
            .write_windows
            .as_ref()?;
        let now = chrono::Utc::now();
        (!windows.is_open(now)).then(|| {
            let next = windows
                .next_open_text(now)
                .map(|at| format!("; the next opens at {at}"))
                .unwrap_or_default();
            format!(
                "{} accepts writes only inside its write window ({}){next}",
                rule.target.system, windows.time_zone
            )
        })
    }

    /// Decides and writes one record.
    #[allow(clippy::too_many_arguments)]
    async fn sync_one(
        &self,
        rule: &RuleSpec,
        side: Side,
        record_id: &str,
        ev: &Trigger,
        tx: &mut RecordTx,
        known: &Known,
        entries: &mut Vec<Entry>,
    ) -> Result<Flow, Failure> {
        match self
            .decide(rule, side, record_id, ev, known, entries)
            .await?
        {
            Decision::Flow(flow) => Ok(flow),
            Decision::Planned(planned) => {
                let planned = self.perform(rule, ev, tx, *planned, entries).await?;
                self.finish_write(rule, planned, entries).await
            }
            Decision::Gone {
                gone,
                record_id,
                target_id,
            } => {
                self.gone(rule, tx, gone, &record_id, &target_id, entries)
                    .await
            }
        }
    }
}
