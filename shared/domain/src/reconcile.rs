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

/// The fields a rule compares (its targets), in its order: what a digest covers.
pub fn compared_fields(rule: &RuleSpec) -> Vec<String> {
    rule.policies().into_iter().map(|p| p.field).collect()
}

/// A fingerprint of the values at `fields`: two sides' digests are equal exactly when
/// [`compare`] finds no difference between them (short of a 64-bit collision), so
/// equal buckets of digests need no row-by-row comparison.
pub fn digest(fields: &[String], values: &Fields) -> u64 {
    let mut h = Fnv::new();
    for f in fields {
        h.write(f.as_bytes());
        h.write(&[0]);
        canonical(values.get(f).unwrap_or(&Value::Null), true, &mut h);
        h.write(&[1]);
    }
    h.0
}

/// Writes `v` so that values [`same`] holds equal write the same bytes: at the top
/// level every absence is null and numbers are their value; inside lists and objects,
/// values are as `==` sees them (object keys in sorted order).
fn canonical(v: &Value, top: bool, h: &mut Fnv) {
    match v {
        Value::String(s) if top && s.is_empty() => h.write(b"n"),
        Value::Array(a) if top && a.is_empty() => h.write(b"n"),
        Value::Null => h.write(b"n"),
        Value::Number(n) if top => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            // 0.0 and -0.0 are one value.
            let x = if x == 0.0 { 0.0 } else { x };
            h.write(b"f");
            h.write(&x.to_bits().to_le_bytes());
        }
        Value::Array(a) => {
            h.write(b"[");
            for e in a {
                canonical(e, false, h);
                h.write(b",");
            }
            h.write(b"]");
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            h.write(b"{");
            for k in keys {
                h.write(k.as_bytes());
                h.write(b":");
                canonical(&o[k], false, h);
                h.write(b",");
            }
            h.write(b"}");
        }
        other => {
            h.write(b"v");
            h.write(other.to_string().as_bytes());
        }
    }
}

/// FNV-1a, 64 bits: stable across runs and releases, so stored hashes compare.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv::new();
    for p in parts {
        h.write(p);
        h.write(&[0xff]);
    }
    h.0
}

/// How many buckets `records` linked records are spread over: about 64 a bucket, a
/// power of two, at least 1.
pub fn bucket_count(records: usize) -> usize {
    records.div_ceil(64).next_power_of_two().max(1)
}

/// The bucket of a source record id among `n`.
pub fn bucket_of(record_id: &str, n: usize) -> usize {
    (fnv(&[record_id.as_bytes()]) % n as u64) as usize
}

/// Each bucket's hash over its `(record id, digest)` pairs, whatever their order, and
/// how many records it holds.
pub fn bucket_hashes<'a>(
    n: usize,
    rows: impl IntoIterator<Item = (&'a str, u64)>,
) -> Vec<(u64, u64)> {
    let mut out = vec![(0u64, 0u64); n];
    for (id, d) in rows {
        let b = &mut out[bucket_of(id, n)];
        b.0 = b.0.wrapping_add(fnv(&[id.as_bytes(), &d.to_le_bytes()]));
        b.1 += 1;
    }
    out
}

