//! The rows the store reads from its links, history, conflicts and outbound operations,
//! each decoded by name with [`sqlx::FromRow`]: a column missing or of the wrong type is
//! an error, never a default.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A history row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct HistoryRow {
    /// Its position.
    pub id: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The rule.
    pub rule: String,
    /// The source record.
    pub source_record_id: String,
    /// The event it belongs to.
    pub event_id: Option<String>,
    /// The kind.
    pub kind: String,
    /// The plain-language summary.
    pub summary: String,
    /// The facts.
    pub detail: Value,
}

/// How many history entries of one kind exist ([`crate::Store::history_counts`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct HistoryCount {
    /// The kind of entry (`received`, `decided`, …).
    pub kind: String,
    /// How many entries of that kind.
    pub count: i64,
}

/// A conflict row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct ConflictRow {
    /// Its id.
    pub id: i64,
    /// The rule.
    pub rule: String,
    /// The source record.
    pub source_record_id: String,
    /// The kind: `several_matches`, `no_match`, `no_lookup_value`, `invalid`,
    /// `target_rejected`.
    pub kind: String,
    /// The plain-language summary.
    pub summary: String,
    /// The facts (candidates, problems).
    pub detail: Value,
    /// `open`, `resolved` or `dismissed`.
    pub status: String,
    /// How many times it was seen while open.
    pub occurrences: i32,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
}

/// A link row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct LinkRow {
    /// The rule.
    pub rule: String,
    /// The source record.
    pub source_record_id: String,
    /// The target record.
    pub target_id: Option<String>,
    /// How it was matched.
    pub matched_by: Option<Value>,
    /// The last source revision synced.
    pub source_revision: Option<i64>,
    /// The values last written.
    pub sent: Value,
    /// The field-authority state.
    pub state: Option<Value>,
}

/// A record an operator may mean by an id ([`crate::Store::find_records`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct FoundRecord {
    /// The rule it is under.
    pub rule: String,
    /// The source record.
    pub source_record_id: String,
    /// The target record it is linked to; `None` when it has a history only, or no
    /// target yet.
    pub target_id: Option<String>,
}

/// One outbound operation of a record, as the record page shows it
/// ([`crate::Store::ops`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct OutboundOpRow {
    /// The system it went to.
    pub system: String,
    /// `pending`, `sent`, `confirmed` or `failed`.
    pub status: String,
    /// The canonical fields and values it sent.
    pub fields: Value,
}
