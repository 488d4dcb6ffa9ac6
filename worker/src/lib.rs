//! `worker`: consumes the work queue with manual acks and a bounded prefetch, decides
//! and writes each event ([`process`]), and maps every failure to one of: give back
//! (PostgreSQL down), retry through a delay queue, dead-letter, or data-quality
//! conflict (stored, acknowledged).
//!
//! - [`process`]: the decide-and-write step for one event under one rule.
//! - [`admin`]: the admin HTTP API (health, metrics, record timelines, conflicts).
//! - [`Worker::run`]: the consume loop with graceful shutdown (in-flight events finish
//!   before the process exits).

pub mod admin;
pub mod auth;
pub mod budget;
pub mod classify;
pub mod dlq;
pub mod import;
pub mod limiter;
pub mod metrics;
pub mod ops;
pub mod preview;
pub mod process;
pub mod reconcile;
pub mod resync;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{Event, ScheduledResult};
use config::{ConfigError, Settings};
use connectors::Connectors;
use domain::history::Entry;
use domain::rules::SyncRules;
use queue::{Broker, Command, CommandV2, Delivery, QueueError, Topology, headers};
use store::{EventRef, Store};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::classify::Action;
use crate::metrics::Metrics;
use crate::process::{Failure, Processor};

/// The worker: processor, broker, settings and counters.
pub struct Worker {
    settings: Settings,
    processor: Arc<Processor>,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    db_down: tokio::sync::watch::Sender<bool>,
    migrated: std::sync::atomic::AtomicBool,
}

/// What the runner did with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Processed (or a conflict stored): acknowledged.
    Acked,
    /// Given back to the queue without counting an attempt.
    Requeued,
    /// Sent to a delay queue for attempt `next_attempt`.
    Retried {
        /// The attempt it will be.
        next_attempt: u32,
    },
    /// Sent to the dead-letter queue.
    DeadLettered,
}

impl Worker {
    /// Builds the worker: connectors with their secrets, a lazy database pool, the
    /// broker handle. Nothing is contacted yet.
    pub fn new(settings: Settings, rules: SyncRules) -> Result<Worker, anyhow::Error> {
        let connectors = Connectors::from_rules(&rules)?;
        Worker::with_connectors(settings, rules, connectors)
    }

