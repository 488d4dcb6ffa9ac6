//! Worker counters in the Prometheus text format. Label values are bounded: rule
//! names from the configuration, fixed outcome and error-class sets.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The worker's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    processed: BTreeMap<(String, &'static str), u64>,
    retried: BTreeMap<String, u64>,
    dead_lettered: BTreeMap<String, u64>,
    flushed: BTreeMap<String, u64>,
    requeued: u64,
}

impl Metrics {
    /// One event processed under a rule, with its outcome.
    pub fn processed(&self, rule: &str, outcome: &'static str) {
        *self
            .lock()
            .processed
            .entry((rule.to_owned(), outcome))
            .or_default() += 1;
    }

    /// One retry scheduled, by error class.
    pub fn retried(&self, class: &str) {
        *self.lock().retried.entry(class.to_owned()).or_default() += 1;
    }

    /// One event dead-lettered, by reason class.
    pub fn dead_lettered(&self, class: &str) {
        *self
            .lock()
            .dead_lettered
            .entry(class.to_owned())
            .or_default() += 1;
    }

    /// Parked records flushed, by rule.
    pub fn flushed(&self, rule: &str, n: usize) {
        *self.lock().flushed.entry(rule.to_owned()).or_default() += n as u64;
    }

    /// One event given back because PostgreSQL failed.
    pub fn requeued(&self) {
        self.lock().requeued += 1;
    }

    /// Events processed with an outcome, over all rules.
    pub fn processed_total(&self, outcome: &str) -> u64 {
        self.lock()
            .processed
            .iter()
            .filter(|((_, o), _)| *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("metrics lock")
    }

    /// The Prometheus text.
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str("# HELP recordsync_worker_events_total Events processed, by rule and outcome.\n# TYPE recordsync_worker_events_total counter\n");
        for ((rule, outcome), n) in &m.processed {
            out.push_str(&format!(
                "recordsync_worker_events_total{{rule=\"{rule}\",outcome=\"{outcome}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP recordsync_worker_retries_total Retries scheduled, by error class.\n# TYPE recordsync_worker_retries_total counter\n");
        for (class, n) in &m.retried {
            out.push_str(&format!(
                "recordsync_worker_retries_total{{class=\"{class}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP recordsync_worker_dead_letters_total Events dead-lettered, by reason.\n# TYPE recordsync_worker_dead_letters_total counter\n");
        for (class, n) in &m.dead_lettered {
            out.push_str(&format!(
                "recordsync_worker_dead_letters_total{{class=\"{class}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP recordsync_worker_flushed_total Parked records flushed, by rule.\n# TYPE recordsync_worker_flushed_total counter\n");
        for (rule, n) in &m.flushed {
            out.push_str(&format!(
                "recordsync_worker_flushed_total{{rule=\"{rule}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP recordsync_worker_requeued_total Events given back because PostgreSQL failed.\n# TYPE recordsync_worker_requeued_total counter\n");
        out.push_str(&format!(
            "recordsync_worker_requeued_total {}\n",
            m.requeued
        ));
        out
    }
}
