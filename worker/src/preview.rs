//! A rule change previewed against the systems as they are now (`worker preview`):
//! for each linked record in scope, read both records through the connectors (limits
//! applying) and let `domain::preview` say what the current rule and the new one would
//! each do. When the identity changes, the source's records not linked yet are listed
//! too, and each is matched under both rules, by the same searches the step makes.
//! Nothing is written: not to the systems, not to the store.

use std::collections::{BTreeSet, HashMap};

use domain::identity::lookup_attempts;
use domain::rules::IdentitySpec;

use crate::classify::Failure;
use crate::limiter::Limited;

use domain::preview::{Change, RuleChange, record_changes, rule_changes, summarize};
use domain::rules::SyncRules;
use serde::Serialize;

use crate::resync::ResyncError;
use crate::step::Processor;

/// Records per listing request, for the records not linked yet.
const LIST_PAGE: usize = 100;

/// What a preview found.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewReport {
    /// The rule.
    pub rule: String,
    /// How the rule itself changes.
    pub rule_changes: Vec<RuleChange>,
    /// Linked records read.
    pub records: usize,
    /// Linked records whose target record is gone (nothing to compare).
    pub target_missing: usize,
    /// Linked records whose source record is gone.
    pub source_missing: usize,
    /// Records not linked yet that were matched under both rules (only when the
    /// identity changes).
    pub unlinked: usize,
    /// The records that would be treated differently, with how.
    pub changed: Vec<(String, Vec<Change>)>,
    /// The changes grouped, one line each.
    pub summary: Vec<String>,
}

/// Previews `new`'s version of `rule` against the current one on up to `limit` linked
/// records (by source record id), only those synced at or after `since` when given.
pub async fn preview(
    processor: &Processor,
    new: &SyncRules,
    rule: &str,
    limit: usize,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<PreviewReport, PreviewError> {
    let old_spec = processor
        .rules
        .rule(rule)
        .ok_or_else(|| PreviewError::UnknownRule(rule.to_owned()))?;
    let new_spec = new
        .rule(rule)
        .ok_or_else(|| PreviewError::NotInNewRules(rule.to_owned()))?;
    let source_ep = processor
        .connectors
        .endpoint(&old_spec.source.system, &old_spec.source.app)
        .map_err(crate::classify::Failure::from)
        .map_err(ResyncError::from)?;
    let target_ep = processor
        .connectors
        .endpoint(&old_spec.target.system, &old_spec.target.entity)
        .map_err(crate::classify::Failure::from)
        .map_err(ResyncError::from)?;
    let (source, target) = (
        processor.limiter.limit(&source_ep),
        processor.limiter.limit(&target_ep),
    );
    let links = processor
        .store
        .links(rule)
        .await
        .map_err(ResyncError::from)?;
    let mut report = PreviewReport {
        rule: rule.to_owned(),
        rule_changes: rule_changes(old_spec, new_spec),
        records: 0,
        target_missing: 0,
        source_missing: 0,
        unlinked: 0,
        changed: vec![],
        summary: vec![],
    };
    let linked: BTreeSet<String> = links.iter().map(|l| l.source_record_id.clone()).collect();
    let in_scope = match since {
        Some(t) => Some(
            processor
                .store
                .synced_since(rule, t)
                .await
                .map_err(ResyncError::from)?,
        ),
        None => None,
    };
    let scoped = links.into_iter().filter(|l| {
        in_scope
            .as_ref()
            .is_none_or(|s| s.contains(&l.source_record_id))
    });
    for link in scoped.take(limit) {
        let Some(target_id) = link.target_id else {
            continue;
        };
        report.records += 1;
        let Some(s) = source
            .call(|api| api.fetch(&link.source_record_id))
            .await
            .map_err(ResyncError::from)?
        else {
            report.source_missing += 1;
            continue;
        };
        let Some(t) = target
            .call(|api| api.fetch(&target_id))
            .await
            .map_err(ResyncError::from)?
        else {
            report.target_missing += 1;
            continue;
        };
        let changes = record_changes(old_spec, new_spec, &s.fields, &t.fields);
        if !changes.is_empty() {
            report.changed.push((link.source_record_id, changes));
        }
    }
    if old_spec.identity != new_spec.identity && source_ep.can_list() {
        let mut searched = HashMap::new();
        let mut after: Option<String> = None;
        'listing: while report.unlinked < limit {
            let page = source
                .call(|api| api.records_page(after.as_deref(), LIST_PAGE))
                .await
                .map_err(ResyncError::from)?;
            let Some(last) = page.last().map(|r| r.id.clone()) else {
                break;
            };
            for record in page.iter().filter(|r| !linked.contains(&r.id)) {
                if report.unlinked >= limit {
                    break 'listing;
                }
                report.unlinked += 1;
                let mut matched = vec![];
                for identity in [&old_spec.identity, &new_spec.identity] {
                    let m = match record.text(&identity.source_field) {
                        Some(v) if !v.trim().is_empty() => {
                            first_match(&target, identity, &v, &mut searched)
                                .await
                                .map_err(ResyncError::from)?
                        }
                        _ => None,
                    };
                    matched.push(m);
                }
                let after_m = matched.pop().flatten();
                let before_m = matched.pop().flatten();
                if before_m != after_m {
                    report.changed.push((
                        record.id.clone(),
                        vec![Change::Match {
                            before: before_m,
                            after: after_m,
                        }],
                    ));
                }
            }
            // A short page is the last one.
            if page.len() < LIST_PAGE {
                break;
            }
            after = Some(last);
        }
    }
    report.summary = summarize(
        &report.changed,
        &old_spec.source.system,
        &old_spec.target.system,
    );
    Ok(report)
}

