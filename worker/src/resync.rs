//! Resync: asks a rule's source for the records changed since the last scan and
//! queues a resync command for each one the service has not synced at that revision.
//! What no webhook announced (kintone drops them beyond 60 a minute, and sends none
//! for bulk imports) is found this way and synced by the same step as a webhook.
//!
//! - One worker of the fleet scans a rule at a time: the scan holds a lease
//!   (`record_leases`, under the rule and [`LEASE_ID`]), renewed while it runs.
//! - A page's commands are published (confirmed) before the page is recorded in the
//!   cursor, so a scan that stops resumes after the last page it queued: nothing is
//!   lost, and a command queued twice has the same id (rule, record, revision), which
//!   the step processes once.
//! - Pages go by record id, not offset (kintone caps offsets at 10,000), and every
//!   listing request passes the limiter like any other.
//! - A scan that completes moves the cursor to its own start; the next one looks from
//!   `overlap_seconds` before that.
//! - A full scan (the first, or `full`) lists every id. When it completes, each linked
//!   record it did not list is queued too: the step fetches it and, if it is gone,
//!   applies the rule's `on_delete`. A scan that does not complete concludes nothing.

use std::time::Duration;

use queue::{Command, Names, Publisher};
use store::{RecordTx, ResyncCursor, StoreError};

use crate::classify::Failure;
use crate::step::Processor;

/// The lease a scan holds, under its rule: no source record has this id.
pub const LEASE_ID: &str = "#resync";
/// Records per listing request (kintone's maximum).
pub const PAGE_SIZE: usize = 500;

/// Why a scan did not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    /// The rule does not exist.
    #[error("no rule named \"{0}\"")]
    UnknownRule(String),
    /// Another worker (or this one) is scanning the rule.
    #[error(
        "a resync of rule \"{0}\" is already running on another worker; it resumes from its cursor if it stops"
    )]
    AlreadyRunning(String),
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker failed.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    /// Listing the source failed (the scan resumes from its cursor next time).
    #[error("listing the source failed: {0}")]
    Source(#[from] Failure),
    /// A system's API budget holds background work back (the scan resumes from its
    /// cursor when the forecast fits).
    #[error("{0}")]
    HeldBack(String),
    /// A job that queues commands was run without a broker to queue them to.
    #[error("this job queues commands, and it was started without a broker")]
    NoQueue,
}

/// What one scan did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResyncReport {
    /// The rule.
    pub rule: String,
    /// Pages listed by this run.
    pub pages: usize,
    /// Records listed by this run.
    pub listed: usize,
    /// Records queued by this run (the others were synced at the listed revision).
    pub queued: usize,
    /// Linked records a completed full scan did not list, queued to be checked (a
    /// record deleted unannounced is handled by the rule's `on_delete`).
    pub unseen: usize,
    /// The cursor after the run.
    pub cursor: ResyncCursor,
}

/// A scan of one rule, holding the rule's resync lease.
pub struct ResyncJob {
    rule: String,
    spec: domain::rules::ResyncSpec,
    lease: RecordTx,
}

impl ResyncJob {
    /// Takes the rule's resync lease, or says who has it.
    pub async fn claim(processor: &Processor, rule: &str) -> Result<ResyncJob, ResyncError> {
        let spec = processor
            .rules
            .rule(rule)
            .ok_or_else(|| ResyncError::UnknownRule(rule.to_owned()))?;
        let resync = spec
            .resync
            .clone()
            .unwrap_or_else(domain::rules::ResyncSpec::by_hand);
        let lease = processor
            .store
            .try_begin_record(rule, LEASE_ID)
            .await?
            .ok_or_else(|| ResyncError::AlreadyRunning(rule.to_owned()))?;
        Ok(ResyncJob {
            rule: rule.to_owned(),
            spec: resync,
            lease,
        })
    }

    /// Gives the lease back without scanning.
    pub async fn release(mut self) -> Result<(), ResyncError> {
        self.lease.commit().await?;
        Ok(())
    }

    /// Whether a scheduled run is due: a scan is in progress (to resume), or the last
    /// one completed at least `every_seconds` ago. Every worker runs the schedule;
    /// checked under the lease, this makes one scan per period for the fleet.
    pub async fn due(&self, processor: &Processor) -> Result<bool, ResyncError> {
        let every = chrono::Duration::seconds(self.spec.every_seconds as i64);
        let cursor = processor
            .store
            .resync_cursors()
            .await?
            .into_iter()
            .find(|c| c.rule == self.rule);
        Ok(match cursor {
            None => true,
            Some(c) if c.scan_started_at.is_some() => true,
            Some(c) => c
                .last_completed_at
                .is_none_or(|at| chrono::Utc::now() - at >= every),
        })
    }

