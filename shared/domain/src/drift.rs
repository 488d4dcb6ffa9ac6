//! Schema drift: what the rules rely on in one app or entity of one system, compared
//! with the schema the system shows now and with the last schema that showed no drift
//! (the baseline). A field renamed or removed, a type changed, an option the rules
//! read or write gone, a field made required that no rule writes: each is named with
//! the rule and what the rule does with the field, before the rule writes wrong data.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rules::{OnMissing, SyncRules, Transform};

/// One field as the system describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FieldShape {
    /// The system's type (kintone: `SINGLE_LINE_TEXT`, `DROP_DOWN`, …; a rest sample:
    /// the JSON kind of the value, `string`, `number`, …).
    #[serde(rename = "type")]
    pub field_type: String,
    /// The allowed values of a choice field (kintone `DROP_DOWN`, `RADIO_BUTTON`,
    /// `CHECK_BOX`, `MULTI_SELECT`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Whether a create must give it a value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// A schema: field code → shape.
pub type Schema = BTreeMap<String, FieldShape>;

/// What a rule does with a field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "does", content = "with", rename_all = "snake_case")]
pub enum Role {
    /// Reads it and maps it to this target field.
    MapsFrom(String),
    /// Writes into it what this source field holds.
    MapsTo(String),
    /// Reads the lookup value from it.
    IdentitySource,
    /// Searches it for the lookup value (and writes it on a create).
    IdentityTarget,
    /// Writes the target record's id into it.
    WriteBack,
    /// Reads the update time from it (resync).
    UpdatedTime,
}

impl Role {
    fn describe(&self) -> String {
        match self {
            Role::MapsFrom(target) => format!("maps it to {target}"),
            Role::MapsTo(source) => format!("writes {source} into it"),
            Role::IdentitySource => "reads the lookup value from it".to_owned(),
            Role::IdentityTarget => "searches it for the lookup value".to_owned(),
            Role::WriteBack => "writes the target's id back into it".to_owned(),
            Role::UpdatedTime => "reads the update time from it to resync".to_owned(),
        }
    }
}

/// One field one rule relies on, and the option values it reads and writes there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reliance {
    /// The rule.
    pub rule: String,
    /// The field code.
    pub field: String,
    /// What the rule does with it.
    #[serde(flatten)]
    pub role: Role,
    /// Values the rule's `map` tables expect to read from it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub reads: BTreeSet<String>,
    /// Values the rule's `map` tables write into it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub writes: BTreeSet<String>,
}

