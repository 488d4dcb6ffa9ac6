//! One event under one rule: the decide-and-write step. It runs inside the record's
//! transaction (which holds the record's lock for the whole fleet), fetches the
//! canonical record, resolves identity, writes the target and the write-back, and
//! commits state, link, history and the processed mark together.

use connectors::{ConnectorError, Connectors};
use domain::history::Entry;
use domain::identity::{
    IdentityDecision, MatchStep, after_search, lookup_attempts, when_nothing_matched,
};
use domain::mapping::map_fields;
use domain::record::{Fields, SourceRecord};
use domain::rules::{OnDelete, RuleSpec, SyncRules, SystemKind};
use domain::sync::{
    PriorState, Write, check_fresh, payload_disagreements, plan_write, sent_after, write_back,
};
use queue::{EventV1, QueueMessage};
use serde_json::{Value, json};
use store::{EventRef, RecordTx, Store, StoreError};

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

/// Why processing did not end: the runner decides between giving the message back,
/// a retry and the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// PostgreSQL is unavailable: give the message back without counting an attempt.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An external system failed in a way that retrying may cure.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
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
}

/// What the connector part decided, before it is committed.
enum Flow {
    Finish(Done),
    Conflict { kind: &'static str },
    Synced { done: Done, state: SavedState },
}

struct SavedState {
    target_id: Option<String>,
    matched_by: Option<Value>,
    revision: Option<i64>,
    sent: Fields,
}

/// A write decided but not yet made.
struct Planned {
    record: SourceRecord,
    write: Write,
    matched_by: Option<Value>,
    mapped: Fields,
    key_base: String,
}

/// What deciding ended with: finished without a write, or a planned write.
enum Decision {
    Flow(Flow),
    Planned(Planned),
}

/// The event type of a rehydration: refetch everything and resync, as if nothing had
/// been synced before (the link is kept).
pub const REHYDRATE: &str = "recordsync.rehydrate";

impl Processor {
    /// Processes the event under every rule that watches its app. Rules already done
    /// for this event are skipped, so a retry after a partial failure is safe.
    pub async fn process(
        &self,
        ev: &EventV1,
        attempt: u32,
    ) -> Result<Vec<(String, Done)>, Failure> {
        let mut outcomes = vec![];
        let rules: Vec<&RuleSpec> = self.rules.rules_for(&ev.system, &ev.app).collect();
        for rule in rules {
            let done = self.process_rule(rule, ev, attempt).await?;
            outcomes.push((rule.name.clone(), done));
        }
        Ok(outcomes)
    }