/// The target record a lookup value matches under `identity`, as the step searches:
/// the value, then each variant in order, the first search with results deciding;
/// `several (…)` when it finds more than one. Each search is made once per preview.
async fn first_match(
    target: &Limited<'_>,
    identity: &IdentitySpec,
    lookup: &str,
    searched: &mut HashMap<(String, String), Vec<String>>,
) -> Result<Option<String>, Failure> {
    for attempt in lookup_attempts(identity, lookup) {
        let key = (identity.target_field.clone(), attempt.value.clone());
        let ids = match searched.get(&key) {
            Some(ids) => ids.clone(),
            None => {
                let mut ids: Vec<String> = target
                    .call(|api| api.search(&identity.target_field, &attempt.value))
                    .await?
                    .into_iter()
                    .map(|t| t.id)
                    .collect();
                ids.sort();
                searched.insert(key, ids.clone());
                ids
            }
        };
        match ids.len() {
            0 => continue,
            1 => return Ok(ids.into_iter().next()),
            _ => return Ok(Some(format!("several ({})", ids.join(", ")))),
        }
    }
    Ok(None)
}

/// Why a preview could not run.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The current rules have no such rule.
    #[error("no rule named \"{0}\" in the current rules")]
    UnknownRule(String),
    /// The new rules have no such rule: renamed or removed, its links would be orphaned.
    #[error(
        "the new rules have no rule named \"{0}\": renamed or removed, its links and history would be orphaned"
    )]
    NotInNewRules(String),
    /// Reading the store or the systems failed.
    #[error(transparent)]
    Read(#[from] ResyncError),
}

/// The report as lines for the command line.
pub fn lines(report: &PreviewReport) -> Vec<String> {
    let mut out = vec![];
    if report.rule_changes.is_empty() {
        out.push(format!(
            "rule {}: the rule itself is unchanged",
            report.rule
        ));
    } else {
        out.push(format!("rule {} changes:", report.rule));
        for c in &report.rule_changes {
            out.push(format!("  {}: {}", c.field, c.what));
        }
    }
    let unlinked = if report.unlinked > 0 {
        format!(
            " and {} not linked yet (matched under both rules)",
            report.unlinked
        )
    } else {
        String::new()
    };
    out.push(format!(
        "{} linked record(s){unlinked} read, {} would be treated differently{}{}; nothing was written",
        report.records,
        report.changed.len(),
        if report.source_missing > 0 {
            format!(", {} gone from the source", report.source_missing)
        } else {
            String::new()
        },
        if report.target_missing > 0 {
            format!(", {} gone from the target", report.target_missing)
        } else {
            String::new()
        },
    ));
    out.extend(report.summary.iter().map(|l| format!("  {l}")));
    out
}
