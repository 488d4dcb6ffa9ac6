//! The `reconcile` scenario: a rule with N linked records a side (100,000 by default)
//! of which 0.1% drifted in the helpdesk, reconciled dry in this process against the
//! sandbox. It reports the whole run's time; the comparison's own time (mapping,
//! digests, buckets, the field-by-field compare, without the requests) beside a plain
//! hash-and-compare of the same data in the same run; the requests made beside the
//! fewest that can read both sides; and whether every drifted record was found.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::fixture::Janitor;
use crate::report::Row;
use crate::stats::thousands;

/// Records a side unless `--count` says otherwise.
pub const DEFAULT_RECORDS: usize = 100_000;
/// One record in this many drifted.
const DRIFT_EVERY: usize = 1_000;
/// Records per seeding request.
const SEED_CHUNK: usize = 2_000;
/// Target: the comparison at most this many times a plain hash-and-compare.
const MAX_COMPARE_RATIO: f64 = 10.0;

/// What one run measured.
pub struct Figures {
    records: usize,
    drifted: usize,
    report: worker::reconcile::ReconcileReport,
    total: Duration,
    seeding: Duration,
    baseline: Duration,
    minimum_requests: usize,
}

impl Figures {
    /// The report's rows.
    pub fn rows(&self) -> Vec<Row> {
        let scenario = format!("reconcile, {} records", thousands(self.records as u64));
        let r = &self.report;
        let compare = Duration::from_micros(u64::try_from(r.compare_us).unwrap_or(u64::MAX));
        let ratio = compare.as_secs_f64() / self.baseline.as_secs_f64().max(1e-9);
        vec![
            Row::plain(
                &scenario,
                "run time",
                format!("{:.2} s", self.total.as_secs_f64()),
            ),
            Row::plain(
                &scenario,
                "comparison (CPU-bound part)",
                format!("{:.1} ms", compare.as_secs_f64() * 1e3),
            )
            .ceiling(
                format!(
                    "{:.1} ms plain hash-and-compare",
                    self.baseline.as_secs_f64() * 1e3
                ),
                format!("{ratio:.1}×"),
            )
            .target(
                &format!("≤ {MAX_COMPARE_RATIO}×"),
                ratio <= MAX_COMPARE_RATIO,
            ),
            Row::plain(&scenario, "requests", thousands(r.requests as u64))
                .ceiling(
                    format!(
                        "{} fewest possible",
                        thousands(self.minimum_requests as u64)
                    ),
                    format!(
                        "{:.2}×",
                        r.requests as f64 / self.minimum_requests.max(1) as f64
                    ),
                )
                .target("≤ fewest + 1", r.requests <= self.minimum_requests + 1),
            Row::plain(
                &scenario,
                "drifted records found",
                format!(
                    "{} ({} of {} buckets apart, {} compared field by field)",
                    r.records_apart,
                    r.buckets_apart,
                    r.buckets,
                    thousands(r.rows_compared as u64)
                ),
            )
            .target(
                &format!("= {} drifted", self.drifted),
                r.records_apart == self.drifted,
            ),
        ]
    }

    /// What the table cannot say.
    pub fn notes(&self) -> Vec<String> {
        vec![format!(
            "reconcile: seeding {} records a side and their links took {:.1} s (not counted); the run compared {} linked records",
            thousands(self.records as u64),
            self.seeding.as_secs_f64(),
            thousands(self.report.compared as u64)
        )]
    }
}

