//! A record as the domain sees it: an id, a revision where the system has one, and
//! flat fields of JSON values. Connectors translate each system's shape into this one
//! (kintone's `{"type", "value"}` wrappers are unwrapped to the value).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Field values by field code or name.
pub type Fields = Map<String, Value>;

/// A record read from a source system: the canonical state, never a webhook payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The record id in the source system.
    pub id: String,
    /// The source's revision counter (kintone `$revision`), when it has one.
    pub revision: Option<i64>,
    /// When the system says the record last changed, when it says.
    #[serde(default)]
    pub changed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The fields.
    pub fields: Fields,
}

impl SourceRecord {
    /// The value of a field as text: strings as they are, numbers printed, anything
    /// else (missing, null, arrays, objects) as `None`.
    pub fn text(&self, field: &str) -> Option<String> {
        value_text(self.fields.get(field)?)
    }
}

/// A record of a target system, as found by a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// The record id in the target system.
    pub id: String,
    /// The fields.
    pub fields: Fields,
}

/// A JSON value as text, for identifiers: strings and numbers only.
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// True when a value counts as empty: null, an empty or blank string, or an empty
/// array.
pub fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_reads_strings_and_numbers_only() {
        let mut fields = Fields::new();
        fields.insert("a".into(), json!("WO-1"));
        fields.insert("b".into(), json!(12));
        fields.insert("c".into(), json!(["x"]));
        fields.insert("d".into(), Value::Null);
        let r = SourceRecord {
            id: "1".into(),
            revision: Some(1),
            changed_at: None,
            fields,
        };
        assert_eq!(r.text("a").as_deref(), Some("WO-1"));
        assert_eq!(r.text("b").as_deref(), Some("12"));
        assert_eq!(r.text("c"), None);
        assert_eq!(r.text("d"), None);
        assert_eq!(r.text("missing"), None);
    }

    #[test]
    fn emptiness() {
        assert!(is_empty(&Value::Null));
        assert!(is_empty(&json!("  ")));
        assert!(is_empty(&json!([])));
        assert!(!is_empty(&json!("x")));
        assert!(!is_empty(&json!(0)));
        assert!(!is_empty(&json!(false)));
    }
}
