//! Partner files: each row of a file is the record as a `file` system holds it. Before
//! anything reaches a target, every row is checked as a webhook's record would be: its
//! columns are fields of the rule's source, it has a lookup value, its values map
//! under the rule (transforms, required fields) and pass each field's validation. A
//! valid row becomes the record whose id is its lookup value; when a file holds one
//! record twice, its last row is the record's latest state.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::mapping::map_fields;
use crate::record::{Fields, is_empty, value_text};
use crate::rules::RuleSpec;

/// One row of a file: where it is and its values by column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its line in the file (1-based; a CSV header is line 1).
    pub line: u64,
    /// Its values, by column (the source's field codes).
    pub values: Fields,
}

/// Why a row, or the whole file, cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The line (0: the file as a whole, such as its header).
    pub line: u64,
    /// The column.
    pub column: String,
    /// Why, in plain words.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "column {}: {}", self.column, self.reason)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.reason
            )
        }
    }
}

/// The columns a file for `rule` may have: its mapped source fields and its lookup
/// field.
pub fn columns(rule: &RuleSpec) -> BTreeSet<String> {
    rule.fields
        .iter()
        .map(|f| f.source.clone())
        .chain([rule.identity.source_field.clone()])
        .collect()
}

/// The columns the rule does not know, each a problem of the whole file: a misspelt
/// column would otherwise be dropped from every row without a word.
pub fn unknown_columns<'a>(
    rule: &RuleSpec,
    found: impl IntoIterator<Item = &'a String>,
) -> Vec<Problem> {
    let known = columns(rule);
    let list = known.iter().cloned().collect::<Vec<_>>().join(", ");
    found
        .into_iter()
        .filter(|c| !known.contains(*c))
        .map(|c| Problem {
            line: 0,
            column: c.clone(),
            reason: format!("is not a field of rule {} (its columns: {list})", rule.name),
        })
        .collect()
}

/// Checks one row: its record id (the lookup value), or every problem it has.
pub fn check_row(rule: &RuleSpec, row: &Row) -> Result<String, Vec<Problem>> {
    let problem = |column: &str, reason: String| Problem {
        line: row.line,
        column: column.to_owned(),
        reason,
    };
    let mut problems = vec![];
    let key = &rule.identity.source_field;
    let id = match row.values.get(key) {
        Some(v) if !is_empty(v) => match value_text(v) {
            Some(text) => Some(text.trim().to_owned()),
            None => {
                problems.push(problem(
                    key,
                    format!("the lookup value must be text or a number, not {v}"),
                ));
                None
            }
        },
        _ => {
            problems.push(problem(
                key,
                "is empty: the lookup value identifies the record".to_owned(),
            ));
            None
        }
    };
    match map_fields(&rule.fields, &row.values) {
        Err(mapping) => problems.extend(
            mapping
                .into_iter()
                .map(|p| problem(&p.source_field, p.problem)),
        ),
        Ok(mapped) => {
            for f in &rule.fields {
                let (Some(v), Some(validation)) = (mapped.get(&f.target), &f.validate) else {
                    continue;
                };
                if let Some(why) = validation.check(v) {
                    problems.push(problem(&f.source, why));
                }
            }
        }
    }
    match id {
        Some(id) if problems.is_empty() => Ok(id),
        _ => Err(problems),
    }
}

/// What a file comes to: the records to import, in file order, and what is left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// `(line, record id, values)` of each record's last valid row, in line order.
    pub records: Vec<(u64, String, Fields)>,
    /// The rows that cannot be imported, and why.
    pub invalid: Vec<Problem>,
    /// `(line, later line)`: a valid row replaced by a later row of the same record.
    pub superseded: Vec<(u64, u64)>,
}

/// Checks every row and keeps each record's last valid row.
pub fn plan(rule: &RuleSpec, rows: &[Row]) -> Plan {
    let mut out = Plan::default();
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    let mut valid: Vec<(u64, String, &Fields)> = vec![];
    for row in rows {
        match check_row(rule, row) {
            Ok(id) => {
                if let Some(&i) = last.get(&id) {
                    out.superseded.push((valid[i].0, row.line));
                }
                last.insert(id.clone(), valid.len());
                valid.push((row.line, id, &row.values));
            }
            Err(problems) => out.invalid.extend(problems),
        }
    }
    let kept: BTreeSet<usize> = last.into_values().collect();
    out.records = valid
        .into_iter()
        .enumerate()
        .filter(|(i, _)| kept.contains(i))
        .map(|(_, (line, id, values))| (line, id, values.clone()))
        .collect();
    out
}

#[cfg(test)]
mod tests;
