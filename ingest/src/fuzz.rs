//! A byte fuzzer on stable: proptest drives arbitrary bytes and headers through
//! signature verification, envelope parsing and routing, and through the whole router.
//! Nothing may panic, every answer is one of the statuses of the bad-input contract,
//! and whatever would be published decodes as the worker decodes it.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default, in the normal test run).
//! A longer run: `PROPTEST_CASES=200000 cargo test --release -p ingest fuzz`.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request};
use axum::response::IntoResponse;
use config::Settings;
use hyper_util::service::TowerToHyperService;
use proptest::prelude::*;
use queue::QueueMessage;
use serde_json::{Value, json};

use crate::Ingest;
use crate::handler::header_str;
use crate::prepare::{Prepared, prepare};
use crate::refusal::Refusal;
use crate::signature::{parse_secret, sign, verify};

const KINTONE_TOKEN: &str = "fuzz-kintone-webhook-token";
/// `whsec_` + base64 of `ingest-fuzz-key-ingest-fuzz-key!`.
const SECRET: &str = "whsec_aW5nZXN0LWZ1enota2V5LWluZ2VzdC1mdXp6LWtleSE=";
const MAX_BODY: usize = 4096;

/// The statuses `POST /webhooks/{system}` and the other routes may answer without a
/// broker (202 needs one): the contract's, plus axum's 405 for a wrong method.
fn documented() -> BTreeSet<u16> {
    [200, 400, 401, 404, 405, 408, 413, 422, 503].into()
}

fn ingest() -> Ingest {
    let mut rules = config::parse_rules("sync-rules.json", include_str!("../../sync-rules.json"))
        .expect("the example rules");
    rules.rules.push(
        serde_json::from_value(json!({
            "name": "tickets-to-work-orders",
            "source": {"system": "helpdesk", "app": "ticket"},
            "target": {"system": "kintone", "entity": "101"},
            "identity": {"source_field": "external_id", "target_field": "work_order_no"},
            "fields": [{"source": "status", "target": "status"}]
        }))
        .expect("a rule"),
    );
    let settings = Settings {
        // Nothing listens there: the broker never connects, so a publish is a 503.
        amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        max_body_bytes: MAX_BODY,
        ..Settings::default()
    };
    Ingest::with_secrets(&settings, rules, |_, var| {
        Ok(match var {
            "KINTONE_WEBHOOK_TOKEN" => KINTONE_TOKEN.to_owned(),
            _ => SECRET.to_owned(),
        })
    })
    .expect("ingest")
}

fn key() -> Vec<u8> {
    parse_secret(SECRET).expect("the key")
}

/// JSON values shaped like webhooks: the routing keys appear often, with values of
/// every kind, lengths up to past the limits, and nesting.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,8}".prop_map(Value::from),
        (0usize..400).prop_map(|n| Value::from("x".repeat(n))),
        "[\\x00-\\x1f]{1,3}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("type".to_owned()),
        Just("app".to_owned()),
        Just("record".to_owned()),
        Just("$id".to_owned()),
        Just("value".to_owned()),
        Just("recordId".to_owned()),
        Just("data".to_owned()),
        Just("ticket".to_owned()),
        ".{0,6}",
    ];
    leaf.prop_recursive(6, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A kintone webhook that routes, with arbitrary values in its routing fields.
fn kintone_hook() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), json_value(), json_value(), 0usize..200).prop_map(
        |(id, ty, app, rec, nest)| {
            let app = if app.is_object() { app } else { json!({"id": app}) };
            let mut deep = json!(1);
            for _ in 0..nest {
                deep = json!([deep]);
            }
            json!({"id": id, "type": ty, "app": app, "record": {"$id": {"value": rec}}, "deep": deep})
        },
    )
}

