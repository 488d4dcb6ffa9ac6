//! The helpdesk API: tickets, versions, idempotency keys, search lag, bulk updates and signed
//! webhooks.

use std::time::Duration;

use reqwest::Method;
use sandbox::webhooks::verify_standard_webhook;
use serde_json::{Value, json};

use crate::common::{Env, Receiver, status_json};

#[tokio::test]
async fn tickets_crud_with_versions() {
    let env = Env::start().await;

    let (status, body) = status_json(
        env.client
            .get(env.url("/api/tickets/1"))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], json!("unauthorized"));

    let (status, body) = status_json(
        env.helpdesk(Method::POST, "/api/tickets")
            .json(&json!({"subject": ""}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"error": {"code": "validation_failed", "message": "subject is required", "field": "subject"}})
    );

    let (status, body) = status_json(
        env.helpdesk(Method::POST, "/api/tickets")
            .json(&json!({
                "subject": "Pump broken",
                "external_id": "kintone:101:1",
                "priority": "high",
                "custom_field": {"site": "大阪"},
                "id": 500,
                "version": 9,
            }))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let ticket = &body["ticket"];
    assert_eq!(ticket["id"], json!(1));
    assert_eq!(ticket["status"], json!("open"));
    assert_eq!(ticket["priority"], json!("high"));
    assert_eq!(ticket["assignee"], Value::Null);
    assert_eq!(ticket["tags"], json!([]));
    assert_eq!(ticket["custom_field"], json!({"site": "大阪"}));
    assert_eq!(ticket["version"], json!(1));
    assert!(
        ticket["created_at"]
            .as_str()
            .is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok())
    );

    let patch = |if_match: Option<&str>, body: Value| {
        let mut request = env.helpdesk(Method::PATCH, "/api/tickets/1").json(&body);
        if let Some(version) = if_match {
            request = request.header("If-Match", version);
        }
        request.send()
    };
    let (status, body) = status_json(
        patch(Some("1"), json!({"status": "pending", "tags": ["a"]}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ticket"]["version"], json!(2));
    assert_eq!(body["ticket"]["status"], json!("pending"));
    assert_eq!(body["ticket"]["subject"], json!("Pump broken"));

    let (status, body) = status_json(
        patch(Some("1"), json!({"status": "closed"}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 412);
    assert_eq!(body["error"]["code"], json!("version_mismatch"));
    let (status, body) =
        status_json(patch(None, json!({"subject": ""})).await.expect("sent")).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], json!("subject"));

    let (status, body) = status_json(
        env.helpdesk(Method::GET, "/api/tickets/1")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ticket"]["version"], json!(2));
    assert_eq!(body["ticket"]["status"], json!("pending"));

    let (status, body) = status_json(
        env.helpdesk(Method::GET, "/api/tickets/42")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], json!("not_found"));
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_response() {
    let env = Env::start().await;
    let create = |key: &str, subject: &str| {
        env.helpdesk(Method::POST, "/api/tickets")
            .header("Idempotency-Key", key)
            .json(&json!({"subject": subject}))
            .send()
    };

    let first = create("key-1", "Once").await.expect("sent");
    assert_eq!(first.status().as_u16(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body: Value = first.json().await.expect("JSON");

    let second = create("key-1", "Once").await.expect("sent");
    assert_eq!(second.status().as_u16(), 201);
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .and_then(|value| value.to_str().ok()),
        Some("true")
    );
    let second_body: Value = second.json().await.expect("JSON");
    assert_eq!(first_body, second_body);

    let (status, body) = status_json(create("key-1", "Different").await.expect("sent")).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], json!("idempotency_key_reused"));

    let (status, _) = status_json(create("key-2", "Twice").await.expect("sent")).await;
    assert_eq!(status, 201);
    let tickets = env
        .admin(Method::GET, "/_admin/helpdesk/tickets", None)
        .await;
    assert_eq!(tickets["tickets"].as_array().map(Vec::len), Some(2));

    // A failed request is not remembered, so its key can be retried.
    let (status, _) = status_json(create("key-3", "").await.expect("sent")).await;
    assert_eq!(status, 422);
    let (status, body) = status_json(create("key-3", "Fixed").await.expect("sent")).await;
    assert_eq!(status, 201);
    assert_eq!(body["ticket"]["id"], json!(3));

    let update = || {
        env.helpdesk(Method::PATCH, "/api/tickets/1")
            .header("Idempotency-Key", "patch-1")
            .json(&json!({"status": "closed"}))
            .send()
    };
    let (status, body) = status_json(update().await.expect("sent")).await;
    assert_eq!((status, body["ticket"]["version"].clone()), (200, json!(2)));
    let (status, body) = status_json(update().await.expect("sent")).await;
    assert_eq!((status, body["ticket"]["version"].clone()), (200, json!(2)));
    let (_, body) = status_json(
        env.helpdesk(Method::GET, "/api/tickets/1")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(body["ticket"]["version"], json!(2));
}

async fn search(env: &Env, external_id: &str) -> Vec<u64> {
    let (status, body) = status_json(
        env.helpdesk(Method::GET, "/api/tickets")
            .query(&[("external_id", external_id)])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    body["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|ticket| ticket["id"].as_u64().expect("an id"))
        .collect()
}

#[tokio::test]
async fn search_is_exact_non_unique_and_lags() {
    let env = Env::start().await;
    env.admin(
        Method::POST,
        "/_admin/helpdesk/tickets",
        Some(json!({"subject": "Seeded", "external_id": "ext-1"})),
    )
    .await;
    env.admin(
        Method::POST,
        "/_admin/helpdesk/config",
        Some(json!({"search_lag_ms": 300})),
    )
    .await;
    for subject in ["First", "Duplicate"] {
        let (status, _) = status_json(
            env.helpdesk(Method::POST, "/api/tickets")
                .json(&json!({"subject": subject, "external_id": "ext-1"}))
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(status, 201);
    }
    env.helpdesk(Method::POST, "/api/tickets")
        .json(&json!({"subject": "Other", "external_id": "ext-10"}))
        .send()
        .await
        .expect("sent");

    // Seeded tickets are indexed at once; new ones are not yet searchable but can be read.
    assert_eq!(search(&env, "ext-1").await, vec![1]);
    let (status, _) = status_json(
        env.helpdesk(Method::GET, "/api/tickets/3")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(search(&env, "ext-1").await, vec![1, 2, 3]);
    assert_eq!(search(&env, "ext-10").await, vec![4]);
    assert_eq!(search(&env, "ext").await, Vec::<u64>::new());

    // An update does not hide an indexed ticket again: a search index keeps serving a
    // document while its new version is indexed (a chaos run once made a duplicate
    // out of the sandbox doing otherwise).
    env.helpdesk(Method::PATCH, "/api/tickets/2")
        .json(&json!({"status": "closed"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(search(&env, "ext-1").await, vec![1, 2, 3]);
    // A ticket created now is still hidden.
    env.helpdesk(Method::POST, "/api/tickets")
        .json(&json!({"subject": "Late", "external_id": "ext-1"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(search(&env, "ext-1").await, vec![1, 2, 3]);

    env.admin(
        Method::POST,
        "/_admin/helpdesk/config",
        Some(json!({"search_lag_ms": 0})),
    )
    .await;
    assert_eq!(search(&env, "ext-1").await, vec![1, 2, 3, 5]);
}

#[tokio::test]
async fn bulk_updates_are_limited_and_atomic() {
    let env = Env::start().await;
    for subject in ["a", "b"] {
        env.admin(
            Method::POST,
            "/_admin/helpdesk/tickets",
            Some(json!({ "ticket": {"subject": subject} })),
        )
        .await;
    }
    let bulk = |updates: Value| {
        env.helpdesk(Method::POST, "/api/tickets/bulk")
            .json(&json!({ "updates": updates }))
            .send()
    };
    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"id": 1, "fields": {"status": "x"}}))
        .collect();
    let (status, body) = status_json(bulk(json!(too_many)).await.expect("sent")).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], json!("updates"));

    let (status, body) = status_json(
        bulk(json!([
            {"id": 1, "fields": {"status": "closed"}},
            {"id": 3, "fields": {"status": "closed"}},
        ]))
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, body) = status_json(
        bulk(json!([
            {"id": 1, "fields": {"status": "closed"}},
            {"id": 2, "fields": {"subject": ""}},
        ]))
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], json!("updates[1].subject"));
    let tickets = env
        .admin(Method::GET, "/_admin/helpdesk/tickets", None)
        .await;
    assert_eq!(tickets["tickets"][0]["status"], json!("open"));
    assert_eq!(tickets["tickets"][0]["version"], json!(1));

    let (status, body) = status_json(
        bulk(json!([
            {"id": 1, "fields": {"status": "closed"}},
            {"id": 2, "fields": {"assignee": "sato"}},
        ]))
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["tickets"][0]["status"], json!("closed"));
    assert_eq!(body["tickets"][0]["version"], json!(2));
    assert_eq!(body["tickets"][1]["assignee"], json!("sato"));
}

#[tokio::test]
async fn webhooks_are_signed_with_standard_webhooks() {
    let env = Env::start().await;
    let receiver = Receiver::start().await;
    env.admin(
        Method::POST,
        "/_admin/helpdesk/config",
        Some(json!({"webhook_url": format!("{}/hooks/helpdesk", receiver.url)})),
    )
    .await;
    // Seeded tickets send no webhook.
    env.admin(
        Method::POST,
        "/_admin/helpdesk/tickets",
        Some(json!({"subject": "Seeded"})),
    )
    .await;
    env.helpdesk(Method::POST, "/api/tickets")
        .json(&json!({"subject": "Hello", "external_id": "x"}))
        .send()
        .await
        .expect("sent");
    env.helpdesk(Method::PATCH, "/api/tickets/2")
        .json(&json!({"status": "solved"}))
        .send()
        .await
        .expect("sent");
    env.flush().await;

    let received = receiver.received();
    assert_eq!(received.len(), 2);
    let now = chrono::Utc::now().timestamp();
    for request in &received {
        let id = request.header("webhook-id");
        let timestamp = request.header("webhook-timestamp");
        let signature = request.header("webhook-signature");
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        let sent_at: i64 = timestamp.parse().expect("unix seconds");
        assert!((now - sent_at).abs() < 60);
        assert!(signature.starts_with("v1,"));
        assert!(
            verify_standard_webhook(
                &env.config.helpdesk_webhook_secret,
                id,
                timestamp,
                &request.body,
                signature,
            ),
            "the signature of {id} verifies"
        );
        assert!(!verify_standard_webhook(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            id,
            timestamp,
            &request.body,
            signature,
        ));
    }
    let created = received[0].json();
    assert_eq!(created["type"], json!("ticket.created"));
    assert_eq!(created["data"]["ticket"]["id"], json!(2));
    assert_eq!(created["data"]["ticket"]["external_id"], json!("x"));
    assert!(created["timestamp"].is_string());
    let updated = received[1].json();
    assert_eq!(updated["type"], json!("ticket.updated"));
    assert_eq!(updated["data"]["ticket"]["version"], json!(2));

    let deliveries = env
        .admin(Method::GET, "/_admin/helpdesk/webhooks", None)
        .await;
    assert_eq!(deliveries[0]["id"], json!(received[0].header("webhook-id")));
    assert_eq!(deliveries[0]["type"], json!("ticket.created"));
    assert_eq!(deliveries[0]["record_id"], json!("2"));
    assert_eq!(deliveries[1]["status"], json!(200));

    // A redelivery keeps the message id and is signed afresh.
    let id = received[0].header("webhook-id").to_owned();
    env.admin(
        Method::POST,
        &format!("/_admin/helpdesk/webhooks/{id}/redeliver"),
        None,
    )
    .await;
    env.flush().await;
    let again = &receiver.received()[2];
    assert_eq!(again.header("webhook-id"), id);
    assert_eq!(again.body, received[0].body);
    assert!(verify_standard_webhook(
        &env.config.helpdesk_webhook_secret,
        &id,
        again.header("webhook-timestamp"),
        &again.body,
        again.header("webhook-signature"),
    ));
}
