//! The `limiter` scenario: four worker processes share one fleet-wide rate limit to
//! the sandbox helpdesk. The rules give the helpdesk `limits` of 50 requests/s with a
//! burst of 1, and the sandbox itself allows 50 requests/s with a burst of 50 (it
//! answers 429 above that). Work orders that were synced before (linked to their
//! tickets, as `tests::Env::seed_linked` leaves them) are each edited once, so that
//! every event costs exactly one helpdesk PATCH. The sandbox's request log says when
//! each request arrived.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use domain::rules::{Limits, SyncRules};
use serde_json::{Value, json};

use crate::e2e::{self, Sender};
use crate::fixture::{ChildEnv, Janitor};
use crate::intake::wait_ready;
use crate::load;
use crate::procs::Proc;
use crate::report::Row;
use crate::stats::{percent, thousands};
use ::tests::SandboxAdmin;

/// Worker processes sharing the limit.
pub const WORKERS: usize = 4;
/// The rate the rules allow and the sandbox enforces, in requests per second.
pub const REQUESTS_PER_SECOND: u32 = 50;
/// The sandbox's burst: it answers 429 only once 50 requests came faster than 50/s.
pub const SANDBOX_BURST: u32 = 50;
/// The service's spacing over the rate (`SPACING` in worker/src/limiter/mod.rs): requests
/// leave 10% further apart than the rate allows, so 50/s is used at about 45.5/s.
pub const SERVICE_SPACING: f64 = 1.10;
/// The first work order number.
const FIRST_ORDER: usize = 300_000;
/// Requests in flight while the bench seeds and edits the records.
const SEED_CONCURRENCY: usize = 8;
/// Webhooks in flight while the bench posts them to ingest.
const CONCURRENCY: usize = 64;
/// How long the sandbox may see no new helpdesk request before the run fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Target: the mean rate uses at least this share of the limit (as the limits
/// integration test asks of its 10/s).
const MIN_SHARE_USED: f64 = 0.8;

/// What the scenario measured.
pub struct Figures {
    /// Edits made, one event and one PATCH each.
    pub edits: usize,
    /// Helpdesk requests the sandbox saw, whatever it answered.
    pub requests: usize,
    /// Of those, the PATCHes it accepted.
    pub patches: usize,
    /// The most requests that arrived within any one second (a sliding window).
    pub busiest: usize,
    /// Requests per second from the first to the last arrival.
    pub mean_rate: f64,
    /// From the first arrival to the last.
    pub span: Duration,
    /// Requests the sandbox answered with 429.
    pub refused: usize,
    /// Requests the sandbox answered with another error.
    pub failed: usize,
    /// Where the CPU went.
    pub cpu: String,
}

impl Figures {
    /// The report rows.
    pub fn rows(&self) -> Vec<Row> {
        let scenario = format!("limiter, {WORKERS} workers");
        let limit = f64::from(REQUESTS_PER_SECOND);
        let configured = format!(
            "{REQUESTS_PER_SECOND}/s configured (rules: burst 1; sandbox: burst {SANDBOX_BURST})"
        );
        vec![
            Row::plain(
                &scenario,
                "busiest second (sliding window)",
                format!("{} requests", self.busiest),
            )
            .ceiling(configured.clone(), percent(self.busiest as f64, limit))
            .target(
                &format!("≤ {REQUESTS_PER_SECOND}"),
                self.busiest <= REQUESTS_PER_SECOND as usize,
            ),
            Row::plain(
                &scenario,
                &format!(
                    "mean rate ({} requests in {:.1} s)",
                    thousands(self.requests as u64),
                    self.span.as_secs_f64()
                ),
                format!("{:.1}/s", self.mean_rate),
            )
            .ceiling(configured, percent(self.mean_rate, limit))
            .target(
                &format!("≥ {:.0}/s", MIN_SHARE_USED * limit),
                self.mean_rate >= MIN_SHARE_USED * limit,
            ),
            Row::plain(&scenario, "429 answers", thousands(self.refused as u64))
                .target("0", self.refused == 0),
        ]
    }

