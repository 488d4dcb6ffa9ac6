//! The runner: the consumer loop around the step. It keeps the broker connection,
//! waits for PostgreSQL, consumes the work queue with manual acks and a bounded
//! prefetch, and hands each delivery to the step ([`consume`]). What failed goes on to
//! a delay queue or the dead-letter queue ([`redeliver`]); the dead-letter drainer, the
//! flusher of parked work and the scheduled resyncs, reconciles and schema checks run
//! beside it ([`schedule`]). On shutdown it takes nothing new and finishes what is in
//! flight.

mod consume;
mod redeliver;
mod schedule;

use std::sync::Arc;
use std::time::Duration;

use config::Settings;
use connectors::Connectors;
use domain::rules::SyncRules;
use queue::{Broker, Topology};
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::step::Processor;
use crate::{admin, auth, limiter};

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

    /// What its admin API reads: its own processor, store, broker and counters (the
    /// runner builds it, so that the admin wing does not reach back into the runner).
    pub fn admin_state(&self) -> admin::AdminState {
        admin::AdminState {
            processor: self.processor(),
            store: self.store().clone(),
            broker: self.broker(),
            metrics: self.metrics(),
            ledger_settle: self.settings.ledger_settle(),
            time_zone: self.settings.time_zone,
        }
    }

    /// The service settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
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
                let app = admin::router(worker.admin_state(), access);
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
        let rollup = tokio::spawn(Arc::clone(&worker).roll_up_ledger(shutdown.clone()));
        let pruner = tokio::spawn(Arc::clone(&worker).prune(shutdown.clone()));
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
        let _ = rollup.await;
        let _ = pruner.await;
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
}

/// Waits until a flag is raised.
async fn until_true(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        // The sender is gone with the worker: never resolve.
        std::future::pending::<()>().await;
    }
}