    /// Scans: resumes the scan in progress or starts one (`full`: a backfill of every
    /// record), queues a command per changed record, and completes the cursor.
    pub async fn run(
        mut self,
        processor: &Processor,
        publisher: &Publisher,
        names: &Names,
        full: bool,
        page_size: usize,
    ) -> Result<ResyncReport, ResyncError> {
        let spec = processor
            .rules
            .rule(&self.rule)
            .ok_or_else(|| ResyncError::UnknownRule(self.rule.clone()))?;
        let store = &processor.store;
        let overlap = Duration::from_secs(self.spec.overlap_seconds);
        let mut cursor = store.resync_start(&self.rule, overlap, full).await?;
        // A full scan (a backfill) notes every id it lists: when it completes, a
        // linked record it never listed is checked (deleted unannounced?).
        let complete_set = cursor.scan_since.is_none();
        if complete_set && cursor.after_id.is_none() {
            store.resync_forget_seen(&self.rule).await?;
        }
        let endpoint = processor
            .connectors
            .endpoint(&spec.source.system, &spec.source.app)
            .map_err(Failure::from)?;
        let source = processor.limiter.limit(&endpoint);
        let correlation = format!(
            "resync-{}-{}",
            self.rule,
            cursor
                .scan_started_at
                .map(|t| t.timestamp_millis())
                .unwrap_or_default()
        );
        let mut after = cursor.after_id.clone();
        let (mut pages, mut listed, mut queued) = (0, 0, 0);
        loop {
            // Live sync keeps what is left of a budget: the scan waits, its cursor kept.
            if let Some(reason) = crate::budget::hold(processor, &[&spec.source.system]).await? {
                self.lease.commit().await?;
                tracing::info!(rule = %self.rule, pages, reason, "resync held back by the API budget");
                return Err(ResyncError::HeldBack(reason));
            }
            // The first page of a scan also asks how many records it will list.
            let first = after.is_none() && cursor.total.is_none();
            let (page, total) = source
                .call(|api| {
                    api.changed(
                        cursor
                            .scan_since
                            .map(|t| (t, self.spec.updated_field.as_str())),
                        after.as_deref(),
                        page_size,
                        first,
                    )
                })
                .await?;
            if let Some(total) = total.filter(|_| first) {
                store.resync_total(&self.rule, total).await?;
                cursor.total = Some(total as i64);
            }
            let Some(last) = page.last().map(|r| r.id.clone()) else {
                break;
            };
            let ids: Vec<String> = page.iter().map(|r| r.id.clone()).collect();
            if complete_set {
                store.resync_seen(&self.rule, &ids).await?;
            }
            let synced = store.synced_revisions(&self.rule, &ids).await?;
            let mut n = 0;
            for record in &page {
                let known = synced.get(&record.id).copied();
                if let (Some(known), Some(now)) = (known, record.revision)
                    && now <= known
                {
                    continue;
                }
                let id = match record.revision {
                    Some(r) => format!("resync:{}:{}:{r}", self.rule, record.id),
                    None => format!(
                        "resync:{}:{}:{}",
                        self.rule,
                        record.id,
                        uuid::Uuid::now_v7()
                    ),
                };
                let command = Command::Resync {
                    rule: self.rule.clone(),
                    record_id: record.id.clone(),
                    revision: record.revision,
                };
                crate::ops::publish_command(publisher, names, &id, &correlation, command).await?;
                n += 1;
            }
            store
                .resync_page_done(&self.rule, &last, page.len(), n)
                .await?;
            pages += 1;
            listed += page.len();
            queued += n;
            tracing::info!(
                rule = %self.rule,
                page = pages,
                listed = cursor.listed + listed as i64,
                total = cursor.total,
                queued = n,
                after = %last,
                "resync page queued"
            );
            if page.len() < page_size {
                break;
            }
            after = Some(last);
        }
        // Every id is listed: a linked record that was not is checked by the step,
        // which fetches it and applies the rule's `on_delete` if it is gone.
        let unseen = if complete_set {
            store.resync_unseen(&self.rule).await?
        } else {
            vec![]
        };
        for record_id in &unseen {
            let id = format!(
                "resync:{}:{record_id}:unseen-{}",
                self.rule,
                cursor
                    .scan_started_at
                    .map(|t| t.timestamp_millis())
                    .unwrap_or_default()
            );
            let command = Command::Resync {
                rule: self.rule.clone(),
                record_id: record_id.clone(),
                revision: None,
            };
            crate::ops::publish_command(publisher, names, &id, &correlation, command).await?;
        }
        cursor = store.resync_complete(&self.rule, unseen.len()).await?;
        if complete_set {
            store.resync_forget_seen(&self.rule).await?;
        }
        // Releases the lease (nothing else is buffered).
        self.lease.commit().await?;
        tracing::info!(rule = %self.rule, pages, listed, queued, unseen = unseen.len(), "resync complete");
        Ok(ResyncReport {
            rule: self.rule,
            pages,
            listed,
            queued,
            unseen: unseen.len(),
            cursor,
        })
    }
}
