//! The worker's JSON log lines for a processed event carry the event's correlation id
//! and the trace id of the trace it continues, so that a log search finds every line
//! of one event and leads to its trace.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tests::Env;

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the log buffer")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Every line written so far, parsed (a line that is not JSON fails the test).
    fn lines(&self) -> anyhow::Result<Vec<Value>> {
        let text = String::from_utf8(self.0.lock().expect("the log buffer").clone())?;
        text.lines()
            .map(|l| serde_json::from_str(l).map_err(|e| anyhow::anyhow!("{e}: {l}")))
            .collect()
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn a_processed_event_logs_its_correlation_id_and_trace_id_as_json() -> anyhow::Result<()> {
    // The worker binary's log setup (worker/src/main.rs: JSON, `info`), writing here.
    // The default for this thread only: a current-thread test runtime runs every task
    // of the environment on it, and other tests' logs stay out.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(move || writer.clone())
        .finish();
    let _logs = tracing::subscriber::set_default(subscriber);

    let env = Env::start().await?;
    let record = env
        .kintone_create_silently(json!({"work_order_no": "WO-7001", "件名": "Logged"}))
        .await?;
    // The change as ingest queues it, continuing a trace begun upstream.
    let cmd = tests::change("logged-1", &record);
    let correlation_id = cmd.correlation_id.clone();
    let headers = queue::Headers::default().text(
        queue::trace::TRACEPARENT,
        &format!("00-{TRACE_ID}-00f067aa0ba902b7-01"),
    );
    let (publisher, names) = env.publisher().await?;
    publisher
        .publish(
            "",
            &names.work_queue(),
            &queue::QueueMessage::V2(cmd).encode(),
            "logged-1",
            headers,
        )
        .await?;

    let processed = || -> anyhow::Result<Option<Value>> {
        Ok(captured.lines()?.into_iter().find(|l| {
            l["fields"]["message"] == "event processed" && l["span"]["event_id"] == "logged-1"
        }))
    };
    tests::wait_for(
        "the event's `event processed` line",
        Duration::from_secs(30),
        || async { Ok(processed()?.is_some()) },
    )
    .await?;
    let line = processed()?.expect("the line waited for");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["span"]["correlation_id"], correlation_id, "{line}");
    assert_eq!(line["span"]["trace_id"], TRACE_ID, "{line}");
    // Every line the step wrote for the event carries both.
    let of_event: Vec<Value> = captured
        .lines()?
        .into_iter()
        .filter(|l| l["span"]["event_id"] == "logged-1")
        .collect();
    for l in &of_event {
        assert_eq!(l["span"]["correlation_id"], correlation_id, "{l}");
        assert_eq!(l["span"]["trace_id"], TRACE_ID, "{l}");
    }
    assert!(env.written_back(&record).await?, "the event was processed");
    env.finish().await
}
