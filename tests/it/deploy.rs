//! What `deploy/` names exists: every metric the alert rules and the Grafana dashboard
//! query is one ingest or a worker exposes.

use std::collections::BTreeSet;

use serde_json::Value;
use tests::{Env, EnvOptions};

/// Every `recordsync_…` metric name in a text.
fn named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("recordsync_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn deploy_file(path: &str) -> anyhow::Result<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Ok(std::fs::read_to_string(root.join(path))?)
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_name_is_exposed() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 1,
        ..EnvOptions::default()
    })
    .await?;
    // What the two services' metrics can expose (every family touched once) ...
    let offered: BTreeSet<String> = worker::metrics::Metrics::every_name()
        .into_iter()
        .chain(ingest::metrics::Metrics::every_name())
        .collect();
    assert!(offered.len() >= 20, "{offered:#?}");
    // ... and what the running ones do expose already: the same registries.
    for url in [
        format!("{}/metrics", env.admin_urls[0]),
        format!("{}/metrics", env.ingest_url),
    ] {
        let resp = env.http.get(&url).send().await?;
        anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        let live = config::telemetry::sample_names(&resp.text().await?);
        assert!(!live.is_empty(), "{url}");
        let unknown: Vec<&String> = live.difference(&offered).collect();
        assert!(
            unknown.is_empty(),
            "{url} exposes {unknown:?} beyond {offered:#?}"
        );
    }

    let alerts = deploy_file("deploy/prometheus/alerts.yml")?;
    let dashboard = deploy_file("deploy/grafana/recordsync.json")?;
    let board: Value = serde_json::from_str(&dashboard)?;
    let panels = board["panels"].as_array().cloned().unwrap_or_default();
    assert!(panels.len() >= 10, "{board:#}");
    for p in &panels {
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "a panel without a query: {p:#}");
        assert!(
            targets
                .iter()
                .all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())),
            "{p:#}"
        );
    }
    for (file, text) in [("alerts.yml", &alerts), ("recordsync.json", &dashboard)] {
        let wanted = named(text);
        assert!(wanted.len() >= 8, "{file} names only {wanted:?}");
        let missing: Vec<&String> = wanted.difference(&offered).collect();
        assert!(
            missing.is_empty(),
            "{file} queries metrics nobody exposes: {missing:?}; exposed: {offered:#?}"
        );
    }
    // The alert for the ledger is wired to a metric the scrape fills from PostgreSQL.
    assert!(alerts.contains("recordsync_ledger_unaccounted_events"));
    assert_eq!(
        named("x recordsync_a_b{c} recordsync_d"),
        BTreeSet::from(["recordsync_a_b".to_owned(), "recordsync_d".to_owned()])
    );
    env.finish().await
}

/// The alert rules load in Prometheus's own checker, and each alert fires on the series
/// that should wake someone, not before its `for` and not on the series that should not
/// (`deploy/prometheus/alerts.test.yml`, run by `promtool test rules`).
#[test]
fn the_alert_rules_load_and_fire_when_they_should() -> anyhow::Result<()> {
    tests::tools()?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    // Every alert has a case where it fires (and so one where it must name its labels
    // and words exactly), not only cases where it stays quiet.
    let rules = std::fs::read_to_string(dir.join("alerts.yml"))?;
    let cases = std::fs::read_to_string(dir.join("alerts.test.yml"))?;
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 12, "the alerts read: {alerts:?}");
    let lines: Vec<&str> = cases.lines().map(str::trim).collect();
    for alert in alerts {
        let fires = lines.windows(2).any(|w| {
            w[0] == format!("alertname: {alert}")
                && w[1].starts_with("exp_alerts:")
                && w[1] != "exp_alerts: []"
        });
        assert!(fires, "no case in alerts.test.yml where {alert} fires");
    }
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {}: {said}", args.join(" "));
        assert!(
            said.contains("SUCCESS"),
            "promtool {}: {said}",
            args.join(" ")
        );
    }
    Ok(())
}