    async fn process_rule(
        &self,
        rule: &RuleSpec,
        ev: &EventV1,
        attempt: u32,
    ) -> Result<Done, Failure> {
        let evref = EventRef {
            event_id: ev.event_id.clone(),
            correlation_id: ev.correlation_id.clone(),
        };
        let mut tx = self.store.begin_record(&rule.name, &ev.record_id).await?;
        if tx.already_processed(&ev.event_id).await? {
            tx.append(&evref, &[Entry::duplicate_skipped(&ev.event_id)])
                .await?;
            tx.commit().await?;
            return Ok(Done::Duplicate);
        }
        let received = Entry::webhook_received(&ev.system, &ev.event_type, &ev.event_id, attempt);
        if let Some(why) = self.blocked(rule, &mut tx).await? {
            // Nothing is fetched or written: the latest event waits in PostgreSQL.
            let body =
                serde_json::to_value(QueueMessage::V1(ev.clone())).expect("an event serializes");
            let coalesced = tx.park(&body, why.0).await?;
            tx.append(&evref, &[received, Entry::parked(&why.1, coalesced)])
                .await?;
            tx.commit().await?;
            return Ok(Done::Parked);
        }
        let prior = tx.prior().await?;
        let mut entries = vec![];
        let flow = match self.sync_one(rule, ev, &prior, &mut entries).await {
            Ok(flow) => flow,
            Err(Failure::Connector(e)) if classify::connector(&e) == Action::Conflict => {
                rejected(rule, &e, &mut entries)
            }
            // The transaction rolls back; nothing of this attempt is kept but the
            // retry entry the runner writes.
            Err(e) => return Err(e),
        };
        let done = finish(&mut tx, &evref, received, entries, flow).await?;
        tx.commit().await?;
        Ok(done)
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
    async fn sync_one(
        &self,
        rule: &RuleSpec,
        ev: &EventV1,
        prior: &PriorState,
        entries: &mut Vec<Entry>,
    ) -> Result<Flow, Failure> {
        match self.decide(rule, ev, prior, entries).await? {
            Decision::Flow(flow) => Ok(flow),
            Decision::Planned(planned) => {
                let (target_id, done) = self.perform(rule, ev, &planned, entries).await?;
                self.finish_write(rule, prior, planned, target_id, done, entries)
                    .await
            }
        }
    }

    /// The part that reads: the canonical record, freshness, mapping, identity. What
    /// happened is appended to `entries`, which survive a data-quality failure.
    async fn decide(
        &self,
        rule: &RuleSpec,
        ev: &EventV1,
        prior: &PriorState,
        entries: &mut Vec<Entry>,
    ) -> Result<Decision, Failure> {
        let source = self
            .connectors
            .endpoint(&rule.source.system, &rule.source.app)?;
        let target = self
            .connectors
            .endpoint(&rule.target.system, &rule.target.entity)?;
        let (source, target) = (self.limiter.limit(&source), self.limiter.limit(&target));
        let rehydrating;
        let prior = if ev.event_type == REHYDRATE {
            rehydrating = PriorState {
                target_id: prior.target_id.clone(),
                source_revision: None,
                sent: Fields::new(),
            };
            &rehydrating
        } else {
            prior
        };

        // The payload is a hint; the canonical record is the truth.
        let Some(record) = source.fetch(&ev.record_id).await? else {
            let unlink = rule.on_delete == OnDelete::Unlink;
            entries.push(Entry::source_deleted(source.system(), unlink));
            return Ok(Decision::Flow(Flow::Finish(Done::Deleted)));
        };
        entries.push(Entry::fetched(source.system(), record.revision));
        if let Some(hint) = payload_record(&self.rules, ev) {
            entries.extend(payload_disagreements(rule, &hint, &record.fields));
        }
        if let Err(skip) = check_fresh(prior, &record) {
            entries.push(skip);
            return Ok(Decision::Flow(Flow::Finish(Done::Stale)));
        }
        let mapped = match map_fields(&rule.fields, &record.fields) {
            Ok(m) => m,
            Err(problems) => {
                entries.push(Entry::invalid(&problems));
                return Ok(Decision::Flow(Flow::Conflict { kind: "invalid" }));
            }
        };
        let Some(lookup) = record
            .text(&rule.identity.source_field)
            .filter(|v| !v.trim().is_empty())
        else {
            entries.push(Entry::no_lookup_value(&rule.identity.source_field));
            return Ok(Decision::Flow(Flow::Conflict {
                kind: "no_lookup_value",
            }));
        };

        let decision = self.resolve(rule, &target, prior, &lookup).await?;
        let matched_by = match &decision {
            IdentityDecision::Link {
                target_id,
                step,
                matched_value,
            } if *step != MatchStep::StoredLink => {
                entries.push(Entry::matched(
                    target.system(),
                    target_id,
                    step,
                    matched_value.as_deref(),
                ));
                Some(json!({"step": step, "value": matched_value}))
            }
            IdentityDecision::Create => Some(json!({"step": "created", "value": lookup})),
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
                let state = SavedState {
                    target_id: None,
                    matched_by: None,
                    revision: record.revision,
                    sent: Fields::new(),
                };
                return Ok(Decision::Flow(Flow::Synced {
                    done: Done::Skipped,
                    state,
                }));
            }
            IdentityDecision::Link { .. } => None,
        };
        let write = plan_write(rule, prior, &decision, &lookup, &mapped)
            .expect("a link or a create plans a write");
        let key_base = format!("{}:{}", rule.name, record.id);
        Ok(Decision::Planned(Planned {
            record,
            write,
            matched_by,
            mapped,
            key_base,
        }))
    }

    /// Makes a planned write, one record at a time: returns the target id.
    async fn perform(
        &self,
        rule: &RuleSpec,
        ev: &EventV1,
        planned: &Planned,
        entries: &mut Vec<Entry>,
    ) -> Result<(String, Done), Failure> {
        let target = self
            .connectors
            .endpoint(&rule.target.system, &rule.target.entity)?;
        let target = self.limiter.limit(&target);
        let key_base = &planned.key_base;
        Ok(match &planned.write {
            Write::Create { fields } => {
                // The key is the same for every attempt at this record's creation, so
                // a crash between the create and the commit cannot create twice.
                let id = target.create(fields, &format!("{key_base}:create")).await?;
                entries.push(Entry::created(target.system(), &id, fields));
                (id, Done::Synced)
            }
            Write::Update { target_id, fields } => {
                let rev = planned
                    .record
                    .revision
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| ev.event_id.clone());
                target
                    .update(target_id, fields, &format!("{key_base}:update:{rev}"))
                    .await?;
                entries.push(Entry::updated(target.system(), target_id, fields));
                (target_id.clone(), Done::Synced)
            }
            Write::Nothing { target_id } => {
                entries.push(Entry::no_change(target.system(), target_id));
                (target_id.clone(), Done::Unchanged)
            }
        })
    }

