//! What the services' telemetry shares: label values escaped for the text format, the
//! content type, the encoding of a registry, and the trace provider ([`init_traces`]).
//!
//! `prometheus-client` writes label values as they are (prometheus/client_rust#151), and
//! a rule or system name is free text in `sync-rules.json`: one double quote in it
//! would make Prometheus reject the whole scrape. Label sets therefore hold [`Label`]s.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::registry::Registry;
use std::fmt::Write;

/// The content type of [`render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label value, written with `\`, `"` and line feeds escaped as the text format asks.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Label(pub String);

impl From<&str> for Label {
    fn from(s: &str) -> Label {
        Label(s.to_owned())
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The registry's metrics as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// The sample names a text exposition offers, from its `# TYPE` lines: a counter's
/// `_total`, a histogram's `_bucket`, `_sum` and `_count`, a gauge's own name. (A
/// family with no label set yet has no `# TYPE` line.)
pub fn sample_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            add_samples(&mut names, name, kind);
        }
    }
    names
}

/// The sample names an instrumentation document (`docs/src/instrumentation.md`) lists
/// under the `## ` heading that starts with `section`: each table row whose first
/// cell is a family name in backticks and whose second is its type.
pub fn documented_sample_names(doc: &str, section: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut inside = false;
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            inside = heading.starts_with(section);
            continue;
        }
        if !inside {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, name, kind, ..] = cells.as_slice()
            && let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`'))
            && ["counter", "gauge", "histogram"].contains(kind)
        {
            add_samples(&mut names, name, kind);
        }
    }
    names
}

fn add_samples(names: &mut std::collections::BTreeSet<String>, name: &str, kind: &str) {
    match kind {
        "counter" => {
            names.insert(format!("{name}_total"));
        }
        "histogram" => {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        _ => {
            names.insert(name.to_owned());
        }
    }
}

/// Sets up tracing for a service (`recordsync-ingest`, `recordsync-worker`): spans get
/// real trace and span ids, so that a command's `traceparent` and the JSON logs carry
/// them, and they are exported over OTLP/HTTP (protobuf, batched) when the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
/// Returns the provider, for [`opentelemetry_sdk::trace::SdkTracerProvider::shutdown`]
/// at exit (it flushes what is still batched).
pub fn init_traces(
    service: &'static str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let mut builder =
        opentelemetry_sdk::trace::SdkTracerProvider::builder().with_resource(resource);
    let exporting = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|e| !e.trim().is_empty()));
    if exporting {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .map_err(|e| format!("the OTLP trace exporter cannot be built: {e}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(provider)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_documented_family_is_read_from_its_section_only() {
        let doc = "# T\n\n## The worker (x)\n\n| family | type |\n|---|---|\n| `a_events` | counter | rule |\n| `a_time_seconds` | histogram |\n| `a_depth` | gauge |\n| not a name | counter |\n\n## Ingest\n\n| `b_webhooks` | counter |\n";
        let worker = super::documented_sample_names(doc, "The worker");
        let expected: std::collections::BTreeSet<String> = [
            "a_events_total",
            "a_time_seconds_bucket",
            "a_time_seconds_sum",
            "a_time_seconds_count",
            "a_depth",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(worker, expected);
        let ingest = super::documented_sample_names(doc, "Ingest");
        assert_eq!(ingest.into_iter().collect::<Vec<_>>(), ["b_webhooks_total"]);
        assert_eq!(
            super::sample_names("# TYPE a_events counter\n# TYPE a_depth gauge\n"),
            ["a_depth", "a_events_total"]
                .into_iter()
                .map(str::to_owned)
                .collect()
        );
    }

    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct L {
        name: Label,
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = Registry::default();
        let f = Family::<L, Counter>::default();
        r.register("x", "X", f.clone());
        f.get_or_create(&L {
            name: "a \"b\" \\ c\nd".into(),
        })
        .inc();
        f.get_or_create(&L {
            name: "plain-name_1".into(),
        })
        .inc();
        let text = render(&r);
        assert!(
            text.contains("x_total{name=\"a \\\"b\\\" \\\\ c\\nd\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_total{name=\"plain-name_1\"} 1\n"),
            "{text}"
        );
    }
}