    /// The lines after the table.
    pub fn notes(&self) -> Vec<String> {
        vec![
            format!(
                "limiter: {} edits, {} helpdesk requests ({} accepted PATCHes, {} answered 429, {} other errors); the service spaces requests {:.0}% wider than the rate on purpose, so {:.1}/s is the mean to expect",
                thousands(self.edits as u64),
                thousands(self.requests as u64),
                thousands(self.patches as u64),
                self.refused,
                self.failed,
                (SERVICE_SPACING - 1.0) * 100.0,
                f64::from(REQUESTS_PER_SECOND) / SERVICE_SPACING
            ),
            self.cpu.clone(),
        ]
    }
}

/// A work order that was synced before, and what its edit should leave in its ticket.
struct Linked {
    record_id: String,
    ticket_id: String,
    number: usize,
}

impl Linked {
    /// The subject the edit gives the work order (and, once synced, the ticket).
    fn edited_subject(&self) -> String {
        format!("Work order {}: pump replaced", self.number)
    }
}

/// Runs the scenario with `edits` edits and `prefetch` messages per worker.
pub async fn run(
    janitor: &Janitor,
    http: &reqwest::Client,
    edits: usize,
    prefetch: u16,
) -> anyhow::Result<Figures> {
    let label = format!("limiter, {WORKERS} workers");
    let sandbox = Proc::spawn("sandbox", "__sandbox", &[]).await?;
    wait_ready(http, &format!("{}/healthz", sandbox.url())).await?;
    let admin = Arc::new(SandboxAdmin::new(http, sandbox.url()));
    e2e::create_app(&admin).await?;
    let mut rules = ::tests::example_rules(&sandbox.url());
    rules
        .systems
        .get_mut("helpdesk")
        .context("the example rules have no helpdesk")?
        .limits = Some(Limits {
        requests_per_second: f64::from(REQUESTS_PER_SECOND),
        burst: 1,
        max_concurrent: None,
    });
    let database_url = janitor.database().await?;

    eprintln!("{label}: seeding {edits} work orders linked to their tickets");
    let linked = seed_linked(&admin, &rules, &database_url, edits).await?;
    eprintln!("{label}: editing each of them once");
    let bodies = edit(&admin, &linked).await?;
    admin
        .post(
            "/_admin/limits",
            &json!({
                "system": "helpdesk",
                "requests_per_second": REQUESTS_PER_SECOND,
                "burst": SANDBOX_BURST,
            }),
        )
        .await?;

    let prefix = janitor.prefix();
    let env = ChildEnv {
        prefix: prefix.clone(),
        rules: janitor.rules_file(&rules)?,
        database_url: Some(database_url.clone()),
        prefetch,
    }
    .vars();
    let ingest = Proc::spawn("ingest", "__ingest", &env).await?;
    wait_ready(http, &format!("{}/readyz", ingest.url())).await?;
    let mut fleet = Vec::with_capacity(WORKERS);
    for n in 0..WORKERS {
        fleet.push(Proc::spawn(&format!("worker {n}"), "__worker", &env).await?);
    }
    e2e::wait_consumers(&::tests::amqp_url(), &prefix, WORKERS).await?;
    let cpu = e2e::cpu_watch(
        &sandbox,
        &ingest,
        &fleet,
        e2e::database_name(&database_url),
        None,
    );

    let mut log = HelpdeskLog::new(Arc::clone(&admin));
    log.poll().await?;
    log.entries.clear();
    eprintln!(
        "{label}: {edits} webhooks to ingest; the workers share {REQUESTS_PER_SECOND} requests/s"
    );
    let before = cpu.snapshot();
    let sender = Sender::kintone(http, &ingest, bodies);
    load::closed_loop(edits, CONCURRENCY, move |i| sender.send(i)).await?;
    let tickets: Vec<&str> = linked.iter().map(|l| l.ticket_id.as_str()).collect();
    log.wait_for_patches(&tickets, &label).await?;
    let after = cpu.snapshot();
    let cpu_line = cpu.describe("edit", &label, edits, &before, &after);

    check_tickets(&admin, &linked).await?;
    for worker in fleet {
        worker.stop().await?;
    }
    ingest.stop().await?;
    sandbox.stop().await?;
    janitor.clean().await?;

    let mut arrivals: Vec<DateTime<Utc>> = log.entries.iter().map(|e| e.at).collect();
    arrivals.sort_unstable();
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) => (*last - *first).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    Ok(Figures {
        edits,
        requests: log.entries.len(),
        patches: log
            .entries
            .iter()
            .filter(|e| e.method == "PATCH" && (200..300).contains(&e.status))
            .count(),
        busiest: busiest_second(&arrivals),
        mean_rate: mean_rate(&arrivals),
        span,
        refused: log.entries.iter().filter(|e| e.status == 429).count(),
        failed: log
            .entries
            .iter()
            .filter(|e| e.status != 429 && !(200..300).contains(&e.status))
            .count(),
        cpu: cpu_line,
    })
}

