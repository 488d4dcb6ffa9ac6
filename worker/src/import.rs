//! Partner files: `worker import --rule R FILE` and `POST /import`. A rule whose source
//! is a `file` system takes its records from files (CSV with a header row, or JSON
//! Lines). Before anything reaches a target:
//!
//! - the columns are checked against the rule (`domain::import::unknown_columns`): a
//!   file with a column the rule does not know is refused whole;
//! - each row is checked as a webhook's record would be (`domain::import::plan`): a
//!   lookup value, values that map, validations. Invalid rows are reported with their
//!   line, column and reason, and none of them is queued;
//! - a record present twice is imported from its last row.
//!
//! Each valid record becomes an `Import` command through the step: identity,
//! ownership, limits, windows, history. Commands are queued in pages; a page is
//! recorded in `import_runs` (by the file's SHA-256) only after the broker confirmed
//! it, so an import that stops resumes after its last recorded page, and a command
//! queued twice has the same id (rule, file hash, line) and is processed once.

use std::time::Instant;

use domain::import::{Plan, Problem, Row, plan, unknown_columns};
use domain::record::Fields;
use domain::rules::SystemKind;
use queue::{Command, Names, Publisher};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::step::Processor;

/// Commands queued per recorded page.
pub const PAGE_SIZE: usize = 100;
/// The largest file taken, in bytes.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Why an import did not run.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The rule does not exist.
    #[error("no rule named \"{0}\"")]
    UnknownRule(String),
    /// The rule's source has an API: its records are read from there.
    #[error(
        "rule \"{rule}\" takes its records from {system}, which has an API: an import feeds a rule whose source is a `file` system"
    )]
    NotAFileSource {
        /// The rule.
        rule: String,
        /// Its source system.
        system: String,
    },
    /// The file as a whole cannot be read: nothing was queued.
    #[error("{file}: nothing was imported: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unreadable {
        /// The file.
        file: String,
        /// Why.
        problems: Vec<Problem>,
    },
    /// PostgreSQL failed (the import resumes from its last recorded page).
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The broker failed (the import resumes from its last recorded page).
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}

/// What an import found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// The stored import (none for a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    /// The rule.
    pub rule: String,
    /// The file's name.
    pub file: String,
    /// The file's SHA-256.
    pub sha256: String,
    /// Data rows read.
    pub rows: usize,
    /// Records the valid rows come to.
    pub records: usize,
    /// Every problem of every invalid row: line, column, reason.
    pub invalid: Vec<Problem>,
    /// Rows with at least one problem.
    pub invalid_rows: usize,
    /// `(line, later line)`: a row replaced by a later row of the same record.
    pub superseded: Vec<(u64, u64)>,
    /// Records queued by this run.
    pub queued: usize,
    /// Records an earlier run had queued already (a resumed import).
    pub resumed_from: usize,
    /// The file was imported in full before: nothing was queued.
    pub already_imported: bool,
    /// Only checked: nothing was queued or stored.
    pub dry_run: bool,
}

/// Progress while queueing.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Records queued so far (earlier runs included).
    pub done: usize,
    /// Records in all.
    pub total: usize,
    /// Records per second in this run.
    pub rate: f64,
    /// Seconds left at that rate.
    pub eta_seconds: Option<f64>,
}

/// A file read: the columns seen, the rows, and the lines that are not rows.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The columns, in the order first seen.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Row>,
    /// The lines that could not be read as rows, one problem each.
    pub unreadable: Vec<Problem>,
}

