//! Every request to an external system goes through here: the fleet-wide rate (GCRA
//! state in PostgreSQL), the fleet-wide concurrency cap (leased slots), and the shared
//! pause after a 429. Systems without `limits` in the rules pass straight through.
//!
//! Why PostgreSQL: it is already the one place every worker shares, its clock is the
//! only clock the reservations use, and a reservation is one short UPDATE on a
//! separate small pool. Failover is nothing to do: there is no leader; a worker that
//! dies holding a concurrency slot frees it when the lease expires.

use std::collections::BTreeMap;
use std::time::Duration;

use connectors::{ConnectorError, Endpoint};
use domain::record::{Fields, SourceRecord, TargetRecord};
use domain::rules::{Limits, SyncRules};
use store::{Store, StoreError};

use crate::process::Failure;

/// The headroom of the spacing between requests over the configured rate.
const SPACING: f64 = 1.10;
/// How long a concurrency slot is leased.
const LEASE_SECONDS: f64 = 60.0;
/// How many times a 429 is waited out in place before the event is retried later.
const RATE_LIMITED_TRIES: u32 = 3;

/// The limiter of every system.
pub struct Limiter {
    store: Store,
    limits: BTreeMap<String, Limits>,
    holder: String,
    initialised: tokio::sync::OnceCell<()>,
}

impl Limiter {
    /// A limiter for the rules' systems, keeping its state through `store` (a small
    /// pool of its own, so that reservations never wait behind record transactions).
    pub fn new(store: Store, rules: &SyncRules) -> Limiter {
        let limits = rules
            .systems
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.limits.clone()?)))
            .collect();
        Limiter {
            store,
            limits,
            holder: uuid::Uuid::new_v4().to_string(),
            initialised: tokio::sync::OnceCell::new(),
        }
    }

    async fn init(&self) -> Result<(), StoreError> {
        self.initialised
            .get_or_try_init(|| async {
                for (system, l) in &self.limits {
                    self.store.limiter_init(system, l.max_concurrent).await?;
                }
                Ok::<(), StoreError>(())
            })
            .await
            .map(drop)
    }

    /// Waits until a request to `system` may be sent; returns the concurrency slot
    /// held, if any, to give back with [`Limiter::release`].
    pub async fn acquire(&self, system: &str) -> Result<Option<i32>, StoreError> {
        let Some(l) = self.limits.get(system) else {
            return Ok(None);
        };
        self.init().await?;
        let slot = match l.max_concurrent {
            Some(_) => loop {
                if let Some(slot) = self
                    .store
                    .limiter_take_slot(system, &self.holder, LEASE_SECONDS)
                    .await?
                {
                    break Some(slot);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            },
            None => None,
        };
        // Requests leave evenly spaced, 10% wider than the rate allows, so that a
        // request delayed on the way (a busy machine, the network) cannot squeeze one
        // request too many into a second.
        let interval = SPACING / l.requests_per_second;
        let tolerance = f64::from(l.burst.saturating_sub(1)) * interval;
        let waited = async {
            loop {
                let wait = self
                    .store
                    .limiter_reserve(system, interval, tolerance)
                    .await?;
                if wait <= 0.0 {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                // Another worker may have been told to back off while we waited: then
                // wait out the block and take a new place in line behind it.
                let blocked = self.store.limiter_blocked_for(system).await?;
                if blocked <= 0.0 {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs_f64(blocked)).await;
            }
        };
        if let Err(e) = waited.await {
            self.release(system, slot).await;
            return Err(e);
        }
        Ok(slot)
    }

    /// Gives a concurrency slot back (a failure only delays the slot until its lease
    /// expires).
    pub async fn release(&self, system: &str, slot: Option<i32>) {
        if let Some(slot) = slot
            && let Err(e) = self
                .store
                .limiter_release_slot(system, slot, &self.holder)
                .await
        {
            tracing::warn!(error = %e, system, "could not release a concurrency slot; it frees itself when its lease expires");
        }
    }

    /// Pauses every worker's requests to `system` (a 429's `Retry-After`). Systems
    /// without limits are paused in this process only.
    pub async fn block(&self, system: &str, for_: Duration) -> Result<(), StoreError> {
        if self.limits.contains_key(system) {
            self.init().await?;
            self.store.limiter_block(system, for_.as_secs_f64()).await
        } else {
            tokio::time::sleep(for_).await;
            Ok(())
        }
    }

    /// Wraps an endpoint so that its every request goes through the limiter.
    pub fn limit<'a>(&'a self, endpoint: &'a Endpoint) -> Limited<'a> {
        Limited {
            endpoint,
            limiter: self,
        }
    }
}

/// An endpoint whose requests go through the limiter. A 429 pauses the system for
/// everyone and is waited out in place a few times before the event is retried later.
pub struct Limited<'a> {
    endpoint: &'a Endpoint,
    limiter: &'a Limiter,
}

