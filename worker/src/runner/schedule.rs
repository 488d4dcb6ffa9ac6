//! What runs beside the consumer: the dead-letter drainer (the dead-letter queue into
//! PostgreSQL), the flusher of parked work, and the scheduled resyncs, reconciles and
//! schema checks, each claimed by one worker of the fleet.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::jobs::{Job, Report};
use crate::metrics::{Event, ScheduledResult};
use crate::resync::{self, ResyncError};
use crate::{dlq, schema};

/// How far back the ledger's rollup counts unaccounted events: the alert's day.
pub const LEDGER_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Rows a pruning statement deletes, and statements a table gets per run.
const PRUNE_BATCH: i64 = 5_000;
const PRUNE_MAX_BATCHES: u32 = 20;

impl Worker {
    /// Runs `turn` every `every` (the first at once) until shutdown, skipping a turn
    /// while PostgreSQL is down; each turn's result is counted and logged as a
    /// scheduled run named `name` of `kind`.
    async fn periodically<F: Future<Output = (ScheduledResult, String)>>(
        &self,
        every: Duration,
        shutdown: &CancellationToken,
        (name, kind): (&str, &'static str),
        mut turn: impl FnMut() -> F,
    ) {
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
            wait = every;
            if *self.db_down.borrow() {
                continue;
            }
            let (result, detail) = turn().await;
            self.metrics.emit(Event::Scheduled {
                name,
                kind,
                result,
                detail: &detail,
            });
        }
    }

    /// Prunes the tables that grow with every event past their retention, every
    /// `RECORDSYNC_PRUNE_EVERY_MS` (the first at once), in bounded batches; one worker
    /// of the fleet prunes at a time. Runs until shutdown.
    pub(super) async fn prune(self: Arc<Self>, shutdown: CancellationToken) {
        let keep = store::Retention {
            events: Duration::from_secs(self.settings.retain_events_secs),
            operations: Duration::from_secs(self.settings.retain_operations_secs),
            batch: PRUNE_BATCH,
            max_batches: PRUNE_MAX_BATCHES,
        };
        let every = Duration::from_millis(self.settings.prune_every_ms);
        let this = Arc::clone(&self);
        let turn = move || {
            let this = Arc::clone(&this);
            async move {
                match this.processor.store.prune(&keep).await {
                    Ok(Some(p)) => {
                        this.metrics.emit(Event::Pruned {
                            tables: &[
                                ("deliveries", p.deliveries),
                                ("processed_events", p.processed_events),
                                ("outbound_ops", p.outbound_ops),
                            ],
                        });
                        (ScheduledResult::Ran, String::new())
                    }
                    Ok(None) => (ScheduledResult::Busy, String::new()),
                    Err(e) => (ScheduledResult::Failed, e.to_string()),
                }
            }
        };
        self.periodically(every, &shutdown, ("retention", "prune"), turn)
            .await;
    }