/// The buckets whose hash or count differs: only their records are compared row by
/// row.
pub fn buckets_apart(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<usize> {
    (0..a.len().max(b.len()))
        .filter(|i| a.get(*i) != b.get(*i))
        .collect()
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
    use proptest::prelude::{Just, any, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::Strategy as _;
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

    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            Just(json!("")),
            Just(json!([])),
            Just(json!("a")),
            Just(json!("1")),
            Just(json!(1)),
            Just(json!(1.0)),
            Just(json!(-0.0)),
            Just(json!(0)),
            Just(json!(["x", 1])),
            Just(json!(["x", 1.0])),
            Just(json!({"a": 1, "b": [2]})),
            Just(json!({"b": [2], "a": 1})),
            Just(json!({"a": 1})),
            Just(json!(true)),
            // Inside a list or an object, an empty value is not an absence: `==` tells
            // "" from null there, and so must the digest.
            Just(json!([""])),
            Just(json!([null])),
            Just(json!({"a": ""})),
            Just(json!({"a": null})),
        ]
    }

    fn values() -> impl proptest::strategy::Strategy<Value = Fields> {
        proptest::collection::vec(
            (
                prop_oneof![
                    Just("subject"),
                    Just("status"),
                    Just("notes"),
                    Just("hours")
                ],
                value(),
            ),
            0..4,
        )
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    proptest! {
        /// Digests agree exactly when `compare` does, so a bucket whose hashes match
        /// holds no difference `compare` would have found.
        #[test]
        fn digests_agree_exactly_when_compare_finds_nothing(s in values(), t in values()) {
            let r = rule("both");
            let fields = compared_fields(&r);
            let equal = digest(&fields, &s) == digest(&fields, &t);
            prop_assert_eq!(equal, compare(&r, &s, &t).is_empty(), "{:?} {:?}", s, t);
        }

        /// A bucket's hash does not depend on the order records were listed in.
        #[test]
        fn bucket_hashes_ignore_order(rows in proptest::collection::vec(("[a-z0-9]{1,6}", any::<u64>()), 0..40)) {
            let n = bucket_count(rows.len());
            let forward = bucket_hashes(n, rows.iter().map(|(id, d)| (id.as_str(), *d)));
            let backward = bucket_hashes(n, rows.iter().rev().map(|(id, d)| (id.as_str(), *d)));
            prop_assert_eq!(&forward, &backward);
            prop_assert_eq!(forward.iter().map(|b| b.1).sum::<u64>(), rows.len() as u64);
        }
    }

    #[test]
    fn digests_follow_compare_on_the_cases_that_matter() {
        // `compare` and the digest both say whether two values are the same, and agree.
        let r = rule("one_way");
        let fields = compared_fields(&r);
        let side = |v: Option<Value>| -> Fields {
            v.map(|v| f(json!({ "subject": v }))).unwrap_or_default()
        };
        let agree = |a: Option<Value>, b: Option<Value>, same: bool| {
            let (a, b) = (side(a), side(b));
            assert_eq!(compare(&r, &a, &b).is_empty(), same, "compare {a:?} {b:?}");
            assert_eq!(
                digest(&fields, &a) == digest(&fields, &b),
                same,
                "digest {a:?} {b:?}"
            );
        };
        // At the top level every absence is one: missing, null, "" and [].
        for empty in [json!(null), json!(""), json!([])] {
            agree(None, Some(empty.clone()), true);
            agree(Some(json!(null)), Some(empty), true);
        }
        // Numbers by value: 2 and 2.0, 0 and -0.0; 1 and 2 differ, and "1" is text.
        agree(Some(json!(2)), Some(json!(2.0)), true);
        agree(Some(json!(0)), Some(json!(-0.0)), true);
        agree(Some(json!(1)), Some(json!(2)), false);
        agree(Some(json!(1)), None, false);
        agree(Some(json!("1")), Some(json!(1)), false);
        // Inside a list or an object, values are as `==` sees them: "" is not null, 2 is
        // not 2.0, order counts in lists and not in objects.
        agree(Some(json!([""])), Some(json!([null])), false);
        agree(Some(json!({"a": ""})), Some(json!({"a": null})), false);
        agree(Some(json!([2])), Some(json!([2.0])), false);
        agree(Some(json!(["a", "b"])), Some(json!(["b", "a"])), false);
        agree(
            Some(json!({"a": 1, "b": 2})),
            Some(json!({"b": 2, "a": 1})),
            true,
        );
    }

    #[test]
    fn the_hash_is_fnv_1a() {
        // The published FNV-1a 64-bit test vectors: stored hashes stay comparable.
        let of = |bytes: &[u8]| {
            let mut h = Fnv::new();
            h.write(bytes);
            h.0
        };
        assert_eq!(of(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(of(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(of(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn one_drifted_record_puts_its_bucket_apart_and_no_other() {
        let r = rule("one_way");
        let fields = compared_fields(&r);
        let ids: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let v = f(json!({"subject": "A", "hours": 2}));
        let n = bucket_count(ids.len());
        assert_eq!(n, 16);
        // The ids spread over every bucket.
        let mut per_bucket = vec![0; n];
        for id in &ids {
            per_bucket[bucket_of(id, n)] += 1;
        }
        assert!(per_bucket.iter().all(|c| *c > 20), "{per_bucket:?}");
        let d = digest(&fields, &v);
        let source = bucket_hashes(n, ids.iter().map(|id| (id.as_str(), d)));
        let drifted = digest(&fields, &f(json!({"subject": "B", "hours": 2})));
        let target = bucket_hashes(
            n,
            ids.iter()
                .map(|id| (id.as_str(), if id == "417" { drifted } else { d })),
        );
        assert_eq!(buckets_apart(&source, &target), vec![bucket_of("417", n)]);
        // A record missing on one side changes the count.
        let fewer = bucket_hashes(n, ids.iter().skip(1).map(|id| (id.as_str(), d)));
        assert_eq!(buckets_apart(&source, &fewer), vec![bucket_of("0", n)]);
        assert_eq!(bucket_count(0), 1);
        assert_eq!(bucket_count(64), 1);
        assert_eq!(bucket_count(65), 2);
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
