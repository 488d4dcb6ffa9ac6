//! What a step starts from: the store's memory of the record under its rule (`load`,
//! and `Known::from_memory` for the one-statement read), with the writes sent to each
//! system and not confirmed.

use std::collections::BTreeMap;

use domain::authority::PendingWrite;
use domain::plan::Unconfirmed;
use domain::rules::RuleSpec;
use store::{RecordTx, StoreError};

use super::Known;

/// The writes sent and not confirmed, per system of the rule, as the plan reads them.
fn unconfirmed(rule: &RuleSpec, sent: Vec<store::SentOp>) -> BTreeMap<String, Unconfirmed> {
    let mut by_system: BTreeMap<String, Unconfirmed> = BTreeMap::new();
    for system in [&rule.source.system, &rule.target.system] {
        by_system.insert(system.clone(), Unconfirmed::default());
    }
    for store::SentOp {
        system,
        id,
        fields,
        vv,
    } in sent
    {
        let write = fields.as_object().cloned().and_then(|values| {
            Some(PendingWrite {
                system: system.clone(),
                values,
                vv: serde_json::from_value(vv).ok()?,
            })
        });
        let u = by_system.entry(system).or_default();
        u.ids.push(id);
        u.writes.extend(write);
    }
    by_system
}

impl Known {
    /// What the step starts from, out of the one-statement read.
    pub(super) fn from_memory(rule: &RuleSpec, m: store::Memory) -> Known {
        Known {
            prior: m.prior,
            state: m.state.and_then(|v| serde_json::from_value(v).ok()),
            unconfirmed: unconfirmed(rule, m.sent),
            pending_create: m.pending_create,
        }
    }
}

/// Reads what the store knows of the transaction's record, and the operations sent to
/// the rule's systems that are not confirmed.
pub(super) async fn load(tx: &mut RecordTx, rule: &RuleSpec) -> Result<Known, StoreError> {
    let store::Prior { prior, state } = tx.prior().await?;
    let state = state.and_then(|v| serde_json::from_value(v).ok());
    let store::OpenOps {
        sent: ops,
        pending_create,
    } = tx.open_ops().await?;
    Ok(Known {
        prior,
        state,
        unconfirmed: unconfirmed(rule, ops),
        pending_create,
    })
}
