//! History entries for field authority: what an observation was, the verdict on each
//! changed field, and a person's resolution.

use serde_json::{Value, json};

use super::{Entry, Kind, entry, show};

/// Constructors for field authority's classifications and verdicts.
impl Entry {
    /// What an observation of a system turned out to be, when nothing changes.
    pub fn classified(
        system: &str,
        class: crate::authority::Classification,
        revision: Option<i64>,
    ) -> Entry {
        use crate::authority::Classification as C;
        let rev = revision
            .map(|r| format!(" revision {r}"))
            .unwrap_or_default();
        let summary = match class {
            C::Duplicate => format!("{system}{rev} was already seen (duplicate); nothing to do"),
            C::Stale => {
                format!("{system}{rev} is older than what was already seen (stale); nothing to do")
            }
            C::Confirmation => {
                format!("{system}{rev} is our own write coming back (confirmation); nothing to do")
            }
            C::NoChange => format!("{system}{rev} changed no mapped field; nothing to do"),
            C::NewChange => format!("{system}{rev} carried a new change"),
            C::Concurrent => {
                format!("{system}{rev} carried a change made without seeing the latest one")
            }
        };
        entry(
            Kind::Classified,
            summary,
            json!({"system": system, "class": class.as_str(), "revision": revision}),
        )
    }

    /// The verdict on one field a system changed, in the words of the seed's timeline.
    pub fn field_outcome(
        system: &str,
        o: &crate::authority::FieldOutcome,
        others: &[&str],
    ) -> Entry {
        use crate::authority::Verdict as V;
        use crate::versions::Relation;
        let carried = format!("{system} carried {} for {}", show(&o.incoming), o.field);
        let relation = match (&o.relation, &o.last_change) {
            (Relation::Concurrent, Some(fv)) => {
                format!(" — concurrent with {}'s change {}", fv.by, fv.vv)
            }
            _ => String::new(),
        };
        let why = format!(
            "{} is owned by {}, {}",
            o.field,
            o.owner,
            o.strategy.as_str()
        );
        let to = if others.is_empty() {
            String::new()
        } else {
            format!("; written to {}", others.join(", "))
        };
        let summary = match &o.verdict {
            V::Accepted => format!("{carried} — accepted ({why}){to}"),
            V::Refused { .. } => format!(
                "{carried}{relation} — refused, kept {} ({why}) — correction queued",
                show(&o.after)
            ),
            V::Invalid { reason } => format!(
                "{carried} — refused: {reason}; kept {} — correction queued",
                show(&o.after)
            ),
            V::ConcurrentWon => {
                format!("{carried}{relation} — accepted as the latest valid change ({why}){to}")
            }
            V::ConcurrentLost => format!(
                "{carried}{relation} — kept {}, the later change ({why}) — correction queued",
                show(&o.after)
            ),
            V::Merged => format!(
                "{carried}{relation} — merged into {} ({why}){to}",
                show(&o.after)
            ),
            V::ManualReview => format!(
                "{carried}{relation} — kept {} until a person decides ({why}); conflict opened",
                show(&o.after)
            ),
        };
        entry(
            Kind::Decided,
            summary,
            serde_json::to_value(o).unwrap_or_default(),
        )
    }

    /// A conflict was resolved by a person.
    pub fn resolved(field: &str, value: &Value, by: &str) -> Entry {
        entry(
            Kind::Resolved,
            format!(
                "{by} resolved {field}: {} — written to every system",
                show(value)
            ),
            json!({"field": field, "value": value, "by": by}),
        )
    }
}
