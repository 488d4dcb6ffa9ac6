//! Every intake row of the bad-input contract: status, body, nothing queued, counted.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tests::{APP, Env, EnvOptions, KINTONE_WEBHOOK_TOKEN, proxy::Proxy};

/// An environment without workers, so that whatever ingest queues stays queued.
async fn ingest_only() -> anyhow::Result<Env> {
    let reverse: domain::rules::RuleSpec = serde_json::from_value(json!({
        "name": "tickets-to-work-orders",
        "source": {"system": "helpdesk", "app": "ticket"},
        "target": {"system": "kintone", "entity": "101"},
        "identity": {"source_field": "external_id", "target_field": "work_order_no"},
        "fields": [{"source": "status", "target": "status"}]
    }))?;
    Env::start_with(EnvOptions {
        workers: 0,
        extra_rules: vec![reverse],
        ..EnvOptions::default()
    })
    .await
}

async fn work_depth(env: &Env) -> anyhow::Result<u32> {
    let conn = queue::connect(&tests::amqp_url(), "it-depth").await?;
    let p = queue::Publisher::open(&conn, Duration::from_secs(2)).await?;
    let depth = p
        .queue_depth(&queue::Names::new(&env.settings.queue_prefix).work_queue())
        .await?;
    conn.close(200, "done".into()).await?;
    Ok(depth)
}

fn kintone_hook(event_id: &str, app: &str) -> Value {
    json!({"id": event_id, "type": "ADD_RECORD", "app": {"id": app, "name": "Work orders"}, "record": {"$id": {"type": "__ID__", "value": "1"}}, "recordTitle": "", "url": ""})
}

