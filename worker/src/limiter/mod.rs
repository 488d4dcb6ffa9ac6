//! Every request to an external system goes through here, in layers around the
//! connector call:
//!
//! 1. **concurrency**: this process's share (a semaphore), then a fleet-wide slot
//!    leased in PostgreSQL;
//! 2. **rate**: this process's pace (`governor`, in memory), then a reservation from
//!    the fleet-wide budget (GCRA state in PostgreSQL), leased a few at a time;
//! 3. **retry**: a 429 pauses the system for the whole fleet and is waited out in
//!    place a few times ([`crate::classify::rate_limited`] decides);
//! 4. **timeout**: the connector's per-request timeout (`timeout_ms` of the system).
//!
//! Concurrency comes before rate on purpose: a request must leave at its reserved
//! time. Reserving first and then waiting for a concurrency slot sent requests late,
//! into seconds other workers' reservations already filled (15 requests in one second
//! against a limit of 10, in a full test run).
//!
//! Systems without `limits` in the rules pass straight to the call.
//!
//! Why PostgreSQL: it is already the one place every worker shares, its clock is the
//! only clock the reservations use, and a reservation is one short UPDATE on a
//! separate small pool. Failover is nothing to do: there is no leader; a worker that
//! dies holding a concurrency slot frees it when the lease expires, and one that dies
//! holding reservations wastes at most one batch of them.
//!
//! Why batches: each reservation is a slot in time, `interval` after the previous
//! one. A batch of `k` consecutive slots, taken in one UPDATE, is exactly what `k`
//! single reservations would have been, so the fleet-wide guarantee is unchanged,
//! and `k − 1` requests in `k` cost no PostgreSQL round trip. A slot not used on time
//! (within a tenth of the interval, 3 to 25 ms) is dropped, never used later (later, it
//! could share a second with someone else's),
//! so a batch holds no more slots than this process has requests waiting for one: a
//! fixed batch of 2 wasted enough slots to bring a 10/s limit down to 7.9/s.
//! The price: a 429 reaches another worker after at most the rest of its batch
//! (`k` is about a fifth of a second of the rate).
//!
//! Why `governor` in front: it paces this process's requests in memory, so that
//! hundreds of events in flight queue here, not as far-future reservations in
//! PostgreSQL (which a dying process would strand, and a 429 could not move).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use connectors::{ConnectorError, Endpoint, RecordApi};
use domain::rules::{Limits, SyncRules};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use store::{Store, StoreError};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::classify::{self, Failure, RateLimited};

/// The headroom of the spacing between requests over the configured rate.
const SPACING: f64 = 1.10;
/// How long a concurrency slot is leased.
const LEASE_SECONDS: f64 = 60.0;
/// About how much of the rate one batch of reservations covers.
const BATCH_SPAN: Duration = Duration::from_millis(200);
/// A request whose slot was further off than this checks, once there, whether
/// another worker's 429 paused the system meanwhile.
const RECHECK_AFTER: Duration = Duration::from_millis(200);
/// The most reservations in one batch.
const MAX_BATCH: u32 = 8;
/// How late a reserved slot may still be used: a tenth of the interval, within
/// [`LATE_FLOOR`] and [`LATE_CEILING`]. The spacing's headroom ([`SPACING`]: 10% of
/// every second, 100 ms whatever the rate) keeps any second's count within the limit
/// while requests arrive less than that late; most of it is left for the way from here
/// to the target (on a busy machine, tens of milliseconds: 50 ms here let a loaded run
/// make 11 requests in one second against a limit of 10).
fn late_limit(interval: Duration) -> Duration {
    (interval / 10).clamp(LATE_FLOOR, LATE_CEILING)
}
/// A tenth of a fast system's interval (0.11 ms at 1,000/s) is below the timer's own
/// resolution: every slot was dropped as late. A few ticks are always allowed.
const LATE_FLOOR: Duration = Duration::from_millis(3);
/// At most a quarter of the headroom, however slow the rate.
const LATE_CEILING: Duration = Duration::from_millis(25);

/// Whether a slot reserved for `at`, `interval` after the one before, may still be
/// used at `now`.
fn on_time(at: Instant, now: Instant, interval: Duration) -> bool {
    now <= at + late_limit(interval)
}

/// How many reservations one batch takes: about a fifth of a second of the rate, at
/// least one, at most [`MAX_BATCH`].
pub fn batch_size(requests_per_second: f64) -> u32 {
    let n = (requests_per_second * BATCH_SPAN.as_secs_f64()).floor();
    if n.is_finite() {
        (n as u32).clamp(1, MAX_BATCH)
    } else {
        1
    }
}