/// Bodies: arbitrary bytes, arbitrary JSON, webhook-shaped JSON, valid kintone
/// webhooks with long or odd ids, and deeply nested documents.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        kintone_hook().prop_map(|v| v.to_string().into_bytes()),
        (prop_oneof!["[ -~]{200,300}", ".{0,20}"], "[0-9]{1,3}").prop_map(|(id, rec)| {
            json!({"id": id, "type": "ADD_RECORD", "app": {"id": "101"}, "record": {"$id": {"value": rec}}})
                .to_string()
                .into_bytes()
        }),
        (1usize..200).prop_map(|d| format!(
            "{{\"id\":\"e\",\"type\":\"t\",\"app\":{{\"id\":\"101\"}},\"recordId\":\"1\",\"x\":{}1{}}}",
            "[".repeat(d),
            "]".repeat(d)
        )
        .into_bytes()),
        json_value().prop_map(|v| json!({"type": v.clone(), "data": {"ticket": {"id": v}}})
            .to_string()
            .into_bytes()),
    ]
}

/// A timestamp header: numbers near now and at the ends of the range, and text.
fn timestamp(now: i64) -> impl Strategy<Value = String> {
    prop_oneof![
        (-1000i64..1000).prop_map(move |d| now.saturating_add(d).to_string()),
        Just(i64::MIN.to_string()),
        Just(i64::MAX.to_string()),
        Just(now.wrapping_add(i64::MIN).to_string()),
        any::<i64>().prop_map(|t| t.to_string()),
        ".{0,24}",
    ]
}

/// What a sender might put in the Standard Webhooks headers.
#[derive(Debug, Clone)]
struct SignedHeaders {
    id: Option<String>,
    ts: Option<String>,
    sig: Option<String>,
    /// Sign correctly with the real key over (id, ts, body) when ts is a number.
    sign_validly: bool,
}

fn signed_headers(now: i64) -> impl Strategy<Value = SignedHeaders> {
    // Mostly visible ASCII, as a header value must be to be read at all.
    let id = prop_oneof![
        4 => "[ -~]{1,40}",
        2 => "[ -~]{250,300}",
        1 => ".{0,20}",
    ];
    let sig = prop_oneof!["[ -~]{0,80}", "v1,[A-Za-z0-9+/=]{0,50}", ".{0,20}"];
    (
        prop::option::weighted(0.9, id),
        prop::option::weighted(0.9, timestamp(now)),
        prop::option::weighted(0.9, sig),
        any::<bool>(),
    )
        .prop_map(|(id, ts, sig, sign_validly)| SignedHeaders {
            id,
            ts,
            sig,
            sign_validly,
        })
}

fn header_map(h: &SignedHeaders, body: &[u8], extra: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut put = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::try_from(name),
            HeaderValue::try_from(value),
        ) {
            map.append(n, v);
        }
    };
    if let Some(id) = &h.id {
        put("webhook-id", id);
    }
    if let Some(ts) = &h.ts {
        put("webhook-timestamp", ts);
    }
    let valid = match (&h.id, &h.ts) {
        (Some(id), Some(ts)) if h.sign_validly => ts
            .trim()
            .parse::<i64>()
            .ok()
            .map(|t| sign(&key(), id, t, body)),
        _ => None,
    };
    match (valid, &h.sig) {
        (Some(v), Some(other)) => put("webhook-signature", &format!("{other} {v}")),
        (Some(v), None) => put("webhook-signature", &v),
        (None, Some(other)) => put("webhook-signature", other),
        (None, None) => {}
    }
    for (k, v) in extra {
        put(k, v);
    }
    map
}

/// Percent-encodes a path segment.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn system() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("kintone".to_owned()),
        3 => Just("helpdesk".to_owned()),
        1 => ".{0,12}",
    ]
}

fn extra_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop_oneof![
                Just("x-correlation-id".to_owned()),
                Just("content-length".to_owned()),
                Just("content-type".to_owned()),
                Just("transfer-encoding".to_owned()),
                "[a-z-]{1,12}",
            ],
            prop_oneof!["[ -~]{0,300}", "[0-9]{1,20}", ".{0,10}"],
        ),
        0..3,
    )
}