fn sign(secret: &str, id: &str, ts: i64, body: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn metric(env: &Env, line_start: &str) -> anyhow::Result<u64> {
    let text = env
        .http
        .get(format!("{}/metrics", env.ingest_url))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

fn kintone_path(token: &str) -> String {
    format!("/webhooks/kintone?token={token}")
}

#[tokio::test]
async fn every_bad_input_is_refused_with_its_status_and_nothing_is_queued() -> anyhow::Result<()> {
    let env = ingest_only().await?;
    let good = kintone_hook("e-1", APP).to_string();

    // Bad or missing token: 401.
    let (s, body) = env
        .post_webhook(&kintone_path("wrong"), &[], good.clone())
        .await?;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (s, _) = env
        .post_webhook("/webhooks/kintone", &[], good.clone())
        .await?;
    assert_eq!(s, 401);
    // Over the body limit: 413.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (s, body) = env
        .post_webhook(&kintone_path(KINTONE_WEBHOOK_TOKEN), &[], big)
        .await?;
    assert_eq!(s, 413, "{body}");
    // Not JSON: 400.
    let (s, body) = env
        .post_webhook(&kintone_path(KINTONE_WEBHOOK_TOKEN), &[], "{not json")
        .await?;
    assert_eq!(s, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the body is not JSON")
    );
    // JSON missing what routing needs: 422 naming the field.
    let (s, body) = env
        .post_webhook(
            &kintone_path(KINTONE_WEBHOOK_TOKEN),
            &[],
            json!({"id": "x", "type": "ADD_RECORD", "recordId": "1"}).to_string(),
        )
        .await?;
    assert_eq!(s, 422);
    assert_eq!(body["error"]["code"], "missing_field");
    assert_eq!(
        body["error"]["message"],
        "the payload lacks app.id, which routing needs"
    );
    // Unknown system: 404.
    let (s, body) = env
        .post_webhook("/webhooks/erp?token=x", &[], good.clone())
        .await?;
    assert_eq!(s, 404);
    assert_eq!(body["error"]["message"], "unknown system \"erp\"");
    // No rule for the app: 422.
    let (s, body) = env
        .post_webhook(
            &kintone_path(KINTONE_WEBHOOK_TOKEN),
            &[],
            kintone_hook("e-2", "999").to_string(),
        )
        .await?;
    assert_eq!(s, 422);
    assert_eq!(
        body["error"]["message"],
        "no sync rule watches app \"999\" of system \"kintone\""
    );

    assert_eq!(work_depth(&env).await?, 0, "nothing may be queued");
    assert_eq!(
        metric(
            &env,
            "recordsync_ingest_webhooks_total{system=\"kintone\",outcome=\"unauthorized\"}"
        )
        .await?,
        2
    );
    assert_eq!(
        metric(
            &env,
            "recordsync_ingest_webhooks_total{system=\"unknown\",outcome=\"unknown_system\"}"
        )
        .await?,
        1
    );
    assert_eq!(
        metric(
            &env,
            "recordsync_ingest_webhooks_total{system=\"kintone\",outcome=\"no_rule\"}"
        )
        .await?,
        1
    );

    // A good one is queued and answered 202 with its event id; the same again too.
    for _ in 0..2 {
        let (s, body) = env
            .post_webhook(&kintone_path(KINTONE_WEBHOOK_TOKEN), &[], good.clone())
            .await?;
        assert_eq!(s, 202);
        assert_eq!(body["event_id"], "e-1");
    }
    tests::wait_for("two queued messages", Duration::from_secs(5), || async {
        Ok(work_depth(&env).await? == 2)
    })
    .await?;
    env.finish().await
}

#[tokio::test]
async fn standard_webhooks_signatures_are_verified() -> anyhow::Result<()> {
    let env = ingest_only().await?;
    let secret = env.sandbox_config.helpdesk_webhook_secret.clone();
    let body = json!({"type": "ticket.updated", "timestamp": "2026-11-22T10:08:00Z", "data": {"ticket": {"id": 7, "status": "closed"}}}).to_string();
    let now = chrono::Utc::now().timestamp();
    let headers = |id: &str, ts: i64, sig: String| {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sig),
        ]
    };

    let (s, reply) = env
        .post_webhook(
            "/webhooks/helpdesk",
            &headers("msg_1", now, sign(&secret, "msg_1", now, &body)),
            body.clone(),
        )
        .await?;
    assert_eq!(s, 202, "{reply}");
    assert_eq!(reply["event_id"], "msg_1");
    // Secret rotation: a wrong signature next to the right one passes.
    let both = format!("v1,d3Jvbmc= {}", sign(&secret, "msg_2", now, &body));
    let (s, _) = env
        .post_webhook(
            "/webhooks/helpdesk",
            &headers("msg_2", now, both),
            body.clone(),
        )
        .await?;
    assert_eq!(s, 202);
    // Tampered body, wrong secret, stale and future timestamps, missing headers: 401.
    let (s, _) = env
        .post_webhook(
            "/webhooks/helpdesk",
            &headers("msg_3", now, sign(&secret, "msg_3", now, &body)),
            body.replace("closed", "open"),
        )
        .await?;
    assert_eq!(s, 401);
    let other = "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlcg==";
    let (s, _) = env
        .post_webhook(
            "/webhooks/helpdesk",
            &headers("msg_4", now, sign(other, "msg_4", now, &body)),
            body.clone(),
        )
        .await?;
    assert_eq!(s, 401);
    let old = now - 301;
    let (s, reply) = env
        .post_webhook(
            "/webhooks/helpdesk",
            &headers("msg_5", old, sign(&secret, "msg_5", old, &body)),
            body.clone(),
        )
        .await?;
    assert_eq!(s, 401);
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outside the tolerance"),
        "{reply}"
    );
    let future = now + 301;
    let (s, _) = env
        .post_webhook(
            "/webhooks/helpdesk",
            &headers("msg_6", future, sign(&secret, "msg_6", future, &body)),
            body.clone(),
        )
        .await?;
    assert_eq!(s, 401);
    let (s, reply) = env
        .post_webhook("/webhooks/helpdesk", &[], body.clone())
        .await?;
    assert_eq!(s, 401);
    assert_eq!(
        reply["error"]["message"],
        "the webhook-id header is missing"
    );

    tests::wait_for("two queued messages", Duration::from_secs(5), || async {
        Ok(work_depth(&env).await? == 2)
    })
    .await?;
    env.finish().await
}

