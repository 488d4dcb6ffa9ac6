//! One event under one rule: the decide-and-write step. It runs inside the record's
//! transaction (which holds the record's lock for the whole fleet), fetches the
//! canonical record, resolves identity, writes the target and the write-back, and
//! commits state, link, history and the processed mark together.

use connectors::{ConnectorError, Connectors};
use domain::authority::{
    Classification, Observation, PendingWrite, SyncState, Verdict, initial, observe, wrote,
};
use domain::history::Entry;
use domain::identity::{
    IdentityDecision, MatchStep, after_search, lookup_attempts, when_nothing_matched,
};
use domain::mapping::map_fields;
use domain::record::{Fields, SourceRecord};
use domain::rules::{OnDelete, RuleSpec, SyncRules, SystemKind};
use domain::sync::{PriorState, check_fresh, payload_disagreements, write_back};
use std::collections::BTreeMap;

use queue::{Command, CommandV2, EventV1, QueueMessage, Resolution};
use serde_json::{Value, json};
use store::{EventRef, Intent, PendingCreate, RecordTx, Store, StoreError, StoreErrorKind};

pub use crate::classify::Failure;
use crate::classify::{self, Action};
use crate::limiter::{Limited, Limiter};

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
}

/// What the connector part decided, before it is committed.
enum Flow {
    Finish(Done),
    Conflict { kind: &'static str },
    Synced { done: Done, state: Box<SavedState> },
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
}

/// Which side of a rule an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The rule's source.
    Source,
    /// The target of a two-way rule.
    Target,
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
}

/// The trigger's event type of a rehydration: refetch everything and resync, as if
/// nothing had been synced before (the link is kept). Version-1 messages carried it.
pub const REHYDRATE: &str = queue::message::V1_REHYDRATE;

