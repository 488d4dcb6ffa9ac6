//! The plan: what the step decides for a record once the records it needs are read. The
//! worker gathers the inputs (what the store knows, the canonical records) and performs
//! the result; everything between is here, pure, so it is tested without a database or
//! a sandbox, and a preview of a rule change can run it twice on the same inputs.
//!
//! Two plans:
//! - [`plan_linked`]: a record linked before, with its field-authority state. Each
//!   system's current values are observed (the source first), classified, and each
//!   changed field decided by its owner and strategy.
//! - [`plan_initial`]: a record linked for the first time, to be created, or
//!   rehydrated: each field takes its owner's value.

use crate::authority::{
    Classification, FieldPolicy, Observation, Owner, PendingWrite, SyncState, Verdict, initial,
    observe,
};
use crate::history::Entry;
use crate::record::Fields;
use crate::rules::RuleSpec;
use serde_json::Value;
use std::collections::BTreeMap;

/// Which side of a rule the command's trigger came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The rule's source.
    Source,
    /// The target of a two-way rule.
    Target,
}

/// The writes sent to one system and not yet seen confirmed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unconfirmed {
    /// Their operation ids (all of them, readable or not).
    pub ids: Vec<i64>,
    /// The writes whose values and vectors could be read.
    pub writes: Vec<PendingWrite>,
}

/// What a linked record's plan starts from.
#[derive(Debug, Clone)]
pub struct LinkedInputs<'a> {
    /// The rule.
    pub rule: &'a RuleSpec,
    /// Where the trigger came from: only that side's observations are told in the
    /// timeline when nothing changed.
    pub side: Side,
    /// The field-authority state after the last sync.
    pub state: &'a SyncState,
    /// The linked target record's id.
    pub target_id: &'a str,
    /// The source record as read now, mapped to canonical fields.
    pub source: Observation,
    /// The target record as read now (two-way rules only).
    pub target: Option<Observation>,
    /// Per system, the writes sent and not confirmed.
    pub unconfirmed: &'a BTreeMap<String, Unconfirmed>,
}

/// The decision for a linked record.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkedPlan {
    /// Nothing new was observed: the source's revision was synced already and no other
    /// system was observed. The writes to the source it confirms (at exactly the
    /// revision last synced, the source holds every write sent to it before: each
    /// returned, or was read at, a revision no later).
    Stale {
        /// Operations the source's revision confirms.
        confirmed: Vec<i64>,
    },
    /// The state after the observations and the writes that make both systems hold it.
    Writes(Box<Writes>),
}

/// Writes decided, and the state they lead to.
#[derive(Debug, Clone, PartialEq)]
pub struct Writes {
    /// To the target, by canonical field.
    pub target: Fields,
    /// To the source, by canonical field.
    pub source: Fields,
    /// The field-authority state after the decision.
    pub state: SyncState,
    /// Operations seen confirmed by an observation.
    pub confirmed: Vec<i64>,
    /// A field left for a person: the entry that opens the manual-review conflict.
    pub review: Option<Entry>,
}

