//! The worker's typed operational events: one value writes its log line and moves its
//! counter together ([`Metrics::emit`]), and the results a scheduled run's turn can
//! have.

use std::time::Duration;

use super::{Metrics, ScheduledRun, Table};

/// An operational event of the worker: one value writes its log line and moves its
/// counter together, so that what the logs say and what `/metrics` counts never
/// disagree. `docs/src/instrumentation.md` lists each event with its line and its metric.
pub enum Event<'a> {
    /// A command's step ended with an outcome under a rule:
    /// `recordsync_worker_events_total`, the step-time and lag histograms, and an
    /// `info` line "event processed".
    Processed {
        /// The rule.
        rule: &'a str,
        /// The outcome (`synced`, `skipped`, `conflict`, ...).
        outcome: &'static str,
        /// How long the step took.
        took: Duration,
        /// How long after the command was issued the step ended.
        lag: Duration,
    },
    /// An event given back to the queue without counting an attempt:
    /// `recordsync_worker_requeued_total`, and an `error` line when PostgreSQL failed,
    /// a `warn` line otherwise.
    GivenBack {
        /// Whether PostgreSQL failed (the worker stops taking messages until it is back).
        database: bool,
        /// Why.
        error: &'a dyn std::fmt::Display,
    },
    /// A retryable failure put on a delay queue: `recordsync_worker_retries_total` by
    /// class, and a `warn` line "retryable failure; retrying later".
    Retried {
        /// The failure's class.
        class: &'a str,
        /// The attempt the delayed copy will be.
        next_attempt: u32,
        /// The delay.
        delay_ms: u64,
        /// Why.
        error: &'a dyn std::fmt::Display,
    },
    /// An event out of attempts, or beyond retrying, confirmed on the dead-letter queue:
    /// `recordsync_worker_dead_letters_total` by class, and an `error` line.
    DeadLettered {
        /// The failure's class.
        class: &'a str,
        /// The attempts made.
        attempts: u32,
        /// Why.
        reason: &'a str,
    },
    /// Parked records written after a resume: `recordsync_worker_flushed_total`
    /// by rule, and an `info` line "flushed parked work".
    Flushed {
        /// The rule.
        rule: &'a str,
        /// How many records.
        records: usize,
    },
    /// A pruning run deleted rows past their retention:
    /// `recordsync_worker_pruned_rows_total` by table, and an `info` line "pruned rows
    /// past their retention" when it deleted any.
    Pruned {
        /// `(table, rows)` for each table pruned.
        tables: &'a [(&'static str, u64)],
    },
    /// A scheduled run's turn came (resync, reconcile, schema check):
    /// `recordsync_worker_scheduled_runs_total` by kind and result, and a line whose
    /// level follows the result.
    Scheduled {
        /// The rule or system it runs for.
        name: &'a str,
        /// `resync`, `reconcile`, `schema_check`, `ledger_rollup` or `prune`.
        kind: &'static str,
        /// What became of it.
        result: ScheduledResult,
        /// What it did, or why it waits or stopped.
        detail: &'a str,
    },
}

/// What became of a scheduled run's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduledResult {
    /// This worker ran it.
    Ran,
    /// Another worker already ran this period's run.
    Taken,
    /// Another worker is running it now.
    Busy,
    /// An API budget holds it back; it is tried again sooner than the schedule.
    Held,
    /// It failed; it is tried again sooner than the schedule, from its cursor.
    Failed,
}

impl ScheduledResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduledResult::Ran => "ran",
            ScheduledResult::Taken => "taken",
            ScheduledResult::Busy => "busy",
            ScheduledResult::Held => "held",
            ScheduledResult::Failed => "failed",
        }
    }
}

impl Metrics {
    /// Writes the event's log line and moves its counter (see [`Event`]).
    pub fn emit(&self, event: Event<'_>) {
        match event {
            Event::Processed {
                rule,
                outcome,
                took,
                lag,
            } => {
                self.processed(rule, outcome, took, lag);
                tracing::info!(
                    rule,
                    outcome,
                    took_ms = took.as_millis() as u64,
                    "event processed"
                );
            }
            Event::GivenBack {
                database: true,
                error,
            } => {
                self.requeued();
                tracing::error!(error = %error, "PostgreSQL failed; the event goes back to the queue without counting an attempt — check PostgreSQL");
            }
            Event::GivenBack {
                database: false,
                error,
            } => {
                self.requeued();
                tracing::warn!(error = %error, "the event goes back to the queue without counting an attempt; nothing is down");
            }
            Event::Retried {
                class,
                next_attempt,
                delay_ms,
                error,
            } => {
                self.retried(class);
                tracing::warn!(error = %error, class, next_attempt, delay_ms, "retryable failure; retrying later");
            }
            Event::DeadLettered {
                class,
                attempts,
                reason,
            } => {
                self.dead_lettered(class);
                tracing::error!(
                    class,
                    attempts,
                    error = reason,
                    "gave up: the event is dead-lettered; fix the cause, then `worker dlq replay`"
                );
            }
            Event::Flushed { rule, records } => {
                self.flushed(rule, records);
                tracing::info!(rule, records, "flushed parked work");
            }
            Event::Pruned { tables } => {
                for (table, rows) in tables {
                    self.pruned
                        .get_or_create(&Table {
                            table: (*table).into(),
                        })
                        .inc_by(*rows);
                }
                let rows: u64 = tables.iter().map(|(_, n)| n).sum();
                if rows > 0 {
                    let each: Vec<String> =
                        tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
                    tracing::info!(
                        rows,
                        tables = each.join(", "),
                        "pruned rows past their retention"
                    );
                }
            }
            Event::Scheduled {
                name,
                kind,
                result,
                detail,
            } => {
                self.scheduled
                    .get_or_create(&ScheduledRun {
                        kind: kind.into(),
                        result: result.as_str().into(),
                    })
                    .inc();
                match result {
                    ScheduledResult::Ran => {
                        tracing::info!(name, kind, done = detail, "scheduled run done");
                    }
                    ScheduledResult::Taken => {
                        tracing::debug!(name, kind, "another worker ran this period's run");
                    }
                    ScheduledResult::Busy => {
                        tracing::debug!(name, kind, "another worker runs it");
                    }
                    ScheduledResult::Held => {
                        tracing::info!(
                            name,
                            kind,
                            reason = detail,
                            "scheduled run waits for the API budget"
                        );
                    }
                    ScheduledResult::Failed => {
                        tracing::warn!(
                            name,
                            kind,
                            error = detail,
                            "scheduled run stopped; it is tried again"
                        );
                    }
                }
            }
        }
    }
}
