//! The append-only history: every webhook, fetch, match, decision, conflict, write and
//! retry, each with a plain-language summary written when it happens. Timelines are
//! rendered from these entries, never from logs.
//!
//! Entries are made by constructors, one per kind, so that every summary reads the
//! same way. They sit beside this file by what they record: what arrived and
//! was read (`arrival`), identity resolution (`matching`), writes and what kept them
//! from happening (`writes`), field authority's verdicts (`verdicts`), and deleted
//! records (`deletions`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod arrival;
mod deletions;
mod matching;
mod verdicts;
mod writes;

/// What kind of step an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A webhook was taken from the queue for a rule.
    WebhookReceived,
    /// A delivery of an event already processed was skipped.
    DuplicateSkipped,
    /// The canonical record was read from the source.
    Fetched,
    /// The webhook payload disagreed with the canonical record; the canonical won.
    PayloadDisagreed,
    /// The source revision was already synced (or older): nothing to do.
    StaleSkipped,
    /// Identity resolution linked a target record.
    Matched,
    /// A target record was created.
    Created,
    /// A target record was updated.
    Updated,
    /// The mapped fields had not changed since the last write.
    NoChange,
    /// The target id was written back into the source record.
    WrittenBack,
    /// The write-back waited: the source record changed since it was read.
    WriteBackDeferred,
    /// Nothing matched and the rule says to skip.
    Skipped,
    /// A data-quality conflict was opened.
    ConflictOpened,
    /// A retryable failure; the event will be tried again later.
    RetryScheduled,
    /// The event was dead-lettered.
    DeadLettered,
    /// The source record no longer exists.
    SourceDeleted,
    /// The work waits: the rule or a system is paused, or the target's write window
    /// is closed.
    Parked,
    /// What an observation was, when nothing changed.
    Classified,
    /// The verdict on one changed field.
    Decided,
    /// A person resolved a conflict.
    Resolved,
    /// A create whose outcome was in doubt was resolved before anything was created.
    InDoubtResolved,
    /// A person linked a record outside a conflict's candidates, with a reason.
    OverrideChosen,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WebhookReceived => "webhook_received",
            Kind::DuplicateSkipped => "duplicate_skipped",
            Kind::Fetched => "fetched",
            Kind::PayloadDisagreed => "payload_disagreed",
            Kind::StaleSkipped => "stale_skipped",
            Kind::Matched => "matched",
            Kind::Created => "created",
            Kind::Updated => "updated",
            Kind::NoChange => "no_change",
            Kind::WrittenBack => "written_back",
            Kind::WriteBackDeferred => "write_back_deferred",
            Kind::Skipped => "skipped",
            Kind::ConflictOpened => "conflict_opened",
            Kind::RetryScheduled => "retry_scheduled",
            Kind::DeadLettered => "dead_lettered",
            Kind::SourceDeleted => "source_deleted",
            Kind::Parked => "parked",
            Kind::Classified => "classified",
            Kind::Decided => "decided",
            Kind::Resolved => "resolved",
            Kind::InDoubtResolved => "in_doubt_resolved",
            Kind::OverrideChosen => "override_chosen",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One history entry, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The kind of step.
    pub kind: Kind,
    /// One plain-language line an operator can read.
    pub summary: String,
    /// The facts behind the summary, for tools.
    pub detail: Value,
}

fn entry(kind: Kind, summary: String, detail: Value) -> Entry {
    Entry {
        kind,
        summary,
        detail,
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Null => "nothing".to_owned(),
        other => other.to_string(),
    }
}

/// Milliseconds as a short human duration: `250 ms`, `4 s`, `2 min`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} min", ms / 60_000)
    }
}

/// A time zone for rendering times to people: an IANA name (`Asia/Tokyo`), `UTC` by
/// default.
pub fn time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.trim().parse::<chrono_tz::Tz>().map_err(|_| {
        format!("{name:?} is not an IANA time zone (e.g. UTC, Asia/Tokyo, Europe/Berlin)")
    })
}

/// `at` as a person reads it in `tz`, to the second, with the zone's offset at that
/// moment: `2026-11-30T21:31:45+09:00`, or `…Z` in UTC.
pub fn local_time(at: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    at.with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod time_tests;
