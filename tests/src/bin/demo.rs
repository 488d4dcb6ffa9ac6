//! The demo: sandbox + ingest + worker against the local RabbitMQ and PostgreSQL, a
//! realistic stream of kintone changes (variants, a duplicate pair, repeated webhooks,
//! a lying payload, an invalid record), then a readable summary.
//!
//! Run it with `cargo run --bin demo`. It uses its own database and queue prefix and
//! removes both at the end (`--keep` leaves them for a look around).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tests::{APP, Env, EnvOptions, RULE};

const NEW_ORDERS: usize = 240;
const LEGACY_MATCHES: usize = 40;
const EDITS: usize = 100;
const REPEATED: usize = 20;
const CLOSED: usize = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    check_services().await?;
    let started = Instant::now();
    println!("recordsync demo — sandbox kintone app {APP} → sandbox helpdesk, rule \"{RULE}\"\n");
    // The example rule, two-way: the helpdesk owns the ticket status (kintone's 状態).
    let mut env = Env::start_with(EnvOptions {
        workers: 1,
        prefetch: 32,
        retry_delays_ms: vec![500, 2_000],
        edit_rules: Some(tests::two_way),
        ..EnvOptions::default()
    })
    .await?;
    env.enable_helpdesk_webhooks().await?;
    println!(
        "started: sandbox {}, ingest {}, 1 worker; database {}, queue prefix {}",
        env.sandbox.base_url, env.ingest_url, env.db.name, env.settings.queue_prefix
    );

    // The helpdesk already holds tickets from the legacy numbering (1000 for WO-1000),
    // and two tickets that both claim 2000.
    for n in 0..LEGACY_MATCHES {
        env.helpdesk_seed(json!({"subject": format!("Legacy ticket {}", 1000 + n), "external_id": (1000 + n).to_string(), "status": "open"})).await?;
    }
    let dup_a = env
        .helpdesk_seed(json!({"subject": "Pump (agent A)", "external_id": "2000"}))
        .await?;
    let dup_b = env
        .helpdesk_seed(json!({"subject": "Pump (agent B)", "external_id": "2000"}))
        .await?;
    println!(
        "seeded the helpdesk: {LEGACY_MATCHES} legacy tickets (1000…{}), two tickets sharing external id 2000 ({dup_a}, {dup_b})",
        1000 + LEGACY_MATCHES - 1
    );

    // Staff create work orders in kintone.
    let priorities = ["高", "中", "低"];
    let mut ids = vec![];
    for n in 0..LEGACY_MATCHES {
        ids.push(
            env.kintone_create(order(1000 + n, priorities[n % 3]))
                .await?,
        );
    }
    let dup_record = env.kintone_create(order(2000, "高")).await?;
    for n in 0..NEW_ORDERS {
        ids.push(
            env.kintone_create(order(3000 + n, priorities[n % 3]))
                .await?,
        );
    }
    let invalid = env
        .kintone_create(json!({"work_order_no": "WO-9999", "件名": "  ", "優先度": "中"}))
        .await?;
    println!(
        "created {} work orders in kintone (one with an empty subject)",
        ids.len() + 2
    );
    env.flush_webhooks().await?;
    wait_quiet(&env).await?;

    // Staff edit some of them; a few webhooks arrive again; one webhook lies.
    for id in ids.iter().take(EDITS) {
        env.kintone_edit(id, json!({"件名": format!("Revised work order {id}")}))
            .await?;
    }
    env.flush_webhooks().await?;
    let sent = env.admin_get("/_admin/kintone/webhooks").await?;
    let hooks: Vec<String> = sent
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["type"] == "UPDATE_RECORD")
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .take(REPEATED)
        .collect();
    for h in &hooks {
        for _ in 0..2 {
            env.admin_post(
                &format!("/_admin/kintone/webhooks/{h}/redeliver"),
                json!({}),
            )
            .await?;
        }
    }
    let story = ids[0].clone();
    let url = format!(
        "{}/_admin/kintone/apps/{APP}/records/{story}",
        env.sandbox.base_url
    );
    env.http.put(url).json(&json!({"record": {"件名": {"value": "Pump replaced, awaiting test run"}}, "webhook": false})).send().await?.error_for_status()?;
    let mut record = env.kintone_record(&story).await?;
    record["件名"]["value"] = json!("Pump still broken");
    let lie = json!({"id": "demo-lying-webhook", "type": "UPDATE_RECORD", "app": {"id": APP, "name": "Work orders"}, "record": record, "recordTitle": "Pump still broken", "url": ""});
    env.admin_post(
        &format!("/_admin/kintone/apps/{APP}/webhooks/send"),
        json!({"payload": lie}),
    )
    .await?;
    println!(
        "edited {EDITS} work orders, delivered {} webhooks twice more, sent one webhook whose payload lies",
        hooks.len()
    );
    env.flush_webhooks().await?;
    wait_quiet(&env).await?;

    // The other way: agents close tickets in the helpdesk (the status flows back), one
    // edits an email kintone owns (refused and restored), and the seed's story: while
    // the worker is away, kintone and an agent both change one customer's email.
    let ticket_of = |record: Value| {
        record["helpdesk_ticket_id"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for id in ids.iter().skip(1).take(CLOSED) {
        let t = ticket_of(env.kintone_record(id).await?);
        env.helpdesk_edit(&t, json!({"status": "closed"})).await?;
    }
    let t = ticket_of(env.kintone_record(&ids[CLOSED + 1]).await?);
    env.helpdesk_edit(&t, json!({"contact_email": "typo@example"}))
        .await?;
    env.flush_webhooks().await?;
    wait_quiet(&env).await?;
    env.stop_workers().await?;
    env.kintone_edit(&story, json!({"顧客メール": "new@example.com"}))
        .await?;
    let t = ticket_of(env.kintone_record(&story).await?);
    env.helpdesk_edit(&t, json!({"contact_email": "agent@example.com"}))
        .await?;
    env.flush_webhooks().await?;
    env.start_worker().await?;
    println!(
        "the helpdesk closed {CLOSED} tickets, an agent edited an email kintone owns, and kintone and an agent changed one email at once"
    );
    wait_quiet(&env).await?;
    let elapsed = started.elapsed();

    summary(&env, &story, &dup_record, &invalid, elapsed).await?;
    if keep {
        println!(
            "\n--keep: database {} and queues {}.* are left in place",
            env.db.name, env.settings.queue_prefix
        );
    } else {
        env.finish().await?;
    }
    Ok(())
}

fn order(n: usize, priority: &str) -> Value {
    json!({
        "work_order_no": format!("WO-{n}"),
        "件名": format!("Work order {n}: inspect pump"),
        "詳細": "Reported by the customer by phone.",
        "優先度": priority,
        "顧客メール": format!(" Customer{n}@Example.com "),
        "tags": if n.is_multiple_of(2) { json!(["onsite"]) } else { json!(["remote", "follow-up"]) },
    })
}

/// Fails within seconds, naming the service, the real cause (not running, or refusing
/// the login) and what to do. URLs are printed without their passwords.
async fn check_services() -> anyhow::Result<()> {
    use connectors::redact::without_password;
    let pg = tests::pg_server_url();
    let amqp = tests::amqp_url();
    for (name, url, default_port, how) in [
        (
            "RabbitMQ",
            &amqp,
            5672,
            "rabbitmq-server -detached   (or: docker compose up -d rabbitmq)",
        ),
        (
            "PostgreSQL",
            &pg,
            5432,
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start   (or: docker compose up -d postgres)",
        ),
    ] {
        let addr = host_port(url, default_port);
        let reachable = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&addr),
        )
        .await;
        if !matches!(reachable, Ok(Ok(_))) {
            bail!(
                "{name} is not reachable at {addr} ({}). Start it with:\n    {how}",
                without_password(url)
            );
        }
    }
    // Reachable: now the login, which a password-protected server may refuse.
    let admin = format!("{pg}/postgres");
    if let Err(e) = store::Store::connect(&admin, 1).await {
        let text = e.to_string();
        if text.contains("password") || text.contains("authentication") || text.contains("28P01") {
            bail!(
                "PostgreSQL refused the login at {}: {text}\n    Set RECORDSYNC_TEST_PG to the server URL with the right user and password (no database), e.g. postgres://postgres:<password>@127.0.0.1:5432",
                without_password(&admin)
            );
        }
        bail!("PostgreSQL at {} failed: {text}", without_password(&admin));
    }
    match queue::connect(&amqp, "recordsync-demo-check").await {
        Ok(conn) => {
            let _ = conn.close(200, "checked".into()).await;
        }
        Err(e) => bail!(
            "RabbitMQ at {} refused the connection: {e}\n    Set RECORDSYNC_TEST_AMQP to the broker URL with the right user and password, e.g. amqp://<user>:<password>@127.0.0.1:5672/%2f",
            without_password(&amqp)
        ),
    }
    Ok(())
}

