//! Deciding, from what the store knows of a record (`memory`): the canonical records, identity
//! (stored link, lookup, variants, an in-doubt create), field authority, and the plan
//! of writes with their keys. Nothing here writes to another system.

use domain::authority::{Observation, SyncState};
use domain::history::Entry;
use domain::identity::{
    IdentityDecision, MatchStep, after_search, lookup_attempts, when_nothing_matched,
};
use domain::mapping::map_fields;
use domain::plan::{
    InitialInputs, LinkedInputs, LinkedPlan, Side, Writes, plan_initial, plan_linked, target_values,
};
use domain::record::{Fields, SourceRecord};
use domain::rules::{OnDelete, OnTargetDelete, RuleSpec, SyncRules, SystemKind};
use domain::sync::{PriorState, check_fresh, payload_disagreements};
use serde_json::{Value, json};

use super::{
    Decision, Done, Failure, Flow, InDoubt, Known, Planned, Processor, SavedState, Trigger, Work,
};
use crate::limiter::Limited;

impl Processor {
    /// The canonical values a source record maps to.
    pub(super) fn source_values(
        rule: &RuleSpec,
        record: &SourceRecord,
    ) -> Result<Fields, Vec<domain::mapping::MappingProblem>> {
        map_fields(&rule.fields, &record.fields)
    }

