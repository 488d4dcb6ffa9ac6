//! Synthetic schema-drift checks: for each app or entity the rules use, read the schema
//! the system shows now (kintone: the app's form fields; rest: a sample record), through
//! the limiter, and compare it with what the rules rely on and with the last schema
//! that showed no breaking drift (`domain::drift`). A breaking drift pauses each rule
//! that says `on_schema_drift: pause`, so that it parks its work instead of writing
//! wrong data; every check is stored, and `/metrics` reads the latest ones.
//!
//! One worker of the fleet runs a system's scheduled check (a lease under
//! `#schema:<system>`); a check only reads, so two at once would cost requests, not
//! correctness.

use std::collections::BTreeSet;

use domain::drift::{self, Drift, Schema, Severity};
use domain::rules::OnSchemaDrift;
use serde::Serialize;
use serde_json::json;

use crate::classify::Failure;
use crate::step::Processor;

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The system does not exist.
    #[error("no system named \"{0}\"")]
    UnknownSystem(String),
    /// Another worker runs this system's scheduled check.
    #[error("a schema check of system \"{0}\" is already running on another worker")]
    AlreadyRunning(String),
    /// The rules name an app the connectors cannot reach.
    #[error("{0}")]
    Endpoint(String),
    /// Reading the schema failed.
    #[error("reading the schema of {system} {app} failed: {failure}")]
    Read {
        /// The system.
        system: String,
        /// The app or entity.
        app: String,
        /// What failed.
        failure: Failure,
    },
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// The lease rule key of a system's scheduled check (no rule has this name: rule
/// names are checked to be plain).
pub fn lease_key(system: &str) -> String {
    format!("#schema:{system}")
}

/// What a check is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Store the check, and pause the rules that say so.
    Record,
    /// Store the check and take the schema as the new baseline whatever it shows (an
    /// operator accepting an intended change); pause nothing.
    Accept,
    /// Report only: store nothing, pause nothing.
    DryRun,
}

