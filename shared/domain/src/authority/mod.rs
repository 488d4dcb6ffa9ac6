//! Field authority: who may change each field, what happened before what, and which
//! strategy decides a real conflict. [`observe`] takes what one system holds now and
//! the record's state, and returns the classification of the change, a verdict per
//! field, the next state, and the writes that bring every system to the canonical
//! values. It is pure: the worker performs the writes.
//!
//! Strategies, defined for a hub of several systems relative to the field's owner:
//!
//! - `local_wins`: the owner is the rule's source (the system of record where staff
//!   work, "local"). Only its changes are accepted; any other system's change to the
//!   field is refused, recorded, and the owner's value restored on that system.
//! - `external_wins`: the same, for a field owned by the rule's target ("external").
//! - `latest_valid_change` (owner `shared`): changes that saw the field's latest
//!   change apply in order; of two concurrent valid changes, the one made later by the
//!   systems' own clocks wins (clocks only break ties between concurrent changes); an
//!   invalid change is refused.
//! - `merge` (owner `shared`): concurrent changes are combined: lists as a three-way
//!   set merge (additions and removals of both sides), numbers with `delta` as added
//!   deltas.
//! - `manual_review` (owner `shared`): a concurrent change waits for a person; nothing
//!   changes until the conflict is resolved.
//!
//! A field's declared policy (owner, strategy, validation, merge kind) is in `policy`,
//! the list and number merges in `merge`; both are re-exported here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::Fields;
use crate::versions::{Relation, VersionVector};

mod merge;
mod policy;

pub use merge::{merge_delta, merge_lists, union};
pub use policy::{FieldPolicy, MergeKind, Owner, Strategy, Validation};

/// When and by whom a field last changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldVersion {
    /// The record's vector right after the change.
    pub vv: VersionVector,
    /// The system that made it.
    pub by: String,
    /// When that system says it made it.
    pub at: Option<DateTime<Utc>>,
}

/// What the service believes about one record across systems.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// The canonical values, by canonical field.
    pub canonical: Fields,
    /// The record's version vector.
    pub vv: VersionVector,
    /// Per field, its last change.
    pub field_versions: BTreeMap<String, FieldVersion>,
    /// Per system, the values it holds as far as we know (observed or written).
    pub held: BTreeMap<String, Fields>,
    /// Per system, the vector it has seen (its own changes, and our last write to it).
    pub seen: BTreeMap<String, VersionVector>,
    /// Per system, the last revision observed.
    pub revisions: BTreeMap<String, i64>,
}

/// What one system holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The system.
    pub system: String,
    /// Its revision of the record, when it has one.
    pub revision: Option<i64>,
    /// Its values, by canonical field.
    pub values: Fields,
    /// When it says the record last changed.
    pub changed_at: Option<DateTime<Utc>>,
}

/// A write we made and have not seen confirmed.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingWrite {
    /// To which system.
    pub system: String,
    /// The values sent.
    pub values: Fields,
    /// The vector it carried.
    pub vv: VersionVector,
}

/// What an observation is, before anything is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// A revision already observed.
    Duplicate,
    /// A revision older than one already observed.
    Stale,
    /// Our own write, coming back.
    Confirmation,
    /// A change made after seeing the latest state.
    NewChange,
    /// A change made without seeing another system's latest change to a field.
    Concurrent,
    /// Nothing mapped changed, and it is not a write of ours.
    NoChange,
}

impl Classification {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Duplicate => "duplicate",
            Classification::Stale => "stale",
            Classification::Confirmation => "confirmation",
            Classification::NewChange => "new_change",
            Classification::Concurrent => "concurrent",
            Classification::NoChange => "no_change",
        }
    }
}

/// The verdict on one changed field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Accepted: the system had seen the field's latest change.
    Accepted,
    /// Refused: the system does not own the field; the owner's value is restored.
    Refused {
        /// The owner.
        owner: String,
    },
    /// Refused: the value is not valid; the canonical value is restored.
    Invalid {
        /// Why.
        reason: String,
    },
    /// Concurrent, and the strategy kept the incoming value.
    ConcurrentWon,
    /// Concurrent, and the strategy kept the canonical value (restored on the sender).
    ConcurrentLost,
    /// Concurrent, and the strategy combined both.
    Merged,
    /// Concurrent, and a person must decide; nothing changes meanwhile.
    ManualReview,
}

/// One changed field and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldOutcome {
    /// The canonical field.
    pub field: String,
    /// What the system carried.
    pub incoming: Value,
    /// The canonical value before.
    pub before: Value,
    /// The canonical value after.
    pub after: Value,
    /// How the change related to the field's last change.
    pub relation: Relation,
    /// The field's last change, if any.
    pub last_change: Option<FieldVersion>,
    /// The owner, as words (`kintone`, `shared`).
    pub owner: String,
    /// The strategy.
    pub strategy: Strategy,
    /// The verdict.
    pub verdict: Verdict,
}

