//! Version vectors: what each system has seen, so that "happened after" and "happened
//! without seeing" can be told apart without trusting anyone's clock.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A version vector: per system, how many accepted changes from it are included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<String, u64>);

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The same versions.
    Equal,
    /// The left one includes everything the right one has, and more.
    After,
    /// The right one includes everything the left one has, and more.
    Before,
    /// Each has something the other has not seen.
    Concurrent,
}

impl VersionVector {
    /// A vector from `(system, counter)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> VersionVector {
        VersionVector(
            pairs
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| (s.to_owned(), n))
                .collect(),
        )
    }

    /// The counter of a system (0 when absent).
    pub fn get(&self, system: &str) -> u64 {
        self.0.get(system).copied().unwrap_or(0)
    }

    /// Counts one more accepted change from `system`.
    pub fn bump(&mut self, system: &str) {
        *self.0.entry(system.to_owned()).or_default() += 1;
    }

    /// Pointwise maximum: everything either has seen.
    pub fn join(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.clone();
        for (s, n) in &other.0 {
            let e = out.0.entry(s.clone()).or_default();
            *e = (*e).max(*n);
        }
        out
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Relation {
        let mut ahead = false;
        let mut behind = false;
        for s in self.0.keys().chain(other.0.keys()) {
            match self.get(s).cmp(&other.get(s)) {
                Ordering::Greater => ahead = true,
                Ordering::Less => behind = true,
                Ordering::Equal => {}
            }
        }
        match (ahead, behind) {
            (false, false) => Relation::Equal,
            (true, false) => Relation::After,
            (false, true) => Relation::Before,
            (true, true) => Relation::Concurrent,
        }
    }

    /// Whether `self` includes everything `other` has seen.
    pub fn includes(&self, other: &VersionVector) -> bool {
        matches!(self.compare(other), Relation::Equal | Relation::After)
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_counter_is_no_entry() {
        assert_eq!(
            VersionVector::from_pairs([("kintone", 0), ("helpdesk", 2)]),
            VersionVector::from_pairs([("helpdesk", 2)])
        );
        assert_eq!(
            VersionVector::from_pairs([("kintone", 0)]),
            VersionVector::default()
        );
    }
    use proptest::prelude::*;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        VersionVector::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn the_seed_example_is_concurrent() {
        let local = vv(&[("local", 5), ("crm", 2)]);
        let crm = vv(&[("local", 4), ("crm", 3)]);
        assert_eq!(local.compare(&crm), Relation::Concurrent);
        assert_eq!(crm.compare(&local), Relation::Concurrent);
        assert_eq!(local.join(&crm), vv(&[("local", 5), ("crm", 3)]));
        assert_eq!(local.to_string(), "{crm: 2, local: 5}");
    }

    #[test]
    fn after_before_equal() {
        let a = vv(&[("k", 2)]);
        let mut b = a.clone();
        b.bump("h");
        assert_eq!(b.compare(&a), Relation::After);
        assert_eq!(a.compare(&b), Relation::Before);
        assert_eq!(a.compare(&a.clone()), Relation::Equal);
        // A zero counter is the same as no counter.
        assert_eq!(vv(&[("k", 2), ("h", 0)]).compare(&a), Relation::Equal);
        assert!(b.includes(&a) && !a.includes(&b));
    }

    fn arb() -> impl Strategy<Value = VersionVector> {
        proptest::collection::btree_map(prop_oneof![Just("a"), Just("b"), Just("c")], 0u64..4, 0..3)
            .prop_map(VersionVector::from_pairs)
    }

    proptest! {
        /// `includes` is a partial order: reflexive, antisymmetric, transitive.
        #[test]
        fn includes_is_a_partial_order(a in arb(), b in arb(), c in arb()) {
            prop_assert!(a.includes(&a));
            if a.includes(&b) && b.includes(&a) {
                prop_assert_eq!(a.compare(&b), Relation::Equal);
            }
            if a.includes(&b) && b.includes(&c) {
                prop_assert!(a.includes(&c));
            }
        }

        /// `compare` is antisymmetric in its answers.
        #[test]
        fn compare_mirrors(a in arb(), b in arb()) {
            let mirrored = match a.compare(&b) {
                Relation::After => Relation::Before,
                Relation::Before => Relation::After,
                r => r,
            };
            prop_assert_eq!(b.compare(&a), mirrored);
        }

        /// `join` is the least upper bound: commutative, associative, idempotent, and
        /// it includes both sides.
        #[test]
        fn join_is_a_least_upper_bound(a in arb(), b in arb(), c in arb()) {
            prop_assert_eq!(a.join(&b), b.join(&a));
            prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
            prop_assert_eq!(a.join(&a), a.clone());
            prop_assert!(a.join(&b).includes(&a) && a.join(&b).includes(&b));
        }
    }
}
