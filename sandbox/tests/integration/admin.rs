//! Faults, rate limits, the request log and the admin API itself.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Env, status_json};

async fn kintone_get(env: &Env) -> reqwest::Response {
    env.kintone(Method::GET, "/k/v1/records.json")
        .query(&[("app", "101")])
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn health_check_answers_ok() {
    let env = Env::start().await;
    let response = env
        .client
        .get(env.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.expect("text"), "ok");
}

#[tokio::test]
async fn counted_faults_with_retry_after() {
    let env = Env::start().await;
    env.create_app(101, None).await;
    let fault = env
        .admin(
            Method::POST,
            "/_admin/faults",
            Some(json!({
                "system": "kintone",
                "method": "GET",
                "path_prefix": "/k/v1/records",
                "status": 503,
                "retry_after": "2",
                "count": 2,
            })),
        )
        .await;
    let fault_id = fault["id"].as_str().expect("an id").to_owned();

    for _ in 0..2 {
        let response = kintone_get(&env).await;
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()),
            Some("2")
        );
        let body: Value = response.json().await.expect("JSON");
        assert!(body["code"].is_string() && body["id"].is_string() && body["message"].is_string());
    }
    assert_eq!(kintone_get(&env).await.status().as_u16(), 200);
    let faults = env.admin(Method::GET, "/_admin/faults", None).await;
    assert_eq!(faults["faults"], json!([]));

    let log = env
        .admin(Method::GET, "/_admin/log?system=kintone", None)
        .await;
    let statuses: Vec<Value> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(503), json!(503), json!(200)]);
    assert_eq!(log["entries"][0]["fault_id"], json!(fault_id));

    // A helpdesk fault answers in the helpdesk's error shape and can be removed by id.
    let fault = env
        .admin(
            Method::POST,
            "/_admin/faults",
            Some(json!({"system": "helpdesk", "status": 500, "body_contains": "explode"})),
        )
        .await;
    let (status, body) = status_json(
        env.helpdesk(Method::POST, "/api/tickets")
            .json(&json!({"subject": "please explode"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["code"], json!("internal_error"));
    let (status, _) = status_json(
        env.helpdesk(Method::POST, "/api/tickets")
            .json(&json!({"subject": "calm"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 201);
    let id = fault["id"].as_str().expect("an id");
    env.admin(Method::DELETE, &format!("/_admin/faults/{id}"), None)
        .await;
    let (status, _) = status_json(
        env.helpdesk(Method::POST, "/api/tickets")
            .json(&json!({"subject": "explode now"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 201);

    let (status, body) = status_json(
        env.client
            .post(env.url("/_admin/faults"))
            .json(&json!({"system": "kintone", "statuss": 500}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn latency_faults_delay_requests() {
    let env = Env::start().await;
    env.create_app(101, None).await;
    env.admin(
        Method::POST,
        "/_admin/faults",
        Some(json!({"system": "kintone", "latency_ms": 150, "count": 1})),
    )
    .await;
    let started = Instant::now();
    assert_eq!(kintone_get(&env).await.status().as_u16(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(kintone_get(&env).await.status().as_u16(), 200);
    assert!(started.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn after_faults_lose_the_response_of_a_processed_request() {
    let env = Env::start().await;
    env.admin(
        Method::POST,
        "/_admin/faults",
        Some(json!({"system": "helpdesk", "method": "POST", "status": 502, "count": 1, "after": true})),
    )
    .await;
    let create = || {
        env.helpdesk(Method::POST, "/api/tickets")
            .header("Idempotency-Key", "lost-response")
            .json(&json!({"subject": "Created despite the 502"}))
            .send()
    };
    let (status, _) = status_json(create().await.expect("sent")).await;
    assert_eq!(status, 502);
    let tickets = env
        .admin(Method::GET, "/_admin/helpdesk/tickets", None)
        .await;
    assert_eq!(tickets["tickets"].as_array().map(Vec::len), Some(1));

    let response = create().await.expect("sent");
    assert_eq!(response.status().as_u16(), 201);
    assert!(response.headers().contains_key("idempotent-replayed"));
    let tickets = env
        .admin(Method::GET, "/_admin/helpdesk/tickets", None)
        .await;
    assert_eq!(tickets["tickets"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn probabilistic_faults_are_reproducible() {
    let outcomes = async || {
        let env = Env::start().await;
        env.create_app(101, None).await;
        env.admin(
            Method::POST,
            "/_admin/faults",
            Some(json!({"system": "kintone", "status": 500, "probability": 0.5})),
        )
        .await;
        let mut statuses = Vec::new();
        for _ in 0..16 {
            statuses.push(kintone_get(&env).await.status().as_u16());
        }
        statuses
    };
    let first = outcomes().await;
    assert_eq!(first, outcomes().await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn rate_limits_are_exact() {
    let env = Env::start().await;
    env.admin(
        Method::POST,
        "/_admin/limits",
        Some(json!({"system": "helpdesk", "requests_per_second": 0.5, "burst": 3})),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = env
            .helpdesk(Method::GET, "/api/tickets")
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        if status == 429 {
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok()),
                Some("2")
            );
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["error"]["code"], json!("rate_limited"));
        }
        statuses.push(status);
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);

    // Kintone is not limited, and the rejected requests are logged.
    env.create_app(101, None).await;
    assert_eq!(kintone_get(&env).await.status().as_u16(), 200);
    let log = env
        .admin(Method::GET, "/_admin/log?system=helpdesk", None)
        .await;
    assert_eq!(
        log["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|entry| entry["status"] == json!(429))
            .count(),
        2
    );

    env.admin(Method::DELETE, "/_admin/limits/helpdesk", None)
        .await;
    let response = env
        .helpdesk(Method::GET, "/api/tickets")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);

    env.admin(
        Method::POST,
        "/_admin/limits",
        Some(json!({"system": "kintone", "requests_per_second": 0.01, "burst": 1})),
    )
    .await;
    let response = kintone_get(&env).await;
    assert_eq!(response.status().as_u16(), 200);
    let response = kintone_get(&env).await;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()),
        Some("100")
    );
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["code"], json!("CB_TO01"));
}

#[tokio::test]
async fn request_log_records_api_requests_only() {
    let env = Env::start().await;
    env.create_app(101, None).await;
    env.kintone(Method::POST, "/k/v1/record.json")
        .json(&json!({"app": 101, "record": {"件名": {"value": "ログ"}}}))
        .send()
        .await
        .expect("sent");
    env.kintone(Method::GET, "/k/v1/records.json")
        .query(&[("app", "101"), ("query", "件名 = \"ログ\"")])
        .send()
        .await
        .expect("sent");
    env.helpdesk(Method::POST, "/api/tickets")
        .header("Idempotency-Key", "log-key")
        .json(&json!({"subject": "Logged"}))
        .send()
        .await
        .expect("sent");
    env.client
        .get(env.url("/api/tickets"))
        .send()
        .await
        .expect("sent");

    let log = env.admin(Method::GET, "/_admin/log", None).await;
    let entries = log["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 4, "{log}");
    let first = &entries[0];
    assert_eq!(first["seq"], json!(1));
    assert_eq!(first["system"], json!("kintone"));
    assert_eq!(first["method"], json!("POST"));
    assert_eq!(first["path"], json!("/k/v1/record.json"));
    assert_eq!(first["query"], Value::Null);
    assert_eq!(first["status"], json!(200));
    assert_eq!(first["idempotency_key"], Value::Null);
    assert_eq!(first["body"]["record"]["件名"]["value"], json!("ログ"));
    assert!(
        first["at"]
            .as_str()
            .is_some_and(|at| at.len() == 24 && at.ends_with('Z'))
    );
    assert!(
        entries[1]["query"]
            .as_str()
            .is_some_and(|query| query.contains("app=101"))
    );
    assert_eq!(entries[1]["body"], Value::Null);
    assert_eq!(entries[2]["system"], json!("helpdesk"));
    assert_eq!(entries[2]["idempotency_key"], json!("log-key"));
    assert_eq!(entries[2]["status"], json!(201));
    assert_eq!(entries[3]["status"], json!(401));

    let log = env
        .admin(Method::GET, "/_admin/log?system=helpdesk&since_seq=3", None)
        .await;
    let seqs: Vec<Value> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["seq"].clone())
        .collect();
    assert_eq!(seqs, vec![json!(4)]);

    env.admin(Method::DELETE, "/_admin/log", None).await;
    let log = env.admin(Method::GET, "/_admin/log", None).await;
    assert_eq!(log["entries"], json!([]));
    env.helpdesk(Method::GET, "/api/tickets")
        .send()
        .await
        .expect("sent");
    let log = env.admin(Method::GET, "/_admin/log", None).await;
    assert_eq!(log["entries"][0]["seq"], json!(5));
}