    /// After the target write: the write-back into the source, and the state to save.
    async fn finish_write(
        &self,
        rule: &RuleSpec,
        prior: &PriorState,
        planned: Planned,
        target_id: String,
        mut done: Done,
        entries: &mut Vec<Entry>,
    ) -> Result<Flow, Failure> {
        let source = self
            .connectors
            .endpoint(&rule.source.system, &rule.source.app)?;
        let source = self.limiter.limit(&source);
        let record = &planned.record;
        let mut revision = record.revision;
        if let Some((field, value)) = write_back(rule, record, &target_id) {
            // Revision-checked, so that a change made since we read the record is never
            // overwritten or mistaken for ours; `None` when the record changed
            // meanwhile: that change's own webhook will carry the write-back.
            match source
                .write_field(&record.id, &field, &value, record.revision)
                .await?
            {
                Some(new_revision) => {
                    entries.push(Entry::written_back(source.system(), &field, &value));
                    // Our own write: its webhook will find this revision already synced.
                    revision = Some(new_revision);
                    done = Done::Synced;
                }
                None => entries.push(Entry::write_back_deferred(source.system(), &field)),
            }
        }
        let state = SavedState {
            target_id: Some(target_id),
            matched_by: planned.matched_by,
            revision,
            sent: sent_after(prior, &planned.write, &planned.mapped),
        };
        Ok(Flow::Synced { done, state })
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
        let (mut tx, parked) = self
            .store
            .begin_batch(&rule.name, bulk_max.unwrap_or(100) as i64)
            .await?;
        if parked.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        struct Item {
            ev: EventV1,
            prior: PriorState,
            entries: Vec<Entry>,
            decision: Option<Decision>,
            performed: Option<(String, Done)>,
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
            let prior = tx.prior().await?;
            let mut entries = vec![];
            let decision = match self.decide(rule, &ev, &prior, &mut entries).await {
                Ok(d) => d,
                Err(Failure::Connector(e)) if classify::connector(&e) == Action::Conflict => {
                    Decision::Flow(rejected(rule, &e, &mut entries))
                }
                // The batch rolls back: everything is parked again, as it was.
                Err(e) => return Err(e),
            };
            items.push(Item {
                ev,
                prior,
                entries,
                decision: Some(decision),
                performed: None,
            });
        }

        // Updates in bulk, where the target has a bulk endpoint.
        if let Some(max) = bulk_max {
            let updates: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, it)| {
                    matches!(
                        &it.decision,
                        Some(Decision::Planned(Planned {
                            write: Write::Update { .. },
                            ..
                        }))
                    )
                })
                .map(|(i, _)| i)
                .collect();
            for chunk in updates.chunks(max) {
                let batch: Vec<(String, Fields)> = chunk
                    .iter()
                    .filter_map(|i| match &items[*i].decision {
                        Some(Decision::Planned(Planned {
                            write: Write::Update { target_id, fields },
                            ..
                        })) => Some((target_id.clone(), fields.clone())),
                        _ => None,
                    })
                    .collect();
                let limited = self.limiter.limit(&target);
                match limited
                    .bulk_update(
                        &batch,
                        &format!("{}:bulk:{}", rule.name, uuid::Uuid::new_v4()),
                    )
                    .await
                {
                    Ok(()) => {
                        for (i, (target_id, fields)) in chunk.iter().zip(&batch) {
                            items[*i].entries.push(Entry::updated_in_bulk(
                                target.system(),
                                target_id,
                                fields,
                                batch.len(),
                            ));
                            items[*i].performed = Some((target_id.clone(), Done::Synced));
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
        let evrefs: Vec<EventRef> = items
            .iter()
            .map(|it| EventRef {
                event_id: it.ev.event_id.clone(),
                correlation_id: it.ev.correlation_id.clone(),
            })
            .collect();
        for (item, evref) in items.into_iter().zip(evrefs) {
            let Item {
                ev,
                prior,
                mut entries,
                decision,
                performed,
            } = item;
            let flow = match decision.expect("every item has a decision") {
                Decision::Flow(flow) => flow,
                Decision::Planned(planned) => {
                    let result = async {
                        let (target_id, done) = match performed {
                            Some(p) => p,
                            None => self.perform(rule, &ev, &planned, &mut entries).await?,
                        };
                        self.finish_write(rule, &prior, planned, target_id, done, &mut entries)
                            .await
                    }
                    .await;
                    match result {
                        Ok(flow) => flow,
                        Err(Failure::Connector(e))
                            if classify::connector(&e) == Action::Conflict =>
                        {
                            rejected(rule, &e, &mut entries)
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            tx.switch_to(&ev.record_id);
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
                tx.forget().await?;
            }
            done
        }
        Flow::Conflict { kind } => {
            // The last entry says why: it is the conflict's summary.
            if let Some(last) = entries.last() {
                tx.open_conflict(kind, last).await?;
            }
            Done::Conflict
        }
        Flow::Synced { done, state } => {
            tx.save_state(
                state.target_id.as_deref(),
                state.matched_by,
                state.revision,
                &state.sent,
            )
            .await?;
            done
        }
    };
    let mut all = vec![received];
    all.extend(entries);
    tx.append(evref, &all).await?;
    tx.mark_processed(&evref.event_id, done.as_str()).await?;
    Ok(done)
}