impl Limited<'_> {
    /// The system's name.
    pub fn system(&self) -> &str {
        self.endpoint.system()
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ConnectorError>>,
    {
        let system = self.endpoint.system();
        let mut tries = 0;
        loop {
            tries += 1;
            let slot = self.limiter.acquire(system).await?;
            let result = f().await;
            self.limiter.release(system, slot).await;
            match result {
                Err(ConnectorError::RateLimited { retry_after, .. }) => {
                    let pause = retry_after.unwrap_or(Duration::from_secs(1));
                    tracing::warn!(
                        system,
                        pause_ms = pause.as_millis() as u64,
                        "rate limited (429): every worker pauses requests to this system"
                    );
                    if tries >= RATE_LIMITED_TRIES {
                        // The pause holds for everyone even when this event gives up
                        // waiting in place and goes to the delay queues.
                        if self.limiter.limits.contains_key(system) {
                            self.limiter.block(system, pause).await?;
                        }
                        return Err(ConnectorError::RateLimited {
                            system: system.to_owned(),
                            retry_after,
                        }
                        .into());
                    }
                    self.limiter.block(system, pause).await?;
                }
                other => return other.map_err(Failure::from),
            }
        }
    }

    /// See [`Endpoint::fetch`].
    pub async fn fetch(&self, id: &str) -> Result<Option<SourceRecord>, Failure> {
        self.call(|| self.endpoint.fetch(id)).await
    }

    /// See [`Endpoint::search`].
    pub async fn search(&self, field: &str, value: &str) -> Result<Vec<TargetRecord>, Failure> {
        self.call(|| self.endpoint.search(field, value)).await
    }

    /// See [`Endpoint::create`].
    pub async fn create(
        &self,
        fields: &Fields,
        key: &str,
    ) -> Result<(String, Option<i64>), Failure> {
        self.call(|| self.endpoint.create(fields, key)).await
    }

    /// See [`Endpoint::update`].
    pub async fn update(
        &self,
        id: &str,
        fields: &Fields,
        key: &str,
    ) -> Result<Option<i64>, Failure> {
        self.call(|| self.endpoint.update(id, fields, key)).await
    }

    /// See [`Endpoint::update_checked`].
    pub async fn update_checked(
        &self,
        id: &str,
        fields: &Fields,
        revision: Option<i64>,
        key: &str,
    ) -> Result<Option<Option<i64>>, Failure> {
        self.call(|| self.endpoint.update_checked(id, fields, revision, key))
            .await
    }

    /// See [`Endpoint::bulk_update`].
    pub async fn bulk_update(
        &self,
        updates: &[(String, Fields)],
        key: &str,
    ) -> Result<(), Failure> {
        self.call(|| self.endpoint.bulk_update(updates, key)).await
    }

    /// See [`Endpoint::write_field`].
    pub async fn write_field(
        &self,
        id: &str,
        field: &str,
        value: &str,
        revision: Option<i64>,
    ) -> Result<Option<i64>, Failure> {
        self.call(|| self.endpoint.write_field(id, field, value, revision))
            .await
    }
}
