//! The request log: every request to a simulated system, including those answered by a fault or
//! the rate limiter, in the order in which their responses were produced.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::Value;

use crate::state::System;

/// How many entries are kept; the oldest are forgotten first.
const MAX_ENTRIES: usize = 100_000;

/// One logged request.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LogEntry {
    /// The sequence number, starting at 1 and never reused, even after the log is cleared.
    pub(crate) seq: u64,
    /// When the request arrived, as RFC 3339 with milliseconds.
    pub(crate) at: String,
    pub(crate) system: System,
    pub(crate) method: String,
    pub(crate) path: String,
    /// The raw (still percent-encoded) query string, or null when there is none.
    pub(crate) query: Option<String>,
    pub(crate) status: u16,
    pub(crate) idempotency_key: Option<String>,
    /// The request body as JSON, a string when it is not JSON, or null when it is empty.
    pub(crate) body: Value,
    /// The id of the fault that produced the response, if any.
    pub(crate) fault_id: Option<String>,
}

#[derive(Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<LogEntry>,
    last_seq: u64,
}

impl RequestLog {
    /// Appends an entry, assigning its sequence number.
    pub(crate) fn push(&mut self, mut entry: LogEntry) {
        self.last_seq += 1;
        entry.seq = self.last_seq;
        self.entries.push_back(entry);
        while self.entries.len() > MAX_ENTRIES {
            self.entries.pop_front();
        }
    }

    /// Returns the entries of `system` (or of both) whose sequence number is above `since_seq`.
    pub(crate) fn entries(&self, system: Option<System>, since_seq: Option<u64>) -> Vec<LogEntry> {
        self.entries
            .iter()
            .filter(|entry| system.is_none_or(|system| entry.system == system))
            .filter(|entry| since_seq.is_none_or(|since| entry.seq > since))
            .cloned()
            .collect()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Renders a request body for the log.
pub(crate) fn body_for_log(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