    /// As [`Worker::new`], with connectors built by the caller.
    pub fn with_connectors(
        settings: Settings,
        rules: SyncRules,
        connectors: Connectors,
    ) -> Result<Worker, anyhow::Error> {
        let store = Store::connect_lazy(&settings.database_url, settings.db_max_connections)?
            .with_leases(store::LeaseSettings {
                ttl: Duration::from_millis(settings.lease_ttl_ms),
                ..store::LeaseSettings::default()
            });
        let metrics = Arc::new(Metrics::default());
        let limiter =
            limiter::Limiter::new(Store::connect_lazy(&settings.database_url, 4)?, &rules)
                .with_metrics(Arc::clone(&metrics));
        let topology = Topology::new(&settings.queue_prefix, settings.retry_delays_ms.clone());
        let broker = Broker::new(
            &settings.amqp_url,
            "recordsync-worker",
            topology,
            Duration::from_millis(settings.publish_timeout_ms),
        );
        let in_doubt_settle = Duration::from_millis(settings.in_doubt_settle_ms);
        Ok(Worker {
            settings,
            processor: Arc::new(Processor {
                limiter,
                rules,
                connectors,
                store,
                in_doubt_settle,
                metrics: Arc::clone(&metrics),
            }),
            broker,
            metrics,
            db_down: tokio::sync::watch::channel(false).0,
            migrated: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The step, for callers that drive it without the broker (tests, tools).
    pub fn processor(&self) -> Arc<Processor> {
        Arc::clone(&self.processor)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.processor.store
    }

    /// The broker handle.
    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.broker)
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until `shutdown`: migrates the database (waiting for it), keeps the broker
    /// connection, drains the dead-letter queue into PostgreSQL, consumes, and serves
    /// the admin API on `admin` when given. While PostgreSQL is down it takes no
    /// messages. On shutdown it stops taking messages and finishes those in flight.
    pub async fn run(
        self,
        admin: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let worker = Arc::new(self);
        let keeper = worker.broker.spawn_keeper(shutdown.clone());
        let admin_task = match admin {
            Some(listener) => {
                // Tokens from the environment; without any, only a loopback listener
                // is served (anything else is refused here, naming the variable).
                let access = match listener.local_addr() {
                    Ok(local) => auth::Access::from_env(local).map_err(anyhow::Error::from),
                    Err(e) => Err(e.into()),
                };
                let access = match access {
                    Ok(access) => access,
                    Err(e) => {
                        keeper.abort();
                        return Err(e);
                    }
                };
                let app = admin::router(admin::AdminState::of(&worker), access);
                let stop = shutdown.clone();
                Some(tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await
                }))
            }
            None => None,
        };
        worker.wait_for_database(&shutdown).await;
        let drainer = tokio::spawn(Arc::clone(&worker).drain_dead_letters(shutdown.clone()));
        let flusher = tokio::spawn(Arc::clone(&worker).flush_parked(shutdown.clone()));
        let resyncs = tokio::spawn(Arc::clone(&worker).resync_schedule(shutdown.clone()));
        while !shutdown.is_cancelled() {
            tokio::select! {
                _ = worker.broker.wait_connected() => {}
                _ = shutdown.cancelled() => break,
            }
            worker.wait_for_database(&shutdown).await;
            if shutdown.is_cancelled() {
                break;
            }
            if let Err(e) = Arc::clone(&worker).consume(&shutdown).await {
                tracing::warn!(error = %e, "consumer stopped; it restarts when the broker is back");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let _ = drainer.await;
        let _ = flusher.await;
        let _ = resyncs.await;
        let _ = keeper.await;
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        Ok(())
    }

    /// Waits until PostgreSQL answers and the schema is migrated.
    async fn wait_for_database(&self, shutdown: &CancellationToken) {
        if !*self.db_down.borrow() && self.migrated.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        loop {
            match self.processor.store.migrate().await {
                Ok(()) => {
                    self.migrated
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    if self.db_down.send_replace(false) {
                        tracing::info!("PostgreSQL is back; taking messages again");
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "PostgreSQL is not available; no messages are taken until it is — check that PostgreSQL runs and RECORDSYNC_DATABASE_URL is right");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One consumer session: until shutdown, PostgreSQL failing, or the channel
    /// closing.
    async fn consume(self: Arc<Self>, shutdown: &CancellationToken) -> Result<(), QueueError> {
        let tag = format!("worker-{}", uuid::Uuid::new_v4().simple());
        let mut consumer = self.broker.consume(&tag, self.settings.prefetch).await?;
        tracing::info!(queue = %self.broker.names().work_queue(), prefetch = self.settings.prefetch, "consuming");
        let mut db_down = self.db_down.subscribe();
        let mut in_flight = JoinSet::new();
        let result = loop {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let worker = Arc::clone(&self);
                        in_flight.spawn(async move { worker.handle(delivery).await; });
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Ok(()),
                },
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = until_true(&mut db_down) => {
                    tracing::error!("PostgreSQL failed: no more messages are taken until it is back");
                    let _ = consumer.cancel().await;
                    break Ok(());
                }
                _ = shutdown.cancelled() => {
                    let _ = consumer.cancel().await;
                    break Ok(());
                }
            }
        };
        // Drain: every event in flight finishes (and is acknowledged or given back)
        // before we leave; closing the channel gives back what was prefetched.
        while in_flight.join_next().await.is_some() {}
        consumer.close().await;
        result
    }

    /// Handles one delivery end to end and acknowledges it as its outcome says.
    pub async fn handle(&self, delivery: Delivery) -> Disposition {
        let attempt = delivery.attempt();
        let message = match delivery.decode() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "undecodable message: dead-lettering it; inspect it with `worker dlq list --class undecodable`");
                return self
                    .dead_letter(&delivery, None, "undecodable", &e.to_string(), attempt)
                    .await;
            }
        };
        let Some(cmd) = message.command() else {
            let why = "a version-1 resolution without its rule or conflict";
            tracing::error!(
                "undecodable message ({why}): dead-lettering it; inspect it with `worker dlq list --class undecodable`"
            );
            return self
                .dead_letter(&delivery, None, "undecodable", why, attempt)
                .await;
        };
        let ev = &cmd;
        // The step continues the trace the webhook started (its `traceparent`), and its
        // requests are spans of it; the log lines carry its trace id.
        let cx = step_span(delivery.traceparent().as_deref(), &cmd, attempt);
        let trace_id = {
            use opentelemetry::trace::TraceContextExt as _;
            let span = cx.span();
            let sc = span.span_context();
            if sc.is_valid() {
                format!("{:032x}", sc.trace_id())
            } else {
                String::new()
            }
        };
        let span = tracing::info_span!("event", event_id = %cmd.id, command = cmd.command.kind(), record = %cmd.command.record_id(), correlation_id = %cmd.correlation_id, trace_id = %trace_id, attempt);
        let stepped = async {
            let started = std::time::Instant::now();
            let failure = match self.processor.step(ev, attempt).await {
                Ok(outcomes) => {
                    let took = started.elapsed();
                    let lag = (chrono::Utc::now() - cmd.issued_at)
                        .to_std()
                        .unwrap_or_default();
                    for (rule, done) in &outcomes {
                        self.metrics.emit(Event::Processed {
                            rule,
                            outcome: done.as_str(),
                            took,
                            lag,
                        });
                    }
                    return self.ack(&delivery).await;
                }
                Err(f) => f,
            };
            match classify::failure(&failure) {
                Action::Requeue => {
                    self.metrics.emit(Event::GivenBack {
                        database: true,
                        error: &failure,
                    });
                    self.db_down.send_replace(true);
                    self.requeue(&delivery).await
                }
                Action::GiveBack => {
                    self.metrics.emit(Event::GivenBack {
                        database: false,
                        error: &failure,
                    });
                    // A short pause, so that a busy pool is not hammered by redeliveries.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.requeue(&delivery).await
                }
                // Waiting for an in-doubt create to show is not a failed attempt, and
                // it ends: after the settle time the create is made again.
                Action::Retry { after }
                    if attempt < self.settings.max_attempts
                        || matches!(failure, Failure::InDoubt { .. }) =>
                {
                    self.retry(&delivery, ev, attempt, &failure, after).await
                }
                Action::Retry { .. } | Action::DeadLetter | Action::Conflict => {
                    // Conflicts are stored by the processing step and never reach here;
                    // what does is out of attempts or cannot be helped by retrying.
                    let class = failure.class();
                    self.note(ev, Entry::dead_lettered(&failure.to_string(), attempt))
                        .await;
                    self.dead_letter(&delivery, Some(ev), class, &failure.to_string(), attempt)
                        .await
                }
            }
        };
        let disposition =
            opentelemetry::context::FutureExt::with_context(stepped.instrument(span), cx.clone())
                .await;
        {
            use opentelemetry::trace::TraceContextExt as _;
            let span = cx.span();
            span.set_attribute(opentelemetry::KeyValue::new(
                "recordsync.disposition",
                format!("{disposition:?}"),
            ));
            span.end();
        }
        disposition
    }

    /// The rules a command concerns: those of a change's app, or the one it names.
    fn rules_of(&self, cmd: &CommandV2) -> Vec<String> {
        match &cmd.command {
            Command::Change { system, app, .. } => self
                .processor
                .rules
                .rules_for(system, app)
                .map(|r| r.name.clone())
                .collect(),
            other => other.rule().map(str::to_owned).into_iter().collect(),
        }
    }

    async fn retry(
        &self,
        delivery: &Delivery,
        ev: &CommandV2,
        attempt: u32,
        failure: &Failure,
        after: Option<Duration>,
    ) -> Disposition {
        let next_attempt = match failure {
            Failure::InDoubt { .. } => attempt,
            _ => attempt + 1,
        };
        let topology = self.broker.topology();
        let tier = match after {
            // The smallest tier that waits at least as long as the system asked.
            Some(after) => topology
                .retry_delays_ms
                .iter()
                .position(|d| *d >= after.as_millis() as u64)
                .unwrap_or(topology.retry_delays_ms.len() - 1)
                .max(topology.tier_for(next_attempt)),
            None => topology.tier_for(next_attempt),
        };
        let delay = classify::jittered(topology.retry_delays_ms[tier], after, random_u64());
        let publisher = match self.broker.publisher().await {
            Ok(p) => p,
            Err(_) => return self.requeue(delivery).await,
        };
        let class = failure.class();
        let mut table = delivery.headers();
        table.insert(headers::ATTEMPT.into(), queue::number(next_attempt));
        table.insert(
            headers::LAST_ERROR.into(),
            queue::text(&failure.to_string()),
        );
        if next_attempt > attempt {
            // Waiting for an in-doubt create is not an attempt: it stays out of the
            // attempt history.
            table.insert(
                headers::HISTORY.into(),
                queue::text(&with_attempt(
                    delivery,
                    attempt,
                    class,
                    &failure.to_string(),
                )),
            );
        }
        let queue_name = topology.names.retry_queue(tier);
        // The default exchange routes by queue name; the delay queue dead-letters the
        // message back to the work queue when its TTL (or the jittered per-message
        // expiration) runs out.
        match publisher
            .publish_expiring("", &queue_name, delivery.body(), &ev.id, table, Some(delay))
            .await
        {
            Ok(()) => {
                self.metrics.emit(Event::Retried {
                    class,
                    next_attempt,
                    delay_ms: delay,
                    error: failure,
                });
                self.note(
                    ev,
                    Entry::retry_scheduled(&failure.to_string(), attempt, delay),
                )
                .await;
                match self.ack(delivery).await {
                    Disposition::Acked => Disposition::Retried { next_attempt },
                    other => other,
                }
            }
            Err(pe) => {
                tracing::error!(error = %pe, "could not schedule the retry; the event goes back to the queue");
                self.requeue(delivery).await
            }
        }
    }

    /// Appends a history entry outside the record's transaction; a failure to do so
    /// loses only the note, never the event.
    async fn note(&self, ev: &CommandV2, entry: Entry) {
        let evref = EventRef {
            event_id: ev.id.clone(),
            correlation_id: ev.correlation_id.clone(),
        };
        for rule in self.rules_of(ev) {
            if let Err(e) = self
                .processor
                .store
                .append(
                    &rule,
                    ev.command.record_id(),
                    &evref,
                    std::slice::from_ref(&entry),
                )
                .await
            {
                tracing::warn!(error = %e, "could not record the history entry");
            }
        }
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        ev: Option<&CommandV2>,
        class: &str,
        reason: &str,
        attempts: u32,
    ) -> Disposition {
        let publisher = match self.broker.publisher().await {
            Ok(p) => p,
            Err(_) => return self.requeue(delivery).await,
        };
        let mut table = delivery.headers();
        table.insert(headers::DEAD_REASON.into(), queue::text(class));
        table.insert(headers::LAST_ERROR.into(), queue::text(reason));
        table.insert(headers::ATTEMPT.into(), queue::number(attempts));
        table.insert(
            headers::HISTORY.into(),
            queue::text(&with_attempt(delivery, attempts, class, reason)),
        );
        table.insert(
            headers::DEAD_ID.into(),
            queue::text(&uuid::Uuid::now_v7().to_string()),
        );
        if let Some(rule) = ev.and_then(|ev| self.rules_of(ev).into_iter().next()) {
            table.insert(headers::RULE.into(), queue::text(&rule));
        }
        let id = delivery.message_id().unwrap_or_default();
        match publisher
            .publish(
                "",
                &self.broker.names().dead_queue(),
                delivery.body(),
                &id,
                table,
            )
            .await
        {
            Ok(()) => {
                self.metrics.emit(Event::DeadLettered {
                    class,
                    attempts,
                    reason,
                });
                match self.ack(delivery).await {
                    Disposition::Acked => Disposition::DeadLettered,
                    other => other,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter; the event goes back to the queue");
                self.requeue(delivery).await
            }
        }
    }

    /// Moves every message of the dead-letter queue into PostgreSQL, where operators
    /// list, inspect, replay and purge them. Runs until shutdown.
    async fn drain_dead_letters(self: Arc<Self>, shutdown: CancellationToken) {
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
    async fn flush_parked(self: Arc<Self>, shutdown: CancellationToken) {
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
    async fn resync_schedule(self: Arc<Self>, shutdown: CancellationToken) {
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
                            Scheduled::Resync => worker.resync_scheduled(&name).await.map(|r| {
                                r.map(|r| format!("{} listed, {} queued", r.listed, r.queued))
                            }).map_err(Stopped::from),
                            Scheduled::Reconcile => worker.reconcile_scheduled(&name).await.map(|r| {
                                r.map(|r| format!("{} compared, {} apart, {} repairs queued", r.compared, r.records_apart, r.repairs_queued))
                            }).map_err(Stopped::from),
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

    /// Claims `rule`'s resync and runs it if this period's run is due (another worker
    /// may have run it already): `None` when it was not.
    async fn resync_scheduled(
        &self,
        rule: &str,
    ) -> Result<Option<resync::ResyncReport>, resync::ResyncError> {
        let job = resync::ResyncJob::claim(&self.processor, rule).await?;
        if !job.due(&self.processor).await? {
            return Ok(None);
        }
        let publisher = self.broker.publisher().await?;
        job.run(
            &self.processor,
            &publisher,
            self.broker.names(),
            false,
            resync::PAGE_SIZE,
        )
        .await
        .map(Some)
    }

    /// Claims `rule`'s reconcile and runs it if this period's run is due (its last run
    /// started at least `every_seconds` ago): `None` when it was not.
    async fn reconcile_scheduled(
        &self,
        rule: &str,
    ) -> Result<Option<reconcile::ReconcileReport>, resync::ResyncError> {
        let Some(spec) = self
            .processor
            .rules
            .rule(rule)
            .and_then(|r| r.reconcile.clone())
        else {
            return Ok(None);
        };
        let job = reconcile::ReconcileJob::claim(&self.processor, rule).await?;
        let last = self.processor.store.reconcile_runs(Some(rule), 1).await?;
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
            .unwrap_or_else(|| self.settings.ledger_settle());
        if spec.repair {
            let publisher = self.broker.publisher().await?;
            job.run(
                &self.processor,
                Some((&publisher, self.broker.names())),
                false,
                settle,
            )
            .await
            .map(Some)
        } else {
            job.run(&self.processor, None, true, settle).await.map(Some)
        }
    }

    /// Claims and runs one resync of `rule` (`full`: a backfill of every record).
    pub async fn resync_once(
        &self,
        rule: &str,
        full: bool,
    ) -> Result<resync::ResyncReport, resync::ResyncError> {
        let job = resync::ResyncJob::claim(&self.processor, rule).await?;
        let publisher = self.broker.publisher().await?;
        job.run(
            &self.processor,
            &publisher,
            self.broker.names(),
            full,
            resync::PAGE_SIZE,
        )
        .await
    }

    async fn ack(&self, delivery: &Delivery) -> Disposition {
        match delivery.ack().await {
            Ok(()) => Disposition::Acked,
            Err(e) => {
                // The channel is gone: the broker redelivers, and the event id makes
                // the redelivery a recognised duplicate.
                tracing::warn!(error = %e, "could not acknowledge; the broker will redeliver and the duplicate will be skipped");
                Disposition::Requeued
            }
        }
    }

    async fn requeue(&self, delivery: &Delivery) -> Disposition {
        if let Err(e) = delivery.requeue().await {
            tracing::warn!(error = %e, "could not give the message back; the broker redelivers it when the channel closes");
        }
        Disposition::Requeued
    }
}

/// The attempt history header with one more attempt.
fn with_attempt(delivery: &Delivery, attempt: u32, class: &str, error: &str) -> String {
    let mut history: Vec<serde_json::Value> = delivery
        .header_text(headers::HISTORY)
        .and_then(|h| serde_json::from_str(&h).ok())
        .unwrap_or_default();
    history.push(serde_json::json!({"attempt": attempt, "class": class, "error": error, "at": chrono::Utc::now()}));
    serde_json::Value::Array(history).to_string()
}

/// Waits until a flag is raised.
async fn until_true(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        // The sender is gone with the worker: never resolve.
        std::future::pending::<()>().await;
    }
}

/// A random number for jitter.
fn random_u64() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"))
}

/// Checks a rules file and every secret it names: for `worker check-config`.
pub fn check_config(path: &str) -> Result<SyncRules, ConfigError> {
    let rules = config::load_rules(path)?;
    for (at, var) in config::secret_vars(&rules) {
        config::secret(&at, &var)?;
    }
    Ok(rules)
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

/// The span of one step: a child of the webhook's span when the message carries its
/// `traceparent`, else a new trace (a no-op when no trace provider is set up).
fn step_span(traceparent: Option<&str>, cmd: &CommandV2, attempt: u32) -> opentelemetry::Context {
    use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
    let parent = queue::trace::remote_parent(traceparent);
    let tracer = opentelemetry::global::tracer("recordsync-worker");
    let span = tracer
        .span_builder("step")
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            opentelemetry::KeyValue::new("recordsync.event_id", cmd.id.clone()),
            opentelemetry::KeyValue::new("recordsync.command", cmd.command.kind()),
            opentelemetry::KeyValue::new("recordsync.record", cmd.command.record_id().to_owned()),
            opentelemetry::KeyValue::new("recordsync.correlation_id", cmd.correlation_id.clone()),
            opentelemetry::KeyValue::new("recordsync.attempt", i64::from(attempt)),
        ])
        .start_with_context(&tracer, &parent);
    parent.with_span(span)
}
