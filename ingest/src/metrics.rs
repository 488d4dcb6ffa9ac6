//! Ingest counters, rendered in the Prometheus text format. Label values are bounded:
//! systems from the configuration (anything else is `unknown`) and a fixed set of
//! outcomes.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Webhook counters by system and outcome.
#[derive(Default)]
pub struct Metrics {
    webhooks: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Metrics {
    /// Counts one webhook.
    pub fn count(&self, system: &str, outcome: &'static str) {
        let mut m = self.webhooks.lock().expect("metrics lock");
        *m.entry((system.to_owned(), outcome)).or_default() += 1;
    }

    /// The count for a system and outcome.
    pub fn get(&self, system: &str, outcome: &'static str) -> u64 {
        let m = self.webhooks.lock().expect("metrics lock");
        m.get(&(system.to_owned(), outcome))
            .copied()
            .unwrap_or_default()
    }

    /// The Prometheus text.
    pub fn render(&self) -> String {
        let m = self.webhooks.lock().expect("metrics lock");
        let mut out = String::from(
            "# HELP recordsync_ingest_webhooks_total Webhooks received, by system and outcome.\n# TYPE recordsync_ingest_webhooks_total counter\n",
        );
        for ((system, outcome), n) in m.iter() {
            out.push_str(&format!("recordsync_ingest_webhooks_total{{system=\"{system}\",outcome=\"{outcome}\"}} {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.count("kintone", "accepted");
        m.count("kintone", "accepted");
        m.count("unknown", "unknown_system");
        assert_eq!(m.get("kintone", "accepted"), 2);
        let text = m.render();
        assert!(text.contains(
            "recordsync_ingest_webhooks_total{system=\"kintone\",outcome=\"accepted\"} 2\n"
        ));
        assert!(text.contains(
            "recordsync_ingest_webhooks_total{system=\"unknown\",outcome=\"unknown_system\"} 1\n"
        ));
    }
}
