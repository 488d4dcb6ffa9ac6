//! The commands that read a rule's systems, through the worker's limits, and queue work
//! for the running workers: `resync` (the changed records, or every one), `reconcile`
//! (the repairs of what drifted), `import` (a partner's file), and `preview` (what a
//! rule change would do, which reads and queues nothing).

use super::Context;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use worker::jobs::{Job, Report};

/// `resync --rule RULE [--full]`, or `resync --status` for the cursors.
pub async fn resync(
    ctx: &Context,
    rule: Option<String>,
    full: bool,
    status: bool,
) -> anyhow::Result<()> {
    let worker = ctx.migrated_worker().await?;
    if status {
        for c in worker.store().resync_cursors().await? {
            println!("{}", serde_json::to_string(&c)?);
        }
        return Ok(());
    }
    let rule = rule.context("--rule is required")?;
    let broker = ctx.broker().await?;
    let processor = worker.processor();
    let job = Job::Resync { full }.claim(&processor, &rule).await?;
    let Report::Resync(report) = job
        .run(&processor, Some((&broker.publisher, &broker.names)))
        .await?
    else {
        unreachable!("a resync reports as one");
    };
    println!(
        "resync of {}: {} record(s) listed in {} page(s), {} queued (the others were already synced at that revision)",
        report.rule, report.listed, report.pages, report.queued
    );
    Ok(())
}

/// `reconcile --rule RULE [--dry-run] [--settle-seconds N]`, or `reconcile --runs` for
/// the latest runs.
pub async fn reconcile(
    ctx: &Context,
    rule: Option<String>,
    dry_run: bool,
    settle_seconds: Option<u64>,
    runs: bool,
) -> anyhow::Result<()> {
    let worker = ctx.migrated_worker().await?;
    if runs {
        for r in worker.store().reconcile_runs(rule.as_deref(), 20).await? {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    }
    let rule = rule.context("--rule is required")?;
    let settle = settle_seconds
        .map(std::time::Duration::from_secs)
        .unwrap_or(ctx.settings()?.ledger_settle());
    let processor = worker.processor();
    let job = Job::Reconcile { dry_run, settle }
        .claim(&processor, &rule)
        .await?;
    let broker = match job.queues() {
        true => Some(ctx.broker().await?),
        false => None,
    };
    let queue = broker.as_ref().map(|b| (&b.publisher, &b.names));
    let Report::Reconcile(report) = job.run(&processor, queue).await? else {
        unreachable!("a reconcile reports as one");
    };
    println!(
        "reconcile run {} of {}: {} linked, {} compared ({} of {} bucket(s) apart, {} record(s) field by field), {} left out as in flight, {} missing in the source, {} in the target; {} apart ({}); {} repair(s) queued{}",
        report.run,
        report.rule,
        report.linked,
        report.compared,
        report.buckets_apart,
        report.buckets,
        report.rows_compared,
        report.skipped_in_flight,
        report.source_missing,
        report.target_missing,
        report.records_apart,
        report
            .differences
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        report.repairs_queued,
        if report.dry_run { " (dry run)" } else { "" }
    );
    for f in &report.found {
        println!(
            "  record {} / {}: {} — source {}, target {}; owner {}; {:?}",
            f.record_id,
            f.target_id,
            f.difference.field,
            f.difference.source,
            f.difference.target,
            f.difference.owner,
            f.difference.action
        );
    }
    Ok(())
}

/// `preview --rules FILE --rule RULE`: what the rules in use and the new file would each
/// map and write, record by record.
pub async fn preview(
    ctx: &Context,
    new_path: &Path,
    rule: &str,
    records: usize,
    since: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
) -> anyhow::Result<()> {
    let new = config::load_rules(new_path)?;
    // Read-only: no migration, no broker.
    let worker = ctx.worker()?;
    let report = worker::preview::preview(&worker.processor(), &new, rule, records, since).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in worker::preview::lines(&report) {
            println!("{line}");
        }
    }
    Ok(())
}

/// `import --rule RULE FILE [--dry-run]`, or `import --list` for the latest imports.
/// Fails when some rows are invalid.
pub async fn import(
    ctx: &Context,
    rule: Option<String>,
    file: Option<PathBuf>,
    dry_run: bool,
    list: bool,
    json: bool,
) -> anyhow::Result<()> {
    let worker = ctx.migrated_worker().await?;
    if list {
        for r in worker.store().imports(rule.as_deref(), 20).await? {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    }
    let (rule, path) = (
        rule.context("--rule is required")?,
        file.context("FILE is required")?,
    );
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let processor = worker.processor();
    let progress = |p: worker::import::Progress| {
        eprintln!(
            "{}/{} record(s) queued, {:.0}/s{}",
            p.done,
            p.total,
            p.rate,
            p.eta_seconds
                .map(|s| format!(", {s:.0} s left"))
                .unwrap_or_default()
        )
    };
    let report = if dry_run {
        worker::import::import(&processor, None, &rule, &name, &bytes, progress).await?
    } else {
        let broker = ctx.broker().await?;
        worker::import::import(
            &processor,
            Some((&broker.publisher, &broker.names)),
            &rule,
            &name,
            &bytes,
            progress,
        )
        .await?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in worker::import::lines(&report) {
            println!("{line}");
        }
    }
    anyhow::ensure!(
        report.invalid_rows == 0,
        "{} row(s) of {name} are invalid and were not imported",
        report.invalid_rows
    );
    Ok(())
}
