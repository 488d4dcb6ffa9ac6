//! The merges of the `merge` strategy: a union or three-way merge of list values, and a
//! three-way merge of numbers by delta.

use std::collections::BTreeSet;

use serde_json::Value;

fn as_set(v: &Value) -> BTreeSet<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::Null => BTreeSet::new(),
        Value::String(s) if s.is_empty() => BTreeSet::new(),
        other => [match other {
            Value::String(s) => s.clone(),
            o => o.to_string(),
        }]
        .into(),
    }
}

fn from_set(s: BTreeSet<String>) -> Value {
    Value::Array(s.into_iter().map(Value::String).collect())
}

/// The union of two list values (sorted, without repeats): commutative, associative,
/// idempotent.
pub fn union(a: &Value, b: &Value) -> Value {
    from_set(as_set(a).union(&as_set(b)).cloned().collect())
}

/// A three-way merge of list values: `current` with the additions and removals the
/// other side made from `base` to `incoming`.
pub fn merge_lists(base: &Value, current: &Value, incoming: &Value) -> Value {
    let (base, current, incoming) = (as_set(base), as_set(current), as_set(incoming));
    let added: BTreeSet<String> = incoming.difference(&base).cloned().collect();
    let removed: BTreeSet<String> = base.difference(&incoming).cloned().collect();
    from_set(
        current
            .union(&added)
            .filter(|i| !removed.contains(*i))
            .cloned()
            .collect(),
    )
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn from_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// A three-way merge of numbers: `current` plus the other side's delta from `base`.
pub fn merge_delta(base: &Value, current: &Value, incoming: &Value) -> Value {
    from_number(number(current) + number(incoming) - number(base))
}
