//! One consumer session, and one delivery through the step: decoded, stepped under
//! its trace, then acknowledged, given back, retried or dead-lettered as the failure's
//! class says (`classify`).

use std::sync::Arc;
use std::time::Duration;

use domain::history::Entry;
use queue::{Command, CommandV2, Delivery, QueueError};
use store::EventRef;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Disposition, Worker, until_true};
use crate::classify::{self, Action};
use crate::metrics::Event;
use crate::step::Failure;

impl Worker {
    /// One consumer session: until shutdown, PostgreSQL failing, or the channel
    /// closing.
    pub(super) async fn consume(
        self: Arc<Self>,
        shutdown: &CancellationToken,
    ) -> Result<(), QueueError> {
        let tag = format!("worker-{}", uuid::Uuid::new_v4().simple());
        let mut consumer = self.broker.consume(&tag, self.settings.prefetch).await?;
        tracing::info!(queue = %self.broker.names().work_queue(), prefetch = self.settings.prefetch, "consuming");
        let mut db_down = self.db_down.subscribe();
        let mut in_flight = JoinSet::new();
        let result = loop {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let worker = Arc::clone(&self);
                        in_flight.spawn(async move { worker.handle(delivery).await; });
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Ok(()),
                },
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = until_true(&mut db_down) => {
                    tracing::error!("PostgreSQL failed: no more messages are taken until it is back");
                    let _ = consumer.cancel().await;
                    break Ok(());
                }
                _ = shutdown.cancelled() => {
                    let _ = consumer.cancel().await;
                    break Ok(());
                }
            }
        };
        // Drain: every event in flight finishes (and is acknowledged or given back)
        // before we leave; closing the channel gives back what was prefetched.
        while in_flight.join_next().await.is_some() {}
        consumer.close().await;
        result
    }

    /// Handles one delivery end to end and acknowledges it as its outcome says.
    pub async fn handle(&self, delivery: Delivery) -> Disposition {
        let attempt = delivery.attempt();
        let message = match delivery.decode() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "undecodable message: dead-lettering it; inspect it with `worker dlq list --class undecodable`");
                return self
                    .dead_letter(&delivery, None, "undecodable", &e.to_string(), attempt)
                    .await;
            }
        };
        let Some(cmd) = message.command() else {
            let why = "a version-1 resolution without its rule or conflict";
            tracing::error!(
                "undecodable message ({why}): dead-lettering it; inspect it with `worker dlq list --class undecodable`"
            );
            return self
                .dead_letter(&delivery, None, "undecodable", why, attempt)
                .await;
        };
        let ev = &cmd;
        // The step continues the trace the webhook started (its `traceparent`), and its
        // requests are spans of it; the log lines carry its trace id.
        let cx = step_span(delivery.traceparent().as_deref(), &cmd, attempt);
        let trace_id = {
            use opentelemetry::trace::TraceContextExt as _;
            let span = cx.span();
            let sc = span.span_context();
            if sc.is_valid() {
                format!("{:032x}", sc.trace_id())
            } else {
                String::new()
            }
        };
        let span = tracing::info_span!("event", event_id = %cmd.id, command = cmd.command.kind(), record = %cmd.command.record_id(), correlation_id = %cmd.correlation_id, trace_id = %trace_id, attempt);
        let stepped = async {
            let started = std::time::Instant::now();
            let failure = match self.processor.step(ev, attempt).await {
                Ok(outcomes) => {
                    let took = started.elapsed();
                    let lag = (chrono::Utc::now() - cmd.issued_at)
                        .to_std()
                        .unwrap_or_default();
                    for (rule, done) in &outcomes {
                        self.metrics.emit(Event::Processed {
                            rule,
                            outcome: done.as_str(),
                            took,
                            lag,
                        });
                    }
                    return self.ack(&delivery).await;
                }
                Err(f) => f,
            };
            match classify::failure(&failure) {
                Action::Requeue => {
                    self.metrics.emit(Event::GivenBack {
                        database: true,
                        error: &failure,
                    });
                    self.db_down.send_replace(true);
                    self.requeue(&delivery).await
                }
                Action::GiveBack => {
                    self.metrics.emit(Event::GivenBack {
                        database: false,
                        error: &failure,
                    });
                    // A short pause, so that a busy pool is not hammered by redeliveries.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.requeue(&delivery).await
                }
                // Waiting for an in-doubt create to show is not a failed attempt, and
                // it ends: after the settle time the create is made again.
                Action::Retry { after }
                    if attempt < self.settings.max_attempts
                        || matches!(failure, Failure::InDoubt { .. }) =>
                {
                    self.retry(&delivery, ev, attempt, &failure, after).await
                }
                Action::Retry { .. } | Action::DeadLetter | Action::Conflict => {
                    // Conflicts are stored by the processing step and never reach here;
                    // what does is out of attempts or cannot be helped by retrying.
                    let class = failure.class();
                    self.note(ev, Entry::dead_lettered(&failure.to_string(), attempt))
                        .await;
                    self.dead_letter(&delivery, Some(ev), class, &failure.to_string(), attempt)
                        .await
                }
            }
        };
        let disposition =
            opentelemetry::context::FutureExt::with_context(stepped.instrument(span), cx.clone())
                .await;
        {
            use opentelemetry::trace::TraceContextExt as _;
            let span = cx.span();
            span.set_attribute(opentelemetry::KeyValue::new(
                "recordsync.disposition",
                format!("{disposition:?}"),
            ));
            span.end();
        }
        disposition
    }

    /// The rules a command concerns: those of a change's app, or the one it names.
    pub(super) fn rules_of(&self, cmd: &CommandV2) -> Vec<String> {
        match &cmd.command {
            Command::Change { system, app, .. } => self
                .processor
                .rules
                .rules_for(system, app)
                .map(|r| r.name.clone())
                .collect(),
            other => other.rule().map(str::to_owned).into_iter().collect(),
        }
    }

    /// Appends a history entry outside the record's transaction; a failure to do so
    /// loses only the note, never the event.
    pub(super) async fn note(&self, ev: &CommandV2, entry: Entry) {
        let evref = EventRef {
            event_id: ev.id.clone(),
            correlation_id: ev.correlation_id.clone(),
        };
        for rule in self.rules_of(ev) {
            if let Err(e) = self
                .processor
                .store
                .append(
                    &rule,
                    ev.command.record_id(),
                    &evref,
                    std::slice::from_ref(&entry),
                )
                .await
            {
                tracing::warn!(error = %e, "could not record the history entry");
            }
        }
    }

    pub(super) async fn ack(&self, delivery: &Delivery) -> Disposition {
        match delivery.ack().await {
            Ok(()) => Disposition::Acked,
            Err(e) => {
                // The channel is gone: the broker redelivers, and the event id makes
                // the redelivery a recognised duplicate.
                tracing::warn!(error = %e, "could not acknowledge; the broker will redeliver and the duplicate will be skipped");
                Disposition::Requeued
            }
        }
    }

    pub(super) async fn requeue(&self, delivery: &Delivery) -> Disposition {
        if let Err(e) = delivery.requeue().await {
            tracing::warn!(error = %e, "could not give the message back; the broker redelivers it when the channel closes");
        }
        Disposition::Requeued
    }
}

/// The span of one step: a child of the webhook's span when the message carries its
/// `traceparent`, else a new trace (a no-op when no trace provider is set up).
fn step_span(traceparent: Option<&str>, cmd: &CommandV2, attempt: u32) -> opentelemetry::Context {
    use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
    let parent = queue::trace::remote_parent(traceparent);
    let tracer = opentelemetry::global::tracer("recordsync-worker");
    let span = tracer
        .span_builder("step")
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            opentelemetry::KeyValue::new("recordsync.event_id", cmd.id.clone()),
            opentelemetry::KeyValue::new("recordsync.command", cmd.command.kind()),
            opentelemetry::KeyValue::new("recordsync.record", cmd.command.record_id().to_owned()),
            opentelemetry::KeyValue::new("recordsync.correlation_id", cmd.correlation_id.clone()),
            opentelemetry::KeyValue::new("recordsync.attempt", i64::from(attempt)),
        ])
        .start_with_context(&tracer, &parent);
    parent.with_span(span)
}