/// The `host:port` of a connection URL.
fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    }
}

/// Waits until the work queue is empty and nothing more gets processed for a second.
async fn wait_quiet(env: &Env) -> anyhow::Result<()> {
    let conn = queue::connect(&tests::amqp_url(), "recordsync-demo").await?;
    let p = queue::Publisher::open(&conn, Duration::from_secs(2)).await?;
    // The work queue and the delay queues: a retry waiting out its delay is not done.
    let names = queue::Names::new(&env.settings.queue_prefix);
    let mut queues = vec![names.work_queue()];
    queues.extend((0..env.settings.retry_delays_ms.len()).map(|t| names.retry_queue(t)));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = (-1, u32::MAX);
    let mut quiet_since = Instant::now();
    loop {
        let mut depth = 0;
        for q in &queues {
            depth += p.queue_depth(q).await?;
        }
        let now = (env.store.processed_count(RULE).await?, depth);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if now.1 == 0 && quiet_since.elapsed() > Duration::from_secs(1) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the queue did not drain within 5 minutes ({} messages left)",
                now.1
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn summary(
    env: &Env,
    story: &str,
    dup: &str,
    invalid: &str,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let counts: BTreeMap<String, i64> = env
        .store
        .history_counts(None)
        .await?
        .into_iter()
        .map(|c| (c.kind, c.count))
        .collect();
    let c = |k: &str| counts.get(k).copied().unwrap_or(0);
    let links = env.store.links(RULE).await?;
    let mut by_step: BTreeMap<String, usize> = BTreeMap::new();
    for l in &links {
        let step = l.matched_by.as_ref().map(|m| match &m["step"] {
            Value::String(s) if s == "created" => {
                "creating a new ticket (nothing matched)".to_owned()
            }
            Value::String(s) => s.clone(),
            obj => match obj["step"].as_str() {
                Some("variant") => format!("variant {}", obj["description"].as_str().unwrap_or("")),
                Some(s) => s.replace('_', " "),
                None => "unknown".into(),
            },
        });
        if let Some(step) = step {
            *by_step.entry(step).or_default() += 1;
        }
    }
    let log = env.request_log("helpdesk").await?;
    let count = |m: &str| log.iter().filter(|e| e["method"] == m).count();
    let conflicts = env.store.conflicts("open").await?;
    let dead = env
        .store
        .dead_letters(&store::DeadFilter::default(), 10_000)
        .await?
        .len();
    let events = env.store.processed_count(RULE).await? + c("duplicate_skipped");

    println!(
        "\n== Summary ({:.1} s, {} events handled, {:.0} events/s) ==",
        elapsed.as_secs_f64(),
        events,
        events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "synced:      {} created, {} updated, {} written back into kintone",
        c("created"),
        c("updated"),
        c("written_back")
    );
    println!(
        "matched:     {} work orders linked to a ticket",
        links.iter().filter(|l| l.target_id.is_some()).count()
    );
    for (step, n) in &by_step {
        println!("               {n:>4} by {step}");
    }
    println!(
        "skipped:     {} duplicate deliveries, {} already-synced revisions (our own write-backs among them), {} unchanged",
        c("duplicate_skipped"),
        c("stale_skipped"),
        c("no_change")
    );
    println!(
        "payload:     {} webhook payload(s) disagreed with kintone; kintone's value was kept",
        c("payload_disagreed")
    );
    println!(
        "helpdesk:    {} tickets; {} POST, {} PATCH, {} GET requests",
        env.tickets().await?.len(),
        count("POST"),
        count("PATCH"),
        count("GET")
    );
    println!("conflicts:   {} open", conflicts.len());
    for conflict in &conflicts {
        println!(
            "               record {} [{}]: {}",
            conflict.source_record_id, conflict.kind, conflict.summary
        );
    }
    println!(
        "retries:     {}    dead letters: {dead}",
        c("retry_scheduled")
    );
    let decided = env.store.rule_history(RULE, 100_000).await?;
    let said = |from: &str, needle: &str| {
        decided
            .iter()
            .filter(|h| {
                h.kind == "decided" && h.summary.starts_with(from) && h.summary.contains(needle)
            })
            .count()
    };
    println!(
        "two-way:     {} helpdesk changes flowed back to kintone; {} changes refused and restored (the sender does not own the field), {} of them concurrent",
        said("helpdesk carried", "— accepted ("),
        said("", "— refused"),
        said("", "concurrent with")
    );
    let dup_conflict = conflicts
        .iter()
        .any(|c| c.source_record_id == dup && c.kind == "several_matches");
    let invalid_conflict = conflicts
        .iter()
        .any(|c| c.source_record_id == invalid && c.kind == "invalid");
    if !dup_conflict || !invalid_conflict {
        bail!("the demo expected conflicts for records {dup} and {invalid}");
    }
    println!(
        "\n== The story of work order record {story} (GET /records/{RULE}/{story}/timeline on the worker's admin API) =="
    );
    let rows = env.store.history(RULE, story).await.context("history")?;
    print!(
        "{}",
        worker::admin::render_timeline(&rows, chrono_tz::Tz::UTC)
    );
    Ok(())
}
