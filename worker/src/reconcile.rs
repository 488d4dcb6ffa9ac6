//! Reconcile: compares what a rule's two systems hold for every linked record, at one
//! point in time, and queues a repair command for each record that drifted where the
//! owner is clear. What webhooks and resync cannot see (an edit made directly in the
//! target, a write lost on the way) is found here.
//!
//! - Both sides are snapshotted through the connectors and the limiter: the linked ids
//!   read 100 a request where the system can (kintone `$id in (…)`), else listed in
//!   pages (until an empty one) when it can list (a rest entity with `list`), else
//!   read record by record.
//! - Records that are moving (an event in flight, a step within the settle time, a
//!   lease, parked work), before or while the systems are listed, are left out, so
//!   that nothing merely late is "repaired". An event still waiting in the queue is not
//!   known yet; its step, after the repair, decides from the record as it is then.
//! - Counts and bucketed hashes are compared first (`domain::reconcile::digest`, about
//!   64 records a bucket), and records field by field only in the buckets that differ.
//! - Each difference is classified by `domain::reconcile::compare` under the rule's
//!   ownership. Repairs go through the step (`Command::Repair`): limits, windows,
//!   history. `dry_run` only reports.
//! - One run per rule at a time (a lease under the rule and [`LEASE_ID`]); each run is
//!   stored with its summary and a sample of its differences.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use domain::reconcile::{Action, Difference, compare};
use domain::record::Fields;
use queue::{Command, Names, Publisher};
use serde::Serialize;
use serde_json::json;

use crate::classify::Failure;
use crate::limiter::Limited;
use crate::resync::ResyncError;
use crate::step::Processor;

/// The lease a run holds, under its rule: no source record has this id.
pub const LEASE_ID: &str = "#reconcile";
/// Records per listing request.
const PAGE_SIZE: usize = 100;
/// Differences kept with a stored run.
const SAMPLE: usize = 200;

/// A difference on one linked record.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The source record.
    pub record_id: String,
    /// The target record.
    pub target_id: String,
    /// The field and what to do.
    #[serde(flatten)]
    pub difference: Difference,
}

/// What one run found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    /// The stored run's id.
    pub run: i64,
    /// The rule.
    pub rule: String,
    /// Only reported, nothing queued.
    pub dry_run: bool,
    /// Linked records of the rule.
    pub linked: usize,
    /// Linked records compared (by digest, in buckets).
    pub compared: usize,
    /// Buckets the compared records were spread over (about 64 each).
    pub buckets: usize,
    /// Buckets whose hash or count differed between the two sides.
    pub buckets_apart: usize,
    /// Records compared field by field: those in the buckets apart.
    pub rows_compared: usize,
    /// The sum of the source side's bucket hashes (hex), for comparing runs.
    pub source_hash: String,
    /// The sum of the target side's bucket hashes.
    pub target_hash: String,
    /// Left out because they were moving.
    pub skipped_in_flight: usize,
    /// Linked records the source no longer has (resync's full scan applies
    /// `on_delete` to them).
    pub source_missing: usize,
    /// Linked records whose target record is gone.
    pub target_missing: usize,
    /// Source records whose values the rule cannot map (their conflicts say why).
    pub unmappable: usize,
    /// Differences by action.
    pub differences: BTreeMap<String, usize>,
    /// Records with at least one difference.
    pub records_apart: usize,
    /// Repair commands queued.
    pub repairs_queued: usize,
    /// Requests made to list or read the two systems.
    pub requests: usize,
    /// How long the run took.
    pub duration_ms: u128,
    /// Of which the comparison itself: mapping, digests, buckets and the field-by-field
    /// compare, without the snapshot's requests (microseconds).
    pub compare_us: u128,
    /// The differences (at most 200).
    pub found: Vec<Found>,
}

/// A reconcile of one rule, holding the rule's reconcile lease.
pub struct ReconcileJob {
    rule: String,
    lease: store::RecordTx,
}

impl ReconcileJob {
    /// Takes the rule's reconcile lease, or says who has it.
    pub async fn claim(processor: &Processor, rule: &str) -> Result<ReconcileJob, ResyncError> {
        processor
            .rules
            .rule(rule)
            .ok_or_else(|| ResyncError::UnknownRule(rule.to_owned()))?;
        let lease = processor
            .store
            .try_begin_record(rule, LEASE_ID)
            .await?
            .ok_or_else(|| ResyncError::AlreadyRunning(rule.to_owned()))?;
        Ok(ReconcileJob {
            rule: rule.to_owned(),
            lease,
        })
    }

