//! History entries for what arrived and what was read: a webhook, a repair command or
//! an imported row taken for a rule, a duplicate delivery, the canonical record fetched,
//! a payload that disagreed with it, a revision already synced.

use serde_json::{Value, json};

use super::{Entry, Kind, entry, show};

/// Constructors for what arrived and what was read.
impl Entry {
    /// A webhook of `event_type` from `system` was taken for this rule.
    pub fn webhook_received(system: &str, event_type: &str, event_id: &str, attempt: u32) -> Entry {
        let again = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        // Commands that are not webhooks say what they are.
        let what = match (system, event_type) {
            ("operator", "resolution") => "an operator's resolution received".to_owned(),
            (_, "recordsync.rehydrate") => format!("rehydration of this {system} record asked"),
            (_, "resync") => format!("a resync found this {system} record changed"),
            (_, "repair") => format!("a reconcile asked to repair this {system} record"),
            _ => format!("{system} webhook {event_type} received"),
        };
        entry(
            Kind::WebhookReceived,
            format!("{what}{again}"),
            json!({"system": system, "event_type": event_type, "event_id": event_id, "attempt": attempt}),
        )
    }

    /// A repair command from a reconcile run, with what the run found.
    pub fn repair_asked(system: &str, reason: &str, event_id: &str, attempt: u32) -> Entry {
        let mut e = Entry::webhook_received(system, "repair", event_id, attempt);
        e.summary = format!("{}: {reason}", e.summary);
        e.detail["reason"] = json!(reason);
        e
    }

    /// A row of a partner file, imported as the record of a `file` source.
    pub fn imported(system: &str, file: &str, line: u64, event_id: &str, attempt: u32) -> Entry {
        let mut e = Entry::webhook_received(system, "import", event_id, attempt);
        e.summary = format!(
            "imported from {system}'s file {file}, line {line}{}",
            if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            }
        );
        e.detail["file"] = json!(file);
        e.detail["line"] = json!(line);
        e
    }

    /// A delivery of an already processed event.
    pub fn duplicate_skipped(event_id: &str) -> Entry {
        entry(
            Kind::DuplicateSkipped,
            format!("event {event_id} was already processed; this delivery was skipped"),
            json!({"event_id": event_id}),
        )
    }

    /// The canonical record was fetched.
    pub fn fetched(system: &str, revision: Option<i64>) -> Entry {
        let rev = revision
            .map(|r| format!(" at revision {r}"))
            .unwrap_or_default();
        entry(
            Kind::Fetched,
            format!("fetched the record from {system}{rev}"),
            json!({"system": system, "revision": revision}),
        )
    }

    /// The payload said one thing, the source another.
    pub fn payload_disagreed(field: &str, payload: &Value, canonical: &Value) -> Entry {
        entry(
            Kind::PayloadDisagreed,
            format!(
                "webhook payload carried {} for {field}, the source says {} — kept the source's value",
                show(payload),
                show(canonical)
            ),
            json!({"field": field, "payload": payload, "canonical": canonical}),
        )
    }

    /// Revision `current` was already synced at `synced`.
    pub fn stale_skipped(current: i64, synced: i64) -> Entry {
        let why = if current == synced {
            format!("revision {current} was already synced")
        } else {
            format!("revision {current} is older than revision {synced}, which was already synced")
        };
        entry(
            Kind::StaleSkipped,
            format!("{why}; nothing written"),
            json!({"revision": current, "synced_revision": synced}),
        )
    }
}