/// Seeds `n` work orders and their tickets as a sync by this version would have left
/// them (what `tests::Env::seed_linked` does): the ticket, the kintone record with the
/// ticket id written back, and in the store the link, the values sent and the field
/// authority state. Nothing reaches ingest.
async fn seed_linked(
    admin: &Arc<SandboxAdmin>,
    rules: &SyncRules,
    database_url: &str,
    n: usize,
) -> anyhow::Result<Vec<Linked>> {
    let seeder = Arc::clone(admin);
    load::closed_loop(n, SEED_CONCURRENCY, move |i| {
        let admin = Arc::clone(&seeder);
        async move {
            let number = FIRST_ORDER + i;
            let mut fields = e2e::order(number);
            let seeded = admin
                .post(
                    "/_admin/helpdesk/tickets",
                    &json!({"subject": fields["件名"], "external_id": e2e::order_no(number)}),
                )
                .await?;
            let ticket = seeded["ticket"]["id"].to_string();
            fields["helpdesk_ticket_id"] = json!(ticket);
            let path = format!("/_admin/kintone/apps/{}/records", ::tests::APP);
            let body = json!({"record": ::tests::kintone_record(&fields), "webhook": false});
            admin.post(&path, &body).await.map(drop)
        }
    })
    .await?;

    // The state of each record, computed from the record as kintone holds it.
    let rule = rules.rule(::tests::RULE).context("the example rule")?;
    let records = list_records(admin).await?;
    let mut linked = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    for i in 0..n {
        let number = FIRST_ORDER + i;
        let no = e2e::order_no(number);
        let json = records
            .get(&no)
            .with_context(|| format!("the sandbox lost work order {no}"))?;
        let ticket_id = json["helpdesk_ticket_id"]["value"]
            .as_str()
            .with_context(|| format!("work order {no} has no ticket id"))?
            .to_owned();
        let record = connectors::kintone::from_kintone(json)
            .with_context(|| format!("work order {no} is not a kintone record"))?;
        let values = domain::mapping::map_fields(&rule.fields, &record.fields)
            .map_err(|p| anyhow::anyhow!("work order {no} does not map: {p:?}"))?;
        let (mut state, _) = domain::authority::initial(
            &rule.policies(),
            &rule.source.system,
            &rule.target.system,
            &values,
            Some(&values),
            record.revision,
        );
        domain::authority::wrote(&mut state, &rule.target.system, &values, None);
        states.push((
            record.id.clone(),
            ticket_id.clone(),
            record.revision,
            values,
            serde_json::to_value(&state)?,
        ));
        linked.push(Linked {
            record_id: record.id,
            ticket_id,
            number,
        });
    }

    // The store gets a few connections of its own, closed before the workers start.
    let store = Arc::new(store::Store::connect(database_url, SEED_CONCURRENCY as u32).await?);
    let states = Arc::new(states);
    let writer = Arc::clone(&store);
    let saved = load::closed_loop(n, SEED_CONCURRENCY, move |i| {
        let store = Arc::clone(&writer);
        let states = Arc::clone(&states);
        async move {
            let (record_id, ticket_id, revision, values, state) = &states[i];
            let mut tx = store.begin_record(::tests::RULE, record_id).await?;
            tx.save_state(
                Some(ticket_id.as_str()),
                Some(json!({"step": "seeded"})),
                *revision,
                values,
            );
            tx.save_authority_state(state);
            tx.commit().await?;
            anyhow::Ok(())
        }
    })
    .await;
    store.pool().close().await;
    saved?;
    Ok(linked)
}