    /// Gives the lease back without running.
    pub async fn release(mut self) -> Result<(), ResyncError> {
        self.lease.commit().await?;
        Ok(())
    }

    /// Compares, queues the repairs (through `queue`, unless `dry_run`), stores the run
    /// and releases the lease. Records that moved within `settle` are left out.
    pub async fn run(
        self,
        processor: &Processor,
        queue: Option<(&Publisher, &Names)>,
        dry_run: bool,
        settle: Duration,
    ) -> Result<ReconcileReport, ResyncError> {
        run(processor, queue, &self.rule, self.lease, dry_run, settle).await
    }
}

async fn run(
    processor: &Processor,
    queue: Option<(&Publisher, &Names)>,
    rule: &str,
    mut lease: store::RecordTx,
    dry_run: bool,
    settle: Duration,
) -> Result<ReconcileReport, ResyncError> {
    let spec = processor
        .rules
        .rule(rule)
        .ok_or_else(|| ResyncError::UnknownRule(rule.to_owned()))?;
    let held = crate::budget::hold(processor, &[&spec.source.system, &spec.target.system]).await?;
    if let Some(reason) = held {
        lease.commit().await?;
        tracing::info!(rule, reason, "reconcile held back by the API budget");
        return Err(ResyncError::HeldBack(reason));
    }
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let store = &processor.store;
    let links: Vec<(String, String)> = store
        .links(rule)
        .await?
        .into_iter()
        .filter_map(|l| Some((l.source_record_id, l.target_id?)))
        .collect();
    let busy = store.busy_records(rule, settle).await?;
    let source_ep = processor
        .connectors
        .endpoint(&spec.source.system, &spec.source.app)
        .map_err(Failure::from)?;
    let target_ep = processor
        .connectors
        .endpoint(&spec.target.system, &spec.target.entity)
        .map_err(Failure::from)?;
    let mut report = ReconcileReport {
        rule: rule.to_owned(),
        dry_run,
        linked: links.len(),
        ..ReconcileReport::default()
    };
    let wanted: Vec<(String, String)> = links
        .into_iter()
        .filter(|(record, _)| {
            let moving = busy.contains(record);
            report.skipped_in_flight += usize::from(moving);
            !moving
        })
        .collect();
    let source_ids: Vec<&str> = wanted.iter().map(|(s, _)| s.as_str()).collect();
    let target_ids: Vec<&str> = wanted.iter().map(|(_, t)| t.as_str()).collect();
    let source = snapshot(
        &processor.limiter.limit(&source_ep),
        source_ep.can_list(),
        &source_ids,
        &mut report.requests,
    )
    .await?;
    let target = snapshot(
        &processor.limiter.limit(&target_ep),
        target_ep.can_list(),
        &target_ids,
        &mut report.requests,
    )
    .await?;
    // What started moving while the systems were listed is left out too.
    let moved = store.busy_records(rule, settle).await?;
    let before = wanted.len();
    let wanted: Vec<(String, String)> = wanted
        .into_iter()
        .filter(|(record, _)| !moved.contains(record))
        .collect();
    report.skipped_in_flight += before - wanted.len();
    let correlation = format!("reconcile-{rule}-{}", started_at.timestamp_millis());
    // Each side's values as the rule compares them, and their digests.
    let comparing = Instant::now();
    let mut compare_time = Duration::ZERO;
    let fields = domain::reconcile::compared_fields(spec);
    let write_only = processor.rules.write_only(spec);
    let mut rows = Vec::with_capacity(wanted.len());
    for (record_id, target_id) in &wanted {
        let Some(s) = source.get(record_id) else {
            report.source_missing += 1;
            continue;
        };
        let Some(t) = target.get(target_id) else {
            report.target_missing += 1;
            continue;
        };
        let Ok(mut mapped) = domain::mapping::map_fields(&spec.fields, s) else {
            report.unmappable += 1;
            continue;
        };
        // What the target never shows cannot be compared.
        for name in write_only {
            mapped.remove(name);
        }
        let theirs = domain::plan::target_values(spec, t);
        let digests = (
            domain::reconcile::digest(&fields, &mapped),
            domain::reconcile::digest(&fields, &theirs),
        );
        rows.push((record_id, target_id, mapped, theirs, digests));
    }
    report.compared = rows.len();
    // Counts and bucketed hashes first; rows only in the buckets that differ.
    let n = domain::reconcile::bucket_count(rows.len());
    let ours = domain::reconcile::bucket_hashes(n, rows.iter().map(|r| (r.0.as_str(), r.4.0)));
    let theirs = domain::reconcile::bucket_hashes(n, rows.iter().map(|r| (r.0.as_str(), r.4.1)));
    let apart: std::collections::BTreeSet<usize> = domain::reconcile::buckets_apart(&ours, &theirs)
        .into_iter()
        .collect();
    let total = |b: &[(u64, u64)]| {
        format!(
            "{:016x}",
            b.iter().fold(0u64, |acc, (h, _)| acc.wrapping_add(*h))
        )
    };
    report.buckets = n;
    report.buckets_apart = apart.len();
    report.source_hash = total(&ours);
    report.target_hash = total(&theirs);
    compare_time += comparing.elapsed();
    for (record_id, target_id, mapped, theirs, _) in rows
        .iter()
        .filter(|r| apart.contains(&domain::reconcile::bucket_of(r.0, n)))
    {
        report.rows_compared += 1;
        let comparing = Instant::now();
        let diffs = compare(spec, mapped, theirs);
        compare_time += comparing.elapsed();
        if diffs.is_empty() {
            continue;
        }
        report.records_apart += 1;
        for d in &diffs {
            *report
                .differences
                .entry(action_name(d.action).to_owned())
                .or_default() += 1;
        }
        let repairs: Vec<&Difference> = diffs.iter().filter(|d| d.action.repairs()).collect();
        if let (false, Some((publisher, names)), false) = (dry_run, queue, repairs.is_empty()) {
            let reason = repairs
                .iter()
                .map(|d| {
                    format!(
                        "{} differs ({} holds {}, {} holds {}; {} owns it)",
                        d.field,
                        spec.source.system,
                        show(&d.source),
                        spec.target.system,
                        show(&d.target),
                        d.owner
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let id = format!(
                "repair:{rule}:{record_id}:{}",
                started_at.timestamp_millis()
            );
            let command = Command::Repair {
                rule: rule.to_owned(),
                record_id: String::clone(record_id),
                reason,
            };
            crate::ops::publish_command(publisher, names, &id, &correlation, command).await?;
            report.repairs_queued += 1;
        }
        for d in diffs {
            if report.found.len() < SAMPLE {
                report.found.push(Found {
                    record_id: String::clone(record_id),
                    target_id: String::clone(target_id),
                    difference: d,
                });
            }
        }
    }
    report.duration_ms = started.elapsed().as_millis();
    report.compare_us = compare_time.as_micros();
    let mut summary = serde_json::to_value(&report).expect("a report serializes");
    let found = summary
        .as_object_mut()
        .and_then(|o| o.remove("found"))
        .unwrap_or(json!([]));
    report.run = store
        .reconcile_insert(rule, started_at, dry_run, &summary, &found)
        .await?;
    lease.commit().await?;
    tracing::info!(
        rule,
        run = report.run,
        compared = report.compared,
        apart = report.records_apart,
        repairs = report.repairs_queued,
        "reconcile complete"
    );
    Ok(report)
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::UpdateTarget => "update_target",
        Action::UpdateSource => "update_source",
        Action::Ignore => "ignore",
        Action::ManualReview => "manual_review",
    }
}

fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => format!("\"{s}\""),
        serde_json::Value::Null => "nothing".to_owned(),
        other => other.to_string(),
    }
}

