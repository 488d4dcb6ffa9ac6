//! The result table, as aligned text for a terminal or as Markdown for the book (docs/src/benchmarks.md).

/// One figure beside its ceiling and its target.
#[derive(Debug, Clone)]
pub struct Row {
    /// What ran, e.g. `e2e, 2 workers`.
    pub scenario: String,
    /// What is measured, e.g. `events/s`.
    pub measure: String,
    /// The figure.
    pub result: String,
    /// The ceiling measured in the same run, or `—`.
    pub ceiling: String,
    /// The figure as a share of the ceiling, or `—`.
    pub ratio: String,
    /// The target, or `—`.
    pub target: String,
    /// Whether the target was met; `None` when there is no target.
    pub pass: Option<bool>,
}

impl Row {
    /// A row with neither ceiling nor target.
    pub fn plain(scenario: &str, measure: &str, result: String) -> Row {
        Row {
            scenario: scenario.to_owned(),
            measure: measure.to_owned(),
            result,
            ceiling: "—".to_owned(),
            ratio: "—".to_owned(),
            target: "—".to_owned(),
            pass: None,
        }
    }

    /// Adds the ceiling and the ratio.
    pub fn ceiling(mut self, ceiling: String, ratio: String) -> Row {
        self.ceiling = ceiling;
        self.ratio = ratio;
        self
    }

    /// Adds the target and whether it was met.
    pub fn target(mut self, target: &str, pass: bool) -> Row {
        self.target = target.to_owned();
        self.pass = Some(pass);
        self
    }

    fn cells(&self) -> [String; 7] {
        [
            self.scenario.clone(),
            self.measure.clone(),
            self.result.clone(),
            self.ceiling.clone(),
            self.ratio.clone(),
            self.target.clone(),
            match self.pass {
                Some(true) => "pass".to_owned(),
                Some(false) => "FAIL".to_owned(),
                None => "—".to_owned(),
            },
        ]
    }
}

const HEADER: [&str; 7] = [
    "scenario",
    "measure",
    "result",
    "ceiling (same run)",
    "ratio",
    "target",
    "met",
];

/// The whole report: lines about the run, the rows, and notes after the table.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines printed before the table (machine, versions, counts).
    pub context: Vec<String>,
    /// The table.
    pub rows: Vec<Row>,
    /// Lines printed after the table (skipped scenarios, caveats).
    pub notes: Vec<String>,
}

impl Report {
    /// The rows whose target was not met, each as one line naming the scenario, the
    /// measure, the result and the target.
    pub fn misses(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.pass == Some(false))
            .map(|r| {
                format!(
                    "{} — {}: {} (target {})",
                    r.scenario, r.measure, r.result, r.target
                )
            })
            .collect()
    }

    /// Renders the report as text or as Markdown (where the lines around the table
    /// become list items).
    pub fn render(&self, markdown: bool) -> String {
        let bullet = if markdown { "- " } else { "" };
        let lines = |lines: &[String]| {
            lines
                .iter()
                .map(|l| format!("{bullet}{l}\n"))
                .collect::<String>()
        };
        let mut parts = Vec::new();
        if !self.context.is_empty() {
            parts.push(lines(&self.context));
        }
        if !self.rows.is_empty() {
            parts.push(if markdown {
                markdown_table(&self.rows)
            } else {
                text_table(&self.rows)
            });
        }
        if !self.notes.is_empty() {
            parts.push(lines(&self.notes));
        }
        parts.join("\n")
    }
}

fn text_table(rows: &[Row]) -> String {
    let cells: Vec<[String; 7]> = rows.iter().map(Row::cells).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&HEADER.map(str::to_owned));
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

fn markdown_table(rows: &[Row]) -> String {
    let line = |cells: &[String]| {
        let escaped: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
        format!("| {} |\n", escaped.join(" | "))
    };
    let mut out = line(&HEADER.map(str::to_owned));
    out.push_str(&line(&HEADER.map(|_| "---".to_owned())));
    for row in rows {
        out.push_str(&line(&row.cells()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            context: vec!["machine: 2 cores".to_owned()],
            rows: vec![
                Row::plain("ingest, c=64", "accepted/s", "8,000".to_owned())
                    .ceiling("10,000 publishes/s".to_owned(), "80%".to_owned())
                    .target("≥ 50% of ceiling", true),
                Row::plain("ingest", "peak RSS", "60.0 MB".to_owned()).target("< 50 MB", false),
            ],
            notes: vec!["limiter: skipped".to_owned()],
        }
    }

    #[test]
    fn text_columns_line_up() {
        let text = report().render(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "machine: 2 cores");
        let at = |line: &str, word: &str| line.find(word).map(|b| line[..b].chars().count());
        assert!(lines[2].starts_with("scenario"));
        assert_eq!(at(lines[2], "measure"), at(lines[4], "accepted/s"));
        assert_eq!(at(lines[2], "met"), at(lines[4], "pass"));
        assert_eq!(at(lines[2], "met"), at(lines[5], "FAIL"));
        assert!(text.contains("pass"));
        assert!(text.contains("FAIL"));
        assert!(text.ends_with("limiter: skipped\n"));
    }

    #[test]
    fn markdown_has_a_separator_and_one_line_per_row() {
        let md = report().render(true);
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(table.len(), 4);
        assert_eq!(table[1], "| --- | --- | --- | --- | --- | --- | --- |");
        assert!(table[2].starts_with("| ingest, c=64 | accepted/s | 8,000 |"));
    }

    #[test]
    fn a_missed_target_is_named() {
        let report = Report {
            rows: vec![
                Row::plain("e2e, 1 worker", "events/s", "607".into()).target("≥ 1,000/s", false),
                Row::plain("e2e, 1 worker", "worker peak RSS", "29 MB".into())
                    .target("< 100 MB each", true),
                Row::plain("e2e, 1 worker", "latency", "1 ms".into()),
            ],
            ..Report::default()
        };
        assert_eq!(
            report.misses(),
            vec!["e2e, 1 worker — events/s: 607 (target ≥ 1,000/s)".to_owned()]
        );
    }
}