#[tokio::test]
async fn broker_down_answers_503_with_retry_after_and_acknowledges_nothing() -> anyhow::Result<()> {
    let upstream: std::net::SocketAddr = "127.0.0.1:5672".parse()?;
    let proxy = Proxy::start(upstream).await?;
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let reverse_free = EnvOptions {
        workers: 0,
        ingest_amqp_url: Some(url),
        ..EnvOptions::default()
    };
    let env = Env::start_with(reverse_free).await?;
    let path = kintone_path(KINTONE_WEBHOOK_TOKEN);

    let (s, _) = env
        .post_webhook(&path, &[], kintone_hook("before", APP).to_string())
        .await?;
    assert_eq!(s, 202);
    proxy.down();
    let ready = env.http.get(format!("{}/readyz", env.ingest_url));
    tests::wait_for("ingest to notice", Duration::from_secs(10), || async {
        Ok(ready.try_clone().unwrap().send().await?.status().as_u16() == 503)
    })
    .await?;
    let resp = env
        .http
        .post(format!("{}{path}", env.ingest_url))
        .body(kintone_hook("during", APP).to_string())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "unavailable");

    proxy.up();
    tests::wait_for("ingest to reconnect", Duration::from_secs(15), || async {
        Ok(ready.try_clone().unwrap().send().await?.status().as_u16() == 200)
    })
    .await?;
    let (s, _) = env
        .post_webhook(&path, &[], kintone_hook("after", APP).to_string())
        .await?;
    assert_eq!(s, 202);
    // Exactly the two acknowledged webhooks are queued; the refused one is not.
    tests::wait_for("two queued messages", Duration::from_secs(5), || async {
        Ok(work_depth(&env).await? == 2)
    })
    .await?;
    env.finish().await
}

/// Ingest takes several broker addresses (a cluster's nodes) and fails over: when the
/// node it uses goes, it connects to the next one and accepts again while the first is
/// still down.
#[tokio::test]
async fn ingest_fails_over_to_the_next_broker_address() -> anyhow::Result<()> {
    let first = Proxy::start("127.0.0.1:5672".parse()?).await?;
    let both = format!(
        "amqp://guest:guest@{}/%2f, {}",
        first.addr,
        tests::amqp_url()
    );
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ingest_amqp_url: Some(both),
        ..EnvOptions::default()
    })
    .await?;
    let path = kintone_path(KINTONE_WEBHOOK_TOKEN);
    let (s, _) = env
        .post_webhook(&path, &[], kintone_hook("via-first", APP).to_string())
        .await?;
    assert_eq!(s, 202);
    first.down();
    let ready = env.http.get(format!("{}/readyz", env.ingest_url));
    // It notices the loss, then connects to the second address, the first still down.
    tests::wait_for("ingest to fail over", Duration::from_secs(20), || async {
        let (s, _) = env
            .post_webhook(&path, &[], kintone_hook("via-second", APP).to_string())
            .await?;
        Ok(s == 202 && ready.try_clone().unwrap().send().await?.status().as_u16() == 200)
    })
    .await?;
    tests::wait_for("both queued", Duration::from_secs(5), || async {
        Ok(work_depth(&env).await? >= 2)
    })
    .await?;
    env.finish().await
}

