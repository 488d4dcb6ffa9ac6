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
pub mod metrics;
pub mod process;

use std::sync::Arc;
use std::time::Duration;

use config::{ConfigError, Settings};
use connectors::{ConnectorError, Connectors};
use domain::history::Entry;
use domain::rules::SyncRules;
use queue::{Broker, Delivery, QueueError, QueueMessage, Topology, headers};
use store::{EventRef, Store};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::process::{Failure, Processor};

/// The worker: processor, broker, settings and counters.
pub struct Worker {
    settings: Settings,
    processor: Arc<Processor>,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
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
        let store = Store::connect_lazy(&settings.database_url, settings.db_max_connections)?;
        let topology = Topology::new(&settings.queue_prefix, settings.retry_delays_ms.clone());
        let broker = Broker::new(
            &settings.amqp_url,
            "recordsync-worker",
            topology,
            Duration::from_millis(settings.publish_timeout_ms),
        );
        Ok(Worker {
            settings,
            processor: Arc::new(Processor {
                rules,
                connectors,
                store,
            }),
            broker,
            metrics: Arc::new(Metrics::default()),
        })
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
    /// connection, consumes, and serves the admin API on `admin` when given. On
    /// shutdown it stops taking messages and finishes those in flight.
    pub async fn run(
        self,
        admin: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let worker = Arc::new(self);
        let keeper = worker.broker.spawn_keeper(shutdown.clone());
        let admin_task = admin.map(|listener| {
            let app = admin::router(admin::AdminState {
                store: worker.processor.store.clone(),
                broker: Arc::clone(&worker.broker),
                metrics: Arc::clone(&worker.metrics),
            });
            let stop = shutdown.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            })
        });
        worker.wait_for_database(&shutdown).await;
        while !shutdown.is_cancelled() {
            tokio::select! {
                _ = worker.broker.wait_connected() => {}
                _ = shutdown.cancelled() => break,
            }
            match Arc::clone(&worker).consume(&shutdown).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "consumer stopped; it restarts when the broker is back");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let _ = keeper.await;
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        Ok(())
    }

    async fn wait_for_database(&self, shutdown: &CancellationToken) {
        loop {
            match self.processor.store.migrate().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "PostgreSQL is not available; retrying in 2 s — check that PostgreSQL runs and RECORDSYNC_DATABASE_URL is right");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One consumer session: until shutdown or the channel closes.
    async fn consume(self: Arc<Self>, shutdown: &CancellationToken) -> Result<(), QueueError> {
        let tag = format!("worker-{}", uuid::Uuid::new_v4().simple());
        let mut consumer = self.broker.consume(&tag, self.settings.prefetch).await?;
        tracing::info!(queue = %self.broker.names().work_queue(), prefetch = self.settings.prefetch, "consuming");
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
                _ = shutdown.cancelled() => {
                    let _ = consumer.cancel().await;
                    break Ok(());
                }
            }
        };
        // Drain: every event in flight finishes (and is acknowledged) before we leave.
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
                tracing::error!(error = %e, "undecodable message: dead-lettering it; inspect it in the dead-letter queue");
                return self
                    .dead_letter(&delivery, &e.to_string(), "undecodable", None)
                    .await;
            }
        };
        let QueueMessage::V1(ev) = &message;
        let span = tracing::info_span!("event", event_id = %ev.event_id, system = %ev.system, app = %ev.app, record = %ev.record_id, correlation_id = %ev.correlation_id, attempt);
        async {
            match self.processor.process(ev, attempt).await {
                Ok(outcomes) => {
                    for (rule, done) in &outcomes {
                        self.metrics.processed(rule, done.as_str());
                        tracing::info!(rule, outcome = done.as_str(), "event processed");
                    }
                    self.ack(&delivery).await
                }
                Err(Failure::Store(e)) => {
                    self.metrics.requeued();
                    tracing::error!(error = %e, "PostgreSQL failed; the event goes back to the queue and is retried without counting an attempt — check PostgreSQL");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.requeue(&delivery).await
                }
                Err(Failure::Connector(e)) => self.retry_or_dead_letter(&delivery, ev, attempt, &e).await,
            }
        }
        .instrument(span)
        .await
    }

    async fn retry_or_dead_letter(
        &self,
        delivery: &Delivery,
        ev: &queue::EventV1,
        attempt: u32,
        e: &ConnectorError,
    ) -> Disposition {
        let evref = EventRef {
            event_id: ev.event_id.clone(),
            correlation_id: ev.correlation_id.clone(),
        };
        let rules: Vec<String> = self
            .processor
            .rules
            .rules_for(&ev.system, &ev.app)
            .map(|r| r.name.clone())
            .collect();
        if attempt >= self.settings.max_attempts {
            tracing::error!(error = %e, attempts = attempt, "giving up: the event is dead-lettered; fix the cause, then replay it");
            self.note(
                &rules,
                &ev.record_id,
                &evref,
                Entry::dead_lettered(&e.to_string(), attempt),
            )
            .await;
            return self
                .dead_letter(
                    delivery,
                    &e.to_string(),
                    e.class(),
                    rules.first().map(String::as_str),
                )
                .await;
        }
        let next_attempt = attempt + 1;
        let topology = self.broker.topology();
        let tier = match e.retry_after() {
            // The smallest tier that waits at least as long as the system asked.
            Some(after) => topology
                .retry_delays_ms
                .iter()
                .position(|d| *d >= after.as_millis() as u64)
                .unwrap_or(topology.retry_delays_ms.len() - 1)
                .max(topology.tier_for(next_attempt)),
            None => topology.tier_for(next_attempt),
        };
        let delay = topology.retry_delays_ms[tier];
        let publisher = match self.broker.publisher().await {
            Ok(p) => p,
            Err(_) => return self.requeue(delivery).await,
        };
        let mut table = delivery.headers();
        table.insert(headers::ATTEMPT.into(), queue::number(next_attempt));
        table.insert(headers::LAST_ERROR.into(), queue::text(&e.to_string()));
        let queue_name = topology.names.retry_queue(tier);
        // The default exchange routes by queue name; the delay queue dead-letters the
        // message back to the work queue when its TTL expires.
        match publisher
            .publish("", &queue_name, delivery.body(), &ev.event_id, table)
            .await
        {
            Ok(()) => {
                self.metrics.retried(e.class());
                tracing::warn!(error = %e, next_attempt, delay_ms = delay, "retryable failure; retrying later");
                self.note(
                    &rules,
                    &ev.record_id,
                    &evref,
                    Entry::retry_scheduled(&e.to_string(), attempt, delay),
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
    async fn note(&self, rules: &[String], record_id: &str, evref: &EventRef, entry: Entry) {
        for rule in rules {
            if let Err(e) = self
                .processor
                .store
                .append(rule, record_id, evref, std::slice::from_ref(&entry))
                .await
            {
                tracing::warn!(error = %e, "could not record the history entry");
            }
        }
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        class: &str,
        rule: Option<&str>,
    ) -> Disposition {
        let publisher = match self.broker.publisher().await {
            Ok(p) => p,
            Err(_) => return self.requeue(delivery).await,
        };
        let mut table = delivery.headers();
        table.insert(headers::DEAD_REASON.into(), queue::text(class));
        table.insert(headers::LAST_ERROR.into(), queue::text(reason));
        if let Some(rule) = rule {
            table.insert(headers::RULE.into(), queue::text(rule));
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
                self.metrics.dead_lettered(class);
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

/// Checks a rules file and every secret it names: for `worker check-config`.
pub fn check_config(path: &str) -> Result<SyncRules, ConfigError> {
    let rules = config::load_rules(path)?;
    for (at, var) in config::secret_vars(&rules) {
        config::secret(&at, &var)?;
    }
    Ok(rules)
}