/// Reads a file's rows: CSV with a header row, or JSON Lines (by the name's extension,
/// `.jsonl` or `.ndjson`, or a first character `{`). Returns the columns seen and the
/// rows, or the problems that make the whole file unreadable; a row that cannot be read
/// is a problem of its line.
pub fn read(name: &str, bytes: &[u8]) -> Result<Parsed, Vec<Problem>> {
    let whole = |reason: String| {
        vec![Problem {
            line: 0,
            column: String::new(),
            reason,
        }]
    };
    if bytes.len() > MAX_FILE_BYTES {
        return Err(whole(format!(
            "the file has {} bytes; at most {MAX_FILE_BYTES} are taken: split it",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| whole(format!("the file is not UTF-8 text ({e})")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lower = name.to_ascii_lowercase();
    let json_lines = lower.ends_with(".jsonl")
        || lower.ends_with(".ndjson")
        || (!lower.ends_with(".csv") && text.trim_start().starts_with('{'));
    if json_lines {
        Ok(read_json_lines(text))
    } else {
        read_csv(text)
    }
}

fn read_json_lines(text: &str) -> Parsed {
    let mut columns: Vec<String> = vec![];
    let (mut rows, mut problems) = (vec![], vec![]);
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(values)) => {
                for k in values.keys() {
                    if !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
                rows.push(Row {
                    line: line_no,
                    values,
                });
            }
            Ok(other) => problems.push(Problem {
                line: line_no,
                column: String::new(),
                reason: format!("a line must be a JSON object, not {}", kind(&other)),
            }),
            Err(e) => problems.push(Problem {
                line: line_no,
                column: String::new(),
                reason: format!("not JSON: {e}"),
            }),
        }
    }
    Parsed {
        columns,
        rows,
        unreadable: problems,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn read_csv(text: &str) -> Result<Parsed, Vec<Problem>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| {
            vec![Problem {
                line: 1,
                column: String::new(),
                reason: format!("the header row cannot be read: {e}"),
            }]
        })?
        .iter()
        .map(|c| c.trim().to_owned())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let twice: Vec<Problem> = header
        .iter()
        .filter(|c| !seen.insert(c.as_str()))
        .map(|c| Problem {
            line: 1,
            column: c.clone(),
            reason: "appears twice in the header".into(),
        })
        .collect();
    if header.iter().all(String::is_empty) || !twice.is_empty() {
        let mut p = twice;
        if p.is_empty() {
            p.push(Problem {
                line: 1,
                column: String::new(),
                reason: "the file has no header row naming its columns".into(),
            });
        }
        return Err(p);
    }
    let (mut rows, mut problems) = (vec![], vec![]);
    for record in reader.records() {
        match record {
            Ok(r) => {
                let line = r.position().map_or(0, |p| line_at(text, p.byte()));
                if r.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                if r.len() != header.len() {
                    problems.push(Problem {
                        line,
                        column: String::new(),
                        reason: format!(
                            "has {} cells; the header names {} columns",
                            r.len(),
                            header.len()
                        ),
                    });
                    continue;
                }
                let values: Fields = header
                    .iter()
                    .zip(r.iter())
                    .map(|(c, v)| (c.clone(), Value::String(v.to_owned())))
                    .collect();
                rows.push(Row { line, values });
            }
            Err(e) => problems.push(Problem {
                line: e.position().map_or(0, |p| line_at(text, p.byte())),
                column: String::new(),
                reason: format!("cannot be read as CSV: {e}"),
            }),
        }
    }
    Ok(Parsed {
        columns: header,
        rows,
        unreadable: problems,
    })
}

/// The line a record starting at byte `at` is on: the csv reader's own line count
/// starts a record at the blank lines it skipped before it.
fn line_at(text: &str, at: u64) -> u64 {
    let at = usize::try_from(at).unwrap_or(usize::MAX).min(text.len());
    let mut line = 1 + text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64;
    let mut rest = &text[at..];
    while let Some(next) = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
    {
        line += 1;
        rest = next;
    }
    line
}

/// The id of the command for one record of a file: the same file under the same rule
/// queues the same ids, so a repeat is a duplicate for the step.
fn command_id(rule: &str, sha256: &str, line: u64) -> String {
    format!("import:{rule}:{}:{line}", &sha256[..16])
}

/// Checks a file and, unless `dry_run`, queues its valid records through `queue` as
/// commands, resuming an earlier import of the same content.
pub async fn import(
    processor: &Processor,
    queue: Option<(&Publisher, &Names)>,
    rule: &str,
    file: &str,
    bytes: &[u8],
    progress: impl Fn(Progress),
) -> Result<ImportReport, ImportError> {
    let spec = processor
        .rules
        .rule(rule)
        .ok_or_else(|| ImportError::UnknownRule(rule.to_owned()))?;
    let source = &spec.source.system;
    if processor.rules.systems.get(source).map(|s| s.kind) != Some(SystemKind::File) {
        return Err(ImportError::NotAFileSource {
            rule: rule.to_owned(),
            system: source.clone(),
        });
    }
    let unreadable = |problems| ImportError::Unreadable {
        file: file.to_owned(),
        problems,
    };
    let Parsed {
        columns,
        rows,
        unreadable: unread,
    } = read(file, bytes).map_err(unreadable)?;
    let unknown = unknown_columns(spec, &columns);
    if !unknown.is_empty() {
        return Err(unreadable(unknown));
    }
    let Plan {
        records,
        mut invalid,
        superseded,
    } = plan(spec, &rows);
    // Each line that could not be read as a row is one problem.
    let unread_lines = unread.len();
    invalid.extend(unread);
    invalid.sort_by_key(|p| p.line);
    let mut bad_lines: Vec<u64> = invalid.iter().map(|p| p.line).collect();
    bad_lines.dedup();
    let sha256 = format!("{:x}", Sha256::digest(bytes));
    let mut report = ImportReport {
        rule: rule.to_owned(),
        file: file.to_owned(),
        sha256: sha256.clone(),
        rows: rows.len() + unread_lines,
        records: records.len(),
        invalid_rows: bad_lines.len(),
        invalid,
        superseded,
        ..ImportReport::default()
    };
    let Some((publisher, names)) = queue else {
        report.dry_run = true;
        return Ok(report);
    };
    let summary = json!({
        "rows": report.rows,
        "invalid_rows": report.invalid_rows,
        "invalid": report.invalid.iter().take(200).collect::<Vec<_>>(),
        "superseded": report.superseded.len(),
    });
    let total = i32::try_from(records.len()).unwrap_or(i32::MAX);
    let run = processor
        .store
        .import_start(rule, file, &sha256, total, &summary)
        .await?;
    report.run = Some(run.id);
    if run.finished_at.is_some() {
        report.already_imported = true;
        return Ok(report);
    }
    let start = usize::try_from(run.queued).unwrap_or(0).min(records.len());
    report.resumed_from = start;
    let began = Instant::now();
    let mut done = start;
    for page in records[start..].chunks(PAGE_SIZE) {
        for (line, record_id, values) in page {
            let id = command_id(rule, &sha256, *line);
            let command = Command::Import {
                rule: rule.to_owned(),
                record_id: record_id.clone(),
                file: file.to_owned(),
                line: *line,
                row: values.clone(),
            };
            crate::ops::publish_command(publisher, names, &id, &id, command).await?;
        }
        done += page.len();
        processor
            .store
            .import_progress(
                run.id,
                i32::try_from(done).unwrap_or(i32::MAX),
                done == records.len(),
            )
            .await?;
        report.queued += page.len();
        let secs = began.elapsed().as_secs_f64().max(1e-3);
        let rate = report.queued as f64 / secs;
        progress(Progress {
            done,
            total: records.len(),
            rate,
            eta_seconds: (rate > 0.0).then(|| (records.len() - done) as f64 / rate),
        });
    }
    if records.is_empty() {
        processor.store.import_progress(run.id, 0, true).await?;
    }
    Ok(report)
}

/// The lines a CLI prints for a report.
pub fn lines(r: &ImportReport) -> Vec<String> {
    let mut out = vec![];
    for p in &r.invalid {
        out.push(format!("invalid: {p}"));
    }
    for (line, later) in &r.superseded {
        out.push(format!(
            "line {line} is replaced by line {later}, a later row of the same record"
        ));
    }
    let head = format!(
        "{}: {} row(s), {} invalid, {} record(s)",
        r.file, r.rows, r.invalid_rows, r.records
    );
    out.push(if r.dry_run {
        format!("{head}; checked only, nothing queued")
    } else if r.already_imported {
        format!(
            "{head}; this file was imported in full before (import {}): nothing queued",
            r.run.unwrap_or_default()
        )
    } else if r.resumed_from > 0 {
        format!(
            "{head}; resumed after {} record(s) queued earlier, {} queued now",
            r.resumed_from, r.queued
        )
    } else {
        format!("{head}; {} queued for the workers", r.queued)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_keep_their_lines_and_ragged_rows_are_named() {
        let text = "order_no,subject\nPO-1,Pump\n\n\"PO-2\",\"two\nlines\"\nPO-3\nPO-4,Valve\n";
        let Parsed {
            columns: cols,
            rows,
            unreadable: problems,
        } = read("a.csv", text.as_bytes()).expect("readable");
        assert_eq!(cols, ["order_no", "subject"]);
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 4, 7]);
        assert_eq!(rows[1].values["subject"], "two\nlines");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 6);
        assert!(problems[0].reason.contains("has 1 cells"), "{problems:?}");
    }

    #[test]
    fn a_header_naming_a_column_twice_or_nothing_is_refused() {
        let p = read("a.csv", b"order_no,order_no\n1,2\n").expect_err("refused");
        assert_eq!(p[0].column, "order_no");
        let p = read("a.csv", b"").expect_err("refused");
        assert!(p[0].reason.contains("no header"), "{p:?}");
        let p = read("a.csv", &[0xff, 0xfe]).expect_err("refused");
        assert!(p[0].reason.contains("UTF-8"), "{p:?}");
    }

    #[test]
    fn json_lines_keep_types_and_name_lines_that_are_not_objects() {
        let text = "{\"order_no\": \"PO-1\", \"qty\": 3}\n\n[1]\n{oops\n{\"order_no\": \"PO-2\", \"note\": null}\n";
        let Parsed {
            columns: cols,
            rows,
            unreadable: problems,
        } = read("a.jsonl", text.as_bytes()).expect("readable");
        assert_eq!(cols, ["order_no", "qty", "note"]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].values["qty"], 3);
        assert_eq!(rows[1].line, 5);
        let named: Vec<u64> = problems.iter().map(|p| p.line).collect();
        assert_eq!(named, [3, 4]);
        assert!(problems[0].reason.contains("not an array"), "{problems:?}");
        // Without an extension, a first `{` means JSON Lines.
        let parsed = read("upload", b"{\"a\": 1}\n").expect("readable");
        assert_eq!(parsed.rows.len(), 1);
    }

    #[test]
    fn the_same_content_queues_the_same_command_ids() {
        let sha = format!("{:x}", Sha256::digest(b"x"));
        assert_eq!(command_id("r", &sha, 7), command_id("r", &sha, 7));
        assert_ne!(command_id("r", &sha, 7), command_id("r", &sha, 8));
        assert!(command_id("r", &sha, 7).starts_with("import:r:"));
    }
}
