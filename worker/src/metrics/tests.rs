//! The metrics' own tests: every event writes its line and moves its counter, the
//! OpenMetrics text, and every family named.

use super::*;

/// What a test's subscriber wrote.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `docs/src/instrumentation.md` lists every family the worker exposes, and no other.
#[test]
fn the_instrumentation_document_lists_every_family() {
    let doc = include_str!("../../../docs/src/instrumentation.md");
    assert_eq!(
        Metrics::every_name(),
        config::telemetry::documented_sample_names(doc, "The worker")
    );
}

#[test]
fn every_event_writes_its_line_and_moves_its_counter() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let m = Metrics::default();
    let error = "helpdesk answered 500";
    tracing::subscriber::with_default(subscriber, || {
        m.emit(Event::Processed {
            rule: "wo",
            outcome: "synced",
            took: Duration::from_millis(20),
            lag: Duration::from_secs(1),
        });
        m.emit(Event::GivenBack {
            database: true,
            error: &"pool timed out",
        });
        m.emit(Event::GivenBack {
            database: false,
            error: &"lease held elsewhere",
        });
        m.emit(Event::Retried {
            class: "server",
            next_attempt: 2,
            delay_ms: 1000,
            error: &error,
        });
        m.emit(Event::DeadLettered {
            class: "server",
            attempts: 3,
            reason: error,
        });
        m.emit(Event::Flushed {
            rule: "wo",
            records: 4,
        });
    });
    let logged = String::from_utf8(lines.0.lock().expect("the buffer").clone()).expect("utf-8");
    let logged: Vec<&str> = logged.lines().collect();
    assert_eq!(logged.len(), 6, "{logged:#?}");
    for (line, level, says) in [
        (0, "INFO", "event processed"),
        (1, "ERROR", "PostgreSQL failed"),
        (2, "WARN", "nothing is down"),
        (3, "WARN", "retrying later"),
        (4, "ERROR", "dead-lettered"),
        (5, "INFO", "flushed parked work"),
    ] {
        assert!(
            logged[line].contains(level) && logged[line].contains(says),
            "{}",
            logged[line]
        );
    }
    assert!(logged[3].contains("next_attempt=2") && logged[3].contains("class=\"server\""));
    assert!(logged[4].contains("attempts=3") && logged[4].contains(error));
    let text = m.render();
    for counted in [
        "recordsync_worker_events_total{rule=\"wo\",outcome=\"synced\"} 1\n",
        "recordsync_worker_requeued_total 2\n",
        "recordsync_worker_retries_total{class=\"server\"} 1\n",
        "recordsync_worker_dead_letters_total{class=\"server\"} 1\n",
        "recordsync_worker_flushed_total{rule=\"wo\"} 4\n",
    ] {
        assert!(text.contains(counted), "{counted} in {text}");
    }
}

#[test]
fn renders_counters_histograms_and_escaped_labels() {
    let m = Metrics::default();
    m.processed(
        "wo",
        "synced",
        Duration::from_millis(20),
        Duration::from_secs(2),
    );
    m.processed(
        "wo",
        "synced",
        Duration::from_millis(30),
        Duration::from_secs(3),
    );
    m.processed(
        "a \"quoted\" rule",
        "conflict",
        Duration::ZERO,
        Duration::ZERO,
    );
    m.retried("server");
    m.queue_depth("work", 7);
    let text = m.render();
    assert!(
        text.contains("recordsync_worker_events_total{rule=\"wo\",outcome=\"synced\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "recordsync_worker_events_total{rule=\"a \\\"quoted\\\" rule\",outcome=\"conflict\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE recordsync_worker_processing_seconds histogram\n"),
        "{text}"
    );
    assert!(
        text.contains("recordsync_worker_lag_seconds_sum{rule=\"wo\"} 5.0\n"),
        "{text}"
    );
    assert!(
        text.contains("recordsync_worker_lag_seconds_count{rule=\"wo\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("recordsync_worker_retries_total{class=\"server\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("recordsync_queue_depth_messages{queue=\"work\"} 7\n"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn every_name_covers_every_family() {
    let names = Metrics::every_name();
    for name in [
        "recordsync_worker_events_total",
        "recordsync_worker_processing_seconds_bucket",
        "recordsync_worker_lag_seconds_count",
        "recordsync_worker_retries_total",
        "recordsync_worker_dead_letters_total",
        "recordsync_worker_flushed_total",
        "recordsync_worker_pruned_rows_total",
        "recordsync_worker_requeued_total",
        "recordsync_queue_depth_messages",
        "recordsync_open_conflicts",
        "recordsync_oldest_open_conflict_age_seconds",
        "recordsync_ledger_unaccounted_events",
        "recordsync_target_requests_total",
        "recordsync_target_request_seconds_bucket",
        "recordsync_limiter_wait_seconds_count",
    ] {
        assert!(names.contains(name), "{name} not in {names:#?}");
    }
}