/// Reservations this process holds: the next one's time and how many are left.
#[derive(Debug, Default)]
struct Batch {
    next: Option<Instant>,
    left: u32,
    /// A 429 seen by this process: no reservation is used before it ends.
    blocked_until: Option<Instant>,
}

impl Batch {
    /// The next reservation's time that is not already past, if one is left; past
    /// ones are dropped (a slot used late could share a second with another
    /// worker's).
    fn take(&mut self, now: Instant, interval: Duration) -> Option<Instant> {
        while self.left > 0 {
            let next = self.next?;
            self.left -= 1;
            self.next = Some(next + interval);
            if on_time(next, now, interval) {
                return Some(next);
            }
        }
        None
    }
}

/// Counts a request as waiting for a rate slot while it lives (also when its future
/// is dropped mid-wait).
struct Waiting<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicU32) -> Waiting<'a> {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One limited system's layers.
struct Layers {
    limits: Limits,
    /// Time between requests, fleet-wide (a little wider than the rate).
    interval: Duration,
    /// Reservations per batch.
    batch_size: u32,
    /// This process's pace.
    pace: DefaultDirectRateLimiter,
    /// This process's reservations.
    batch: Mutex<Batch>,
    /// This process's share of the concurrency cap.
    concurrency: Option<Arc<Semaphore>>,
    /// Requests of this process waiting for a rate slot: a batch never holds more
    /// reservations than there are requests to use them (an unused one is wasted).
    waiting: std::sync::atomic::AtomicU32,
}

impl Layers {
    fn new(limits: Limits) -> Layers {
        let rps = limits.requests_per_second.max(1e-6);
        let interval = Duration::from_secs_f64(SPACING / rps);
        let burst = NonZeroU32::new(limits.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Layers {
            interval,
            batch_size: batch_size(rps),
            pace: RateLimiter::direct(quota),
            batch: Mutex::new(Batch::default()),
            concurrency: limits
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            waiting: std::sync::atomic::AtomicU32::new(0),
            limits,
        }
    }
}

/// What a request holds while it is sent: given back by [`Limiter::release`], or, if
/// the request's future is dropped first, by a task spawned when the permit drops.
#[must_use]
pub struct Permit {
    /// The fleet-wide slot, its system and this request's own holder name (so that
    /// a release never frees a slot another request of this process took over).
    slot: Option<(i32, String, String)>,
    store: Option<Store>,
    _local: Option<OwnedSemaphorePermit>,
}

impl Permit {
    fn none() -> Permit {
        Permit {
            slot: None,
            store: None,
            _local: None,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let (Some((slot, system, holder)), Some(store)) = (self.slot.take(), self.store.take())
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = store.limiter_release_slot(&system, slot, &holder).await;
            });
        }
    }
}

/// The limiter of every system.
pub struct Limiter {
    store: Store,
    systems: BTreeMap<String, Layers>,
    holder: String,
    /// Numbers each request's holder name.
    requests: std::sync::atomic::AtomicU64,
    initialised: tokio::sync::OnceCell<()>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The systems with a daily budget: each request to them is counted in PostgreSQL.
    budgeted: std::collections::BTreeSet<String>,
}