/// One app's check.
#[derive(Debug, Clone, Serialize)]
pub struct AppCheck {
    /// The system.
    pub system: String,
    /// The app or entity.
    pub app: String,
    /// Why it was not checked (nothing to sample), if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_checked: Option<String>,
    /// Whether a baseline existed to compare types and options with.
    pub had_baseline: bool,
    /// The drift found, breaking first.
    pub drift: Vec<Drift>,
    /// Each drift in plain language, in the same order.
    pub lines: Vec<String>,
    /// The rules this check paused.
    pub paused: Vec<String>,
    /// The stored check's id (none for a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

impl AppCheck {
    /// How many drifts are breaking.
    pub fn breaking(&self) -> usize {
        self.drift
            .iter()
            .filter(|d| d.severity == Severity::Breaking)
            .count()
    }
}

/// The apps and entities of `system` that some rule uses, in a stable order.
pub fn apps_of(rules: &domain::rules::SyncRules, system: &str) -> Vec<String> {
    let mut apps = BTreeSet::new();
    for r in &rules.rules {
        if r.source.system == system {
            apps.insert(r.source.app.clone());
        }
        if r.target.system == system {
            apps.insert(r.target.entity.clone());
        }
    }
    apps.into_iter().collect()
}

/// Checks every app of `system` (or of every system).
pub async fn check(
    processor: &Processor,
    system: Option<&str>,
    mode: Mode,
) -> Result<Vec<AppCheck>, SchemaError> {
    let rules = &processor.rules;
    if let Some(s) = system
        && !rules.systems.contains_key(s)
    {
        return Err(SchemaError::UnknownSystem(s.to_owned()));
    }
    let mut out = Vec::new();
    for name in rules.systems.keys() {
        if system.is_some_and(|s| s != name) {
            continue;
        }
        for app in apps_of(rules, name) {
            out.push(check_app(processor, name, &app, mode).await?);
        }
    }
    Ok(out)
}

async fn check_app(
    processor: &Processor,
    system: &str,
    app: &str,
    mode: Mode,
) -> Result<AppCheck, SchemaError> {
    let rules = &processor.rules;
    let sample = rules.systems[system]
        .schema_check
        .as_ref()
        .and_then(|c| c.samples.get(app))
        .map(String::as_str);
    let endpoint = processor
        .connectors
        .endpoint(system, app)
        .map_err(|e| SchemaError::Endpoint(e.to_string()))?;
    let now = processor
        .limiter
        .limit(&endpoint)
        .call(|api| api.schema(sample))
        .await
        .map_err(|failure| SchemaError::Read {
            system: system.to_owned(),
            app: app.to_owned(),
            failure,
        })?;
    let store = &processor.store;
    let mut report = AppCheck {
        system: system.to_owned(),
        app: app.to_owned(),
        not_checked: None,
        had_baseline: false,
        drift: Vec::new(),
        lines: Vec::new(),
        paused: Vec::new(),
        id: None,
    };
    let now: Schema = match now {
        Ok(schema) => schema,
        Err(why) => {
            report.not_checked = Some(why);
            if mode != Mode::DryRun {
                report.id = Some(store_check(processor, &report, None, false).await?);
            }
            return Ok(report);
        }
    };
    let baseline: Option<Schema> = store
        .schema_baseline(system, app)
        .await?
        .and_then(|v| serde_json::from_value(v).ok());
    report.had_baseline = baseline.is_some();
    report.drift = drift::compare(
        &drift::reliances(rules, system, app),
        &drift::creators(rules, system, app),
        baseline.as_ref(),
        &now,
    );
    report.lines = report.drift.iter().map(Drift::summary).collect();
    if mode == Mode::Record {
        for rule in rules
            .rules
            .iter()
            .filter(|r| r.on_schema_drift == OnSchemaDrift::Pause)
        {
            let Some(first) = report
                .drift
                .iter()
                .find(|d| d.rule == rule.name && d.severity == Severity::Breaking)
            else {
                continue;
            };
            let reason = format!("schema drift in {system} {app}: {}", first.summary());
            store.pause("rule", &rule.name, Some(&reason)).await?;
            tracing::warn!(
                rule = rule.name,
                system,
                app,
                reason,
                "rule paused on schema drift"
            );
            report.paused.push(rule.name.clone());
        }
    }
    for line in &report.lines {
        tracing::warn!(system, app, drift = line, "schema drift");
    }
    if mode != Mode::DryRun {
        let baseline = mode == Mode::Accept || report.breaking() == 0;
        let schema = json!(now);
        report.id = Some(store_check(processor, &report, Some(&schema), baseline).await?);
    }
    Ok(report)
}

async fn store_check(
    processor: &Processor,
    report: &AppCheck,
    schema: Option<&serde_json::Value>,
    baseline: bool,
) -> Result<i64, SchemaError> {
    let drift = json!(report.drift);
    Ok(processor
        .store
        .schema_check_insert(&store::NewSchemaCheck {
            system: &report.system,
            app: &report.app,
            schema,
            not_checked: report.not_checked.as_deref(),
            drift: &drift,
            breaking: i32::try_from(report.breaking()).unwrap_or(i32::MAX),
            paused: &report.paused,
            baseline,
        })
        .await?)
}

/// Claims `system`'s scheduled check and runs it if due (its last check is at least
/// `every_seconds` old): `None` when it was not.
pub async fn scheduled(
    processor: &Processor,
    system: &str,
) -> Result<Option<Vec<AppCheck>>, SchemaError> {
    let Some(spec) = processor
        .rules
        .systems
        .get(system)
        .and_then(|s| s.schema_check.as_ref())
    else {
        return Ok(None);
    };
    let Some(mut lease) = processor
        .store
        .try_begin_record(&lease_key(system), "#schema")
        .await?
    else {
        return Err(SchemaError::AlreadyRunning(system.to_owned()));
    };
    let every = chrono::Duration::seconds(spec.every_seconds as i64);
    let last = processor.store.schema_checked_at(system).await?;
    let result = if last.is_some_and(|at| chrono::Utc::now() - at < every) {
        Ok(None)
    } else {
        check(processor, Some(system), Mode::Record).await.map(Some)
    };
    lease.commit().await?;
    result
}

/// The lines a CLI prints for a check.
pub fn lines(checks: &[AppCheck]) -> Vec<String> {
    let mut out = Vec::new();
    for c in checks {
        let head = format!("{} {}", c.system, c.app);
        match (&c.not_checked, c.drift.is_empty()) {
            (Some(why), _) => out.push(format!("{head}: not checked: {why}")),
            (None, true) if c.had_baseline => {
                out.push(format!("{head}: no drift"));
            }
            (None, true) => out.push(format!(
                "{head}: no drift (first check: its schema is the baseline)"
            )),
            (None, false) => {
                out.push(format!(
                    "{head}: {} breaking, {} warning",
                    c.breaking(),
                    c.drift.len() - c.breaking()
                ));
                for (d, line) in c.drift.iter().zip(&c.lines) {
                    let tag = match d.severity {
                        Severity::Breaking => "breaking",
                        Severity::Warning => "warning",
                    };
                    out.push(format!("  {tag}: {line}"));
                }
            }
        }
        if !c.paused.is_empty() {
            out.push(format!("  paused: {}", c.paused.join(", ")));
        }
    }
    out
}