    /// The part that reads: the canonical records, freshness, mapping, identity, and
    /// field authority. What happened is appended to `entries`, which survive a
    /// data-quality failure.
    pub(super) async fn decide(
        &self,
        rule: &RuleSpec,
        side: Side,
        record_id: &str,
        ev: &Trigger,
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
        let rehydrating = ev.rehydrating();
        // A repair (a reconcile found the systems apart) decides from both systems as
        // they are, as a first link does: each field takes its owner's value, and only
        // what differs is written. The stored state is not trusted: it is what drifted.
        let repairing = ev.repairing();

        // The payload is a hint; the canonical record is the truth. A `file` source has
        // no API: the imported row is the record.
        let imported = imported_row(&self.rules, rule, ev, record_id);
        let is_import = imported.is_some();
        let fetched = match imported {
            Some(row) => Some(row),
            None => source.call(|api| api.fetch(record_id)).await?,
        };
        let Some(record) = fetched else {
            if rule.on_delete == OnDelete::Review {
                entries.push(Entry::source_deleted_for_review(
                    source.system(),
                    known.prior.target_id.as_deref(),
                ));
                return Ok(Decision::Flow(Flow::Conflict {
                    kind: "source_deleted",
                }));
            }
            if let (OnDelete::DeleteTarget | OnDelete::Flag, Some(target_id)) =
                (rule.on_delete, known.prior.target_id.clone())
            {
                return Ok(Decision::Gone {
                    gone: Side::Source,
                    record_id: record_id.to_owned(),
                    target_id,
                });
            }
            let unlink = rule.on_delete == OnDelete::Unlink;
            entries.push(Entry::source_deleted(source.system(), unlink));
            return Ok(Decision::Flow(Flow::Finish(Done::Deleted)));
        };
        if side == Side::Source && !is_import {
            self.metrics.source_fields_absent(
                &rule.name,
                source.system(),
                &domain::mapping::absent_source_fields(&rule.fields, &record.fields),
            );
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
        if let (Some(target_id), Some(state), false) = (
            &known.prior.target_id,
            &known.state,
            rehydrating || repairing,
        ) {
            let target_now = if rule.both_ways() {
                let Some(t) = target.call(|api| api.fetch(target_id)).await? else {
                    let (system, id) = (target.system(), target_id.as_str());
                    return Ok(Decision::Flow(match rule.on_target_delete {
                        OnTargetDelete::Ignore => {
                            entries.push(Entry::target_deleted(system, id));
                            Flow::Finish(Done::Deleted)
                        }
                        OnTargetDelete::Unlink => {
                            entries.push(Entry::target_deleted_unlinked(system, id));
                            Flow::Finish(Done::Deleted)
                        }
                        OnTargetDelete::Review => {
                            entries.push(Entry::target_deleted_for_review(system, id));
                            Flow::Conflict {
                                kind: "target_deleted",
                            }
                        }
                        OnTargetDelete::Flag
                            if rule
                                .target_deleted_flag
                                .as_ref()
                                .is_some_and(|f| record.fields.get(&f.field) == Some(&f.value)) =>
                        {
                            // Flagged before: writing it again would only make the
                            // source change, and come back here.
                            entries.push(Entry::target_deleted_already_flagged(
                                system,
                                id,
                                source.system(),
                            ));
                            Flow::Finish(Done::Deleted)
                        }
                        OnTargetDelete::Flag | OnTargetDelete::DeleteSource => {
                            return Ok(Decision::Gone {
                                gone: Side::Target,
                                record_id: record.id.clone(),
                                target_id: target_id.clone(),
                            });
                        }
                    }));
                };
                if side == Side::Target {
                    entries.push(Entry::fetched(target.system(), t.revision));
                }
                Some(Observation {
                    system: rule.target.system.clone(),
                    revision: t.revision,
                    values: target_values(rule, &t.fields),
                    changed_at: t.changed_at,
                })
            } else {
                None
            };
            let plan = plan_linked(
                LinkedInputs {
                    rule,
                    side,
                    state,
                    target_id,
                    source: Observation {
                        system: rule.source.system.clone(),
                        revision: record.revision,
                        values,
                        changed_at: record.changed_at,
                    },
                    target: target_now,
                    unconfirmed: &known.unconfirmed,
                },
                entries,
            );
            let w = match plan {
                LinkedPlan::Writes(w) => w,
                LinkedPlan::Stale { confirmed } => {
                    return Ok(Decision::Flow(Flow::Stale { confirmed }));
                }
            };
            let Writes {
                target: target_fields,
                source: source_fields,
                state,
                confirmed,
                review,
            } = *w;
            return Ok(Decision::Planned(Box::new(Planned {
                record,
                target_id: Some(target_id.clone()),
                target_fields,
                source_fields,
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
        if !(rehydrating || repairing)
            && let Err(skip) = check_fresh(&known.prior, &record)
        {
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
                && target.call(|api| api.fetch(&id)).await?.is_some()
            {
                found = Some((id, "the write-back field"));
            } else if let IdentityDecision::Link { target_id, .. } = &decision {
                found = Some((target_id.clone(), "search"));
            }
            match found {
                Some((id, how)) => {
                    if let Some(conflict) = self
                        .linked_elsewhere(
                            rule,
                            target.system(),
                            &record.id,
                            &id,
                            &format!("found by {how}"),
                            entries,
                        )
                        .await?
                    {
                        return Ok(conflict);
                    }
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
                            Some(id),
                            Some(json!({"step": "in-doubt create", "resolved_by": how})),
                            key_base,
                            lookup,
                            rehydrating,
                            repairing,
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
                if *step != MatchStep::StoredLink
                    && let Some(conflict) = self
                        .linked_elsewhere(
                            rule,
                            target.system(),
                            &record.id,
                            target_id,
                            &format!("matched by {step}"),
                            entries,
                        )
                        .await?
                {
                    return Ok(conflict);
                }
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
            IdentityDecision::Create => {
                let searched: Vec<String> = lookup_attempts(&rule.identity, &lookup)
                    .into_iter()
                    .map(|a| a.value)
                    .collect();
                entries.push(Entry::nothing_matched(
                    target.system(),
                    &rule.identity.target_field,
                    &searched,
                ));
                (None, Some(json!({"step": "created", "value": lookup})))
            }
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
                    dropped: None,
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
            target_id,
            matched_by,
            key_base,
            lookup,
            rehydrating,
            repairing,
            in_doubt,
        )
        .await
    }

    /// A conflict when the target record found is already linked to another source
    /// record (a unique index holds the same line at commit, for a race).
    async fn linked_elsewhere(
        &self,
        rule: &RuleSpec,
        target: &str,
        record_id: &str,
        target_id: &str,
        how: &str,
        entries: &mut Vec<Entry>,
    ) -> Result<Option<Decision>, Failure> {
        match self.store.source_for_target(&rule.name, target_id).await? {
            Some(other) if other != record_id => {
                entries.push(Entry::already_linked(target, target_id, &other, how));
                Ok(Some(Decision::Flow(Flow::Conflict {
                    kind: "already_linked",
                })))
            }
            _ => Ok(None),
        }
    }

    /// Linked for the first time (or rehydrated, or to be created): each field takes
    /// its owner's value.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn linked(
        &self,
        rule: &RuleSpec,
        target: &Limited<'_>,
        record: SourceRecord,
        values: Fields,
        target_id: Option<String>,
        matched_by: Option<Value>,
        key_base: String,
        lookup: String,
        rehydrating: bool,
        repairing: bool,
        in_doubt: Option<InDoubt>,
    ) -> Result<Decision, Failure> {
        let target_now = match &target_id {
            Some(id) => target
                .call(|api| api.fetch(id))
                .await?
                .map(|t| target_values(rule, &t.fields)),
            None => None,
        };
        let w = plan_initial(InitialInputs {
            rule,
            source: &values,
            source_revision: record.revision,
            target: target_now.as_ref(),
            create_with: target_id.is_none().then_some(lookup.as_str()),
            rehydrate: rehydrating,
        });
        // A repair writes only what the reconcile would repair: fields with a clear
        // owner that differ. Shared fields, fields left to a person and, on a one-way
        // rule, the target's own fields stay as each system holds them.
        let mut w = w;
        if repairing && let Some(t) = &target_now {
            let repairable: std::collections::BTreeSet<String> =
                domain::reconcile::compare(rule, &values, t)
                    .into_iter()
                    .filter(|d| d.action.repairs())
                    .map(|d| d.field)
                    .collect();
            w.target.retain(|f, _| repairable.contains(f));
            w.source.retain(|f, _| repairable.contains(f));
        }
        Ok(Decision::Planned(Box::new(Planned {
            record,
            target_id,
            target_fields: w.target,
            source_fields: w.source,
            state: w.state,
            matched_by,
            key_base,
            confirmed: w.confirmed,
            review: w.review,
            in_doubt,
        })))
    }

    /// Identity resolution against the target: stored link, lookup value, variants.
    pub(super) async fn resolve(
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
                .call(|api| api.search(&rule.identity.target_field, &attempt.value))
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

/// The record an imported row is: the row itself, without revision or change time.
/// Only for a rule whose source is a `file` system: any other source is read from its
/// API, whatever an event says it is.
fn imported_row(
    rules: &SyncRules,
    rule: &RuleSpec,
    ev: &Trigger,
    record_id: &str,
) -> Option<SourceRecord> {
    let file_source = rules
        .systems
        .get(&rule.source.system)
        .is_some_and(|s| s.kind == SystemKind::File);
    let Work::Import { row, .. } = &ev.work else {
        return None;
    };
    file_source.then(|| SourceRecord {
        id: record_id.to_owned(),
        revision: None,
        changed_at: None,
        fields: row.clone(),
    })
}

/// The record a webhook payload carried, as flat fields (kintone webhooks carry the
/// whole record).
pub(super) fn payload_record(rules: &SyncRules, ev: &Trigger) -> Option<Fields> {
    let Work::Change { payload, .. } = &ev.work else {
        return None;
    };
    let sys = rules.systems.get(&ev.system)?;
    match sys.kind {
        SystemKind::Kintone => payload
            .get("record")
            .map(connectors::kintone::payload_fields),
        SystemKind::Rest | SystemKind::File => None,
    }
}
