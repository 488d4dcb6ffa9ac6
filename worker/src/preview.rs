//! A rule change previewed against the systems as they are now (`worker preview`):
//! for each linked record in scope, read both records through the connectors (limits
//! applying) and let `domain::preview` say what the current rule and the new one would
//! each do. Nothing is written: not to the systems, not to the store.

use domain::preview::{Change, RuleChange, record_changes, rule_changes, summarize};
use domain::rules::SyncRules;
use serde::Serialize;

use crate::process::Processor;
use crate::resync::ResyncError;

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
    /// The records that would be treated differently, with how.
    pub changed: Vec<(String, Vec<Change>)>,
    /// The changes grouped, one line each.
    pub summary: Vec<String>,
}

/// Previews `new`'s version of `rule` against the current one on up to `limit` linked
/// records (the oldest links first).
pub async fn preview(
    processor: &Processor,
    new: &SyncRules,
    rule: &str,
    limit: usize,
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
        changed: vec![],
        summary: vec![],
    };
    for link in links.into_iter().take(limit) {
        let Some(target_id) = link.target_id else {
            continue;
        };
        report.records += 1;
        let Some(s) = source
            .fetch(&link.source_record_id)
            .await
            .map_err(ResyncError::from)?
        else {
            report.source_missing += 1;
            continue;
        };
        let Some(t) = target.fetch(&target_id).await.map_err(ResyncError::from)? else {
            report.target_missing += 1;
            continue;
        };
        let changes = record_changes(old_spec, new_spec, &s.fields, &t.fields);
        if !changes.is_empty() {
            report.changed.push((link.source_record_id, changes));
        }
    }
    report.summary = summarize(
        &report.changed,
        &old_spec.source.system,
        &old_spec.target.system,
    );
    Ok(report)
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
    out.push(format!(
        "{} linked record(s) read, {} would be treated differently{}{}; nothing was written",
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
