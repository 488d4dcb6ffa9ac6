//! One trace from the webhook to the target write: ingest's span of the webhook, the
//! worker's step as its child (the `traceparent` rides in the AMQP headers), and each
//! request the step makes to kintone and the helpdesk as the step's children.

use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::trace::SpanId;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::json;
use tests::{Env, RULE};

/// The spans of this test process, exported as each ends.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().expect("the span list").extend(batch);
        Ok(())
    }
}

/// The process's trace provider, collecting every span. Other tests of this process
/// make spans too once it is set; each test finds its own by its event ids.
fn collected() -> Collected {
    static SPANS: OnceLock<Collected> = OnceLock::new();
    SPANS
        .get_or_init(|| {
            let spans = Collected::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(spans.clone())
                .build();
            opentelemetry::global::set_tracer_provider(provider);
            spans
        })
        .clone()
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn one_trace_runs_from_the_webhook_through_the_step_to_each_request() -> anyhow::Result<()> {
    let spans = collected();
    let env = Env::start().await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-6001", "件名": "Traced"}))
        .await?;
    env.settle("the write-back", || env.written_back(&id))
        .await?;
    // The webhook that created the ticket, by its event id in the record's history.
    let history = env.store.history(RULE, &id).await?;
    let event = history
        .iter()
        .find(|h| h.kind == "created")
        .and_then(|h| h.event_id.clone())
        .expect("the create's event");
    let all = spans.0.lock().expect("the span list").clone();
    let webhook = all
        .iter()
        .find(|s| s.name == "webhook" && attr(s, "recordsync.event_id").as_deref() == Some(&event))
        .expect("ingest's span of the webhook");
    let trace = webhook.span_context.trace_id();
    assert_eq!(
        webhook.parent_span_id,
        SpanId::INVALID,
        "the webhook starts the trace"
    );
    let step = all
        .iter()
        .find(|s| s.name == "step" && attr(s, "recordsync.event_id").as_deref() == Some(&event))
        .expect("the worker's step span");
    assert_eq!(step.span_context.trace_id(), trace, "one trace");
    assert_eq!(step.parent_span_id, webhook.span_context.span_id());
    assert_eq!(
        attr(step, "recordsync.record").as_deref(),
        Some(id.as_str())
    );
    // The step's requests: the record read from kintone, the helpdesk's search and
    // create, and the write-back into kintone, each a child of the step.
    let requests: Vec<&SpanData> = all
        .iter()
        .filter(|s| s.span_context.trace_id() == trace && s.name.ends_with(" request"))
        .collect();
    assert!(
        requests
            .iter()
            .all(|r| r.parent_span_id == step.span_context.span_id()),
        "{requests:#?}"
    );
    let to = |system: &str| {
        requests
            .iter()
            .filter(|r| attr(r, "recordsync.system").as_deref() == Some(system))
            .count()
    };
    assert!(to("kintone") >= 2 && to("helpdesk") >= 2, "{requests:#?}");
    assert!(
        requests
            .iter()
            .all(|r| attr(r, "recordsync.outcome").as_deref() == Some("ok")),
        "{requests:#?}"
    );
    env.finish().await
}
