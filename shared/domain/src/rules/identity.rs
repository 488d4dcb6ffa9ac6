//! How a rule matches a source record to a target record: the lookup fields and the
//! declared spellings of the lookup value. What a variant does is in the `identity`
//! module.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a source record is matched to a target record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// The source field holding the lookup value, e.g. `work_order_no`.
    pub source_field: String,
    /// The target field searched for it, e.g. `external_id`. New target records get the
    /// lookup value in this field.
    pub target_field: String,
    /// Other spellings of the lookup value to try, in order, when the value itself
    /// matches nothing (e.g. `WO-1234` → `1234`).
    #[serde(default)]
    pub variants: Vec<Variant>,
}

/// A declared spelling variant of a lookup value. Each variant is applied to the
/// original lookup value, never to another variant's output; a `chain` applies its
/// steps one after the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Variant {
    /// Remove a prefix when present: `WO-1234` → `1234` for `"WO-"`.
    StripPrefix(String),
    /// Add a prefix when absent: `1234` → `WO-1234` for `"WO-"`.
    AddPrefix(String),
    /// Remove a suffix when present.
    StripSuffix(String),
    /// Remove leading zeros: `001234` → `1234` (a value of only zeros becomes `0`).
    StripLeadingZeros,
    /// Keep only ASCII digits: `WO-12/34` → `1234`.
    DigitsOnly,
    /// Lower-case the value.
    Lowercase,
    /// Upper-case the value.
    Uppercase,
    /// Left-pad with zeros to a width: `1234` → `001234` for 6.
    ZeroPad(usize),
    /// Remove a prefix whatever its case: `wo-1234` → `1234` for `"WO-"`.
    StripPrefixIgnoreCase(String),
    /// Several variants applied one after the other, each to the previous output:
    /// `{"chain": [{"strip_prefix_ignore_case": "WO-"}, "strip_leading_zeros"]}` turns
    /// `wo-000123` into `123`. It applies only if every step does.
    Chain(Vec<Variant>),
}