    /// Recounts the ledger's unaccounted events into the rollup a metrics scrape
    /// reads, every `RECORDSYNC_LEDGER_ROLLUP_MS` (the first at once); one worker of
    /// the fleet recounts per period, the others find it done. Runs until shutdown.
    pub(super) async fn roll_up_ledger(self: Arc<Self>, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.settings.ledger_rollup_ms);
        let rules: Arc<[String]> = self.processor.rules.rule_names().into();
        let settle = self.settings.ledger_settle();
        let store = self.processor.store.clone();
        let turn = move || {
            let (store, rules) = (store.clone(), Arc::clone(&rules));
            async move {
                match store
                    .roll_up_unaccounted(&rules, settle, LEDGER_WINDOW, every)
                    .await
                {
                    Ok(true) => (ScheduledResult::Ran, String::new()),
                    Ok(false) => (ScheduledResult::Taken, String::new()),
                    Err(e) => (ScheduledResult::Failed, e.to_string()),
                }
            }
        };
        self.periodically(every, &shutdown, ("ledger", "ledger_rollup"), turn)
            .await;
    }

    /// Moves every message of the dead-letter queue into PostgreSQL, where operators
    /// list, inspect, replay and purge them. Runs until shutdown.
    pub(super) async fn drain_dead_letters(self: Arc<Self>, shutdown: CancellationToken) {
        let dead = self.broker.names().dead_queue();
        while !shutdown.is_cancelled() {
            tokio::select! {
                _ = self.broker.wait_connected() => {}
                _ = shutdown.cancelled() => return,
            }
            let tag = format!("dead-{}", uuid::Uuid::new_v4().simple());
            let mut consumer = match self.broker.consume_queue(&dead, &tag, 16).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot consume the dead-letter queue yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                let delivery = tokio::select! {
                    next = consumer.next() => match next {
                        Some(Ok(d)) => d,
                        _ => break,
                    },
                    _ = shutdown.cancelled() => {
                        let _ = consumer.cancel().await;
                        break;
                    }
                };
                let record = dlq::from_delivery(&delivery);
                match self.processor.store.insert_dead_letter(&record).await {
                    Ok(_) => {
                        let _ = delivery.ack().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot store a dead letter; it stays in the dead-letter queue until PostgreSQL is back");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = delivery.requeue().await;
                    }
                }
            }
            consumer.close().await;
        }
    }

    /// Flushes parked work whose rule, systems and write window allow it, in batches.
    /// Runs until shutdown.
    pub(super) async fn flush_parked(self: Arc<Self>, shutdown: CancellationToken) {
        let mut pause = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
            pause = Duration::from_millis(500);
            if *self.db_down.borrow() {
                continue;
            }
            let rules = match self.processor.store.parked_rules().await {
                Ok(r) => r,
                Err(_) => continue,
            };
            for rule in rules {
                loop {
                    match self.processor.flush(&rule).await {
                        Ok(0) => break,
                        Ok(n) => {
                            self.metrics.emit(Event::Flushed {
                                rule: &rule,
                                records: n,
                            });
                        }
                        Err(e) => {
                            tracing::warn!(rule, error = %e, "flushing parked work failed; it stays parked and is tried again shortly");
                            pause = Duration::from_secs(2);
                            break;
                        }
                    }
                    if shutdown.is_cancelled() {
                        return;
                    }
                }
            }
        }
    }

    /// Runs each scheduled resync, reconcile and schema check every `every_seconds`
    /// (the first at once, so that a restarted fleet catches up). One another worker
    /// is running is skipped; a scan that fails resumes from its cursor at the next run.
    pub(super) async fn resync_schedule(self: Arc<Self>, shutdown: CancellationToken) {
        let rules = &self.processor.rules;
        let every = |s: u64| Duration::from_secs(s);
        let scheduled: Vec<(String, Duration, Scheduled)> = rules
            .rules
            .iter()
            .filter_map(|r| {
                let spec = r.resync.as_ref()?;
                Some((r.name.clone(), every(spec.every_seconds), Scheduled::Resync))
            })
            .chain(rules.rules.iter().filter_map(|r| {
                let spec = r.reconcile.as_ref()?;
                Some((
                    r.name.clone(),
                    every(spec.every_seconds),
                    Scheduled::Reconcile,
                ))
            }))
            .chain(rules.systems.iter().filter_map(|(name, s)| {
                let spec = s.schema_check.as_ref()?;
                Some((
                    name.clone(),
                    every(spec.every_seconds),
                    Scheduled::SchemaCheck,
                ))
            }))
            .collect();
        let runs = scheduled.into_iter().map(|(name, every, kind)| {
            let worker = Arc::clone(&self);
            let shutdown = shutdown.clone();
            async move {
                // A run that fails (the source, the broker or PostgreSQL is down) is
                // tried again sooner than the schedule, resuming from its cursor.
                let retry = every.min(Duration::from_secs(30));
                let mut wait = Duration::ZERO;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    tokio::select! {
                        _ = worker.broker.wait_connected() => {}
                        _ = shutdown.cancelled() => return,
                    }
                    wait = every;
                    if *worker.db_down.borrow() {
                        wait = retry;
                        continue;
                    }
                    let run = async {
                        match kind {
                            Scheduled::Resync | Scheduled::Reconcile => worker
                                .scheduled(kind, &name)
                                .await
                                .map(|r| r.map(|r| r.summary()))
                                .map_err(Stopped::from),
                            Scheduled::SchemaCheck => schema::scheduled(&worker.processor, &name).await.map(|r| {
                                r.map(|checks| schema::lines(&checks).join("; "))
                            }).map_err(Stopped::from),
                        }
                    };
                    tokio::select! {
                        result = run => {
                            let (result, detail) = match &result {
                                Ok(None) => (ScheduledResult::Taken, ""),
                                Ok(Some(done)) => (ScheduledResult::Ran, done.as_str()),
                                Err(Stopped::Busy) => (ScheduledResult::Busy, ""),
                                Err(Stopped::Held(reason)) => (ScheduledResult::Held, reason.as_str()),
                                Err(Stopped::Failed(error)) => (ScheduledResult::Failed, error.as_str()),
                            };
                            if matches!(result, ScheduledResult::Held | ScheduledResult::Failed) {
                                wait = retry;
                            }
                            worker.metrics.emit(Event::Scheduled {
                                name: &name,
                                kind: kind.as_str(),
                                result,
                                detail,
                            });
                        }
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        });
        futures_util::future::join_all(runs).await;
    }

    /// Runs `rule`'s scheduled resync or reconcile if this period's run is due (another
    /// worker may have run it already): `None` when it was not.
    async fn scheduled(&self, kind: Scheduled, rule: &str) -> Result<Option<Report>, ResyncError> {
        let claimed = match kind {
            Scheduled::Resync => Job::scheduled_resync(&self.processor, rule).await?,
            Scheduled::Reconcile => {
                Job::scheduled_reconcile(&self.processor, rule, self.settings.ledger_settle())
                    .await?
            }
            Scheduled::SchemaCheck => None,
        };
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        let publisher = match claimed.queues() {
            true => Some(self.broker.publisher().await?),
            false => None,
        };
        let queue = publisher.as_ref().map(|p| (p, self.broker.names()));
        claimed.run(&self.processor, queue).await.map(Some)
    }
}

/// What a schedule runs.
#[derive(Debug, Clone, Copy)]
enum Scheduled {
    Resync,
    Reconcile,
    SchemaCheck,
}

impl Scheduled {
    fn as_str(self) -> &'static str {
        match self {
            Scheduled::Resync => "resync",
            Scheduled::Reconcile => "reconcile",
            Scheduled::SchemaCheck => "schema_check",
        }
    }
}

/// Why a scheduled run stopped: another worker has it, an API budget holds it back,
/// or it failed.
enum Stopped {
    Busy,
    Held(String),
    Failed(String),
}

impl From<resync::ResyncError> for Stopped {
    fn from(e: resync::ResyncError) -> Stopped {
        match e {
            resync::ResyncError::AlreadyRunning(_) => Stopped::Busy,
            resync::ResyncError::HeldBack(reason) => Stopped::Held(reason),
            e => Stopped::Failed(e.to_string()),
        }
    }
}

impl From<schema::SchemaError> for Stopped {
    fn from(e: schema::SchemaError) -> Stopped {
        match e {
            schema::SchemaError::AlreadyRunning(_) => Stopped::Busy,
            e => Stopped::Failed(e.to_string()),
        }
    }
}