/// The checks on what `prepare` returns: an accepted webhook is one the worker can
/// decode and the broker can carry; a refused one maps to a contract status.
fn check_prepared(result: Result<Prepared, Refusal>) -> Result<(), TestCaseError> {
    match result {
        Ok(p) => {
            let decoded = QueueMessage::decode(&p.message);
            prop_assert!(decoded.is_ok(), "accepted but undecodable: {decoded:?}");
            let decoded = decoded.expect("checked");
            prop_assert_eq!(decoded.event_id(), p.event_id.as_str());
            prop_assert!(
                p.event_id.len() <= 255,
                "an AMQP message id is a short string"
            );
            prop_assert!(p.correlation_id.len() <= 255);
            prop_assert!(!p.event_id.is_empty());
        }
        Err(refusal) => {
            let status = refusal.status().as_u16();
            prop_assert!(documented().contains(&status), "{status} for {refusal}");
            prop_assert!(!matches!(refusal, Refusal::Unavailable(_) | Refusal::Busy));
            // The response builds.
            let resp = refusal.into_response();
            prop_assert_eq!(resp.status().as_u16(), status);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// verify() on arbitrary input never panics, and it accepts only within the
    /// tolerance, measured without overflow.
    #[test]
    fn signature_verification_never_panics_and_holds_the_tolerance(
        now in prop_oneof![Just(1_700_000_000i64), any::<i64>()],
        h in signed_headers(1_700_000_000),
        body in prop::collection::vec(any::<u8>(), 0..128),
        tolerance in prop_oneof![Just(300i64), any::<i64>()],
    ) {
        let map = header_map(&h, &body, &[]);
        let result = verify(
            &[key()],
            header_str(&map, "webhook-id"),
            header_str(&map, "webhook-timestamp"),
            header_str(&map, "webhook-signature"),
            &body,
            now,
            tolerance,
        );
        if result.is_ok() {
            let ts: i64 = header_str(&map, "webhook-timestamp")
                .and_then(|t| t.trim().parse().ok())
                .expect("an accepted timestamp is a number");
            let skew = (i128::from(now) - i128::from(ts)).abs();
            prop_assert!(skew <= i128::from(tolerance.max(0)), "skew {skew} accepted");
        }
    }

    /// Signature, JSON, routing and the envelope, on arbitrary bodies and headers.
    #[test]
    fn envelope_parsing_and_routing_never_panic(
        system in system(),
        body in body(),
        h in signed_headers(1_700_000_000),
        extra in extra_headers(),
    ) {
        let ingest = ingest();
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a time");
        let map = header_map(&h, &body, &extra);
        check_prepared(prepare(&ingest.state, &system, &map, &body, now))?;
    }

    /// The whole router: arbitrary methods, paths, queries, headers and bodies.
    #[test]
    fn the_router_answers_every_request_with_a_documented_status(
        method in prop_oneof![Just("POST".to_owned()), Just("GET".to_owned()), "[A-Z]{1,7}"],
        system in system(),
        query in prop_oneof![
            Just(format!("token={KINTONE_TOKEN}")),
            Just(String::new()),
            "[a-z=&%0-9]{0,20}",
        ],
        body in body(),
        h in signed_headers(chrono::Utc::now().timestamp()),
        extra in extra_headers(),
    ) {
        let ingest = ingest();
        let router = ingest.router();
        let map = header_map(&h, &body, &extra);
        let path = if system == "metrics" || system.contains(['/', '?', '#']) {
            "/webhooks/x".to_owned()
        } else {
            format!("/webhooks/{}", encode_segment(&system))
        };
        let uri = format!("{path}?{query}");
        let Ok(mut request) = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .body(Body::from(body))
        else {
            return Ok(());
        };
        *request.headers_mut() = map;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let status = rt.block_on(async {
            use hyper::service::Service as _;
            let svc = TowerToHyperService::new(router);
            svc.call(request).await.map(|r| r.status().as_u16())
        });
        let status = status.expect("the router is infallible");
        prop_assert!(documented().contains(&status), "{method} {uri}: {status}");
    }
}
