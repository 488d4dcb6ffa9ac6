//! One way to run each background job of a rule — a resync, a reconcile — whoever
//! starts it: the scheduler (only when this period's run is due), the admin API
//! (claimed at once, so that a second start is refused, then run in the background)
//! and the command line (run to the end). A job first takes the rule's job lease, so
//! the fleet runs one of each per rule at a time.

use std::time::Duration;

use queue::{Names, Publisher};

use crate::reconcile::{ReconcileJob, ReconcileReport};
use crate::resync::{PAGE_SIZE, ResyncError, ResyncJob, ResyncReport};
use crate::step::Processor;

/// A job to run for a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// List the source's records changed since the cursor (`full`: every record) and
    /// queue a resync command for each one not synced at its revision.
    Resync {
        /// A backfill of every record.
        full: bool,
    },
    /// Compare both systems and queue repairs of what drifted (none when `dry_run`),
    /// leaving out records that moved within `settle`.
    Reconcile {
        /// Store the findings, queue nothing.
        dry_run: bool,
        /// Records that moved within this are in flight, not drifted.
        settle: Duration,
    },
}

/// A job whose lease is held: run it, or drop it to give the lease back.
pub enum Claimed {
    /// A resync.
    Resync(ResyncJob, bool),
    /// A reconcile.
    Reconcile(ReconcileJob, bool, Duration),
}

/// What a job did.
#[derive(Debug)]
pub enum Report {
    /// A resync's report.
    Resync(ResyncReport),
    /// A reconcile's report.
    Reconcile(ReconcileReport),
}

impl Report {
    /// One line for the log and the scheduled run's detail.
    pub fn summary(&self) -> String {
        match self {
            Report::Resync(r) => format!("{} listed, {} queued", r.listed, r.queued),
            Report::Reconcile(r) => format!(
                "{} compared, {} apart, {} repairs queued",
                r.compared, r.records_apart, r.repairs_queued
            ),
        }
    }
}

impl Job {
    /// Takes the rule's lease for this job, or says who has it.
    pub async fn claim(self, processor: &Processor, rule: &str) -> Result<Claimed, ResyncError> {
        Ok(match self {
            Job::Resync { full } => Claimed::Resync(ResyncJob::claim(processor, rule).await?, full),
            Job::Reconcile { dry_run, settle } => {
                Claimed::Reconcile(ReconcileJob::claim(processor, rule).await?, dry_run, settle)
            }
        })
    }

    /// The scheduler's claim of the rule's resync: `None` when another worker ran this
    /// period's scan already (checked under the lease, so the fleet runs one).
    pub async fn scheduled_resync(
        processor: &Processor,
        rule: &str,
    ) -> Result<Option<Claimed>, ResyncError> {
        let job = ResyncJob::claim(processor, rule).await?;
        if !job.due(processor).await? {
            return Ok(None);
        }
        Ok(Some(Claimed::Resync(job, false)))
    }

    /// The scheduler's claim of the rule's reconcile, as its `reconcile` spec says
    /// (dry unless it repairs; its settle time, else `default_settle`): `None` when the
    /// rule has no schedule, or its last run started less than `every_seconds` ago.
    pub async fn scheduled_reconcile(
        processor: &Processor,
        rule: &str,
        default_settle: Duration,
    ) -> Result<Option<Claimed>, ResyncError> {
        let Some(spec) = processor.rules.rule(rule).and_then(|r| r.reconcile.clone()) else {
            return Ok(None);
        };
        let job = ReconcileJob::claim(processor, rule).await?;
        let last = processor.store.reconcile_runs(Some(rule), 1).await?;
        let every = chrono::Duration::seconds(spec.every_seconds as i64);
        if last
            .first()
            .is_some_and(|r| chrono::Utc::now() - r.started_at < every)
        {
            job.release().await?;
            return Ok(None);
        }
        let settle = spec
            .settle_seconds
            .map(Duration::from_secs)
            .unwrap_or(default_settle);
        Ok(Some(Claimed::Reconcile(job, !spec.repair, settle)))
    }
}

impl Claimed {
    /// Whether running it queues commands (and so needs a publisher).
    pub fn queues(&self) -> bool {
        match self {
            Claimed::Resync(..) => true,
            Claimed::Reconcile(_, dry_run, _) => !dry_run,
        }
    }

    /// Runs the job to its end and gives the lease back. `queue` is where its commands
    /// go; a job that [`Claimed::queues`] fails without one.
    pub async fn run(
        self,
        processor: &Processor,
        queue: Option<(&Publisher, &Names)>,
    ) -> Result<Report, ResyncError> {
        match self {
            Claimed::Resync(job, full) => {
                let (publisher, names) = queue.ok_or(ResyncError::NoQueue)?;
                job.run(processor, publisher, names, full, PAGE_SIZE)
                    .await
                    .map(Report::Resync)
            }
            Claimed::Reconcile(job, dry_run, settle) => {
                let queue = if dry_run {
                    None
                } else {
                    Some(queue.ok_or(ResyncError::NoQueue)?)
                };
                job.run(processor, queue, dry_run, settle)
                    .await
                    .map(Report::Reconcile)
            }
        }
    }
}