/// Plans a record linked before. The timeline's entries are appended to `entries`.
pub fn plan_linked(input: LinkedInputs<'_>, entries: &mut Vec<Entry>) -> LinkedPlan {
    let rule = input.rule;
    let policies = rule.policies();
    let systems = [rule.source.system.as_str(), rule.target.system.as_str()];
    let mut observations = vec![];
    let source_seen = input.state.revisions.get(&rule.source.system).copied();
    let none = Unconfirmed::default();
    let mut confirmed = vec![];
    match (input.source.revision, source_seen) {
        (Some(now), Some(seen)) if now <= seen => {
            if input.side == Side::Source {
                entries.push(Entry::stale_skipped(now, seen));
            }
            // The echo of the revision last synced (our write's, most often): every
            // write sent to the source before it is in the source now.
            if now == seen {
                let sent = input.unconfirmed.get(&rule.source.system).unwrap_or(&none);
                confirmed.extend(sent.ids.iter().copied());
            }
        }
        _ => observations.push(input.source),
    }
    observations.extend(input.target);
    if observations.is_empty() {
        return LinkedPlan::Stale { confirmed };
    }
    let mut state = input.state.clone();
    let mut writes: BTreeMap<String, Fields> = BTreeMap::new();
    let mut review = None;
    for obs in &observations {
        let sent = input.unconfirmed.get(&obs.system).unwrap_or(&none);
        let d = observe(&policies, &systems, &state, obs, &sent.writes);
        let triggered = (obs.system == rule.source.system) == (input.side == Side::Source);
        match d.classification {
            Classification::Confirmation => {
                confirmed.extend(sent.ids.iter().copied());
                if triggered {
                    entries.push(Entry::classified(
                        &obs.system,
                        d.classification,
                        obs.revision,
                    ));
                }
            }
            Classification::NoChange if triggered && obs.system == rule.source.system => {
                entries.push(Entry::no_change(&rule.target.system, input.target_id))
            }
            Classification::Stale | Classification::Duplicate | Classification::NoChange => {
                if triggered {
                    entries.push(Entry::classified(
                        &obs.system,
                        d.classification,
                        obs.revision,
                    ));
                }
            }
            Classification::NewChange | Classification::Concurrent => {}
        }
        for o in &d.fields {
            let others: Vec<&str> = systems
                .iter()
                .copied()
                .filter(|s| {
                    *s != obs.system && d.writes.get(*s).is_some_and(|w| w.contains_key(&o.field))
                })
                .collect();
            let e = Entry::field_outcome(&obs.system, o, &others);
            if o.verdict == Verdict::ManualReview {
                review = Some(e.clone());
            }
            entries.push(e);
        }
        state = d.state;
        // A later observation decides a field again: a write planned by an earlier one
        // that this decision does not repeat is dropped (a field under manual review is
        // written nowhere; a concurrent change that won is not overwritten on the system
        // that made it).
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
    LinkedPlan::Writes(Box::new(Writes {
        target: writes.remove(&rule.target.system).unwrap_or_default(),
        source: writes.remove(&rule.source.system).unwrap_or_default(),
        state,
        confirmed,
        review,
    }))
}

/// What a first plan starts from.
#[derive(Debug, Clone, Copy)]
pub struct InitialInputs<'a> {
    /// The rule.
    pub rule: &'a RuleSpec,
    /// The source record's canonical values.
    pub source: &'a Fields,
    /// The source record's revision.
    pub source_revision: Option<i64>,
    /// The target record's canonical values, when one exists.
    pub target: Option<&'a Fields>,
    /// No target record: one is created, carrying this lookup value so that the next
    /// search finds it.
    pub create_with: Option<&'a str>,
    /// Rehydrated: everything the target does not own is written again.
    pub rehydrate: bool,
}

/// Plans a record linked for the first time, to be created, or rehydrated: each field
/// takes its owner's value.
pub fn plan_initial(input: InitialInputs<'_>) -> Writes {
    let rule = input.rule;
    let policies: Vec<FieldPolicy> = rule.policies();
    let (state, mut writes) = initial(
        &policies,
        &rule.source.system,
        &rule.target.system,
        input.source,
        input.target,
        input.source_revision,
    );
    let mut target_fields = writes.remove(&rule.target.system).unwrap_or_default();
    if let Some(lookup) = input.create_with {
        target_fields
            .entry(rule.identity.target_field.clone())
            .or_insert_with(|| Value::String(lookup.to_owned()));
    }
    if input.rehydrate {
        for p in &policies {
            if !matches!(&p.owner, Owner::System(o) if o == &rule.target.system)
                && let Some(v) = state.canonical.get(&p.field)
            {
                target_fields.insert(p.field.clone(), v.clone());
            }
        }
    }
    Writes {
        target: target_fields,
        source: writes.remove(&rule.source.system).unwrap_or_default(),
        state,
        confirmed: vec![],
        review: None,
    }
}

/// The canonical values a target record holds: the rule's mapped fields it carries.
pub fn target_values(rule: &RuleSpec, fields: &Fields) -> Fields {
    rule.fields
        .iter()
        .filter_map(|m| Some((m.target.clone(), fields.get(&m.target)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests;
