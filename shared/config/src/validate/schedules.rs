//! A rule's schedules: the reconcile and resync periods, and the `list` template a rest
//! source's resync needs.

use domain::rules::{RuleSpec, SystemKind, SystemSpec};

use super::Problems;

/// `reconcile` and `resync`, at `at` (`rules[i]`).
pub(super) fn schedules(
    out: &mut Problems,
    at: &str,
    rule: &RuleSpec,
    source: Option<&SystemSpec>,
) {
    if rule
        .reconcile
        .as_ref()
        .is_some_and(|r| r.every_seconds < 60)
    {
        out.bad(
            format!("{at}.reconcile.every_seconds"),
            "must be at least 60".into(),
        );
    }
    if let Some(r) = &rule.resync {
        if r.every_seconds < 10 {
            out.bad(
                format!("{at}.resync.every_seconds"),
                "must be at least 10".into(),
            );
        }
        // A rest source lists its changes through the entity's `list` template.
        if let Some(s) = source.filter(|s| s.kind == SystemKind::Rest)
            && s.entities
                .get(&rule.source.app)
                .is_none_or(|e| e.list.is_none())
        {
            out.bad(
                format!("{at}.resync"),
                format!(
                    "resync lists the source's changed records: declare `list` on entity \"{}\" of system \"{}\" (a GET template with {{since}}, {{after}} and {{limit}}), or remove resync",
                    rule.source.app, rule.source.system
                ),
            );
        }
    }
}
