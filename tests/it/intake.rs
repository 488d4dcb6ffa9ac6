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
