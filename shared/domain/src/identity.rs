//! Deterministic identity resolution.
//!
//! The order never changes: the stored link wins; else the target is searched by the
//! lookup value, then by each declared variant in order. The first step that finds
//! exactly one record links it; a step that finds several stops everything and opens a
//! data-quality conflict naming every candidate; when every step finds nothing, the
//! rule's `on_missing` decides. Every decision says which step produced it.
//! The variants are declared with the rules ([`Variant`]); what each does is here.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rules::{IdentitySpec, OnMissing, Variant};

impl Variant {
    /// Applies the variant. `None` when it does not apply (the prefix is absent, the
    /// result is empty).
    pub fn apply(&self, value: &str) -> Option<String> {
        let out = match self {
            Variant::StripPrefix(p) => value.strip_prefix(p.as_str())?.to_owned(),
            Variant::AddPrefix(p) => {
                if value.starts_with(p.as_str()) {
                    return None;
                }
                format!("{p}{value}")
            }
            Variant::StripSuffix(s) => value.strip_suffix(s.as_str())?.to_owned(),
            Variant::StripLeadingZeros => {
                let t = value.trim_start_matches('0');
                if t.is_empty() && !value.is_empty() {
                    "0".to_owned()
                } else {
                    t.to_owned()
                }
            }
            Variant::DigitsOnly => value.chars().filter(char::is_ascii_digit).collect(),
            Variant::Lowercase => value.to_lowercase(),
            Variant::Uppercase => value.to_uppercase(),
            Variant::ZeroPad(width) => format!("{value:0>width$}"),
            Variant::StripPrefixIgnoreCase(p) => {
                let head = value.get(..p.len())?;
                if !head.to_lowercase().eq(&p.to_lowercase()) {
                    return None;
                }
                value[p.len()..].to_owned()
            }
            Variant::Chain(steps) => {
                let mut out = value.to_owned();
                for step in steps {
                    out = step.apply(&out)?;
                }
                out
            }
        };
        (!out.is_empty()).then_some(out)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::StripPrefix(p) => write!(f, "without prefix \"{p}\""),
            Variant::AddPrefix(p) => write!(f, "with prefix \"{p}\""),
            Variant::StripSuffix(s) => write!(f, "without suffix \"{s}\""),
            Variant::StripLeadingZeros => write!(f, "without leading zeros"),
            Variant::DigitsOnly => write!(f, "digits only"),
            Variant::Lowercase => write!(f, "lower-cased"),
            Variant::Uppercase => write!(f, "upper-cased"),
            Variant::ZeroPad(w) => write!(f, "zero-padded to {w}"),
            Variant::StripPrefixIgnoreCase(p) => {
                write!(f, "without prefix \"{p}\" in any case")
            }
            Variant::Chain(steps) => {
                let parts: Vec<String> = steps.iter().map(ToString::to_string).collect();
                write!(f, "{}", parts.join(", then "))
            }
        }
    }
}

/// The step of identity resolution that produced a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum MatchStep {
    /// The link stored by an earlier sync.
    StoredLink,
    /// A search by the lookup value as it is.
    Lookup,
    /// A search by the declared variant at `index` (0-based) of the rule.
    Variant {
        /// The variant's position in the rule.
        index: usize,
        /// How the variant reads, e.g. `without prefix "WO-"`.
        description: String,
    },
}

impl fmt::Display for MatchStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchStep::StoredLink => write!(f, "stored link"),
            MatchStep::Lookup => write!(f, "lookup value"),
            MatchStep::Variant { index, description } => {
                write!(f, "variant {} ({description})", index + 1)
            }
        }
    }
}

/// One search to make: which step, and the value to search for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupAttempt {
    /// The step this search belongs to.
    pub step: MatchStep,
    /// The value searched for in the target field.
    pub value: String,
}

/// The searches to make for a lookup value, in order. A variant that does not apply,
/// or that yields a value already searched for, is left out.
pub fn lookup_attempts(identity: &IdentitySpec, lookup_value: &str) -> Vec<LookupAttempt> {
    let mut attempts = vec![LookupAttempt {
        step: MatchStep::Lookup,
        value: lookup_value.to_owned(),
    }];
    for (index, variant) in identity.variants.iter().enumerate() {
        let Some(value) = variant.apply(lookup_value) else {
            continue;
        };
        if attempts.iter().any(|a| a.value == value) {
            continue;
        }
        attempts.push(LookupAttempt {
            step: MatchStep::Variant {
                index,
                description: variant.to_string(),
            },
            value,
        });
    }
    attempts
}