impl Limiter {
    /// A limiter for the rules' systems, keeping its state through `store` (a small
    /// pool of its own, so that reservations never wait behind record transactions).
    pub fn new(store: Store, rules: &SyncRules) -> Limiter {
        let systems = rules
            .systems
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), Layers::new(s.limits.clone()?))))
            .collect();
        let budgeted = rules
            .systems
            .iter()
            .filter(|(_, s)| s.budget.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        Limiter {
            budgeted,
            store,
            systems,
            holder: uuid::Uuid::new_v4().to_string(),
            requests: std::sync::atomic::AtomicU64::new(0),
            initialised: tokio::sync::OnceCell::new(),
            metrics: None,
        }
    }

    async fn init(&self) -> Result<(), StoreError> {
        self.initialised
            .get_or_try_init(|| async {
                for (system, l) in &self.systems {
                    self.store
                        .limiter_init(system, l.limits.max_concurrent)
                        .await?;
                }
                Ok::<(), StoreError>(())
            })
            .await
            .map(drop)
    }

    /// Waits until a request to `system` may be sent (layers 1 and 2); returns what
    /// it holds, to give back with [`Limiter::release`].
    pub async fn acquire(&self, system: &str) -> Result<Permit, StoreError> {
        let Some(l) = self.systems.get(system) else {
            return Ok(Permit::none());
        };
        self.init().await?;
        // Concurrency first: this process's share, then a fleet-wide slot. Taken
        // before the rate slot, so that a request leaves at its reserved time (waiting
        // for concurrency after reserving would send it late, into someone else's
        // second).
        let mut permit = Permit::none();
        if let Some(s) = &l.concurrency {
            permit._local = Some(
                Arc::clone(s)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            );
        }
        if l.limits.max_concurrent.is_some() {
            let n = self
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let holder = format!("{}-{n}", self.holder);
            loop {
                if let Some(slot) = self
                    .store
                    .limiter_take_slot(system, &holder, LEASE_SECONDS)
                    .await?
                {
                    permit.slot = Some((slot, system.to_owned(), holder));
                    permit.store = Some(self.store.clone());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Rate: this process's pace, then a fleet-wide reservation. On an error the
        // permit's drop gives the slot back.
        self.pace(system, l).await?;
        Ok(permit)
    }

    /// Waits for this process's pace, then for a fleet-wide reservation of the rate.
    async fn pace(&self, system: &str, l: &Layers) -> Result<(), StoreError> {
        l.pace.until_ready().await;
        loop {
            let (at, far) = {
                // Counted as waiting until it has a slot (not while it sleeps to it).
                let _waiting = Waiting::new(&l.waiting);
                let mut batch = l.batch.lock().await;
                let now = Instant::now();
                if let Some(until) = batch.blocked_until.filter(|u| *u > now) {
                    drop(batch);
                    drop(_waiting);
                    tokio::time::sleep_until(until).await;
                    continue;
                }
                let at = match batch.take(now, l.interval) {
                    Some(at) => at,
                    None => {
                        let interval = l.interval.as_secs_f64();
                        let tolerance = f64::from(l.limits.burst.saturating_sub(1)) * interval;
                        // As many as there are requests waiting (this one included),
                        // up to the batch size.
                        let k = l
                            .batch_size
                            .min(l.waiting.load(std::sync::atomic::Ordering::Relaxed))
                            .max(1);
                        let wait = self
                            .store
                            .limiter_reserve(system, interval, tolerance, k)
                            .await?;
                        let first = Instant::now() + Duration::from_secs_f64(wait);
                        batch.left = k - 1;
                        batch.next = Some(first + l.interval);
                        first
                    }
                };
                (at, at > now + RECHECK_AFTER)
            };
            tokio::time::sleep_until(at).await;
            // A slot reached late (this process was not scheduled in time: a busy
            // machine) is dropped, as the batch drops one already past: used late, it
            // could share a second with the next slot, which may be another worker's.
            if !on_time(at, Instant::now(), l.interval) {
                continue;
            }
            // A 429 may have paused the system while this request waited for its
            // slot: this process's own at once; another worker's when the wait was
            // long enough to be worth a round trip (then it takes a new place in line
            // behind the pause).
            if l.batch
                .lock()
                .await
                .blocked_until
                .is_some_and(|u| u > Instant::now())
            {
                continue;
            }
            if far {
                let blocked = self.store.limiter_blocked_for(system).await?;
                if blocked > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(blocked)).await;
                    continue;
                }
            }
            return Ok(());
        }
    }

    /// Gives a request's hold back (a failure only delays a fleet-wide slot until its
    /// lease expires).
    pub async fn release(&self, system: &str, mut permit: Permit) {
        if let Some((slot, _, holder)) = permit.slot.take()
            && let Err(e) = self.store.limiter_release_slot(system, slot, &holder).await
        {
            tracing::warn!(error = %e, system, "could not release a concurrency slot; it frees itself when its lease expires");
        }
    }

    /// Pauses every worker's requests to `system` (a 429's `Retry-After`): this
    /// process drops its reservations at once, the others when their batch is used.
    /// Systems without limits are paused in this process only.
    pub async fn block(&self, system: &str, for_: Duration) -> Result<(), StoreError> {
        match self.systems.get(system) {
            Some(l) => {
                {
                    let mut batch = l.batch.lock().await;
                    batch.left = 0;
                    let until = Instant::now() + for_;
                    batch.blocked_until = Some(batch.blocked_until.map_or(until, |u| u.max(until)));
                }
                self.init().await?;
                self.store.limiter_block(system, for_.as_secs_f64()).await
            }
            None => {
                tokio::time::sleep(for_).await;
                Ok(())
            }
        }
    }

    /// Counts one request against `system`'s daily budget, if it has one. A count
    /// PostgreSQL cannot take is logged, never the request's failure: it was made.
    async fn count(&self, system: &str) {
        if self.budgeted.contains(system)
            && let Err(e) = self.store.api_usage_add(system, 1).await
        {
            tracing::warn!(system, error = %e, "a request could not be counted against the API budget");
        }
    }

    /// Counts every request in `metrics`: its wait, its time and its outcome.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Limiter {
        self.metrics = Some(metrics);
        self
    }

    /// Wraps an endpoint so that its every request goes through the limiter.
    pub fn limit<'a>(&'a self, endpoint: &'a Endpoint) -> Limited<'a> {
        Limited {
            endpoint,
            limiter: self,
        }
    }
}