/// A publish the broker takes but does not confirm within the publish timeout is an
/// "unconfirmed" publish: ingest answers 503 with Retry-After, once the timeout has
/// passed, so the sender tries again. The held publish may still reach the queue (here
/// it does, once the broker answers again), and the retry is accepted too: the step
/// makes one ticket of the two copies, since both carry the webhook's event id.
#[tokio::test]
async fn a_publish_left_unconfirmed_past_the_timeout_is_refused_with_503() -> anyhow::Result<()> {
    let proxy = Proxy::start("127.0.0.1:5672".parse()?).await?;
    let mut env = Env::start_with(EnvOptions {
        workers: 0,
        ingest_amqp_url: Some(format!("amqp://guest:guest@{}/%2f", proxy.addr)),
        ..EnvOptions::default()
    })
    .await?;
    let id = env
        .kintone_create_silently(json!({"work_order_no": "WO-3301", "件名": "Held"}))
        .await?;
    let mut hook = kintone_hook("held-1", APP);
    hook["record"]["$id"]["value"] = json!(id);
    let path = kintone_path(KINTONE_WEBHOOK_TOKEN);

    proxy.stall();
    let sent = std::time::Instant::now();
    let resp = env
        .http
        .post(format!("{}{path}", env.ingest_url))
        .body(hook.to_string())
        .send()
        .await?;
    let waited = sent.elapsed();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // Refused because the confirm did not come, not because the broker was gone.
    let timeout = Duration::from_millis(env.settings.publish_timeout_ms);
    assert!(
        waited >= timeout,
        "answered after {waited:?}, before the {timeout:?} timeout"
    );

    proxy.resume();
    let (status, _) = env.post_webhook(&path, &[], hook.to_string()).await?;
    assert_eq!(status, 202, "the sender's retry is accepted");
    tests::wait_for("both copies queued", Duration::from_secs(10), || async {
        Ok(work_depth(&env).await? == 2)
    })
    .await?;
    env.start_worker().await?;
    env.settle("the write-back", || env.written_back(&id))
        .await?;
    // The second copy is recognised by its event id.
    tests::wait_for(
        "the second copy skipped",
        Duration::from_secs(10),
        || async {
            Ok(env
                .history(&id)
                .await?
                .iter()
                .any(|h| h.starts_with("duplicate_skipped:")))
        },
    )
    .await?;
    assert_eq!(env.ticket_posts().await?, 1, "one ticket of the two copies");
    env.finish().await
}

/// An ingest of its own, with these limits, whose broker never connects (nothing here
/// is published): its address and how to stop it.
async fn bounded_ingest(
    limits: ingest::IntakeLimits,
    max_body_bytes: usize,
) -> anyhow::Result<(
    std::net::SocketAddr,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let secrets = tests::secrets(&sandbox::SandboxConfig::default());
    let settings = config::Settings {
        amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        max_body_bytes,
        ..config::Settings::default()
    };
    let rules = tests::example_rules("http://127.0.0.1:1");
    let ingest = ingest::Ingest::with_secrets(&settings, rules, |path, var| {
        secrets
            .get(var)
            .cloned()
            .ok_or_else(|| config::ConfigError::MissingSecret {
                path: path.to_owned(),
                var: var.to_owned(),
            })
    })?
    .with_limits(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(ingest.run(listener, stop.clone()));
    Ok((addr, stop, task))
}

/// Reads until the server closes the connection, or fails after `within`.
async fn read_until_closed(
    conn: &mut tokio::net::TcpStream,
    within: Duration,
) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    anyhow::ensure!(
        read.is_ok(),
        "the server kept the connection open past {within:?} (read so far: {:?})",
        String::from_utf8_lossy(&out)
    );
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn write(conn: &mut tokio::net::TcpStream, bytes: &[u8]) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    conn.write_all(bytes).await?;
    conn.flush().await?;
    Ok(())
}

#[tokio::test]
async fn silent_half_sent_and_idle_connections_are_closed_after_the_header_timeout()
-> anyhow::Result<()> {
    let limits = ingest::IntakeLimits {
        header_timeout: Duration::from_millis(300),
        ..ingest::IntakeLimits::default()
    };
    let (addr, stop, task) = bounded_ingest(limits, 1024 * 1024).await?;

    // Sends nothing at all.
    let start = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await?;
    let said = read_until_closed(&mut silent, Duration::from_secs(5)).await?;
    assert!(start.elapsed() >= Duration::from_millis(250), "{said}");
    // Sends half its headers, then nothing (slowloris).
    let mut half = tokio::net::TcpStream::connect(addr).await?;
    write(
        &mut half,
        b"POST /webhooks/kintone?token=x HTTP/1.1\r\nHost: a\r\n",
    )
    .await?;
    let said = read_until_closed(&mut half, Duration::from_secs(5)).await?;
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said}"
    );
    // One request on a keep-alive connection, then idle.
    let mut idle = tokio::net::TcpStream::connect(addr).await?;
    write(&mut idle, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await?;
    let said = read_until_closed(&mut idle, Duration::from_secs(5)).await?;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(said.ends_with("ok"), "{said}");

    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test]