/// Edits each work order's subject in kintone (without a webhook) and returns the
/// `UPDATE_RECORD` webhook kintone would have sent for each, in order.
async fn edit(admin: &Arc<SandboxAdmin>, linked: &[Linked]) -> anyhow::Result<Vec<String>> {
    let edits: Arc<Vec<(String, String)>> = Arc::new(
        linked
            .iter()
            .map(|l| (l.record_id.clone(), l.edited_subject()))
            .collect(),
    );
    let editor = Arc::clone(admin);
    load::closed_loop(linked.len(), SEED_CONCURRENCY, move |i| {
        let admin = Arc::clone(&editor);
        let edits = Arc::clone(&edits);
        async move {
            let (id, subject) = &edits[i];
            let path = format!("/_admin/kintone/apps/{}/records/{id}", ::tests::APP);
            let record = ::tests::kintone_record(&json!({"件名": subject}));
            let body = json!({"record": record, "webhook": false});
            admin.put(&path, &body).await.map(drop)
        }
    })
    .await?;
    let mut records = list_records(admin).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    linked
        .iter()
        .map(|l| {
            let no = e2e::order_no(l.number);
            let record = records
                .remove(&no)
                .with_context(|| format!("the sandbox lost work order {no}"))?;
            Ok(e2e::webhook(
                "UPDATE_RECORD",
                &format!("bench-{run}-{}", l.number),
                record,
            ))
        })
        .collect()
}

/// The work-order app's records as the admin API lists them, by work order number.
async fn list_records(admin: &SandboxAdmin) -> anyhow::Result<HashMap<String, Value>> {
    let listed = admin
        .get(&format!("/_admin/kintone/apps/{}/records", ::tests::APP))
        .await?;
    Ok(listed["records"]
        .as_array()
        .context("the sandbox listed no records")?
        .iter()
        .filter_map(|r| {
            let no = r["work_order_no"]["value"].as_str()?.to_owned();
            Some((no, r.clone()))
        })
        .collect())
}

/// Fails unless every ticket holds its work order's edited subject.
async fn check_tickets(admin: &SandboxAdmin, linked: &[Linked]) -> anyhow::Result<()> {
    let listed = admin.get("/_admin/helpdesk/tickets").await?;
    let subjects: HashMap<String, &Value> = listed["tickets"]
        .as_array()
        .context("the sandbox listed no tickets")?
        .iter()
        .map(|t| (t["id"].to_string(), &t["subject"]))
        .collect();
    let wrong = linked
        .iter()
        .filter(|l| {
            subjects.get(&l.ticket_id).and_then(|s| s.as_str()) != Some(l.edited_subject().as_str())
        })
        .count();
    if wrong > 0 {
        bail!(
            "{wrong} of {} tickets do not hold their work order's edit",
            linked.len()
        );
    }
    Ok(())
}

/// One helpdesk request from the sandbox's log.
struct Entry {
    at: DateTime<Utc>,
    method: String,
    path: String,
    status: u16,
}

/// The helpdesk requests the sandbox logged, read as they come.
struct HelpdeskLog {
    admin: Arc<SandboxAdmin>,
    since_seq: u64,
    entries: Vec<Entry>,
}

impl HelpdeskLog {
    fn new(admin: Arc<SandboxAdmin>) -> HelpdeskLog {
        HelpdeskLog {
            admin,
            since_seq: 0,
            entries: Vec::new(),
        }
    }

