//! The kintone API: authentication, CRUD, revisions, the query language, bulk requests and
//! webhooks.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Env, Receiver, status_json};

const APP: u64 = 101;

#[tokio::test]
async fn requires_a_valid_api_token() {
    let env = Env::start().await;
    env.create_app(APP, None).await;
    let url = env.url("/k/v1/records.json");

    let (status, body) = status_json(
        env.client
            .get(&url)
            .query(&[("app", "101")])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], json!("GAIA_IA02"));
    assert_eq!(body["message"], json!("API token is invalid."));
    assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()));

    let (status, _) = status_json(
        env.client
            .get(&url)
            .query(&[("app", "101")])
            .header("X-Cybozu-API-Token", "other-token,kintone-token")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn crud_with_revisions() {
    let env = Env::start().await;
    env.create_app(APP, None).await;

    let (status, created) = status_json(
        env.kintone(Method::POST, "/k/v1/record.json")
            .json(&json!({
                "app": APP,
                "record": {
                    "件名": {"value": "ポンプ修理"},
                    "金額": {"value": "1200"},
                    "タグ": {"value": ["急ぎ"]},
                },
            }))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created, json!({"id": "1", "revision": "1"}));

    let (status, body) = status_json(
        env.kintone(Method::GET, "/k/v1/record.json")
            .query(&[("app", "101"), ("id", "1")])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    let record = &body["record"];
    assert_eq!(
        record["件名"],
        json!({"type": "SINGLE_LINE_TEXT", "value": "ポンプ修理"})
    );
    assert_eq!(record["金額"], json!({"type": "NUMBER", "value": "1200"}));
    assert_eq!(
        record["タグ"],
        json!({"type": "CHECK_BOX", "value": ["急ぎ"]})
    );
    assert_eq!(
        record["詳細"],
        json!({"type": "MULTI_LINE_TEXT", "value": ""})
    );
    assert_eq!(record["$id"], json!({"type": "__ID__", "value": "1"}));
    assert_eq!(
        record["$revision"],
        json!({"type": "__REVISION__", "value": "1"})
    );
    assert_eq!(record["レコード番号"]["value"], json!("1"));
    let created_at = record["作成日時"]["value"].as_str().expect("a time");
    assert!(created_at.ends_with(":00Z"), "{created_at}");

    // A partial update changes only the given field and bumps the revision.
    let put = |body: Value| {
        env.kintone(Method::PUT, "/k/v1/record.json")
            .json(&body)
            .send()
    };
    let (status, body) = status_json(
        put(json!({"app": "101", "id": "1", "revision": "1", "record": {"金額": {"value": 1500}}}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((status, body), (200, json!({"revision": "2"})));

    // A stale revision conflicts and changes nothing.
    let (status, body) = status_json(
        put(json!({"app": APP, "id": 1, "revision": 1, "record": {"金額": {"value": "1"}}}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], json!("GAIA_CO02"));
    assert_eq!(
        body["message"],
        json!(
            "指定したrevisionは最新ではありません。ほかのユーザーがレコードを更新した可能性があります。"
        )
    );

    // Revision -1 and no revision both skip the check.
    let (_, body) = status_json(
        put(json!({"app": APP, "id": 1, "revision": -1, "record": {"状態": {"value": "完了"}}}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(body, json!({"revision": "3"}));
    let (_, body) = status_json(
        put(json!({"app": APP, "id": 1, "record": {}}))
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(body, json!({"revision": "4"}));

    let records = env
        .admin(Method::GET, "/_admin/kintone/apps/101/records", None)
        .await;
    let record = &records["records"][0];
    assert_eq!(record["件名"]["value"], json!("ポンプ修理"));
    assert_eq!(record["金額"]["value"], json!("1500"));
    assert_eq!(record["状態"]["value"], json!("完了"));
    assert_eq!(record["$revision"]["value"], json!("4"));
    // One record by its id reads as the list renders it; an unknown id is a 404.
    let one = env
        .admin(Method::GET, "/_admin/kintone/apps/101/records/1", None)
        .await;
    assert_eq!(&one["record"], record);
    let missing = env
        .client
        .get(env.url("/_admin/kintone/apps/101/records/9"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);

    let (status, body) = status_json(
        env.kintone(Method::GET, "/k/v1/record.json")
            .query(&[("app", "101"), ("id", "9")])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], json!("GAIA_RE01"));
    assert_eq!(
        body["message"],
        json!("指定したレコード（id: 9）が見つかりません。")
    );

    let (status, body) = status_json(
        env.kintone(Method::GET, "/k/v1/record.json")
            .query(&[("app", "999"), ("id", "1")])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], json!("GAIA_AP01"));
}

#[tokio::test]
async fn rejects_invalid_values() {
    let env = Env::start().await;
    env.create_app(APP, None).await;
    let (status, body) = status_json(
        env.kintone(Method::POST, "/k/v1/record.json")
            .json(&json!({
                "app": APP,
                "record": {
                    "金額": {"value": "twelve"},
                    "タグ": {"value": "急ぎ"},
                    "存在しない": {"value": "x"},
                },
            }))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], json!("CB_VA01"));
    let errors = body["errors"].as_object().expect("errors");
    for key in [
        "record.金額.value",
        "record.タグ.value",
        "record.存在しない.value",
    ] {
        assert!(
            errors[key]["messages"]
                .as_array()
                .is_some_and(|messages| !messages.is_empty()),
            "{key} in {body}"
        );
    }
    let records = env
        .admin(Method::GET, "/_admin/kintone/apps/101/records", None)
        .await;
    assert_eq!(records["records"], json!([]));

    let (status, body) = status_json(
        env.kintone(Method::POST, "/k/v1/record.json")
            .body("{not json")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], json!("CB_IJ01"));
}

async fn seed_orders(env: &Env) {
    env.create_app(APP, None).await;
    let rows = [
        ("Pump repair", "100", "open", vec!["urgent"]),
        ("Valve check", "250", "hold", vec![]),
        ("pump install", "75", "closed", vec!["onsite"]),
        ("Filter swap", "", "open", vec!["urgent", "onsite"]),
        ("配管 \"点検\"", "1000", "open", vec![]),
    ];
    for (subject, amount, state, tags) in rows {
        env.seed(
            APP,
            json!({
                "件名": {"value": subject},
                "金額": {"value": amount},
                "状態": {"value": state},
                "タグ": {"value": tags},
            }),
        )
        .await;
    }
}

async fn query(env: &Env, query: &str) -> (u16, Value) {
    status_json(
        env.kintone(Method::GET, "/k/v1/records.json")
            .query(&[("app", "101"), ("query", query), ("totalCount", "true")])
            .send()
            .await
            .expect("sent"),
    )
    .await
}

fn ids(body: &Value) -> Vec<String> {
    body["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|record| record["$id"]["value"].as_str().expect("an id").to_owned())
        .collect()
}

#[tokio::test]
async fn query_language() {
    let env = Env::start().await;
    seed_orders(&env).await;

    let cases: &[(&str, &[&str])] = &[
        ("", &["5", "4", "3", "2", "1"]),
        ("金額 >= 100 order by 金額 asc", &["1", "2", "5"]),
        ("金額 > 99 and 金額 < 1000", &["2", "1"]),
        (r#"件名 like "PUMP""#, &["3", "1"]),
        (r#"件名 not like "pump" order by $id asc"#, &["2", "4", "5"]),
        (r#"状態 in ("hold", "closed")"#, &["3", "2"]),
        (r#"状態 not in ("open")"#, &["3", "2"]),
        (
            r#"状態 = "open" and (金額 = 100 or 金額 = "")"#,
            &["4", "1"],
        ),
        (
            r#"状態 = "closed" or 状態 = "hold" and 金額 > 200"#,
            &["3", "2"],
        ),
        (r#"タグ in ("urgent")"#, &["4", "1"]),
        (r#"タグ not in ("urgent")"#, &["5", "3", "2"]),
        (r#"件名 = "配管 \"点検\"""#, &["5"]),
        (r#"金額 = """#, &["4"]),
        ("$id > 2 order by $id asc limit 2", &["3", "4"]),
        ("order by 金額 desc limit 2 offset 1", &["2", "1"]),
        (r#"$revision = "1" limit 1"#, &["5"]),
    ];
    for (text, expected) in cases {
        let (status, body) = query(&env, text).await;
        assert_eq!(status, 200, "{text}: {body}");
        assert_eq!(ids(&body), *expected, "{text}");
    }

    let (_, body) = query(&env, "order by $id asc limit 2").await;
    assert_eq!(body["totalCount"], json!("5"));
    let (_, body) = status_json(
        env.kintone(Method::GET, "/k/v1/records.json")
            .query(&[("app", "101")])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(body["totalCount"], Value::Null);

    // The projection returns only the requested fields.
    let (_, body) = status_json(
        env.kintone(Method::GET, "/k/v1/records.json")
            .query(&[
                ("app", "101"),
                ("query", "$id = 1"),
                ("fields[0]", "件名"),
                ("fields[1]", "$id"),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        body["records"],
        json!([{"件名": {"type": "SINGLE_LINE_TEXT", "value": "Pump repair"}, "$id": {"type": "__ID__", "value": "1"}}])
    );

    // A POST with the method override is a read with JSON parameters.
    let (status, body) = status_json(
        env.kintone(Method::POST, "/k/v1/records.json")
            .header("X-HTTP-Method-Override", "GET")
            .json(
                &json!({"app": APP, "query": "金額 >= 250", "fields": ["$id"], "totalCount": true}),
            )
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), vec!["5", "2"]);
    assert_eq!(body["totalCount"], json!("2"));

    let (status, body) = query(&env, r#"件名 = open"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], json!("GAIA_IQ03"));
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.contains("double-quoted")),
        "{body}"
    );
    let (status, body) = query(&env, r#"(件名 = "a""#).await;
    assert_eq!((status, body["code"].clone()), (400, json!("GAIA_IQ03")));
    let (status, body) = query(&env, r#"不明 = "a""#).await;
    assert_eq!((status, body["code"].clone()), (400, json!("GAIA_IQ11")));
    let (status, body) = query(&env, "limit 501").await;
    assert_eq!((status, body["code"].clone()), (400, json!("CB_VA01")));
    let (status, _) = query(&env, "limit 500 offset 10000").await;
    assert_eq!(status, 200);
    let (status, body) = query(&env, "offset 10001").await;
    assert_eq!((status, body["code"].clone()), (400, json!("CB_VA01")));
}

#[tokio::test]
async fn bulk_requests_are_limited_and_atomic() {
    let env = Env::start().await;
    env.create_app(APP, None).await;
    let post_many = |count: usize| {
        let records: Vec<Value> = (0..count)
            .map(|index| json!({"件名": {"value": format!("row {index}")}}))
            .collect();
        env.kintone(Method::POST, "/k/v1/records.json")
            .json(&json!({"app": APP, "records": records}))
            .send()
    };

    let (status, body) = status_json(post_many(101).await.expect("sent")).await;
    assert_eq!((status, body["code"].clone()), (400, json!("CB_VA01")));
    let (status, body) = status_json(post_many(100).await.expect("sent")).await;
    assert_eq!(status, 200);
    assert_eq!(body["ids"].as_array().map(Vec::len), Some(100));
    assert_eq!(body["ids"][0], json!("1"));
    assert_eq!(body["revisions"][99], json!("1"));

    // One invalid record rejects the whole batch.
    let (status, body) = status_json(
        env.kintone(Method::POST, "/k/v1/records.json")
            .json(&json!({"app": APP, "records": [
                {"件名": {"value": "ok"}},
                {"金額": {"value": "NaN"}},
            ]}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["errors"]["records[1].金額.value"].is_object(),
        "{body}"
    );

    let put_many = |updates: Value| {
        env.kintone(Method::PUT, "/k/v1/records.json")
            .json(&json!({"app": APP, "records": updates}))
            .send()
    };
    let too_many: Vec<Value> = (1..=101)
        .map(|id| json!({"id": id, "record": {}}))
        .collect();
    let (status, body) = status_json(put_many(json!(too_many)).await.expect("sent")).await;
    assert_eq!((status, body["code"].clone()), (400, json!("CB_VA01")));

    let (status, body) = status_json(
        put_many(json!([
            {"id": 1, "revision": 1, "record": {"金額": {"value": "5"}}},
            {"id": 2, "revision": 7, "record": {"金額": {"value": "6"}}},
        ]))
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (409, json!("GAIA_CO02")));
    let (status, body) = status_json(
        put_many(json!([
            {"id": 1, "record": {"金額": {"value": "5"}}},
            {"id": 555, "record": {}},
        ]))
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (404, json!("GAIA_RE01")));
    let records = env
        .admin(Method::GET, "/_admin/kintone/apps/101/records", None)
        .await;
    assert_eq!(records["records"][0]["金額"]["value"], json!(""));
    assert_eq!(records["records"][0]["$revision"]["value"], json!("1"));

    let (status, body) = status_json(
        put_many(json!([
            {"id": "1", "revision": "1", "record": {"金額": {"value": "5"}}},
            {"id": "2", "record": {"金額": {"value": "6"}}},
        ]))
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"records": [{"id": "1", "revision": "2"}, {"id": "2", "revision": "2"}]})
    );

    let (status, body) = status_json(
        env.kintone(Method::DELETE, "/k/v1/records.json")
            .query(&[("app", "101"), ("ids[0]", "1"), ("ids[1]", "999")])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (404, json!("GAIA_RE01")));
    let (status, body) = status_json(
        env.kintone(Method::DELETE, "/k/v1/records.json")
            .query(&[("app", "101"), ("ids[0]", "1"), ("ids[1]", "2")])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    let (_, body) = query(&env, "order by $id asc limit 1").await;
    assert_eq!(ids(&body), vec!["3"]);
    assert_eq!(body["totalCount"], json!("98"));
}

#[tokio::test]
async fn webhooks_are_delivered_in_order_with_kintone_payloads() {
    let env = Env::start().await;
    let receiver = Receiver::start().await;
    let hook_url = format!("{}/hooks/kintone?token=secret-123", receiver.url);
    env.create_app(APP, Some(&hook_url)).await;

    // Seeding without a webhook sends nothing.
    env.seed(APP, json!({"件名": {"value": "seeded"}})).await;

    let (status, _) = status_json(
        env.kintone(Method::POST, "/k/v1/record.json")
            .json(&json!({"app": APP, "record": {"件名": {"value": "新規"}, "金額": {"value": "10"}}}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = status_json(
        env.kintone(Method::PUT, "/k/v1/record.json")
            .json(&json!({"app": APP, "id": 2, "record": {"金額": {"value": "20"}}}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    // An edit "in the kintone UI" fires a webhook by default.
    let edited = env
        .admin(
            Method::PUT,
            "/_admin/kintone/apps/101/records/2",
            Some(json!({"record": {"件名": {"value": "UIで編集"}}})),
        )
        .await;
    assert_eq!(edited, json!({"revision": "3"}));
    let (status, _) = status_json(
        env.kintone(Method::DELETE, "/k/v1/records.json")
            .query(&[("app", "101"), ("ids[0]", "2")])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    env.flush().await;

    let received = receiver.received();
    let payloads: Vec<Value> = received.iter().map(|request| request.json()).collect();
    let types: Vec<&str> = payloads
        .iter()
        .map(|payload| payload["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        vec![
            "ADD_RECORD",
            "UPDATE_RECORD",
            "UPDATE_RECORD",
            "DELETE_RECORD"
        ]
    );
    for request in &received {
        assert_eq!(request.uri, "/hooks/kintone?token=secret-123");
        assert_eq!(request.header("content-type"), "application/json");
    }
    let added = &payloads[0];
    assert_eq!(added["app"], json!({"id": "101", "name": "Work orders"}));
    assert_eq!(added["record"]["$id"]["value"], json!("2"));
    assert_eq!(
        added["record"]["金額"],
        json!({"type": "NUMBER", "value": "10"})
    );
    assert_eq!(added["recordTitle"], json!("新規"));
    assert_eq!(
        added["url"],
        json!("https://sandbox.cybozu.com/k/101/show#record=2")
    );
    assert!(
        added["id"]
            .as_str()
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
    );
    assert_eq!(payloads[1]["record"]["$revision"]["value"], json!("2"));
    assert_eq!(payloads[2]["recordTitle"], json!("UIで編集"));
    let deleted = &payloads[3];
    assert_eq!(deleted["recordId"], json!("2"));
    assert_eq!(
        deleted["deleteBy"],
        json!({"code": "sandbox", "name": "Sandbox"})
    );
    assert!(deleted.get("record").is_none());

    let deliveries = env
        .admin(Method::GET, "/_admin/kintone/webhooks", None)
        .await;
    let deliveries = deliveries.as_array().expect("a list");
    assert_eq!(deliveries.len(), 4);
    assert_eq!(deliveries[0]["id"], added["id"]);
    assert_eq!(deliveries[0]["type"], json!("ADD_RECORD"));
    assert_eq!(deliveries[0]["record_id"], json!("2"));
    assert_eq!(deliveries[0]["status"], json!(200));
    assert_eq!(deliveries[0]["error"], Value::Null);
    assert_eq!(deliveries[0]["attempts"], json!(1));

    // A redelivery sends the same payload with the same id.
    let id = added["id"].as_str().expect("an id");
    env.admin(
        Method::POST,
        &format!("/_admin/kintone/webhooks/{id}/redeliver"),
        None,
    )
    .await;
    // A webhook that lies: the payload claims a record that does not exist.
    let lie = json!({"id": "lie-1", "type": "UPDATE_RECORD", "app": {"id": "101", "name": "Work orders"}, "record": {"$id": {"type": "__ID__", "value": "77"}}});
    let sent = env
        .admin(
            Method::POST,
            "/_admin/kintone/apps/101/webhooks/send",
            Some(json!({ "payload": lie })),
        )
        .await;
    assert_eq!(sent, json!({"id": "lie-1"}));
    env.flush().await;
    let received = receiver.received();
    assert_eq!(received.len(), 6);
    assert_eq!(received[4].body, received[0].body);
    assert_eq!(received[5].json(), lie);
    let deliveries = env
        .admin(Method::GET, "/_admin/kintone/webhooks", None)
        .await;
    assert_eq!(deliveries[0]["attempts"], json!(2));
    assert_eq!(deliveries[4]["record_id"], json!("77"));
}

#[tokio::test]
async fn failed_deliveries_are_recorded() {
    let env = Env::start().await;
    // Nothing listens on this port once the listener is dropped, so delivery fails.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        format!("http://{}/hook", listener.local_addr().expect("an address"))
    };
    env.create_app(APP, Some(&url)).await;
    let (status, _) = status_json(
        env.kintone(Method::POST, "/k/v1/record.json")
            .json(&json!({"app": APP, "record": {}}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    env.flush().await;
    let deliveries = env
        .admin(Method::GET, "/_admin/kintone/webhooks", None)
        .await;
    assert_eq!(deliveries[0]["status"], Value::Null);
    assert!(deliveries[0]["error"].is_string(), "{deliveries}");
    assert_eq!(deliveries[0]["attempts"], json!(1));
}