/// What identity resolution decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityDecision {
    /// Use this target record.
    Link {
        /// The target record id.
        target_id: String,
        /// The step that found it.
        step: MatchStep,
        /// The value that matched (none for a stored link).
        matched_value: Option<String>,
    },
    /// Create a target record (nothing matched and the rule allows it).
    Create,
    /// Nothing matched and the rule says to skip.
    Skip,
    /// Nothing matched and the rule says a person decides.
    NoMatchConflict,
    /// Several target records matched: write nothing, open a conflict.
    Ambiguous {
        /// The step that found them.
        step: MatchStep,
        /// The value that matched them.
        value: String,
        /// Every candidate's id, sorted.
        candidates: Vec<String>,
    },
}

/// Decides after one search. `Some` ends resolution; `None` means try the next step.
pub fn after_search(attempt: &LookupAttempt, found: &[String]) -> Option<IdentityDecision> {
    match found {
        [] => None,
        [one] => Some(IdentityDecision::Link {
            target_id: one.clone(),
            step: attempt.step.clone(),
            matched_value: Some(attempt.value.clone()),
        }),
        many => {
            let mut candidates = many.to_vec();
            candidates.sort();
            candidates.dedup();
            if candidates.len() == 1 {
                // The same record listed twice is one match, not an ambiguity.
                return after_search(attempt, &candidates);
            }
            Some(IdentityDecision::Ambiguous {
                step: attempt.step.clone(),
                value: attempt.value.clone(),
                candidates,
            })
        }
    }
}

/// Decides when every search found nothing.
pub fn when_nothing_matched(on_missing: OnMissing) -> IdentityDecision {
    match on_missing {
        OnMissing::Create => IdentityDecision::Create,
        OnMissing::Skip => IdentityDecision::Skip,
        OnMissing::Conflict => IdentityDecision::NoMatchConflict,
    }
}