    /// Reads the entries logged since the last read; returns how many there were.
    async fn poll(&mut self) -> anyhow::Result<usize> {
        let v = self
            .admin
            .get(&format!(
                "/_admin/log?system=helpdesk&since_seq={}",
                self.since_seq
            ))
            .await?;
        let mut read = 0;
        for entry in v["entries"].as_array().into_iter().flatten() {
            self.since_seq = self.since_seq.max(entry["seq"].as_u64().unwrap_or(0));
            let at = entry["at"].as_str().context("a log entry without `at`")?;
            let at = DateTime::parse_from_rfc3339(at)
                .with_context(|| format!("a log entry with `at` {at:?}"))?
                .with_timezone(&Utc);
            self.entries.push(Entry {
                at,
                method: entry["method"].as_str().unwrap_or_default().to_owned(),
                path: entry["path"].as_str().unwrap_or_default().to_owned(),
                status: entry["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(0),
            });
            read += 1;
        }
        Ok(read)
    }

    /// Waits until each of `tickets` took an accepted PATCH. Fails when the sandbox
    /// sees no helpdesk request for [`STALL_TIMEOUT`].
    async fn wait_for_patches(&mut self, tickets: &[&str], label: &str) -> anyhow::Result<()> {
        let wanted: HashSet<String> = tickets
            .iter()
            .map(|t| format!("/api/tickets/{t}"))
            .collect();
        let mut patched: HashSet<String> = HashSet::new();
        let mut progressed = Instant::now();
        loop {
            let start = self.entries.len();
            if self.poll().await? > 0 {
                progressed = Instant::now();
            }
            for e in &self.entries[start..] {
                if e.method == "PATCH" && (200..300).contains(&e.status) && wanted.contains(&e.path)
                {
                    patched.insert(e.path.clone());
                }
            }
            if patched.len() == wanted.len() {
                return Ok(());
            }
            if progressed.elapsed() > STALL_TIMEOUT {
                bail!(
                    "{label}: {} of {} tickets were patched and the sandbox saw no helpdesk request for {STALL_TIMEOUT:?}; the workers' stderr above may say why",
                    patched.len(),
                    wanted.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The most arrivals within any window of one second, each window starting at an
/// arrival; `sorted` is in time order.
fn busiest_second(sorted: &[DateTime<Utc>]) -> usize {
    let second = chrono::Duration::seconds(1);
    let mut end = 0;
    let mut busiest = 0;
    for (start, t) in sorted.iter().enumerate() {
        end = end.max(start);
        while end < sorted.len() && sorted[end] - *t < second {
            end += 1;
        }
        busiest = busiest.max(end - start);
    }
    busiest
}

/// Arrivals per second from the first to the last (the intervals between them over
/// the time they span); `sorted` is in time order.
fn mean_rate(sorted: &[DateTime<Utc>]) -> f64 {
    match (sorted.first(), sorted.last()) {
        (Some(first), Some(last)) if sorted.len() > 1 => {
            let seconds = (*last - *first).num_milliseconds() as f64 / 1_000.0;
            (sorted.len() - 1) as f64 / seconds.max(1e-3)
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: &[i64]) -> Vec<DateTime<Utc>> {
        let zero = DateTime::parse_from_rfc3339("2026-11-22T12:00:00.000Z")
            .unwrap()
            .with_timezone(&Utc);
        ms.iter()
            .map(|m| zero + chrono::Duration::milliseconds(*m))
            .collect()
    }

    #[test]
    fn the_busiest_second_slides() {
        // Evenly spaced at 22 ms: 46 arrivals fit in a second (0 … 990 ms).
        let even: Vec<i64> = (0..200).map(|i| i * 22).collect();
        assert_eq!(busiest_second(&at_ms(&even)), 46);
        // A burst that straddles two calendar seconds is still found.
        let burst = at_ms(&[0, 700, 800, 900, 1_000, 1_100, 1_600, 2_500]);
        assert_eq!(busiest_second(&burst), 6);
        // A window is shorter than a second: arrivals 1,000 ms apart are in two.
        assert_eq!(busiest_second(&at_ms(&[0, 1_000])), 1);
        assert_eq!(busiest_second(&[]), 0);
    }

    #[test]
    fn the_mean_rate_counts_intervals() {
        let even: Vec<i64> = (0..=100).map(|i| i * 20).collect();
        assert!((mean_rate(&at_ms(&even)) - 50.0).abs() < 1e-9);
        assert!(mean_rate(&at_ms(&[5])).abs() < 1e-9);
    }
}
