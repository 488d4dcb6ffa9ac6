//! Reconcile: what a rule's two systems hold for a linked record, compared field by
//! field in canonical terms, and what to do about each difference under the rule's
//! ownership. Pure: the worker snapshots both sides and queues the repairs.

use serde::Serialize;
use serde_json::Value;

use crate::authority::{Owner, Strategy};
use crate::record::Fields;
use crate::rules::RuleSpec;

/// What to do about a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The source owns the field: the target is written back to the source's value.
    UpdateTarget,
    /// The target owns the field (two-way rule): the source gets the target's value.
    UpdateSource,
    /// The target owns the field and the rule is one-way: nothing flows back.
    Ignore,
    /// Shared, or left to a person by its strategy: a person decides.
    ManualReview,
}

impl Action {
    /// Whether a repair command carries it out.
    pub fn repairs(self) -> bool {
        matches!(self, Action::UpdateTarget | Action::UpdateSource)
    }
}

/// One field on which the two systems disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// The canonical field.
    pub field: String,
    /// The source's value, mapped to canonical terms (`null` when it has none).
    pub source: Value,
    /// The target's value (`null` when it has none).
    pub target: Value,
    /// Who owns the field: a system name or `shared`.
    pub owner: String,
    /// What to do.
    pub action: Action,
}

/// The differences between a linked record's source values (mapped) and its target
/// record's values, in the rule's field order.
pub fn compare(rule: &RuleSpec, source: &Fields, target: &Fields) -> Vec<Difference> {
    let mut out = vec![];
    for p in rule.policies() {
        let s = source.get(&p.field).cloned().unwrap_or(Value::Null);
        let t = target.get(&p.field).cloned().unwrap_or(Value::Null);
        if same(&s, &t) {
            continue;
        }
        let owner_name = match &p.owner {
            Owner::Shared => "shared".to_owned(),
            Owner::System(o) => o.clone(),
        };
        let (owner, action) = match (&p.owner, p.strategy) {
            (_, Strategy::ManualReview) | (Owner::Shared, _) => (owner_name, Action::ManualReview),
            (Owner::System(o), _) if *o == rule.target.system => (
                o.clone(),
                if rule.both_ways() {
                    Action::UpdateSource
                } else {
                    Action::Ignore
                },
            ),
            (Owner::System(o), _) => (o.clone(), Action::UpdateTarget),
        };
        out.push(Difference {
            field: p.field.clone(),
            source: s,
            target: t,
            owner,
            action,
        });
    }
    out
}

/// Equal for sync purposes: an empty string, an empty list and no value are the same
/// absence; numbers compare by value.
fn same(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b || (empty(a) && empty(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(direction: &str) -> RuleSpec {
        serde_json::from_value(json!({
            "name": "wo",
            "source": {"system": "kintone", "app": "101"},
            "target": {"system": "helpdesk", "entity": "ticket"},
            "identity": {"source_field": "wo_no", "target_field": "external_id"},
            "fields": [
                {"source": "件名", "target": "subject"},
                {"source": "状態", "target": "status", "owner": "helpdesk"},
                {"source": "メモ", "target": "notes", "owner": "shared"},
                {"source": "優先", "target": "priority", "strategy": "manual_review", "owner": "shared"},
                {"source": "時間", "target": "hours"}
            ],
            "direction": direction
        }))
        .expect("a valid rule")
    }

    fn f(v: Value) -> Fields {
        v.as_object().expect("an object").clone()
    }

    #[test]
    fn equal_records_have_no_difference() {
        let r = rule("both");
        let v = f(json!({"subject": "A", "status": "open", "notes": "n", "hours": 2}));
        assert!(compare(&r, &v, &v).is_empty());
        // Absence is absence however it is spelt; numbers compare by value.
        assert!(
            compare(
                &r,
                &f(json!({"subject": "", "hours": 2})),
                &f(json!({"notes": null, "hours": 2.0}))
            )
            .is_empty()
        );
    }

    #[test]
    fn each_difference_gets_its_owners_action() {
        let source =
            f(json!({"subject": "A", "status": "open", "notes": "mine", "priority": "high"}));
        let target = f(
            json!({"subject": "drifted", "status": "closed", "notes": "theirs", "priority": "low"}),
        );
        let both = compare(&rule("both"), &source, &target);
        let actions: Vec<(&str, Action, &str)> = both
            .iter()
            .map(|d| (d.field.as_str(), d.action, d.owner.as_str()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("subject", Action::UpdateTarget, "kintone"),
                ("status", Action::UpdateSource, "helpdesk"),
                ("notes", Action::ManualReview, "shared"),
                ("priority", Action::ManualReview, "shared"),
            ]
        );
        assert_eq!(both[0].source, json!("A"));
        assert_eq!(both[0].target, json!("drifted"));
        // One way: the target's own field does not flow back.
        let one = compare(&rule("one_way"), &source, &target);
        assert_eq!(one[1].action, Action::Ignore);
        assert!(one[0].action.repairs() && !one[1].action.repairs());
    }

    #[test]
    fn a_field_the_target_lacks_is_a_difference() {
        let d = compare(&rule("one_way"), &f(json!({"subject": "A"})), &f(json!({})));
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].target.clone(), d[0].action),
            (Value::Null, Action::UpdateTarget)
        );
    }
}