/// Everything [`observe`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What the observation is.
    pub classification: Classification,
    /// The changed fields and their verdicts.
    pub fields: Vec<FieldOutcome>,
    /// The next state.
    pub state: SyncState,
    /// Per system, the values to write so it holds the canonical values.
    pub writes: BTreeMap<String, Fields>,
}

fn owner_name(o: &Owner) -> String {
    match o {
        Owner::System(s) => s.clone(),
        Owner::Shared => "shared".to_owned(),
    }
}

/// Decides what one system's current values mean for the record. `systems` are every
/// system of the rule (the writes go to each of them but the sender).
pub fn observe(
    policies: &[FieldPolicy],
    systems: &[&str],
    state: &SyncState,
    obs: &Observation,
    pending: &[PendingWrite],
) -> Decision {
    let s = obs.system.as_str();
    let mut next = state.clone();
    let unchanged = |classification| Decision {
        classification,
        fields: vec![],
        state: state.clone(),
        writes: BTreeMap::new(),
    };

    // Stale and duplicate deliveries are recognised by the system's own revisions.
    if let (Some(rev), Some(last)) = (obs.revision, state.revisions.get(s)) {
        if rev < *last {
            return unchanged(Classification::Stale);
        }
        if rev == *last {
            return unchanged(Classification::Duplicate);
        }
    }
    if let Some(rev) = obs.revision {
        next.revisions.insert(s.to_owned(), rev);
    }

    // What the system holds that differs from what we believed it holds.
    let known = state.held.get(s).unwrap_or(&state.canonical);
    let changed: Vec<&FieldPolicy> = policies
        .iter()
        .filter(|p| {
            obs.values
                .get(&p.field)
                .is_some_and(|v| known.get(&p.field) != Some(v))
        })
        .collect();
    let mut held = known.clone();
    held.extend(
        obs.values
            .iter()
            .filter(|(k, _)| policies.iter().any(|p| &p.field == *k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );

    if changed.is_empty() {
        next.held.insert(s.to_owned(), held);
        // Our own write coming back: the values of a pending write to this system.
        let ours = pending
            .iter()
            .filter(|w| w.system == s)
            .find(|w| w.values.iter().all(|(k, v)| obs.values.get(k) == Some(v)));
        return match ours {
            Some(w) => {
                let seen = next.seen.entry(s.to_owned()).or_default();
                *seen = seen.join(&w.vv);
                Decision {
                    classification: Classification::Confirmation,
                    fields: vec![],
                    state: next,
                    writes: BTreeMap::new(),
                }
            }
            None => Decision {
                classification: Classification::NoChange,
                fields: vec![],
                state: next,
                writes: BTreeMap::new(),
            },
        };
    }

    let base = state.seen.get(s).cloned().unwrap_or_default();
    let mut outcomes = vec![];
    let mut accepted: Vec<(String, Value)> = vec![];
    let mut restore: Fields = Fields::new();
    let mut any_concurrent = false;
    for p in changed {
        let incoming = obs.values[&p.field].clone();
        let before = state
            .canonical
            .get(&p.field)
            .cloned()
            .unwrap_or(Value::Null);
        let last_change = state.field_versions.get(&p.field).cloned();
        let relation = match &last_change {
            Some(fv) => {
                if base.includes(&fv.vv) {
                    Relation::After
                } else {
                    Relation::Concurrent
                }
            }
            None => Relation::After,
        };
        let concurrent = relation == Relation::Concurrent;
        any_concurrent |= concurrent;
        let (verdict, after) = match (&p.owner, p.validation.check(&incoming)) {
            (Owner::System(o), _) if o != s => {
                (Verdict::Refused { owner: o.clone() }, before.clone())
            }
            (_, Some(reason)) => (Verdict::Invalid { reason }, before.clone()),
            (Owner::System(_), None) => (
                if concurrent {
                    Verdict::ConcurrentWon
                } else {
                    Verdict::Accepted
                },
                incoming.clone(),
            ),
            (Owner::Shared, None) if !concurrent => (Verdict::Accepted, incoming.clone()),
            (Owner::Shared, None) => match p.strategy {
                Strategy::LatestValidChange | Strategy::LocalWins | Strategy::ExternalWins => {
                    let theirs = last_change.as_ref().and_then(|fv| fv.at);
                    match (obs.changed_at, theirs) {
                        (Some(mine), Some(theirs)) if mine > theirs => {
                            (Verdict::ConcurrentWon, incoming.clone())
                        }
                        (Some(_), None) => (Verdict::ConcurrentWon, incoming.clone()),
                        _ => (Verdict::ConcurrentLost, before.clone()),
                    }
                }
                Strategy::Merge => {
                    let b = known.get(&p.field).cloned().unwrap_or(Value::Null);
                    let merged = match p.merge {
                        MergeKind::Union => merge_lists(&b, &before, &incoming),
                        MergeKind::Delta => merge_delta(&b, &before, &incoming),
                    };
                    (Verdict::Merged, merged)
                }
                Strategy::ManualReview => (Verdict::ManualReview, before.clone()),
            },
        };
        match &verdict {
            Verdict::Accepted | Verdict::ConcurrentWon | Verdict::Merged => {
                accepted.push((p.field.clone(), after.clone()));
                if after != incoming {
                    // The sender gets the combined value too.
                    restore.insert(p.field.clone(), after.clone());
                }
            }
            Verdict::Refused { .. } | Verdict::Invalid { .. } | Verdict::ConcurrentLost => {
                restore.insert(p.field.clone(), before.clone());
            }
            Verdict::ManualReview => {}
        }
        outcomes.push(FieldOutcome {
            field: p.field.clone(),
            incoming,
            before,
            after,
            relation,
            last_change,
            owner: owner_name(&p.owner),
            strategy: p.strategy,
            verdict,
        });
    }

    // The system has seen its own change.
    let mut writes: BTreeMap<String, Fields> = BTreeMap::new();
    if !accepted.is_empty() {
        next.vv.bump(s);
        for (field, value) in &accepted {
            next.canonical.insert(field.clone(), value.clone());
            next.field_versions.insert(
                field.clone(),
                FieldVersion {
                    vv: next.vv.clone(),
                    by: s.to_owned(),
                    at: obs.changed_at,
                },
            );
            for t in systems.iter().filter(|t| **t != s) {
                writes
                    .entry((*t).to_owned())
                    .or_default()
                    .insert(field.clone(), value.clone());
            }
        }
    }
    let seen = base.join(&VersionVector::from_pairs([(s, next.vv.get(s))]));
    next.seen.insert(s.to_owned(), seen);
    next.held.insert(s.to_owned(), held);
    if !restore.is_empty() {
        writes.entry(s.to_owned()).or_default().extend(restore);
    }
    let classification = if any_concurrent {
        Classification::Concurrent
    } else {
        Classification::NewChange
    };
    Decision {
        classification,
        fields: outcomes,
        state: next,
        writes,
    }
}

/// Records that `values` were written to `system` carrying the record's vector: the
/// system now holds them and has seen that vector, and `revision` (the revision the
/// write produced, when the system answers with one) is its latest: an observation
/// older than our write is then recognised as stale, not as a change.
pub fn wrote(state: &mut SyncState, system: &str, values: &Fields, revision: Option<i64>) {
    if let Some(r) = revision {
        let last = state.revisions.entry(system.to_owned()).or_insert(r);
        *last = (*last).max(r);
    }
    state
        .held
        .entry(system.to_owned())
        .or_default()
        .extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
    let vv = state.vv.clone();
    let seen = state.seen.entry(system.to_owned()).or_default();
    *seen = seen.join(&vv);
}

/// The state of a record linked for the first time. Each field takes its owner's
/// value: source-owned and shared fields the source's (the source is where the record
/// was created), target-owned fields the target's when it is known. Returns the state
/// and the writes that bring both systems to it.
pub fn initial(
    policies: &[FieldPolicy],
    source: &str,
    target: &str,
    source_values: &Fields,
    target_values: Option<&Fields>,
    source_revision: Option<i64>,
) -> (SyncState, BTreeMap<String, Fields>) {
    let mut st = SyncState::default();
    st.vv.bump(source);
    let mut writes: BTreeMap<String, Fields> = BTreeMap::new();
    for p in policies {
        let from_target = matches!(&p.owner, Owner::System(o) if o == target);
        let value = if from_target {
            target_values.and_then(|t| t.get(&p.field)).cloned()
        } else {
            source_values.get(&p.field).cloned()
        };
        let Some(value) = value else {
            continue;
        };
        let by = if from_target { target } else { source };
        st.canonical.insert(p.field.clone(), value.clone());
        st.field_versions.insert(
            p.field.clone(),
            FieldVersion {
                vv: st.vv.clone(),
                by: by.to_owned(),
                at: None,
            },
        );
        let other = if from_target { source } else { target };
        let other_holds = if from_target {
            Some(source_values)
        } else {
            target_values
        };
        if other_holds.and_then(|h| h.get(&p.field)) != Some(&value) {
            writes
                .entry(other.to_owned())
                .or_default()
                .insert(p.field.clone(), value);
        }
    }
    st.held.insert(source.to_owned(), source_values.clone());
    if let Some(t) = target_values {
        st.held.insert(target.to_owned(), t.clone());
    }
    for s in [source, target] {
        st.seen.insert(s.to_owned(), st.vv.clone());
    }
    if let Some(r) = source_revision {
        st.revisions.insert(source.to_owned(), r);
    }
    (st, writes)
}

#[cfg(test)]
mod tests;
