//! Publishing a prepared webhook: the confirmed publish to the events exchange, its
//! AMQP headers, and the span whose context the message carries to the worker.

use queue::topology::WORK_KEY;

use crate::prepare::Prepared;
use crate::refusal::Refusal;
use crate::server::AppState;

/// Publishes a prepared webhook, persistent and mandatory, and waits for the broker's
/// confirm, under the span that starts its command's trace.
pub(crate) async fn publish(
    state: &AppState,
    system: &str,
    prepared: &Prepared,
) -> Result<(), Refusal> {
    let publisher = state
        .broker
        .publisher()
        .await
        .map_err(|e| Refusal::Unavailable(e.to_string()))?;
    let names = state.broker.names();
    // The trace starts here: its context rides in the message to the worker's step.
    let cx = webhook_span(system, &prepared.event_id, &prepared.correlation_id);
    let mut amqp_headers = queue::Headers::first_attempt()
        .text(queue::headers::CORRELATION_ID, &prepared.correlation_id);
    if let Some(tp) = queue::trace::traceparent(&cx) {
        amqp_headers = amqp_headers.text(queue::trace::TRACEPARENT, &tp);
    }
    let publishing = std::time::Instant::now();
    let published = publisher
        .publish(
            &names.events_exchange(),
            WORK_KEY,
            &prepared.message,
            &prepared.event_id,
            amqp_headers,
        )
        .await;
    state.metrics.confirmed(publishing.elapsed());
    {
        use opentelemetry::trace::TraceContextExt as _;
        let span = cx.span();
        if let Err(e) = &published {
            span.set_status(opentelemetry::trace::Status::error(e.to_string()));
        }
        span.end();
    }
    published.map_err(|e| Refusal::Unavailable(e.to_string()))?;
    tracing::debug!(system, event_id = %prepared.event_id, correlation_id = %prepared.correlation_id, "webhook queued");
    Ok(())
}

/// The span of one accepted webhook, the root of its command's trace (a no-op when no
/// trace provider is set up).
fn webhook_span(system: &str, event_id: &str, correlation_id: &str) -> opentelemetry::Context {
    use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
    let tracer = opentelemetry::global::tracer("recordsync-ingest");
    let span = tracer
        .span_builder("webhook")
        .with_kind(SpanKind::Server)
        .with_attributes([
            opentelemetry::KeyValue::new("recordsync.system", system.to_owned()),
            opentelemetry::KeyValue::new("recordsync.event_id", event_id.to_owned()),
            opentelemetry::KeyValue::new("recordsync.correlation_id", correlation_id.to_owned()),
        ])
        .start(&tracer);
    opentelemetry::Context::new().with_span(span)
}