/// Runs the whole resolution against a search function. The worker searches a real
/// target; tests pass a closure over a list.
pub fn resolve<E>(
    identity: &IdentitySpec,
    on_missing: OnMissing,
    stored_link: Option<&str>,
    lookup_value: &str,
    mut search: impl FnMut(&str) -> Result<Vec<String>, E>,
) -> Result<IdentityDecision, E> {
    if let Some(target_id) = stored_link {
        return Ok(IdentityDecision::Link {
            target_id: target_id.to_owned(),
            step: MatchStep::StoredLink,
            matched_value: None,
        });
    }
    for attempt in lookup_attempts(identity, lookup_value) {
        let found = search(&attempt.value)?;
        if let Some(decision) = after_search(&attempt, &found) {
            return Ok(decision);
        }
    }
    Ok(when_nothing_matched(on_missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_chain_applies_its_steps_in_turn_and_a_prefix_can_ignore_case() {
        let chain: Variant = serde_json::from_value(serde_json::json!(
            {"chain": [{"strip_prefix_ignore_case": "WO-"}, "strip_leading_zeros"]}
        ))
        .expect("a chain");
        assert_eq!(chain.apply("wo-000123").as_deref(), Some("123"));
        assert_eq!(chain.apply("WO-0042").as_deref(), Some("42"));
        // Every step must apply: no prefix, no match.
        assert_eq!(chain.apply("000123"), None);
        assert_eq!(
            chain.to_string(),
            "without prefix \"WO-\" in any case, then without leading zeros"
        );
        let ci = Variant::StripPrefixIgnoreCase("WO-".into());
        assert_eq!(ci.apply("Wo-7").as_deref(), Some("7"));
        assert_eq!(ci.apply("WO-"), None, "an empty result does not apply");
        assert_eq!(ci.apply("X"), None);
        assert_eq!(ci.apply("é-1"), None, "a prefix cut inside a character");
        // A chain is one attempt among the variants, after the value as it is.
        let identity: IdentitySpec = serde_json::from_value(serde_json::json!({
            "source_field": "no", "target_field": "ext",
            "variants": [{"chain": [{"strip_prefix": "WO-"}, "strip_leading_zeros"]}]
        }))
        .expect("an identity");
        let values: Vec<String> = lookup_attempts(&identity, "WO-0099")
            .into_iter()
            .map(|a| a.value)
            .collect();
        assert_eq!(values, vec!["WO-0099".to_owned(), "99".to_owned()]);
    }

    fn spec(variants: Vec<Variant>) -> IdentitySpec {
        IdentitySpec {
            source_field: "work_order_no".into(),
            target_field: "external_id".into(),
            variants,
        }
    }

    /// A target index: value → ids.
    fn index(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (v, id) in pairs {
            m.entry((*v).into()).or_default().push((*id).into());
        }
        m
    }

    fn run(
        s: &IdentitySpec,
        on_missing: OnMissing,
        link: Option<&str>,
        value: &str,
        idx: &BTreeMap<String, Vec<String>>,
    ) -> (IdentityDecision, Vec<String>) {
        let mut searched = vec![];
        let d = resolve::<()>(s, on_missing, link, value, |v| {
            searched.push(v.to_owned());
            Ok(idx.get(v).cloned().unwrap_or_default())
        })
        .unwrap();
        (d, searched)
    }

    #[test]
    fn variants_apply_as_declared() {
        assert_eq!(
            Variant::StripPrefix("WO-".into())
                .apply("WO-1234")
                .as_deref(),
            Some("1234")
        );
        assert_eq!(Variant::StripPrefix("WO-".into()).apply("1234"), None);
        assert_eq!(Variant::StripPrefix("WO-".into()).apply("WO-"), None);
        assert_eq!(
            Variant::AddPrefix("WO-".into()).apply("1234").as_deref(),
            Some("WO-1234")
        );
        assert_eq!(Variant::AddPrefix("WO-".into()).apply("WO-1234"), None);
        assert_eq!(
            Variant::StripSuffix("-A".into()).apply("12-A").as_deref(),
            Some("12")
        );
        assert_eq!(
            Variant::StripLeadingZeros.apply("001234").as_deref(),
            Some("1234")
        );
        assert_eq!(
            Variant::StripLeadingZeros.apply("000").as_deref(),
            Some("0")
        );
        assert_eq!(
            Variant::DigitsOnly.apply("WO-12/34").as_deref(),
            Some("1234")
        );
        assert_eq!(Variant::DigitsOnly.apply("abc"), None);
        assert_eq!(Variant::Lowercase.apply("WO-1").as_deref(), Some("wo-1"));
        assert_eq!(Variant::Uppercase.apply("wo-1").as_deref(), Some("WO-1"));
        assert_eq!(Variant::ZeroPad(6).apply("1234").as_deref(), Some("001234"));
        assert_eq!(Variant::ZeroPad(2).apply("1234").as_deref(), Some("1234"));
        // Non-ASCII values are handled by characters, not bytes.
        assert_eq!(
            Variant::StripPrefix("作業-".into())
                .apply("作業-12")
                .as_deref(),
            Some("12")
        );
    }

    #[test]
    fn stored_link_wins_without_searching() {
        let s = spec(vec![Variant::StripPrefix("WO-".into())]);
        let idx = index(&[("WO-1", "9"), ("1", "8")]);
        let (d, searched) = run(&s, OnMissing::Create, Some("42"), "WO-1", &idx);
        assert_eq!(
            d,
            IdentityDecision::Link {
                target_id: "42".into(),
                step: MatchStep::StoredLink,
                matched_value: None
            }
        );
        assert!(searched.is_empty());
    }

    #[test]
    fn lookup_value_before_variants() {
        let s = spec(vec![Variant::StripPrefix("WO-".into())]);
        let idx = index(&[("WO-1", "9"), ("1", "8")]);
        let (d, searched) = run(&s, OnMissing::Create, None, "WO-1", &idx);
        assert_eq!(
            d,
            IdentityDecision::Link {
                target_id: "9".into(),
                step: MatchStep::Lookup,
                matched_value: Some("WO-1".into())
            }
        );
        assert_eq!(searched, vec!["WO-1"]);
    }

    #[test]
    fn variant_match_names_the_variant() {
        let s = spec(vec![
            Variant::StripPrefix("WO-".into()),
            Variant::StripLeadingZeros,
        ]);
        let idx = index(&[("1234", "7")]);
        let (d, searched) = run(&s, OnMissing::Create, None, "WO-1234", &idx);
        assert_eq!(
            d,
            IdentityDecision::Link {
                target_id: "7".into(),
                step: MatchStep::Variant {
                    index: 0,
                    description: "without prefix \"WO-\"".into()
                },
                matched_value: Some("1234".into())
            }
        );
        assert_eq!(searched, vec!["WO-1234", "1234"]);
    }

    #[test]
    fn variants_in_declared_order_and_deduplicated() {
        // StripLeadingZeros does not change "WO-0012", DigitsOnly gives "0012", and
        // the second DigitsOnly would repeat it.
        let s = spec(vec![
            Variant::StripLeadingZeros,
            Variant::DigitsOnly,
            Variant::DigitsOnly,
            Variant::StripPrefix("X".into()),
        ]);
        let idx = index(&[]);
        let (d, searched) = run(&s, OnMissing::Skip, None, "WO-0012", &idx);
        assert_eq!(d, IdentityDecision::Skip);
        assert_eq!(searched, vec!["WO-0012", "0012"]);
    }

    #[test]
    fn several_matches_stop_everything() {
        let s = spec(vec![Variant::StripPrefix("WO-".into())]);
        let idx = index(&[("1234", "8"), ("1234", "3"), ("WO-1234", "1")]);
        // The lookup value itself matches one: that wins before the ambiguous variant.
        let (d, _) = run(&s, OnMissing::Create, None, "WO-1234", &idx);
        assert!(matches!(d, IdentityDecision::Link { ref target_id, .. } if target_id == "1"));
        let idx = index(&[("1234", "8"), ("1234", "3"), ("1234", "3")]);
        let (d, _) = run(&s, OnMissing::Create, None, "WO-1234", &idx);
        assert_eq!(
            d,
            IdentityDecision::Ambiguous {
                step: MatchStep::Variant {
                    index: 0,
                    description: "without prefix \"WO-\"".into()
                },
                value: "1234".into(),
                candidates: vec!["3".into(), "8".into()]
            }
        );
    }

    #[test]
    fn the_same_id_twice_is_one_match() {
        let s = spec(vec![]);
        let idx = index(&[("A", "5"), ("A", "5")]);
        let (d, _) = run(&s, OnMissing::Create, None, "A", &idx);
        assert!(matches!(d, IdentityDecision::Link { ref target_id, .. } if target_id == "5"));
    }

    #[test]
    fn on_missing_decides_when_nothing_matches() {
        let s = spec(vec![]);
        let idx = index(&[]);
        assert_eq!(
            run(&s, OnMissing::Create, None, "A", &idx).0,
            IdentityDecision::Create
        );
        assert_eq!(
            run(&s, OnMissing::Skip, None, "A", &idx).0,
            IdentityDecision::Skip
        );
        assert_eq!(
            run(&s, OnMissing::Conflict, None, "A", &idx).0,
            IdentityDecision::NoMatchConflict
        );
    }

    #[test]
    fn search_errors_propagate() {
        let s = spec(vec![]);
        let r = resolve(&s, OnMissing::Create, None, "A", |_| Err("down"));
        assert_eq!(r, Err("down"));
    }

    fn arb_variant() -> impl Strategy<Value = Variant> {
        prop_oneof![
            "[A-Z]{0,3}-?".prop_map(Variant::StripPrefix),
            "[A-Z]{0,3}-?".prop_map(Variant::AddPrefix),
            "-?[A-Z]{0,2}".prop_map(Variant::StripSuffix),
            Just(Variant::StripLeadingZeros),
            Just(Variant::DigitsOnly),
            Just(Variant::Lowercase),
            Just(Variant::Uppercase),
            (0usize..10).prop_map(Variant::ZeroPad),
        ]
    }

    proptest! {
        /// Resolution is deterministic, searches each value at most once, always starts
        /// with the lookup value, and a Link/Ambiguous decision is backed by the index.
        #[test]
        fn resolution_laws(
            variants in proptest::collection::vec(arb_variant(), 0..5),
            value in "[A-Za-z0-9-]{1,10}",
            entries in proptest::collection::vec(("[A-Za-z0-9-]{1,10}", "[0-9]{1,3}"), 0..12),
        ) {
            let s = spec(variants);
            let pairs: Vec<(&str, &str)> = entries.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let idx = index(&pairs);
            let (d1, searched1) = run(&s, OnMissing::Create, None, &value, &idx);
            let (d2, searched2) = run(&s, OnMissing::Create, None, &value, &idx);
            prop_assert_eq!(&d1, &d2);
            prop_assert_eq!(&searched1, &searched2);
            prop_assert_eq!(&searched1[0], &value);
            let mut unique = searched1.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), searched1.len());
            match &d1 {
                IdentityDecision::Link { target_id, matched_value: Some(v), .. } => {
                    prop_assert!(idx.get(v).is_some_and(|ids| ids.contains(target_id)));
                    prop_assert_eq!(searched1.last(), Some(v));
                }
                IdentityDecision::Ambiguous { value: v, candidates, .. } => {
                    prop_assert!(candidates.len() >= 2);
                    prop_assert_eq!(searched1.last(), Some(v));
                }
                IdentityDecision::Create => {
                    for v in &searched1 {
                        prop_assert!(!idx.contains_key(v));
                    }
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