fn table_keys(transforms: &[Transform]) -> BTreeSet<String> {
    transforms
        .iter()
        .filter_map(|t| match t {
            Transform::Map { table, .. } => Some(table.keys().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn table_values(transforms: &[Transform]) -> BTreeSet<String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    transforms
        .iter()
        .filter_map(|t| match t {
            Transform::Map { table, default } => {
                Some(table.values().chain(default).filter_map(text))
            }
            _ => None,
        })
        .flatten()
        .collect()
}

/// What every rule relies on in `app` of `system`: the source side of the rules whose
/// source it is, the target side of those whose target it is.
pub fn reliances(rules: &SyncRules, system: &str, app: &str) -> Vec<Reliance> {
    let mut out = Vec::new();
    let mut push = |rule: &str, field: &str, role: Role, reads, writes| {
        out.push(Reliance {
            rule: rule.to_owned(),
            field: field.to_owned(),
            role,
            reads,
            writes,
        })
    };
    for rule in &rules.rules {
        let two_way = rule.both_ways();
        if rule.source.system == system && rule.source.app == app {
            push(
                &rule.name,
                &rule.identity.source_field,
                Role::IdentitySource,
                BTreeSet::new(),
                BTreeSet::new(),
            );
            for f in &rule.fields {
                let writes = if two_way {
                    table_values(&f.reverse)
                } else {
                    BTreeSet::new()
                };
                push(
                    &rule.name,
                    &f.source,
                    Role::MapsFrom(f.target.clone()),
                    table_keys(&f.transforms),
                    writes,
                );
            }
            if let Some(wb) = &rule.write_back {
                push(
                    &rule.name,
                    &wb.field,
                    Role::WriteBack,
                    BTreeSet::new(),
                    BTreeSet::new(),
                );
            }
            if let Some(resync) = &rule.resync {
                push(
                    &rule.name,
                    &resync.updated_field,
                    Role::UpdatedTime,
                    BTreeSet::new(),
                    BTreeSet::new(),
                );
            }
        }
        if rule.target.system == system && rule.target.entity == app {
            push(
                &rule.name,
                &rule.identity.target_field,
                Role::IdentityTarget,
                BTreeSet::new(),
                BTreeSet::new(),
            );
            for f in &rule.fields {
                let reads = if two_way {
                    table_keys(&f.reverse)
                } else {
                    BTreeSet::new()
                };
                push(
                    &rule.name,
                    &f.target,
                    Role::MapsTo(f.source.clone()),
                    reads,
                    table_values(&f.transforms),
                );
            }
        }
    }
    out
}

/// The rules that create records in `app` of `system`, with the fields each writes on
/// a create.
pub fn creators(rules: &SyncRules, system: &str, app: &str) -> Vec<(String, BTreeSet<String>)> {
    rules
        .rules
        .iter()
        .filter(|r| {
            r.target.system == system && r.target.entity == app && r.on_missing == OnMissing::Create
        })
        .map(|r| {
            let written = r
                .fields
                .iter()
                .map(|f| f.target.clone())
                .chain([r.identity.target_field.clone()])
                .collect();
            (r.name.clone(), written)
        })
        .collect()
}

/// How bad a drift is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The rule would read nothing or write wrong or refused data: a rule configured to
    /// pause on drift is paused.
    Breaking,
    /// Worth a look; the rule still works.
    Warning,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DriftKind {
    /// The field is not in the schema any more; `renamed_to` names the fields that
    /// appeared since the baseline with the same type.
    Missing {
        /// Likely new names.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        renamed_to: Vec<String>,
    },
    /// The field's type differs from the baseline's.
    TypeChanged {
        /// The baseline's type.
        from: String,
        /// The type now.
        to: String,
    },
    /// A value the rule writes into the field is no longer one of its options: the
    /// system will refuse those writes.
    WrittenOptionGone {
        /// The value.
        option: String,
    },
    /// A value the rule's `map` expects to read is no longer one of the field's
    /// options: that entry of the table matches nothing any more.
    ReadOptionGone {
        /// The value.
        option: String,
    },
    /// An option the baseline had is gone (records may still hold it).
    OptionRemoved {
        /// The value.
        option: String,
    },
    /// A create must now give the field a value and the rule does not write it: the
    /// system will refuse the rule's creates.
    RequiredNotWritten,
}

/// One drift: a rule, a field, what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The rule that relies on the field.
    pub rule: String,
    /// The field code.
    pub field: String,
    /// What the rule does with it (none for a required field it does not write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// What changed.
    #[serde(flatten)]
    pub kind: DriftKind,
    /// How bad it is.
    pub severity: Severity,
}

impl Drift {
    /// One line in plain language.
    pub fn summary(&self) -> String {
        let why = self
            .role
            .as_ref()
            .map(|r| format!(" (rule {} {})", self.rule, r.describe()))
            .unwrap_or_default();
        let field = &self.field;
        match &self.kind {
            DriftKind::Missing { renamed_to } if renamed_to.is_empty() => {
                format!("field {field}{why} is gone: renamed or removed")
            }
            DriftKind::Missing { renamed_to } => format!(
                "field {field}{why} is gone; renamed to {}?",
                renamed_to.join(" or ")
            ),
            DriftKind::TypeChanged { from, to } => {
                format!("field {field}{why} changed type from {from} to {to}")
            }
            DriftKind::WrittenOptionGone { option } => format!(
                "field {field}{why} no longer offers \"{option}\", which the rule writes: those writes will be refused"
            ),
            DriftKind::ReadOptionGone { option } => format!(
                "field {field}{why} no longer offers \"{option}\", which the rule's map expects to read"
            ),
            DriftKind::OptionRemoved { option } => {
                format!("field {field}{why} no longer offers \"{option}\"")
            }
            DriftKind::RequiredNotWritten => format!(
                "field {field} is now required and rule {} does not write it: its creates will be refused",
                self.rule
            ),
        }
    }
}

/// Whether a code is always present whatever the schema says (kintone's `$id` and
/// `$revision`).
fn always_present(code: &str) -> bool {
    code.starts_with('$')
}

/// Compares what the rules rely on with the schema now and, where there is one, the
/// baseline (the last schema that showed no drift). Each drift once per rule, field
/// and kind, in a stable order.
pub fn compare(
    reliances: &[Reliance],
    creators: &[(String, BTreeSet<String>)],
    baseline: Option<&Schema>,
    now: &Schema,
) -> Vec<Drift> {
    let mut out: Vec<Drift> = Vec::new();
    let mut add = |rule: &str, field: &str, role: Option<&Role>, kind, severity| {
        let drift = Drift {
            rule: rule.to_owned(),
            field: field.to_owned(),
            role: role.cloned(),
            kind,
            severity,
        };
        // A field relied on twice by one rule (read and written) drifts once.
        if !out
            .iter()
            .any(|d| d.rule == drift.rule && d.field == drift.field && d.kind == drift.kind)
        {
            out.push(drift);
        }
    };
    for r in reliances {
        if always_present(&r.field) {
            continue;
        }
        let before = baseline.and_then(|b| b.get(&r.field));
        let Some(shape) = now.get(&r.field) else {
            let renamed_to = match (baseline, before) {
                (Some(b), Some(old)) => now
                    .iter()
                    .filter(|(code, s)| {
                        !b.contains_key(*code) && !types_differ(&s.field_type, &old.field_type)
                    })
                    .map(|(code, _)| code.clone())
                    .collect(),
                _ => Vec::new(),
            };
            add(
                &r.rule,
                &r.field,
                Some(&r.role),
                DriftKind::Missing { renamed_to },
                Severity::Breaking,
            );
            continue;
        };
        if let Some(old) = before
            && types_differ(&old.field_type, &shape.field_type)
        {
            add(
                &r.rule,
                &r.field,
                Some(&r.role),
                DriftKind::TypeChanged {
                    from: old.field_type.clone(),
                    to: shape.field_type.clone(),
                },
                Severity::Breaking,
            );
        }
        if shape.options.is_empty() {
            continue;
        }
        let offered = |o: &String| shape.options.contains(o);
        for option in r.writes.iter().filter(|o| !offered(o)) {
            add(
                &r.rule,
                &r.field,
                Some(&r.role),
                DriftKind::WrittenOptionGone {
                    option: option.clone(),
                },
                Severity::Breaking,
            );
        }
        for option in r.reads.iter().filter(|o| !offered(o)) {
            add(
                &r.rule,
                &r.field,
                Some(&r.role),
                DriftKind::ReadOptionGone {
                    option: option.clone(),
                },
                Severity::Warning,
            );
        }
        if let Some(old) = before {
            for option in old.options.iter().filter(|o| !offered(o)) {
                if r.writes.contains(option) || r.reads.contains(option) {
                    continue;
                }
                add(
                    &r.rule,
                    &r.field,
                    Some(&r.role),
                    DriftKind::OptionRemoved {
                        option: option.clone(),
                    },
                    Severity::Warning,
                );
            }
        }
    }
    for (rule, written) in creators {
        for (code, shape) in now {
            if shape.required && !written.contains(code) {
                add(
                    rule,
                    code,
                    None,
                    DriftKind::RequiredNotWritten,
                    Severity::Breaking,
                );
            }
        }
    }
    out.sort_by(|a, b| {
        (a.severity, &a.rule, &a.field, a.summary()).cmp(&(
            b.severity,
            &b.rule,
            &b.field,
            b.summary(),
        ))
    });
    out
}

/// The shape of a sample record's fields, for a system that describes no schema: each
/// top-level key with the JSON kind of its value. A null says nothing about the type.
pub fn sample_schema(fields: &crate::record::Fields) -> Schema {
    fields
        .iter()
        .map(|(code, value)| {
            let kind = match value {
                Value::Null => "any",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            (
                code.clone(),
                FieldShape {
                    field_type: kind.to_owned(),
                    ..FieldShape::default()
                },
            )
        })
        .collect()
}

/// Whether two types differ in a way that matters (`any`, a sample's null, matches
/// every type).
fn types_differ(a: &str, b: &str) -> bool {
    a != b && a != "any" && b != "any"
}

#[cfg(test)]
mod tests;