/// What a decision starts from: the store's memory of the record.
struct Known {
    prior: PriorState,
    state: Option<SyncState>,
    /// Per system, the operations sent to it and not confirmed: `(id, fields, vv)`.
    sent: BTreeMap<String, Vec<(i64, Value, Value)>>,
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
        let trigger =
            |system: &str, app: &str, record_id: &str, event_type: &str, payload| EventV1 {
                event_id: cmd.id.clone(),
                system: system.to_owned(),
                app: app.to_owned(),
                record_id: record_id.to_owned(),
                event_type: event_type.to_owned(),
                received_at: cmd.issued_at,
                correlation_id: cmd.correlation_id.clone(),
                payload,
            };
        let (rule, record_id, event_type, payload) = match &cmd.command {
            Command::Change {
                system,
                app,
                record_id,
                event_type,
                payload,
            } => {
                let ev = trigger(system, app, record_id, event_type, payload.clone());
                return self.change(&ev, attempt).await;
            }
            Command::Resolve {
                rule,
                record_id,
                conflict_id,
                by,
                resolution,
            } => {
                let Some(spec) = self.rules.rule(rule) else {
                    return Ok(vec![]);
                };
                let ev = trigger(
                    &spec.source.system,
                    &spec.source.app,
                    record_id,
                    "resolution",
                    Value::Null,
                );
                let done = self
                    .resolve_conflict(spec, &ev, *conflict_id, by, resolution, attempt)
                    .await?;
                return Ok(vec![(spec.name.clone(), done)]);
            }
            Command::Rehydrate { rule, record_id } => (rule, record_id, REHYDRATE, Value::Null),
            Command::Resync {
                rule,
                record_id,
                revision,
            } => (rule, record_id, "resync", json!({"revision": revision})),
            Command::Repair {
                rule,
                record_id,
                reason,
            } => (rule, record_id, "repair", json!({"reason": reason})),
        };
        // The rest concern one rule's source record: decided from the canonical
        // record, as a change would be.
        let Some(spec) = self.rules.rule(rule) else {
            return Ok(vec![]);
        };
        let ev = trigger(
            &spec.source.system,
            &spec.source.app,
            record_id,
            event_type,
            payload,
        );
        let done = self.process_rule(spec, Side::Source, &ev, attempt).await?;
        Ok(vec![(spec.name.clone(), done)])
    }

    /// A change under every rule that reads or writes its system's app.
    async fn change(&self, ev: &EventV1, attempt: u32) -> Result<Vec<(String, Done)>, Failure> {
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
        ev: &EventV1,
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
        if tx.already_processed(&ev.event_id).await? {
            tx.append(&evref, &[Entry::duplicate_skipped(&ev.event_id)]);
            tx.commit().await?;
            return Ok(Done::Duplicate);
        }
        let received = Entry::webhook_received(&ev.system, &ev.event_type, &ev.event_id, attempt);
        if let Some(why) = self.blocked(rule, &mut tx).await? {
            // Nothing is fetched or written: the latest event waits in PostgreSQL.
            let body =
                serde_json::to_value(QueueMessage::V1(ev.clone())).expect("an event serializes");
            let coalesced = tx.park(&body, why.0).await?;
            tx.append(&evref, &[received, Entry::parked(&why.1, coalesced)]);
            tx.commit().await?;
            return Ok(Done::Parked);
        }
        let known = load(&mut tx, rule).await?;
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
        ev: &EventV1,
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
            again.event_type = REHYDRATE.to_owned();
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
        let (Some(target_id), Some(mut state)) =
            (known.prior.target_id.clone(), known.state.clone())
        else {
            tx.commit().await?;
            return Ok(Done::Unchanged);
        };
        let source = self
            .connectors
            .endpoint(&rule.source.system, &rule.source.app)?;
        let Some(record) = self.limiter.limit(&source).fetch(&ev.record_id).await? else {
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
    async fn blocked(
        &self,
        rule: &RuleSpec,
        tx: &mut RecordTx,
    ) -> Result<Option<(&'static str, String)>, StoreError> {
        if tx
            .is_paused(&[&rule.source.system, &rule.target.system])
            .await?
        {
            return Ok(Some((
                "paused",
                format!("rule {} or one of its systems is paused", rule.name),
            )));
        }
        Ok(self.window_closed(rule).map(|w| ("window", w)))
    }

    /// Words for a closed write window of the rule's target, if it is closed.
    fn window_closed(&self, rule: &RuleSpec) -> Option<String> {
        let windows = self
            .rules
            .systems
            .get(&rule.target.system)?
            .write_windows
            .as_ref()?;
        (!windows.is_open(chrono::Utc::now())).then(|| {
            format!(
                "{} accepts writes only inside its write window ({})",
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
        ev: &EventV1,
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
        }
    }

    /// The canonical values a source record maps to.
    fn source_values(
        rule: &RuleSpec,
        record: &SourceRecord,
    ) -> Result<Fields, Vec<domain::mapping::MappingProblem>> {
        map_fields(&rule.fields, &record.fields)
    }

    /// The canonical values a target record holds.
    fn target_values(rule: &RuleSpec, fields: &Fields) -> Fields {
        rule.fields
            .iter()
            .filter_map(|m| Some((m.target.clone(), fields.get(&m.target)?.clone())))
            .collect()
    }

    /// The part that reads: the canonical records, freshness, mapping, identity, and
    /// field authority. What happened is appended to `entries`, which survive a
    /// data-quality failure.
    async fn decide(
        &self,
        rule: &RuleSpec,
        side: Side,
        record_id: &str,
        ev: &EventV1,
        known: &Known,
        entries: &mut Vec<Entry>,
    ) -> Result<Decision, Failure> {
        let source_ep = self
            .connectors
            .endpoint(&rule.source.system, &rule.source.app)?;
        let target_ep = self
            .connectors
            .endpoint(&rule.target.system, &rule.target.entity)?;
        let (source, target) = (
            self.limiter.limit(&source_ep),
            self.limiter.limit(&target_ep),
        );
        let rehydrating = ev.event_type == REHYDRATE;
        let policies = rule.policies();
        let systems = [rule.source.system.as_str(), rule.target.system.as_str()];

        // The payload is a hint; the canonical record is the truth.
        let Some(record) = source.fetch(record_id).await? else {
            let unlink = rule.on_delete == OnDelete::Unlink;
            entries.push(Entry::source_deleted(source.system(), unlink));
            return Ok(Decision::Flow(Flow::Finish(Done::Deleted)));
        };
        if side == Side::Source {
            entries.push(Entry::fetched(source.system(), record.revision));
            if let Some(hint) = payload_record(&self.rules, ev) {
                entries.extend(payload_disagreements(rule, &hint, &record.fields));
            }
        }
        let values = match Self::source_values(rule, &record) {
            Ok(m) => m,
            Err(problems) => {
                entries.push(Entry::invalid(&problems));
                return Ok(Decision::Flow(Flow::Conflict { kind: "invalid" }));
            }
        };
        let key_base = format!("{}:{}", rule.name, record.id);

        // A record linked before, with its state: field authority decides. A two-way
        // rule observes both systems, whichever sent the event (the event is only a
        // trigger), the source first: a change each made since the last sync is then
        // seen for what it is, and coalesced parked events lose nothing.
        if let (Some(target_id), Some(state), false) =
            (&known.prior.target_id, &known.state, rehydrating)
        {
            let mut observations = vec![];
            let source_seen = state.revisions.get(&rule.source.system).copied();
            match (record.revision, source_seen) {
                (Some(now), Some(seen)) if now <= seen => {
                    if side == Side::Source {
                        entries.push(Entry::stale_skipped(now, seen));
                    }
                }
                _ => observations.push(Observation {
                    system: rule.source.system.clone(),
                    revision: record.revision,
                    values,
                    changed_at: record.changed_at,
                }),
            }
            if rule.both_ways() {
                let Some(t) = target.fetch(target_id).await? else {
                    entries.push(Entry::target_deleted(target.system(), target_id));
                    return Ok(Decision::Flow(Flow::Finish(Done::Deleted)));
                };
                if side == Side::Target {
                    entries.push(Entry::fetched(target.system(), t.revision));
                }
                observations.push(Observation {
                    system: rule.target.system.clone(),
                    revision: t.revision,
                    values: Self::target_values(rule, &t.fields),
                    changed_at: t.changed_at,
                });
            }
            let mut state = state.clone();
            let mut writes: BTreeMap<String, Fields> = BTreeMap::new();
            let mut confirmed = vec![];
            let mut review = None;
            let mut changed = false;
            for obs in &observations {
                let sent: &[(i64, Value, Value)] = known
                    .sent
                    .get(&obs.system)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let pending: Vec<PendingWrite> = sent
                    .iter()
                    .filter_map(|(_, f, vv)| {
                        Some(PendingWrite {
                            system: obs.system.clone(),
                            values: f.as_object()?.clone(),
                            vv: serde_json::from_value(vv.clone()).ok()?,
                        })
                    })
                    .collect();
                let d = observe(&policies, &systems, &state, obs, &pending);
                let triggered = (obs.system == rule.source.system) == (side == Side::Source);
                match d.classification {
                    Classification::Confirmation => {
                        confirmed.extend(sent.iter().map(|(id, _, _)| *id));
                        if triggered {
                            entries.push(Entry::classified(
                                &obs.system,
                                d.classification,
                                obs.revision,
                            ));
                        }
                    }
                    Classification::NoChange if triggered && obs.system == rule.source.system => {
                        entries.push(Entry::no_change(target.system(), target_id))
                    }
                    Classification::Stale
                    | Classification::Duplicate
                    | Classification::NoChange => {
                        if triggered {
                            entries.push(Entry::classified(
                                &obs.system,
                                d.classification,
                                obs.revision,
                            ));
                        }
                    }
                    Classification::NewChange | Classification::Concurrent => changed = true,
                }
                for o in &d.fields {
                    let others: Vec<&str> = systems
                        .iter()
                        .copied()
                        .filter(|s| {
                            *s != obs.system
                                && d.writes.get(*s).is_some_and(|w| w.contains_key(&o.field))
                        })
                        .collect();
                    let e = Entry::field_outcome(&obs.system, o, &others);
                    if o.verdict == Verdict::ManualReview {
                        review = Some(e.clone());
                    }
                    entries.push(e);
                }
                state = d.state;
                // A later observation decides a field again: a write planned by an
                // earlier one that this decision does not repeat is dropped (a field
                // under manual review is written nowhere; a concurrent change that won
                // is not overwritten on the system that made it).
                for o in &d.fields {
                    for (system, planned) in writes.iter_mut() {
                        if !d
                            .writes
                            .get(system)
                            .is_some_and(|w| w.contains_key(&o.field))
                        {
                            planned.remove(&o.field);
                        }
                    }
                }
                for (system, fields) in d.writes {
                    writes.entry(system).or_default().extend(fields);
                }
            }
            if !changed && observations.is_empty() {
                return Ok(Decision::Flow(Flow::Finish(Done::Stale)));
            }
            return Ok(Decision::Planned(Box::new(Planned {
                record,
                target_id: Some(target_id.clone()),
                target_fields: writes.remove(&rule.target.system).unwrap_or_default(),
                source_fields: writes.remove(&rule.source.system).unwrap_or_default(),
                state,
                matched_by: None,
                key_base,
                confirmed,
                review,
                in_doubt: None,
            })));
        }

        // A target event for a record without state: it is settled from the source.
        if side == Side::Target {
            entries.push(Entry::fetched(source.system(), record.revision));
        }
        if !rehydrating && let Err(skip) = check_fresh(&known.prior, &record) {
            entries.push(skip);
            return Ok(Decision::Flow(Flow::Finish(Done::Stale)));
        }
        let Some(lookup) = record
            .text(&rule.identity.source_field)
            .filter(|v| !v.trim().is_empty())
        else {
            entries.push(Entry::no_lookup_value(&rule.identity.source_field));
            return Ok(Decision::Flow(Flow::Conflict {
                kind: "no_lookup_value",
            }));
        };
        let decision = self.resolve(rule, &target, &known.prior, &lookup).await?;
        let mut in_doubt = None;
        if let (None, Some(pending)) = (&known.prior.target_id, &known.pending_create) {
            // An earlier create may have happened (its worker died or lost the answer
            // before committing): never create before knowing.
            let held = rule
                .write_back
                .as_ref()
                .and_then(|wb| record.text(&wb.field))
                .filter(|v| !v.trim().is_empty());
            let mut found = None;
            if let Some(id) = held
                && target.fetch(&id).await?.is_some()
            {
                found = Some((id, "the write-back field"));
            } else if let IdentityDecision::Link { target_id, .. } = &decision {
                found = Some((target_id.clone(), "search"));
            }
            match found {
                Some((id, how)) => {
                    entries.push(Entry::in_doubt_found(
                        target.system(),
                        &id,
                        &pending.key,
                        how,
                    ));
                    in_doubt = Some(InDoubt::Found(pending.id, how));
                    return self
                        .linked(
                            rule,
                            &target,
                            record,
                            values,
                            &policies,
                            Some(id),
                            Some(json!({"step": "in-doubt create", "resolved_by": how})),
                            key_base,
                            lookup,
                            rehydrating,
                            in_doubt,
                        )
                        .await;
                }
                None if matches!(decision, IdentityDecision::Create) => {
                    let waited = chrono::Utc::now() - pending.since;
                    let settle = chrono::Duration::from_std(self.in_doubt_settle)
                        .unwrap_or(chrono::Duration::MAX);
                    if waited < settle {
                        let left = (settle - waited)
                            .to_std()
                            .unwrap_or_default()
                            .max(std::time::Duration::from_millis(500));
                        return Err(Failure::InDoubt {
                            key: pending.key.clone(),
                            retry_after: left,
                        });
                    }
                    entries.push(Entry::in_doubt_not_found(
                        target.system(),
                        &pending.key,
                        waited.num_milliseconds(),
                    ));
                    in_doubt = Some(InDoubt::Again(pending.clone()));
                }
                None => {}
            }
        }
        let (target_id, matched_by) = match &decision {
            IdentityDecision::Link {
                target_id,
                step,
                matched_value,
            } => {
                let by = (*step != MatchStep::StoredLink).then(|| {
                    entries.push(Entry::matched(
                        target.system(),
                        target_id,
                        step,
                        matched_value.as_deref(),
                    ));
                    json!({"step": step, "value": matched_value})
                });
                (Some(target_id.clone()), by)
            }
            IdentityDecision::Create => (None, Some(json!({"step": "created", "value": lookup}))),
            IdentityDecision::Ambiguous {
                step,
                value,
                candidates,
            } => {
                entries.push(Entry::ambiguous(step, value, candidates));
                return Ok(Decision::Flow(Flow::Conflict {
                    kind: "several_matches",
                }));
            }
            IdentityDecision::NoMatchConflict => {
                entries.push(Entry::no_match_conflict(&lookup));
                return Ok(Decision::Flow(Flow::Conflict { kind: "no_match" }));
            }
            IdentityDecision::Skip => {
                entries.push(Entry::skipped_no_match(&lookup));
                let authority = SyncState::default();
                let state = SavedState {
                    target_id: None,
                    matched_by: None,
                    revision: record.revision,
                    authority,
                    ops: vec![],
                    confirmed: vec![],
                    review: None,
                    clash: None,
                    found: None,
                };
                return Ok(Decision::Flow(Flow::Synced {
                    done: Done::Skipped,
                    state: Box::new(state),
                }));
            }
        };
        self.linked(
            rule,
            &target,
            record,
            values,
            &policies,
            target_id,
            matched_by,
            key_base,
            lookup,
            rehydrating,
            in_doubt,
        )
        .await
    }

    /// Linked for the first time (or rehydrated, or to be created): each field takes
    /// its owner's value.
    #[allow(clippy::too_many_arguments)]
    async fn linked(
        &self,
        rule: &RuleSpec,
        target: &Limited<'_>,
        record: SourceRecord,
        values: Fields,
        policies: &[domain::authority::FieldPolicy],
        target_id: Option<String>,
        matched_by: Option<Value>,
        key_base: String,
        lookup: String,
        rehydrating: bool,
        in_doubt: Option<InDoubt>,
    ) -> Result<Decision, Failure> {
        let target_values = match &target_id {
            Some(id) => target
                .fetch(id)
                .await?
                .map(|t| Self::target_values(rule, &t.fields)),
            None => None,
        };
        let (state, mut writes) = initial(
            policies,
            &rule.source.system,
            &rule.target.system,
            &values,
            target_values.as_ref(),
            record.revision,
        );
        let mut target_fields = writes.remove(&rule.target.system).unwrap_or_default();
        if target_id.is_none() {
            // A new record also gets the lookup value, so that the next search finds it.
            target_fields
                .entry(rule.identity.target_field.clone())
                .or_insert_with(|| Value::String(lookup.clone()));
        }
        if rehydrating {
            // Everything the source owns is written again.
            for p in policies {
                if !matches!(&p.owner, domain::authority::Owner::System(o) if o == &rule.target.system)
                    && let Some(v) = state.canonical.get(&p.field)
                {
                    target_fields.insert(p.field.clone(), v.clone());
                }
            }
        }
        Ok(Decision::Planned(Box::new(Planned {
            record,
            target_id,
            target_fields,
            source_fields: writes.remove(&rule.source.system).unwrap_or_default(),
            state,
            matched_by,
            key_base,
            confirmed: vec![],
            review: None,
            in_doubt,
        })))
    }

    /// Makes the planned writes to the target and the corrections to the source, one
    /// record at a time (the flush does target updates in bulk before this). Every
    /// write is first committed as an intent (transactional outbox), so that a value
    /// PostgreSQL cannot store stops the step before anything is sent, and a create
    /// whose answer is lost is known to the next holder of the record.
    async fn perform(
        &self,
        rule: &RuleSpec,
        ev: &EventV1,
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
            (None, _) => Some(("create", format!("{key_base}:create"))),
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
                let mut bad = tx.unstorable(&all).await?;
                if bad.is_empty() {
                    bad.push(("the record".to_owned(), e.reason()));
                }
                return Err(Failure::Unstorable(bad));
            }
            Err(e) => return Err(e.into()),
        };

        let mut ops = vec![];
        if let Some((kind, key)) = target_op {
            let intent = match reused_create {
                Some(id) => Some(id),
                None => ids.next(),
            };
            if kind == "create" {
                // The key is the same for every attempt at this record's creation; a
                // target that ignores it is covered by the in-doubt resolution.
                let (id, rev) = target.create(&planned.target_fields, &key).await?;
                entries.push(Entry::created(target.system(), &id, &planned.target_fields));
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
                });
                planned.target_id = Some(id);
            } else {
                let id = planned.target_id.clone().expect("an update has a target");
                let new_rev = target.update(&id, &planned.target_fields, &key).await?;
                entries.push(Entry::updated(target.system(), &id, &planned.target_fields));
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
                .update_checked(&planned.record.id, &fields, base, &key)
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

    /// After the writes: the write-back into the source, and the state to save.
    async fn finish_write(
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
                .write_field(&record.id, &field, &value, record.revision)
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

    /// Flushes one batch of a rule's parked work, if its rule, systems and write window
    /// allow: every record is decided again from its canonical state, updates go in
    /// bulk calls where the target has them, and the whole batch commits together (or
    /// rolls back into the parked table). Returns how many records it took.
    pub async fn flush(&self, rule_name: &str) -> Result<usize, Failure> {
        let Some(rule) = self.rules.rule(rule_name) else {
            return Ok(0);
        };
        if self.window_closed(rule).is_some() {
            return Ok(0);
        }
        let paused = self.store.paused().await?;
        let is_paused =
            |scope: &str, name: &str| paused.iter().any(|(s, n)| s == scope && n == name);
        if is_paused("rule", &rule.name)
            || is_paused("system", &rule.source.system)
            || is_paused("system", &rule.target.system)
        {
            return Ok(0);
        }
        let target = self
            .connectors
            .endpoint(&rule.target.system, &rule.target.entity)?;
        let bulk_max = target.bulk_max();
        let Some((mut tx, parked)) = self
            .store
            .begin_batch(&rule.name, bulk_max.unwrap_or(100) as i64)
            .await?
        else {
            return Ok(0);
        };
        struct Item {
            ev: EventV1,
            record_id: String,
            entries: Vec<Entry>,
            decision: Option<Decision>,
            bulk_ops: Vec<Op>,
        }
        let mut items = vec![];
        for row in &parked {
            let Ok(QueueMessage::V1(ev)) =
                serde_json::from_value::<QueueMessage>(row.event.clone())
            else {
                tracing::error!(
                    rule = rule.name,
                    record = row.source_record_id,
                    "a parked event cannot be read; it is dropped"
                );
                continue;
            };
            tx.switch_to(&row.source_record_id);
            if tx.already_processed(&ev.event_id).await? {
                continue;
            }
            let side = if ev.system == rule.source.system {
                Side::Source
            } else {
                Side::Target
            };
            let known = load(&mut tx, rule).await?;
            let mut entries = vec![];
            let decision = match self
                .decide(rule, side, &row.source_record_id, &ev, &known, &mut entries)
                .await
            {
                Ok(d) => d,
                Err(Failure::Connector(e)) if classify::connector(&e) == Action::Conflict => {
                    Decision::Flow(rejected(rule, &e, &mut entries))
                }
                // The batch rolls back: everything is parked again, as it was.
                Err(e) => return Err(e),
            };
            items.push(Item {
                ev,
                record_id: row.source_record_id.clone(),
                entries,
                decision: Some(decision),
                bulk_ops: vec![],
            });
        }

        // Updates of linked records in bulk, where the target has a bulk endpoint.
        if let Some(max) = bulk_max {
            let updates: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, it)| matches!(&it.decision, Some(Decision::Planned(p)) if p.target_id.is_some() && !p.target_fields.is_empty()))
                .map(|(i, _)| i)
                .collect();
            for chunk in updates.chunks(max) {
                let batch: Vec<(String, Fields)> = chunk
                    .iter()
                    .filter_map(|i| match &items[*i].decision {
                        Some(Decision::Planned(p)) => {
                            Some((p.target_id.clone()?, p.target_fields.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                let limited = self.limiter.limit(&target);
                let key = format!("{}:bulk:{}", rule.name, uuid::Uuid::new_v4());
                match limited.bulk_update(&batch, &key).await {
                    Ok(()) => {
                        for (i, (target_id, fields)) in chunk.iter().zip(&batch) {
                            let item = &mut items[*i];
                            item.entries.push(Entry::updated_in_bulk(
                                target.system(),
                                target_id,
                                fields,
                                batch.len(),
                            ));
                            if let Some(Decision::Planned(p)) = &mut item.decision {
                                let vv = serde_json::to_value(&p.state.vv).unwrap_or_default();
                                wrote(&mut p.state, &rule.target.system, fields, None);
                                item.bulk_ops.push(Op {
                                    system: rule.target.system.clone(),
                                    key: key.clone(),
                                    fields: fields.clone(),
                                    vv,
                                    intent: None,
                                    created: None,
                                });
                                p.target_fields = Fields::new();
                            }
                        }
                    }
                    // One record's data is refused: write them one by one, so that only
                    // that record becomes a conflict.
                    Err(Failure::Connector(e)) if classify::connector(&e) == Action::Conflict => {
                        tracing::warn!(error = %e, "a bulk update was refused; writing its records one by one");
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        let mut flushed = 0;
        for item in items {
            let Item {
                ev,
                record_id,
                mut entries,
                decision,
                bulk_ops,
            } = item;
            let evref = EventRef {
                event_id: ev.event_id.clone(),
                correlation_id: ev.correlation_id.clone(),
            };
            tx.switch_to(&record_id);
            let flow = match decision.expect("every item has a decision") {
                Decision::Flow(flow) => flow,
                Decision::Planned(planned) => {
                    let result = async {
                        let (planned, mut ops) = self
                            .perform(rule, &ev, &mut tx, *planned, &mut entries)
                            .await?;
                        ops.splice(0..0, bulk_ops);
                        self.finish_write(rule, (planned, ops), &mut entries).await
                    }
                    .await;
                    // Any other failure drops the batch: everything stays parked.
                    settle(rule, result, &mut entries)?
                }
            };
            let received = Entry::webhook_received(&ev.system, &ev.event_type, &ev.event_id, 1);
            finish(&mut tx, &evref, received, entries, flow).await?;
            flushed += 1;
        }
        tx.commit().await?;
        Ok(flushed.max(parked.len()))
    }

    /// Identity resolution against the target: stored link, lookup value, variants.
    async fn resolve(
        &self,
        rule: &RuleSpec,
        target: &Limited<'_>,
        prior: &PriorState,
        lookup: &str,
    ) -> Result<IdentityDecision, Failure> {
        if let Some(id) = &prior.target_id {
            return Ok(IdentityDecision::Link {
                target_id: id.clone(),
                step: MatchStep::StoredLink,
                matched_value: None,
            });
        }
        for attempt in lookup_attempts(&rule.identity, lookup) {
            let found: Vec<String> = target
                .search(&rule.identity.target_field, &attempt.value)
                .await?
                .into_iter()
                .map(|r| r.id)
                .collect();
            if let Some(decision) = after_search(&attempt, &found) {
                return Ok(decision);
            }
        }
        Ok(when_nothing_matched(rule.on_missing))
    }
}

/// The record a webhook payload carried, as flat fields (kintone webhooks carry the
/// whole record).
fn payload_record(rules: &SyncRules, ev: &EventV1) -> Option<Fields> {
    let sys = rules.systems.get(&ev.system)?;
    match sys.kind {
        SystemKind::Kintone => ev
            .payload
            .get("record")
            .map(connectors::kintone::payload_fields),
        SystemKind::Rest => None,
    }
}

fn connector_system(e: &ConnectorError) -> Option<&str> {
    match e {
        ConnectorError::Rejected { system, .. } => Some(system),
        _ => None,
    }
}

/// The idempotency key of a write: a retry of the same event making the same write
/// (record, fields, values, version) gets the same key, so the target recognises it;
/// any other write, even of the same values later on, gets another.
fn write_key(
    key_base: &str,
    what: &str,
    id: &str,
    fields: &Fields,
    ev: &EventV1,
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
fn rejected(rule: &RuleSpec, e: &ConnectorError, entries: &mut Vec<Entry>) -> Flow {
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

/// Reads what the store knows of the transaction's record, and the operations sent to
/// the rule's systems that are not confirmed.
async fn load(tx: &mut RecordTx, rule: &RuleSpec) -> Result<Known, StoreError> {
    let (prior, state) = tx.prior().await?;
    let state = state.and_then(|v| serde_json::from_value(v).ok());
    let (ops, pending_create) = tx.open_ops().await?;
    let mut sent: BTreeMap<String, Vec<(i64, Value, Value)>> = BTreeMap::new();
    for system in [&rule.source.system, &rule.target.system] {
        sent.insert(system.clone(), vec![]);
    }
    for (system, id, fields, vv) in ops {
        sent.entry(system).or_default().push((id, fields, vv));
    }
    Ok(Known {
        prior,
        state,
        sent,
        pending_create,
    })
}

/// Canonical values in the source's form and field codes (`reverse` transforms).
fn to_source(rule: &RuleSpec, canonical: &Fields) -> Fields {
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

/// Saves what a flow decided for the transaction's current record, its history, and
/// the processed mark. The caller commits.
async fn finish(
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
async fn commit(
    tx: &mut RecordTx,
    evref: &EventRef,
    received: Entry,
    done: Done,
) -> Result<Done, StoreError> {
    match tx.commit().await {
        Ok(()) => Ok(done),
        Err(e) if e.kind() == StoreErrorKind::Data => {
            tracing::error!(error = %e, "PostgreSQL refused the record's values; a conflict is opened for a person");
            tx.discard_writes();
            let refusal = Entry::unstorable(&[("the record's history".to_owned(), e.reason())]);
            tx.open_conflict("unstorable", &refusal);
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
fn settle(
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