async fn a_body_that_stalls_or_trickles_is_cut_off_with_408() -> anyhow::Result<()> {
    // A body that stops arriving: the wait for the next chunk is bounded.
    let limits = ingest::IntakeLimits {
        body_timeout: Duration::from_millis(300),
        ..ingest::IntakeLimits::default()
    };
    let (addr, stop, task) = bounded_ingest(limits, 1024 * 1024).await?;
    let mut stalled = tokio::net::TcpStream::connect(addr).await?;
    write(
        &mut stalled,
        format!("POST /webhooks/kintone?token={KINTONE_WEBHOOK_TOKEN} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{{\"id\": ").as_bytes(),
    )
    .await?;
    let said = read_until_closed(&mut stalled, Duration::from_secs(5)).await?;
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains("\"code\":\"timeout\""), "{said}");
    stop.cancel();
    task.await??;

    // A body that trickles a byte at a time: the whole request has a deadline.
    let limits = ingest::IntakeLimits {
        request_timeout: Duration::from_millis(500),
        ..ingest::IntakeLimits::default()
    };
    let (addr, stop, task) = bounded_ingest(limits, 1024 * 1024).await?;
    let conn = tokio::net::TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = conn.into_split();
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let head = format!(
            "POST /webhooks/kintone?token={KINTONE_WEBHOOK_TOKEN} HTTP/1.1\r\nHost: a\r\nContent-Length: 10000\r\n\r\n"
        );
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        // A slow client, by design: one byte every 100 ms, until the server hangs up.
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let start = std::time::Instant::now();
    let said = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1024];
        let n = reader.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await?;
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    drop(reader);
    trickle.abort();
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() -> anyhow::Result<()> {
    let limits = ingest::IntakeLimits {
        max_connections: 2,
        ..ingest::IntakeLimits::default()
    };
    let (addr, stop, task) = bounded_ingest(limits, 1024 * 1024).await?;
    let first = tokio::net::TcpStream::connect(addr).await?;
    let _second = tokio::net::TcpStream::connect(addr).await?;
    let mut third = tokio::net::TcpStream::connect(addr).await?;
    write(
        &mut third,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let early = read_until_closed(&mut third, Duration::from_millis(300)).await;
    assert!(early.is_err(), "the third connection was served: {early:?}");
    drop(first);
    let said = read_until_closed(&mut third, Duration::from_secs(5)).await?;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test]
async fn unauthenticated_bodies_share_a_byte_budget_and_503_when_it_is_spent() -> anyhow::Result<()>
{
    let limits = ingest::IntakeLimits {
        body_budget_bytes: 1000,
        ..ingest::IntakeLimits::default()
    };
    let (addr, stop, task) = bounded_ingest(limits, 800).await?;
    let url = format!("http://{addr}/webhooks/helpdesk");
    let http = tests::http_client();
    let post = || http.post(&url).body("x".repeat(400)).send();

    // Alone, a 400-byte body is read (and refused for its missing signature).
    assert_eq!(post().await?.status().as_u16(), 401);
    // A slow sender holds 700 bytes of the budget while its body arrives.
    let mut slow = tokio::net::TcpStream::connect(addr).await?;
    write(
        &mut slow,
        b"POST /webhooks/helpdesk HTTP/1.1\r\nHost: a\r\nContent-Length: 700\r\n\r\n{",
    )
    .await?;
    let refused = std::sync::Mutex::new(None);
    tests::wait_for("the budget to be spent", Duration::from_secs(5), || async {
        let resp = post().await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        *refused.lock().unwrap() = Some((status, retry_after, body));
        Ok(status == 503)
    })
    .await?;
    let (_, retry_after, body) = refused.lock().unwrap().take().unwrap();
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "busy");
    // The slow sender gives up: its bytes return to the budget.
    drop(slow);
    tests::wait_for("the budget to return", Duration::from_secs(5), || async {
        Ok(post().await?.status().as_u16() == 401)
    })
    .await?;
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text.contains("recordsync_ingest_webhooks_total{system=\"helpdesk\",outcome=\"busy\"}"),
        "{text}"
    );
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test]
async fn ids_the_broker_cannot_carry_and_payloads_the_worker_cannot_decode_are_422()
-> anyhow::Result<()> {
    let env = ingest_only().await?;
    let path = kintone_path(KINTONE_WEBHOOK_TOKEN);
    // A 300-byte event id used to panic the handler at publish (an AMQP message id is
    // at most 255 bytes): the connection dropped without an answer.
    let long = "e".repeat(300);
    let (s, body) = env
        .post_webhook(&path, &[], kintone_hook(&long, APP).to_string())
        .await?;
    assert_eq!(s, 422, "{body}");
    assert_eq!(
        body["error"]["message"],
        "the event id is 300 bytes long; at most 255 are accepted"
    );
    // The same for a signed helpdesk webhook's id.
    let secret = env.sandbox_config.helpdesk_webhook_secret.clone();
    let hook = json!({"type": "ticket.updated", "data": {"ticket": {"id": 7}}}).to_string();
    let now = chrono::Utc::now().timestamp();
    let headers = vec![
        ("webhook-id", long.clone()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", sign(&secret, &long, now, &hook)),
    ];
    let (s, body) = env
        .post_webhook("/webhooks/helpdesk", &headers, hook)
        .await?;
    assert_eq!(s, 422, "{body}");
    // Nesting the worker's decoder would refuse once wrapped in the envelope.
    let mut deep = json!(1);
    for _ in 0..126 {
        deep = json!([deep]);
    }
    let mut nested = kintone_hook("deep", APP);
    nested["x"] = deep;
    let (s, body) = env.post_webhook(&path, &[], nested.to_string()).await?;
    assert_eq!(s, 422, "{body}");
    // A signed timestamp at the end of the range: refused, no overflow.
    let ts = now.wrapping_add(i64::MIN);
    let hook = json!({"type": "ticket.updated", "data": {"ticket": {"id": 7}}}).to_string();
    let headers = vec![
        ("webhook-id", "msg_overflow".to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            sign(&secret, "msg_overflow", ts, &hook),
        ),
    ];
    let (s, body) = env
        .post_webhook("/webhooks/helpdesk", &headers, hook)
        .await?;
    assert_eq!(s, 401, "{body}");
    // The longest id that fits is accepted.
    let (s, body) = env
        .post_webhook(&path, &[], kintone_hook(&"e".repeat(255), APP).to_string())
        .await?;
    assert_eq!(s, 202, "{body}");
    tests::wait_for("one queued message", Duration::from_secs(5), || async {
        Ok(work_depth(&env).await? == 1)
    })
    .await?;
    env.finish().await
}

#[tokio::test]
async fn an_unroutable_publish_is_refused_with_503_and_nothing_is_queued() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let names = queue::Names::new(&env.settings.queue_prefix);
    let conn = queue::connect(&tests::amqp_url(), "it-unroutable").await?;
    let channel = conn.create_channel().await?;
    let publisher = queue::Publisher::open(&conn, Duration::from_secs(5)).await?;
    let work = names.work_queue();
    let exchange = names.events_exchange();
    // The work queue loses its binding: the exchange has nowhere to route a webhook,
    // and the broker returns the mandatory publish.
    channel
        .queue_unbind(
            work.as_str().into(),
            exchange.as_str().into(),
            queue::topology::WORK_KEY.into(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    let path = kintone_path(KINTONE_WEBHOOK_TOKEN);
    let (status, body) = env
        .post_webhook(&path, &[], kintone_hook("unroutable", APP).to_string())
        .await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(publisher.queue_depth(&work).await?, 0);
    assert_eq!(
        metric(
            &env,
            "recordsync_ingest_webhooks_total{system=\"kintone\",outcome=\"unavailable\"}"
        )
        .await?,
        1
    );

    // Bound again, the same webhook is accepted and queued once.
    channel
        .queue_bind(
            work.as_str().into(),
            exchange.as_str().into(),
            queue::topology::WORK_KEY.into(),
            lapin::options::QueueBindOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    let (status, body) = env
        .post_webhook(&path, &[], kintone_hook("unroutable", APP).to_string())
        .await?;
    assert_eq!(status, 202, "{body}");
    tests::wait_for("the webhook queued", Duration::from_secs(5), || async {
        Ok(publisher.queue_depth(&work).await? == 1)
    })
    .await?;
    env.finish().await
}

/// Runs `rabbitmqctl` on the local broker.
async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    rabbitmqctl_owned(args.iter().map(|a| (*a).to_owned()).collect()).await
}

async fn rabbitmqctl_owned(args: Vec<String>) -> anyhow::Result<String> {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("rabbitmqctl")
            .args(&args)
            .output()
    })
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The broker refuses a publish with a nack (a policy caps this test's own work queue at
/// no message and rejects what does not fit): ingest answers 503 and nothing is queued.
/// Once the policy is gone, the same webhook is accepted and queued once.
#[tokio::test]
async fn a_publish_the_broker_nacks_is_refused_with_503() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let work = queue::Names::new(&env.settings.queue_prefix).work_queue();
    let conn = queue::connect(&tests::amqp_url(), "it-nack").await?;
    let publisher = queue::Publisher::open(&conn, Duration::from_secs(5)).await?;
    let policy = format!("{}-nack", env.settings.queue_prefix);
    let pattern = format!("^{}$", work.replace('.', "\\."));
    let applied =
        || async {
            let listed = rabbitmqctl(&[
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "policy",
            ])
            .await?;
            anyhow::Ok(listed.lines().any(|l| {
                l.split_whitespace().collect::<Vec<_>>() == [work.as_str(), policy.as_str()]
            }))
        };
    // The policy on this test's work queue alone, with the definition given.
    let set_policy = |definition: &'static str| {
        rabbitmqctl_owned(vec![
            "set_policy".into(),
            "--apply-to".into(),
            "queues".into(),
            "--priority".into(),
            "100".into(),
            policy.clone(),
            pattern.clone(),
            definition.into(),
        ])
    };
    set_policy(r#"{"max-length": 0, "overflow": "reject-publish"}"#).await?;
    let applied = tests::wait_for("the policy applied", Duration::from_secs(20), applied).await;
    let path = kintone_path(KINTONE_WEBHOOK_TOKEN);
    // A quorum queue starts rejecting once it is over its limit: the first publish may
    // still be taken (and is then queued, so 202 is right), the next one is nacked.
    let refused = async {
        applied?;
        let (first, _) = env
            .post_webhook(&path, &[], kintone_hook("first", APP).to_string())
            .await?;
        let depth = publisher.queue_depth(&work).await?;
        let second = env
            .post_webhook(&path, &[], kintone_hook("nacked", APP).to_string())
            .await?;
        anyhow::Ok((first, depth, second))
    }
    .await;
    let (first, depth, (status, body)) = match refused {
        Ok(r) => r,
        Err(e) => {
            // The policy goes whatever happened, so that a failure leaves nothing behind.
            rabbitmqctl(&["clear_policy", &policy]).await?;
            return Err(e);
        }
    };
    assert!(
        (first == 202 && depth == 1) || (first == 503 && depth == 0),
        "the first webhook answered {first} with {depth} queued"
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(
        publisher.queue_depth(&work).await?,
        depth,
        "the nacked webhook is not queued"
    );

    // A quorum queue kept rejecting for 20 s after this policy was cleared (RabbitMQ
    // 3.10): lifting the limit takes a policy that raises it.
    set_policy(r#"{"max-length": 1000000}"#).await?;
    let accepted = tests::wait_for("the webhook accepted", Duration::from_secs(20), || async {
        let (status, _) = env
            .post_webhook(&path, &[], kintone_hook("nacked", APP).to_string())
            .await?;
        anyhow::ensure!(status == 202 || status == 503, "answered {status}");
        Ok(status == 202)
    })
    .await;
    rabbitmqctl(&["clear_policy", &policy]).await?;
    accepted?;
    assert_eq!(
        publisher.queue_depth(&work).await?,
        depth + 1,
        "queued once"
    );
    env.finish().await
}
