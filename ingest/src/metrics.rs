//! Ingest's metrics, on `prometheus-client` (OpenMetrics text, label values escaped by
//! the encoder). Label values are bounded: systems from the configuration (anything
//! else is `unknown`) and a fixed set of outcomes.

use config::telemetry::Label;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Webhook {
    system: Label,
    outcome: Label,
}

/// Ingest's metrics.
pub struct Metrics {
    registry: Registry,
    webhooks: Family<Webhook, Counter>,
    confirm: Histogram,
    connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let webhooks = Family::<Webhook, Counter>::default();
        registry.register(
            "recordsync_ingest_webhooks",
            "Webhooks received, by system and outcome",
            webhooks.clone(),
        );
        // 1 ms to about 8 s: a confirm takes milliseconds; the publish timeout ends it.
        let confirm = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register_with_unit(
            "recordsync_ingest_publish_confirm",
            "Time from publishing a webhook to the broker's confirm (or its refusal)",
            Unit::Seconds,
            confirm.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "recordsync_ingest_broker_connected",
            "Whether ingest holds a broker connection, read when scraped",
            connected.clone(),
        );
        Metrics {
            registry,
            webhooks,
            confirm,
            connected,
        }
    }
}

impl Metrics {
    /// Counts one webhook.
    pub fn count(&self, system: &str, outcome: &'static str) {
        self.webhooks
            .get_or_create(&Webhook {
                system: system.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The count for a system and outcome.
    pub fn get(&self, system: &str, outcome: &'static str) -> u64 {
        self.webhooks
            .get_or_create(&Webhook {
                system: system.into(),
                outcome: outcome.into(),
            })
            .get()
    }

    /// One publish's wait for the broker's answer.
    pub fn confirmed(&self, took: Duration) {
        self.confirm.observe(took.as_secs_f64());
    }

    /// Every sample name these metrics can expose (each family touched once, on a
    /// throwaway instance): what dashboards and alerts may query.
    pub fn every_name() -> std::collections::BTreeSet<String> {
        let m = Metrics::default();
        m.count("s", "accepted");
        m.confirmed(Duration::ZERO);
        config::telemetry::sample_names(&m.render(true))
    }

    /// The OpenMetrics text, with the broker connection read now.
    pub fn render(&self, connected: bool) -> String {
        self.connected.set(i64::from(connected));
        config::telemetry::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/src/instrumentation.md` lists every family ingest exposes, and no other.
    #[test]
    fn the_instrumentation_document_lists_every_family() {
        let doc = include_str!("../../docs/src/instrumentation.md");
        assert_eq!(
            Metrics::every_name(),
            config::telemetry::documented_sample_names(doc, "Ingest")
        );
    }

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.count("kintone", "accepted");
        m.count("kintone", "accepted");
        m.count("unknown", "unknown_system");
        m.confirmed(Duration::from_millis(3));
        assert_eq!(m.get("kintone", "accepted"), 2);
        let text = m.render(true);
        assert!(text.contains(
            "recordsync_ingest_webhooks_total{system=\"kintone\",outcome=\"accepted\"} 2\n"
        ));
        assert!(text.contains(
            "recordsync_ingest_webhooks_total{system=\"unknown\",outcome=\"unknown_system\"} 1\n"
        ));
        assert!(
            text.contains("recordsync_ingest_publish_confirm_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("recordsync_ingest_broker_connected 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