/// Seeds the sandbox and the store, reconciles once (dry), and measures.
pub async fn run(
    janitor: &Janitor,
    http: &reqwest::Client,
    records: usize,
) -> anyhow::Result<Figures> {
    let config = sandbox::SandboxConfig::default();
    let sandbox = sandbox::Sandbox::start(config.clone()).await?;
    let admin = tests::SandboxAdmin::new(http, sandbox.base_url.clone());
    let rules = tests::example_rules(&sandbox.base_url);
    let rule = rules.rule(tests::RULE).context("the example rule")?.clone();
    admin
        .post("/_admin/kintone/apps", &tests::work_orders_app(None))
        .await?;

    // Each record as kintone holds it (every field present, the empty ones empty), the
    // ticket a sync would have written, and every DRIFT_EVERY-th ticket's subject
    // changed in the helpdesk since.
    let seeding = Instant::now();
    let source: Vec<serde_json::Map<String, Value>> = (0..records)
        .map(|i| {
            let priority = ["高", "中", "低"][i % 3];
            json!({
                "work_order_no": format!("WO-{i:06}"), "件名": format!("Pump {i}"), "詳細": "",
                "優先度": priority, "顧客メール": format!("c{i}@example.com"),
                "tags": [], "helpdesk_ticket_id": "", "状態": ""
            })
            .as_object()
            .cloned()
            .expect("an object")
        })
        .collect();
    let mut target = Vec::with_capacity(records);
    let mut drifted = 0;
    for (i, fields) in source.iter().enumerate() {
        let mut ticket = domain::mapping::map_fields(&rule.fields, fields)
            .map_err(|p| anyhow::anyhow!("{p:?}"))?;
        ticket.insert(
            rule.identity.target_field.clone(),
            fields["work_order_no"].clone(),
        );
        if i % DRIFT_EVERY == DRIFT_EVERY / 2 {
            ticket.insert("subject".into(), json!(format!("Drifted {i}")));
            drifted += 1;
        }
        target.push(ticket);
    }
    let mut kintone_ids = Vec::with_capacity(records);
    for chunk in source.chunks(SEED_CHUNK) {
        let body: Vec<Value> = chunk
            .iter()
            .map(|f| tests::kintone_record(&Value::Object(f.clone())))
            .collect();
        let created = admin
            .post(
                &format!("/_admin/kintone/apps/{}/records", tests::APP),
                &json!({"records": body, "webhook": false}),
            )
            .await?;
        kintone_ids.extend(
            created["ids"]
                .as_array()
                .context("seeded record ids")?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned)),
        );
    }
    let mut ticket_ids = Vec::with_capacity(records);
    for chunk in target.chunks(SEED_CHUNK) {
        let created = admin
            .post("/_admin/helpdesk/tickets", &json!({ "tickets": chunk }))
            .await?;
        ticket_ids.extend(
            created["ids"]
                .as_array()
                .context("seeded ticket ids")?
                .iter()
                .map(|v| v.to_string()),
        );
    }
    anyhow::ensure!(
        kintone_ids.len() == records && ticket_ids.len() == records,
        "seeded {} records and {} tickets of {records}",
        kintone_ids.len(),
        ticket_ids.len()
    );
    let database_url = janitor.database().await?;
    let store = store::Store::connect(&database_url, 2).await?;
    let links: Vec<(String, String, Option<i64>)> = kintone_ids
        .iter()
        .zip(&ticket_ids)
        .map(|(k, t)| (k.clone(), t.clone(), Some(1)))
        .collect();
    for chunk in links.chunks(20_000) {
        store.insert_links(tests::RULE, chunk).await?;
    }
    let seeding = seeding.elapsed();

    let settings = config::Settings {
        database_url,
        queue_prefix: janitor.prefix(),
        ..config::Settings::default()
    };
    let secrets = tests::secrets(&config);
    let connectors = connectors::Connectors::build(&rules, tests::lookup(&secrets))?;
    let worker = worker::Worker::with_connectors(settings, rules.clone(), connectors)?;
    let processor = worker.processor();

    let started = Instant::now();
    let report = worker::reconcile::ReconcileJob::claim(&processor, tests::RULE)
        .await?
        .run(&processor, None, true, Duration::ZERO)
        .await?;
    let total = started.elapsed();

    // The plain way, on the same data: each side's values hashed whole, the two maps
    // compared record by record.
    let baseline = Instant::now();
    let hash = |v: &serde_json::Map<String, Value>| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        Value::Object(v.clone()).to_string().hash(&mut h);
        h.finish()
    };
    let ours: HashMap<&str, u64> = kintone_ids
        .iter()
        .zip(&source)
        .filter_map(|(id, f)| {
            let mut mapped = domain::mapping::map_fields(&rule.fields, f).ok()?;
            mapped.insert(
                rule.identity.target_field.clone(),
                f["work_order_no"].clone(),
            );
            Some((id.as_str(), hash(&mapped)))
        })
        .collect();
    let theirs: HashMap<&str, u64> = kintone_ids
        .iter()
        .zip(&target)
        .map(|(id, t)| (id.as_str(), hash(t)))
        .collect();
    let apart = ours
        .iter()
        .filter(|(id, h)| theirs.get(*id) != Some(h))
        .count();
    let baseline = baseline.elapsed();
    anyhow::ensure!(
        apart == drifted,
        "the plain comparison found {apart} apart of {drifted} drifted"
    );
    // The fewest requests: kintone's ids, 100 a request; the helpdesk listed 100 a
    // page.
    let minimum_requests = 2 * records.div_ceil(100);
    drop(worker);
    drop(sandbox);
    Ok(Figures {
        records,
        drifted,
        report,
        total,
        seeding,
        baseline,
        minimum_requests,
    })
}