/// An endpoint whose requests go through the limiter's layers: each request is one
/// [`Limited::call`], e.g. `limited.call(|api| api.fetch(id)).await`.
pub struct Limited<'a> {
    endpoint: &'a Endpoint,
    limiter: &'a Limiter,
}

impl<'a> Limited<'a> {
    /// The system's name.
    pub fn system(&self) -> &str {
        self.endpoint.system()
    }

    /// The endpoint itself, for what it can do (`read_many_max`, `bulk_max`,
    /// `can_list`, which send nothing); its requests go through [`Limited::call`].
    pub fn endpoint(&self) -> &'a Endpoint {
        self.endpoint
    }

    /// Sends one request, `op` on the endpoint, through every layer: concurrency and
    /// rate, counted against the budget, in its own span and metrics, and a 429 waited
    /// out in place (`op` is called again) while [`classify::rate_limited`] says so.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn(&'a dyn RecordApi) -> Fut,
        Fut: Future<Output = Result<T, ConnectorError>>,
    {
        let api: &'a dyn RecordApi = &**self.endpoint;
        let system = self.endpoint.system();
        let mut tries = 0;
        loop {
            tries += 1;
            let asked = std::time::Instant::now();
            let permit = self.limiter.acquire(system).await?;
            let sent = std::time::Instant::now();
            // Each request is a span of the step's trace (the current context).
            let span = request_span(system, tries, sent - asked);
            // The timeout is the connector's own, per request.
            let result = op(api).await;
            self.limiter.count(system).await;
            let outcome = result.as_ref().map_or_else(|e| e.class(), |_| "ok");
            end_request_span(span, outcome);
            if let Some(m) = &self.limiter.metrics {
                m.request(system, sent - asked, sent.elapsed(), outcome);
            }
            self.limiter.release(system, permit).await;
            let Err(e) = result else {
                return result.map_err(Failure::from);
            };
            match classify::rate_limited(&e, tries) {
                RateLimited::No => return Err(e.into()),
                RateLimited::WaitInPlace(pause) => {
                    tracing::warn!(
                        system,
                        pause_ms = pause.as_millis() as u64,
                        "rate limited (429): every worker pauses requests to this system"
                    );
                    self.limiter.block(system, pause).await?;
                }
                RateLimited::GiveUp(pause) => {
                    // The pause holds for everyone even when this event gives up
                    // waiting in place and goes to the delay queues.
                    if self.limiter.systems.contains_key(system) {
                        self.limiter.block(system, pause).await?;
                    }
                    return Err(e.into());
                }
            }
        }
    }
}

/// A request's span, a child of the current context's (the step's): which system, the
/// attempt, and how long the limiter held it.
fn request_span(
    system: &str,
    attempt: u32,
    waited: std::time::Duration,
) -> opentelemetry::global::BoxedSpan {
    use opentelemetry::trace::{SpanKind, Tracer as _};
    let tracer = opentelemetry::global::tracer("recordsync-worker");
    tracer
        .span_builder(format!("{system} request"))
        .with_kind(SpanKind::Client)
        .with_attributes([
            opentelemetry::KeyValue::new("recordsync.system", system.to_owned()),
            opentelemetry::KeyValue::new("recordsync.attempt", i64::from(attempt)),
            opentelemetry::KeyValue::new(
                "recordsync.limiter_wait_ms",
                i64::try_from(waited.as_millis()).unwrap_or(i64::MAX),
            ),
        ])
        .start(&tracer)
}

fn end_request_span(mut span: opentelemetry::global::BoxedSpan, outcome: &str) {
    use opentelemetry::trace::Span as _;
    span.set_attribute(opentelemetry::KeyValue::new(
        "recordsync.outcome",
        outcome.to_owned(),
    ));
    if outcome != "ok" {
        span.set_status(opentelemetry::trace::Status::error(outcome.to_owned()));
    }
    span.end();
}

#[cfg(test)]
mod tests;