/// What a system holds for `ids`: listed in pages when it can list (one pass over
/// every record), otherwise read one by one. Every request passes the limiter.
async fn snapshot(
    system: &Limited<'_>,
    can_list: bool,
    ids: &[&str],
    requests: &mut usize,
) -> Result<HashMap<String, Fields>, ResyncError> {
    let mut out = HashMap::new();
    // The linked ids alone, 100 a request, where the system reads several at once
    // (kintone `$id in (…)`): never more requests than listing the whole app.
    if let Some(max) = system.endpoint().read_many_max() {
        for chunk in ids.chunks(max) {
            *requests += 1;
            let records = system.call(|api| api.read_many(chunk)).await?;
            out.extend(records.into_iter().map(|r| (r.id, r.fields)));
        }
    } else if can_list {
        let mut after: Option<String> = None;
        loop {
            let page = system
                .call(|api| api.records_page(after.as_deref(), PAGE_SIZE))
                .await?;
            *requests += 1;
            // Until an empty page: an API may answer fewer than it was asked for.
            let Some(last) = page.last().map(|r| r.id.clone()) else {
                break;
            };
            out.extend(page.into_iter().map(|r| (r.id, r.fields)));
            after = Some(last);
        }
    } else {
        for id in ids {
            *requests += 1;
            if let Some(r) = system.call(|api| api.fetch(id)).await? {
                out.insert(r.id, r.fields);
            }
        }
    }
    Ok(out)
}
