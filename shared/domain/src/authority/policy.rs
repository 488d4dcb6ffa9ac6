//! The declared policy of a field: its owner, the strategy that decides a concurrent
//! change, what a valid value is, and how `merge` combines values.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::is_empty;

/// Who may change a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// Only this system.
    System(String),
    /// Every system; the strategy decides concurrent changes.
    Shared,
}

/// How a concurrent change is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The owner (the rule's source) wins.
    LocalWins,
    /// The owner (the rule's target) wins.
    ExternalWins,
    /// The latest valid change wins.
    LatestValidChange,
    /// Concurrent changes are combined.
    Merge,
    /// A person decides.
    ManualReview,
}

impl Strategy {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LocalWins => "local_wins",
            Strategy::ExternalWins => "external_wins",
            Strategy::LatestValidChange => "latest_valid_change",
            Strategy::Merge => "merge",
            Strategy::ManualReview => "manual_review",
        }
    }
}

/// How `merge` combines values.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MergeKind {
    /// Lists (kintone CHECK_BOX, MULTI_SELECT, tags): both sides' additions and
    /// removals.
    #[default]
    Union,
    /// Numbers: both sides' deltas are added.
    Delta,
}

/// What a valid value is, for `latest_valid_change` and every accepted change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// The value may not be empty.
    #[serde(default)]
    pub required: bool,
    /// Text must match this regular expression (whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The value must be one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_of: Vec<Value>,
}

impl Validation {
    /// Why the declaration itself is wrong (a pattern that does not compile).
    pub fn problem(&self) -> Option<String> {
        let p = self.pattern.as_ref()?;
        regex::Regex::new(p)
            .err()
            .map(|e| format!("the pattern is not a regular expression: {e}"))
    }

    /// Why `value` is not valid, if it is not.
    pub fn check(&self, value: &Value) -> Option<String> {
        if is_empty(value) {
            return self.required.then(|| "is required".to_owned());
        }
        if let Some(p) = &self.pattern {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match regex::Regex::new(&format!("^(?:{p})$")) {
                Ok(re) if !re.is_match(&text) => {
                    return Some(format!("\"{text}\" does not match {p}"));
                }
                Err(e) => return Some(format!("the pattern {p} is not a regular expression: {e}")),
                _ => {}
            }
        }
        if !self.one_of.is_empty() && !self.one_of.contains(value) {
            return Some(format!("{value} is not one of the allowed values"));
        }
        None
    }
}

/// The policy of one canonical field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPolicy {
    /// The canonical field (the target's field name).
    pub field: String,
    /// Who may change it.
    pub owner: Owner,
    /// What decides a concurrent change.
    pub strategy: Strategy,
    /// What a valid value is.
    pub validation: Validation,
    /// How `merge` combines.
    pub merge: MergeKind,
}
