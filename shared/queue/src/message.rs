//! The queue message: versioned and tagged, so that a fleet running two versions
//! during a deploy can tell what it reads. It is its own type: neither a domain type
//! nor a database row.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every message on the work queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum QueueMessage {
    /// Version 1: a change announced by a system.
    #[serde(rename = "1")]
    V1(EventV1),
}

/// A change announced by a system's webhook (or found by a resync).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventV1 {
    /// The event id: the webhook's own id (`webhook-id`, kintone's `id`), so that
    /// repeated deliveries of one webhook share it.
    pub event_id: String,
    /// The system that sent it.
    pub system: String,
    /// The app or entity it concerns.
    pub app: String,
    /// The record it concerns, when the webhook names one.
    pub record_id: String,
    /// The system's event type, e.g. `UPDATE_RECORD`.
    pub event_type: String,
    /// When ingest accepted it.
    pub received_at: DateTime<Utc>,
    /// Carried through logs and every later hop.
    pub correlation_id: String,
    /// The payload as received, kept for audit. It is a hint, never the truth.
    pub payload: Value,
}

/// A message that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("undecodable message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl QueueMessage {
    /// The message as JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a queue message serializes")
    }

    /// Reads a message.
    pub fn decode(bytes: &[u8]) -> Result<QueueMessage, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The event id.
    pub fn event_id(&self) -> &str {
        match self {
            QueueMessage::V1(e) => &e.event_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wire_format_is_tagged_and_stable() {
        let m = QueueMessage::V1(EventV1 {
            event_id: "e1".into(),
            system: "kintone".into(),
            app: "101".into(),
            record_id: "5".into(),
            event_type: "UPDATE_RECORD".into(),
            received_at: "2026-11-22T10:08:00Z".parse().unwrap(),
            correlation_id: "c1".into(),
            payload: json!({"a": 1}),
        });
        let v: Value = serde_json::from_slice(&m.encode()).unwrap();
        assert_eq!(v["version"], "1");
        assert_eq!(v["event_id"], "e1");
        assert_eq!(v["received_at"], "2026-11-22T10:08:00Z");
        assert_eq!(QueueMessage::decode(&m.encode()).unwrap(), m);
        assert!(QueueMessage::decode(br#"{"version":"9","event_id":"x"}"#).is_err());
        assert!(QueueMessage::decode(b"not json").is_err());
    }
}
