//! The `ingest` scenario: signed helpdesk webhooks (Standard Webhooks) at concurrency
//! 64 over keep-alive connections to an ingest process, beside raw confirmed publishing
//! of the same envelope at the same concurrency to a quorum queue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use crate::ceiling::{self, warm_up};
use crate::cpu;
use crate::fixture::{ChildEnv, Janitor};
use crate::load;
use crate::procs::Proc;
use crate::report::Row;
use crate::stats::{Summary, megabytes, ms, percent, rate};
use crate::uploads;

/// Requests in flight.
pub const CONCURRENCY: usize = 64;
/// Target: accepted webhooks per second as a share of raw publishes per second.
const MIN_SHARE_OF_CEILING: f64 = 0.5;
/// Target: the p99 request latency.
const MAX_P99: Duration = Duration::from_millis(25);
/// Target: ingest's peak RSS.
const MAX_RSS_MB: f64 = 50.0;

/// Ingest never calls the systems, so their base URL points nowhere.
const UNUSED_BASE_URL: &str = "http://127.0.0.1:9";

/// One webhook as the helpdesk would send it, signed.
struct Signed {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// What the scenario measured.
pub struct Figures {
    /// Webhooks in the timed run.
    pub count: usize,
    /// The envelope size in bytes.
    pub envelope_bytes: usize,
    /// Accepted webhooks per second.
    pub accepted_per_s: f64,
    /// Request latency.
    pub latency: Summary,
    /// Ingest's peak RSS, in KiB.
    pub rss_kib: u64,
    /// Raw publishes per second.
    pub ceiling_per_s: f64,
    /// Raw publish latency (publish to confirm).
    pub ceiling_latency: Summary,
    /// Where the CPU went, for the ceiling and for ingest.
    pub cpu: Vec<String>,
    /// Slow unauthenticated uploads: ingest's memory under them.
    pub uploads: uploads::Figures,
}

impl Figures {
    /// The report rows.
    pub fn rows(&self) -> Vec<Row> {
        let scenario = format!("ingest, c={CONCURRENCY}");
        let rss_mb = megabytes(self.rss_kib);
        let lat = |s: &Summary| format!("{} / {} / {} ms", ms(s.p50), ms(s.p99), ms(s.max));
        let mut rows = vec![
            Row::plain(&scenario, "accepted/s", rate(self.accepted_per_s))
                .ceiling(
                    format!("{} raw publishes/s", rate(self.ceiling_per_s)),
                    percent(self.accepted_per_s, self.ceiling_per_s),
                )
                .target(
                    "≥ 50% of ceiling",
                    self.accepted_per_s >= MIN_SHARE_OF_CEILING * self.ceiling_per_s,
                ),
            Row::plain(&scenario, "latency p50 / p99 / max", lat(&self.latency))
                .ceiling(
                    format!("{} (raw publish)", lat(&self.ceiling_latency)),
                    "—".into(),
                )
                .target("p99 < 25 ms", self.latency.p99 < MAX_P99),
            Row::plain(&scenario, "ingest peak RSS", format!("{rss_mb:.1} MB"))
                .target("< 50 MB", rss_mb < MAX_RSS_MB),
        ];
        rows.extend(self.uploads.rows());
        rows
    }
}

/// Runs the scenario with `count` webhooks.
pub async fn run(
    janitor: &Janitor,
    http: &reqwest::Client,
    count: usize,
) -> anyhow::Result<Figures> {
    let secret = sandbox::SandboxConfig::default().helpdesk_webhook_secret;
    let warm = warm_up(count);
    // Signing is the sender's work, so it is done before the clock starts.
    let now = chrono::Utc::now();
    let hooks: Vec<Signed> = (0..warm + count)
        .map(|i| sign(&secret, i, now))
        .collect::<anyhow::Result<_>>()?;
    let envelope = envelope(&hooks[0])?;

    eprintln!(
        "ingest: ceiling: {count} raw confirmed publishes of {} bytes at concurrency {CONCURRENCY}",
        envelope.len()
    );
    let bench = cpu::Group {
        name: "bench",
        members: cpu::Members::Pids(vec![std::process::id()]),
    };
    let rabbitmq = cpu::Group {
        name: "RabbitMQ",
        members: cpu::Members::Command("beam.smp"),
    };
    let watch = cpu::Watch::new(vec![rabbitmq.clone(), bench.clone()]);
    let before = watch.snapshot();
    let ceiling = ceiling::raw_publish(janitor, &envelope, count, CONCURRENCY).await?;
    let after = watch.snapshot();
    let mut cpu = vec![watch.describe("message", "raw publish ceiling", count, &before, &after)];

    let prefix = janitor.prefix();
    let mut rules = tests::example_rules(UNUSED_BASE_URL);
    rules.rules.push(reverse_rule()?);
    let env = ChildEnv {
        prefix: prefix.clone(),
        rules: janitor.rules_file(&rules)?,
        database_url: None,
        prefetch: 1,
    };
    let ingest = Proc::spawn("ingest", "__ingest", &env.vars()).await?;
    wait_ready(http, &format!("{}/readyz", ingest.url())).await?;
    eprintln!("ingest: {count} signed webhooks at concurrency {CONCURRENCY}");
    let url = format!("{}/webhooks/helpdesk", ingest.url());
    let hooks = Arc::new(hooks);
    let send = {
        let http = http.clone();
        move |i: usize| post_signed(http.clone(), url.clone(), Arc::clone(&hooks), i)
    };
    let send = Arc::new(send);
    let warm_send = Arc::clone(&send);
    load::closed_loop(warm, CONCURRENCY, move |i| warm_send(count + i)).await?;
    let watch = cpu::Watch::new(vec![
        cpu::Group {
            name: "ingest",
            members: cpu::Members::Pids(vec![ingest.pid()]),
        },
        rabbitmq,
        bench,
    ]);
    let before = watch.snapshot();
    let measured = load::closed_loop(count, CONCURRENCY, move |i| send(i)).await?;
    let after = watch.snapshot();
    cpu.push(watch.describe("webhook", "ingest", count, &before, &after));
    let rss_kib = ingest.peak_rss_kib()?;
    let uploads = uploads::run(ingest.addr, ingest.pid()).await?;
    ingest.stop().await?;
    janitor.delete_prefix(&prefix).await?;

    Ok(Figures {
        count,
        envelope_bytes: envelope.len(),
        accepted_per_s: measured.rate(),
        latency: Summary::of(measured.latencies()),
        rss_kib,
        ceiling_per_s: ceiling.rate(),
        ceiling_latency: Summary::of(ceiling.latencies()),
        cpu,
        uploads,
    })
}

async fn post_signed(
    http: reqwest::Client,
    url: String,
    hooks: Arc<Vec<Signed>>,
    i: usize,
) -> anyhow::Result<()> {
    let hook = &hooks[i];
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &hook.id)
        .header("webhook-timestamp", &hook.timestamp)
        .header("webhook-signature", &hook.signature)
        .body(hook.body.clone())
        .send()
        .await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if status != reqwest::StatusCode::ACCEPTED {
        bail!(
            "ingest answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// The helpdesk's `ticket.updated` webhook for ticket `i + 1`, signed with `secret`.
fn sign(secret: &str, i: usize, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<Signed> {
    let id = format!("msg_bench_{i}_{}", uuid::Uuid::new_v4().simple());
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = json!({
        "type": "ticket.updated",
        "timestamp": at,
        "data": {"ticket": {
            "id": i + 1,
            "external_id": format!("WO-{}", 100_000 + i),
            "subject": format!("Work order {}: inspect pump", 100_000 + i),
            "status": "open",
            "priority": "normal",
            "assignee": null,
            "tags": ["onsite"],
            "description": "Reported by the customer by phone.",
            "contact_email": format!("customer{i}@example.com"),
            "version": 2,
            "created_at": at,
            "updated_at": at,
        }},
    })
    .to_string();
    let timestamp = now.timestamp();
    let signature =
        sandbox::webhooks::sign_standard_webhook(secret, &id, timestamp, body.as_bytes())?;
    Ok(Signed {
        id,
        timestamp: timestamp.to_string(),
        signature,
        body,
    })
}

/// The queue message ingest publishes for `hook`, for a ceiling of the same size.
fn envelope(hook: &Signed) -> anyhow::Result<Vec<u8>> {
    let payload: serde_json::Value = serde_json::from_str(&hook.body)?;
    let record_id = payload["data"]["ticket"]["id"].to_string();
    Ok(queue::QueueMessage::V1(queue::EventV1 {
        event_id: hook.id.clone(),
        system: "helpdesk".into(),
        app: "ticket".into(),
        record_id,
        event_type: "ticket.updated".into(),
        received_at: chrono::Utc::now(),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        payload,
    })
    .encode())
}

/// A rule with the helpdesk as its source, so that signed helpdesk webhooks route.
fn reverse_rule() -> anyhow::Result<domain::rules::RuleSpec> {
    Ok(serde_json::from_value(json!({
        "name": "tickets-to-work-orders",
        "source": {"system": "helpdesk", "app": "ticket"},
        "target": {"system": "kintone", "entity": "101"},
        "identity": {"source_field": "external_id", "target_field": "work_order_no"},
        "fields": [{"source": "status", "target": "status"}]
    }))?)
}

/// Polls `url` until it answers 200.
pub async fn wait_ready(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    tests::wait_for(url, Duration::from_secs(20), || async {
        Ok(http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()))
    })
    .await
    .with_context(|| format!("{url} did not become ready; is RabbitMQ running?"))
}
