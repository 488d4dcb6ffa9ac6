//! The worker's metrics, on `prometheus-client` (OpenMetrics text, label values escaped
//! by the encoder). Names follow `recordsync_<name>_<unit>`; label values are bounded:
//! rule names from the configuration, fixed outcome and error-class sets, two queues.
//!
//! These counters are per process and start at zero; the ledger (`GET /ledger`) is the
//! durable account, from PostgreSQL.

use config::telemetry::Label;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

mod events;

pub use events::{Event, ScheduledResult};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    rule: Label,
    outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rule {
    rule: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Class {
    class: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduledRun {
    kind: Label,
    result: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Table {
    table: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Queue {
    queue: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    system: Label,
    outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct System {
    system: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Drift {
    system: Label,
    app: Label,
    severity: Label,
}

type Histograms = Family<Rule, Histogram, fn() -> Histogram>;
type SystemHistograms = Family<System, Histogram, fn() -> Histogram>;

/// Seconds, from 5 ms to about 40 minutes: a step against a fast target takes
/// milliseconds; an event that waited in the delay queues, minutes.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 15))
}

/// The worker's metrics.
pub struct Metrics {
    registry: Registry,
    scheduled: Family<ScheduledRun, Counter>,
    events: Family<Outcome, Counter>,
    processing: Histograms,
    lag: Histograms,
    retries: Family<Class, Counter>,
    dead_letters: Family<Class, Counter>,
    flushed: Family<Rule, Counter>,
    pruned: Family<Table, Counter>,
    requeued: Counter,
    queue_depth: Family<Queue, Gauge>,
    open_conflicts: Family<Kind, Gauge>,
    oldest_conflict: Gauge,
    unaccounted: Family<Rule, Gauge>,
    schema_drift: Family<Drift, Gauge>,
    api_budget: Family<System, Gauge>,
    api_used: Family<System, Gauge>,
    api_forecast: Family<System, Gauge>,
    requests: Family<Request, Counter>,
    request_time: SystemHistograms,
    limiter_wait: SystemHistograms,
    absent_fields: Family<AbsentField, Counter>,
    /// The rules whose absent source fields were logged already: once per rule.
    absent_logged: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AbsentField {
    rule: Label,
    field: Label,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let events = Family::<Outcome, Counter>::default();
        registry.register(
            "recordsync_worker_events",
            "Events and commands processed, by rule and outcome",
            events.clone(),
        );
        let processing: Histograms = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "recordsync_worker_processing",
            "Time one command took in the step, by rule",
            Unit::Seconds,
            processing.clone(),
        );
        let lag: Histograms = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "recordsync_worker_lag",
            "Time from the webhook's arrival (or the command's issue) to its outcome, by rule: the end-to-end lag, retries included",
            Unit::Seconds,
            lag.clone(),
        );
        let retries = Family::<Class, Counter>::default();
        registry.register(
            "recordsync_worker_retries",
            "Retries scheduled, by error class",
            retries.clone(),
        );
        let dead_letters = Family::<Class, Counter>::default();
        registry.register(
            "recordsync_worker_dead_letters",
            "Events dead-lettered, by reason class",
            dead_letters.clone(),
        );
        let flushed = Family::<Rule, Counter>::default();
        registry.register(
            "recordsync_worker_flushed",
            "Parked records flushed, by rule",
            flushed.clone(),
        );
        let pruned = Family::<Table, Counter>::default();
        registry.register(
            "recordsync_worker_pruned_rows",
            "Rows pruned past their retention, by table",
            pruned.clone(),
        );
        let requeued = Counter::default();
        registry.register(
            "recordsync_worker_requeued",
            "Events given back without counting an attempt (PostgreSQL failed, or the record was busy)",
            requeued.clone(),
        );
        let queue_depth = Family::<Queue, Gauge>::default();
        registry.register(
            "recordsync_queue_depth_messages",
            "Ready messages per queue, read when scraped",
            queue_depth.clone(),
        );
        let open_conflicts = Family::<Kind, Gauge>::default();
        registry.register(
            "recordsync_open_conflicts",
            "Open data-quality conflicts by kind, read when scraped",
            open_conflicts.clone(),
        );
        let oldest_conflict = Gauge::default();
        registry.register_with_unit(
            "recordsync_oldest_open_conflict_age",
            "How long the oldest open conflict has waited for a person, read when scraped",
            Unit::Seconds,
            oldest_conflict.clone(),
        );
        let unaccounted = Family::<Rule, Gauge>::default();
        registry.register(
            "recordsync_ledger_unaccounted_events",
            "Events first seen in the last 24 hours that the ledger cannot account for (seen, then lost), by rule, from the ledger's last recount in PostgreSQL (every RECORDSYNC_LEDGER_ROLLUP_MS)",
            unaccounted.clone(),
        );
        let schema_drift = Family::<Drift, Gauge>::default();
        registry.register(
            "recordsync_schema_drift_fields",
            "Drifts the latest schema check found in each app a rule relies on, by severity (breaking: a field gone, a type changed, an option the rule writes gone, a required field no rule writes), read from PostgreSQL when scraped",
            schema_drift.clone(),
        );
        let api_budget = Family::<System, Gauge>::default();
        registry.register(
            "recordsync_api_budget_requests",
            "A system's daily API budget (requests per UTC day), for the systems that declare one",
            api_budget.clone(),
        );
        let api_used = Family::<System, Gauge>::default();
        registry.register(
            "recordsync_api_used_requests",
            "Requests made today (UTC) to a system with a budget, by every worker, read from PostgreSQL when scraped",
            api_used.clone(),
        );
        let api_forecast = Family::<System, Gauge>::default();
        registry.register(
            "recordsync_api_forecast_requests",
            "Today's requests to a system with a budget as forecast at the pace of the last hour or two; above the budget, resync and reconcile wait",
            api_forecast.clone(),
        );
        let requests = Family::<Request, Counter>::default();
        registry.register(
            "recordsync_target_requests",
            "Requests to other systems, by system and outcome (ok, or the error class: rate_limited, server, transport, rejected, unauthorized, revision_conflict, bad_response, unknown)",
            requests.clone(),
        );
        let request_time: SystemHistograms = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "recordsync_target_request",
            "Time one request to another system took, its answer or error included, by system",
            Unit::Seconds,
            request_time.clone(),
        );
        let limiter_wait: SystemHistograms = Family::new_with_constructor(seconds);
        registry.register_with_unit(
            "recordsync_limiter_wait",
            "Time a request waited for its concurrency slot and rate reservation, by system",
            Unit::Seconds,
            limiter_wait.clone(),
        );
        let absent_fields = Family::<AbsentField, Counter>::default();
        registry.register(
            "recordsync_worker_source_fields_absent",
            "Source records read without a field a rule maps (a misspelt field code?), by rule and field",
            absent_fields.clone(),
        );
        let scheduled = Family::<ScheduledRun, Counter>::default();
        registry.register(
            "recordsync_worker_scheduled_runs",
            "Scheduled runs' turns (resync, reconcile, schema check), by kind and what became of them: ran here, taken (another worker ran this period's), busy (another runs it now), held (an API budget), failed",
            scheduled.clone(),
        );
        Metrics {
            registry,
            scheduled,
            absent_fields,
            absent_logged: std::sync::Mutex::default(),
            requests,
            request_time,
            limiter_wait,
            events,
            processing,
            lag,
            retries,
            dead_letters,
            flushed,
            pruned,
            requeued,
            queue_depth,
            open_conflicts,
            oldest_conflict,
            unaccounted,
            schema_drift,
            api_budget,
            api_used,
            api_forecast,
        }
    }
}

impl Metrics {
    /// One command processed under a rule, with its outcome, how long the step took
    /// and how long after its arrival it ended.
    fn processed(&self, rule: &str, outcome: &'static str, took: Duration, lag: Duration) {
        self.events
            .get_or_create(&Outcome {
                rule: rule.into(),
                outcome: outcome.into(),
            })
            .inc();
        let rule = Rule { rule: rule.into() };
        self.processing
            .get_or_create(&rule)
            .observe(took.as_secs_f64());
        self.lag.get_or_create(&rule).observe(lag.as_secs_f64());
    }

    /// A source record read under `rule` without these mapped fields: counted per field,
    /// and logged once per rule (the first time), since every record would repeat it.
    pub fn source_fields_absent(&self, rule: &str, system: &str, fields: &[&str]) {
        if fields.is_empty() {
            return;
        }
        for field in fields {
            self.absent_fields
                .get_or_create(&AbsentField {
                    rule: rule.into(),
                    field: (*field).into(),
                })
                .inc();
        }
        let first = self
            .absent_logged
            .lock()
            .map(|mut logged| logged.insert(rule.to_owned()))
            .unwrap_or(false);
        if first {
            tracing::warn!(
                rule,
                fields = %fields.join(", "),
                "{system} records lack fields this rule maps; they are left out of every write. Is a field code misspelt? (`worker check-config --live` compares the rules with the live app; logged once per rule, counted in recordsync_worker_source_fields_absent_total)"
            );
        }
    }

    /// One retry scheduled, by error class.
    fn retried(&self, class: &str) {
        self.retries
            .get_or_create(&Class {
                class: class.into(),
            })
            .inc();
    }

    /// One event dead-lettered, by reason class.
    fn dead_lettered(&self, class: &str) {
        self.dead_letters
            .get_or_create(&Class {
                class: class.into(),
            })
            .inc();
    }

    /// Parked records flushed, by rule.
    fn flushed(&self, rule: &str, n: usize) {
        self.flushed
            .get_or_create(&Rule { rule: rule.into() })
            .inc_by(n as u64);
    }

    /// One event given back without counting an attempt.
    fn requeued(&self) {
        self.requeued.inc();
    }

    /// A queue's depth, read when scraped.
    pub fn queue_depth(&self, queue: &str, depth: u32) {
        self.queue_depth
            .get_or_create(&Queue {
                queue: queue.into(),
            })
            .set(i64::from(depth));
    }

    /// The open conflicts by kind and the oldest one's age, read when scraped.
    pub fn open_conflicts<'a>(
        &self,
        kinds: impl IntoIterator<Item = (&'a str, usize)>,
        oldest: Option<Duration>,
    ) {
        self.open_conflicts.clear();
        for (kind, n) in kinds {
            self.open_conflicts
                .get_or_create(&Kind { kind: kind.into() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.oldest_conflict
            .set(oldest.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    }

    /// The ledger's unaccounted events per rule, read when scraped.
    pub fn unaccounted(&self, by_rule: &[(String, i64)]) {
        self.unaccounted.clear();
        for (rule, n) in by_rule {
            self.unaccounted
                .get_or_create(&Rule {
                    rule: rule.as_str().into(),
                })
                .set(*n);
        }
    }

    /// The drifts of each app's latest schema check: `(system, app, breaking, warnings)`,
    /// read when scraped.
    pub fn schema_drift(&self, latest: &[(String, String, i64, i64)]) {
        self.schema_drift.clear();
        for (system, app, breaking, warnings) in latest {
            for (severity, n) in [("breaking", *breaking), ("warning", *warnings)] {
                self.schema_drift
                    .get_or_create(&Drift {
                        system: system.as_str().into(),
                        app: app.as_str().into(),
                        severity: severity.into(),
                    })
                    .set(n);
            }
        }
    }

    /// Each budgeted system's budget, use today and forecast: `(system, budget, used,
    /// forecast)`, read when scraped.
    pub fn api_budgets(&self, budgets: &[(String, u64, u64, u64)]) {
        for family in [&self.api_budget, &self.api_used, &self.api_forecast] {
            family.clear();
        }
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (system, budget, used, forecast) in budgets {
            let label = System {
                system: system.as_str().into(),
            };
            self.api_budget.get_or_create(&label).set(n(*budget));
            self.api_used.get_or_create(&label).set(n(*used));
            self.api_forecast.get_or_create(&label).set(n(*forecast));
        }
    }

    /// One request to another system: how long the limiter held it, how long it took,
    /// and how it ended (`ok` or the error class).
    pub fn request(&self, system: &str, waited: Duration, took: Duration, outcome: &'static str) {
        let label = System {
            system: system.into(),
        };
        self.limiter_wait
            .get_or_create(&label)
            .observe(waited.as_secs_f64());
        self.request_time
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&Request {
                system: system.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Every sample name these metrics can expose (each family touched once, on a
    /// throwaway instance): what dashboards and alerts may query.
    pub fn every_name() -> std::collections::BTreeSet<String> {
        let m = Metrics::default();
        m.processed("r", "synced", Duration::ZERO, Duration::ZERO);
        m.retried("server");
        m.dead_lettered("server");
        m.flushed("r", 1);
        m.emit(Event::Pruned {
            tables: &[("deliveries", 0)],
        });
        m.requeued();
        m.queue_depth("work", 0);
        m.open_conflicts([("invalid", 1)], None);
        m.unaccounted(&[("r".to_owned(), 0)]);
        m.schema_drift(&[("s".to_owned(), "a".to_owned(), 0, 0)]);
        m.api_budgets(&[("s".to_owned(), 1, 0, 0)]);
        m.request("s", Duration::ZERO, Duration::ZERO, "ok");
        m.source_fields_absent("r", "s", &["f"]);
        m.emit(Event::Scheduled {
            name: "r",
            kind: "resync",
            result: ScheduledResult::Taken,
            detail: "",
        });
        config::telemetry::sample_names(&m.render())
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        config::telemetry::render(&self.registry)
    }
}

#[cfg(test)]
mod tests;
