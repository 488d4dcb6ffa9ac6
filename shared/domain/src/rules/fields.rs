//! A rule's mapped fields: source and target, the declared transforms, and who owns
//! each field and what decides its concurrent changes. What a transform does is in the
//! `mapping` module.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RuleSpec;

/// One mapped field. Its canonical name is the target field name; values are kept in
/// the target's form (after `transforms`), and `reverse` turns them back into the
/// source's form when they flow back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// The source field code (kintone field codes may be non-ASCII).
    pub source: String,
    /// The target field name.
    pub target: String,
    /// Transforms applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
    /// When true, an empty or missing value is a data-quality problem: nothing is
    /// written and a conflict is opened.
    #[serde(default)]
    pub required: bool,
    /// Who may change the field: the rule's source system, its target system, or
    /// `shared` (default: the source system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// What decides a concurrent change (default: `local_wins` for a source-owned
    /// field, `external_wins` for a target-owned one, `latest_valid_change` for a
    /// shared one). `local_wins` needs the source as owner, `external_wins` the target,
    /// the others `shared`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::authority::Strategy>,
    /// What a valid value is (for `latest_valid_change`, and for every change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<crate::authority::Validation>,
    /// How `merge` combines concurrent changes (default `union`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<crate::authority::MergeKind>,
    /// Transforms from the target's form back to the source's, for values that flow
    /// back (e.g. a `map` from `closed` to `完了`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverse: Vec<Transform>,
}

/// A declared transform of a field value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// Trim white space around text.
    Trim,
    /// Lower-case text.
    Lowercase,
    /// Upper-case text.
    Uppercase,
    /// Text to a JSON number (kintone sends numbers as strings); empty text becomes
    /// null.
    ToNumber,
    /// A number or boolean to text.
    ToText,
    /// Put a prefix before text.
    Prefix(String),
    /// Remove a prefix from text when present.
    StripPrefix(String),
    /// Replace a value by the table's entry for it; values not in the table are kept
    /// unless `default` is given.
    Map {
        /// From (as text) → to.
        table: BTreeMap<String, serde_json::Value>,
        /// The value for anything not in the table.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<serde_json::Value>,
    },
    /// Use this value when the value is empty or missing.
    Default(serde_json::Value),
    /// Join a list into text with a separator.
    Join(String),
    /// Split text into a list on a separator (empty parts dropped, parts trimmed).
    Split(String),
}

impl FieldMapping {
    /// The owner, resolved against the rule.
    pub fn owner_of(&self, rule: &RuleSpec) -> crate::authority::Owner {
        match self.owner.as_deref() {
            Some("shared") => crate::authority::Owner::Shared,
            Some(system) => crate::authority::Owner::System(system.to_owned()),
            None => crate::authority::Owner::System(rule.source.system.clone()),
        }
    }

    /// The strategy, resolved against the rule.
    pub fn strategy_of(&self, rule: &RuleSpec) -> crate::authority::Strategy {
        use crate::authority::{Owner, Strategy};
        self.strategy.unwrap_or(match self.owner_of(rule) {
            Owner::Shared => Strategy::LatestValidChange,
            Owner::System(s) if s == rule.target.system => Strategy::ExternalWins,
            Owner::System(_) => Strategy::LocalWins,
        })
    }
}
