//! From a webhook's bytes to the message to publish, without I/O: the signature, the
//! JSON, what routing needs from each kind of system, the limits the worker decodes
//! within, and the versioned envelope (`prepare`).

use axum::http::HeaderMap;
use domain::record::value_text;
use domain::rules::SystemKind;
use queue::{EventV1, QueueMessage};
use serde_json::Value;

use crate::handler::header_str;
use crate::refusal::Refusal;
use crate::server::{AppState, Auth};
use crate::signature::verify;

/// What routing needs from a webhook.
#[derive(Debug, PartialEq)]
struct Routed {
    event_id: String,
    event_type: String,
    app: String,
    record_id: String,
}

fn text_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(value_text)
        .filter(|s| !s.is_empty())
}

/// kintone: `id`, `type`, `app.id`, and `record.$id.value` (or `recordId` for deletes).
fn route_kintone(payload: &Value) -> Result<Routed, Refusal> {
    let event_id = text_at(payload, "/id").ok_or(Refusal::MissingField("id"))?;
    let event_type = text_at(payload, "/type").ok_or(Refusal::MissingField("type"))?;
    let app = text_at(payload, "/app/id").ok_or(Refusal::MissingField("app.id"))?;
    let record_id = text_at(payload, "/record/$id/value")
        .or_else(|| text_at(payload, "/recordId"))
        .ok_or(Refusal::MissingField("record.$id.value or recordId"))?;
    Ok(Routed {
        event_id,
        event_type,
        app,
        record_id,
    })
}

fn route_rest(
    system: &domain::rules::SystemSpec,
    webhook_id: Option<&str>,
    payload: &Value,
) -> Result<Routed, Refusal> {
    let routing = system
        .webhook_routing
        .as_ref()
        .ok_or(Refusal::MissingField(
            "webhook_routing in the configuration",
        ))?;
    let event_id = webhook_id
        .map(str::to_owned)
        .ok_or(Refusal::MissingField("webhook-id"))?;
    let event_type =
        text_at(payload, &routing.event_type).ok_or(Refusal::MissingField("the event type"))?;
    let record_id =
        text_at(payload, &routing.record_id).ok_or(Refusal::MissingField("the record id"))?;
    Ok(Routed {
        event_id,
        event_type,
        app: routing.entity.clone(),
        record_id,
    })
}

/// The longest id, type or app name a webhook may route by: the event id becomes the
/// AMQP message id, a short string of at most 255 bytes.
pub const MAX_ROUTING_FIELD_BYTES: usize = 255;
/// The deepest payload accepted. The worker's JSON decoder stops at 128 levels and the
/// envelope adds one, so this leaves a wide margin.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Checks a value routing uses: short, and no control characters (PostgreSQL's text
/// refuses NUL).
fn check_routing_field(what: &'static str, value: &str) -> Result<(), Refusal> {
    if value.len() > MAX_ROUTING_FIELD_BYTES {
        return Err(Refusal::Invalid(format!(
            "{what} is {} bytes long; at most {MAX_ROUTING_FIELD_BYTES} are accepted",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Refusal::Invalid(format!(
            "{what} contains a control character"
        )));
    }
    Ok(())
}

/// How deeply arrays and objects nest in a value (a scalar is 0), without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            Value::Object(o) => {
                deepest = deepest.max(d + 1);
                stack.extend(o.values().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// A webhook ready to publish.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) event_id: String,
    pub(crate) correlation_id: String,
    /// The encoded [`QueueMessage`].
    pub(crate) message: Vec<u8>,
}

/// Everything between the body and the broker, without I/O: the signature, JSON,
/// routing, the limits the worker decodes within, and the envelope. `now` is the
/// Unix time the signature's tolerance is measured from.
pub(crate) fn prepare(
    state: &AppState,
    system: &str,
    headers: &HeaderMap,
    bytes: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Prepared, Refusal> {
    let spec = state
        .rules
        .systems
        .get(system)
        .ok_or_else(|| Refusal::UnknownSystem(system.to_owned()))?;
    let auth = state
        .auth
        .get(system)
        .ok_or_else(|| Refusal::NoWebhookAuth(system.to_owned()))?;
    if let Auth::Signed {
        keys,
        tolerance_secs,
    } = auth
    {
        verify(
            keys,
            header_str(headers, "webhook-id"),
            header_str(headers, "webhook-timestamp"),
            header_str(headers, "webhook-signature"),
            bytes,
            now.timestamp(),
            *tolerance_secs,
        )?;
    }
    let payload: Value =
        serde_json::from_slice(bytes).map_err(|e| Refusal::NotJson(e.to_string()))?;
    if depth(&payload) > MAX_PAYLOAD_DEPTH {
        return Err(Refusal::Invalid(format!(
            "the payload nests deeper than {MAX_PAYLOAD_DEPTH} levels"
        )));
    }
    let routed = match spec.kind {
        SystemKind::Kintone => route_kintone(&payload)?,
        SystemKind::Rest => route_rest(spec, header_str(headers, "webhook-id"), &payload)?,
        // A file system sends no webhooks (its config cannot name a webhook secret).
        SystemKind::File => return Err(Refusal::NoWebhookAuth(system.to_owned())),
    };
    check_routing_field("the event id", &routed.event_id)?;
    check_routing_field("the event type", &routed.event_type)?;
    check_routing_field("the app", &routed.app)?;
    check_routing_field("the record id", &routed.record_id)?;
    if state.rules.rules_for(system, &routed.app).next().is_none() {
        return Err(Refusal::NoRule {
            system: system.to_owned(),
            app: routed.app,
        });
    }
    // A sender's correlation id is kept when it is a plausible one.
    let correlation_id = header_str(headers, "x-correlation-id")
        .filter(|c| {
            !c.is_empty() && c.len() <= MAX_ROUTING_FIELD_BYTES && !c.chars().any(char::is_control)
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let message = QueueMessage::V1(EventV1 {
        event_id: routed.event_id.clone(),
        system: system.to_owned(),
        app: routed.app,
        record_id: routed.record_id,
        event_type: routed.event_type,
        received_at: now,
        correlation_id: correlation_id.clone(),
        payload,
    });
    Ok(Prepared {
        event_id: routed.event_id,
        correlation_id,
        message: message.encode(),
    })
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};
    use config::Settings;
    use serde_json::json;

    use super::*;
    use crate::Ingest;

    fn kintone_ingest() -> Ingest {
        let rules = config::parse_rules("sync-rules.json", include_str!("../../sync-rules.json"))
            .expect("the example rules");
        let settings = Settings {
            amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
            ..Settings::default()
        };
        Ingest::with_secrets(&settings, rules, |_, var| {
            Ok(match var {
                "HELPDESK_WEBHOOK_SECRET" => "whsec_c2VjcmV0".to_owned(),
                _ => "t".to_owned(),
            })
        })
        .expect("ingest")
    }

    fn prepare_kintone(payload: &Value) -> Result<Prepared, Refusal> {
        let ingest = kintone_ingest();
        prepare(
            &ingest.state,
            "kintone",
            &HeaderMap::new(),
            payload.to_string().as_bytes(),
            chrono::Utc::now(),
        )
    }

    #[test]
    fn an_event_id_too_long_for_an_amqp_message_id_is_refused() {
        // lapin's ShortString::from panics past 255 bytes: this id used to panic the
        // handler at publish time, and the client saw its connection drop.
        let hook = |id: &str| json!({"id": id, "type": "ADD_RECORD", "app": {"id": "101"}, "recordId": "1"});
        let ok = prepare_kintone(&hook(&"e".repeat(255))).expect("255 bytes fit");
        assert_eq!(ok.event_id.len(), 255);
        match prepare_kintone(&hook(&"e".repeat(256))) {
            Err(r @ Refusal::Invalid(_)) => {
                assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(
                    r.to_string(),
                    "the event id is 256 bytes long; at most 255 are accepted"
                );
            }
            other => panic!("expected a 422, got {other:?}"),
        }
        // A NUL PostgreSQL cannot store, in the record id.
        assert!(matches!(
            prepare_kintone(
                &json!({"id": "e", "type": "ADD_RECORD", "app": {"id": "101"}, "recordId": "1\u{0}"})
            ),
            Err(Refusal::Invalid(_))
        ));
        // A correlation id that is too long is replaced, not refused.
        let ingest = kintone_ingest();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-correlation-id",
            HeaderValue::from_str(&"c".repeat(300)).unwrap(),
        );
        let p = prepare(
            &ingest.state,
            "kintone",
            &headers,
            hook("e").to_string().as_bytes(),
            chrono::Utc::now(),
        )
        .unwrap();
        assert!(p.correlation_id.len() < 255);
    }

    #[test]
    fn a_payload_nested_too_deeply_for_the_worker_is_refused() {
        let nested = |d: usize| {
            let mut v = json!(1);
            for _ in 0..d {
                v = json!([v]);
            }
            json!({"id": "e", "type": "ADD_RECORD", "app": {"id": "101"}, "recordId": "1", "x": v})
        };
        // The premise: ingest's parser takes a payload the worker cannot decode once
        // it is wrapped in the envelope.
        let payload: Value =
            serde_json::from_str(&nested(126).to_string()).expect("ingest parses it");
        let wrapped = QueueMessage::V1(EventV1 {
            event_id: "e".into(),
            system: "kintone".into(),
            app: "101".into(),
            record_id: "1".into(),
            event_type: "ADD_RECORD".into(),
            received_at: chrono::Utc::now(),
            correlation_id: "c".into(),
            payload,
        });
        assert!(QueueMessage::decode(&wrapped.encode()).is_err());
        assert!(matches!(
            prepare_kintone(&nested(126)),
            Err(Refusal::Invalid(m)) if m == "the payload nests deeper than 64 levels"
        ));
        let ok = prepare_kintone(&nested(MAX_PAYLOAD_DEPTH - 1)).expect("64 levels are fine");
        assert!(QueueMessage::decode(&ok.message).is_ok());
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
    }

    #[test]
    fn kintone_routing_names_the_missing_field() {
        let ok = json!({"id": "e1", "type": "UPDATE_RECORD", "app": {"id": "101"}, "record": {"$id": {"value": "5"}}});
        assert_eq!(
            route_kintone(&ok).unwrap(),
            Routed {
                event_id: "e1".into(),
                event_type: "UPDATE_RECORD".into(),
                app: "101".into(),
                record_id: "5".into()
            }
        );
        let del = json!({"id": "e2", "type": "DELETE_RECORD", "app": {"id": 101}, "recordId": "7"});
        assert_eq!(route_kintone(&del).unwrap().record_id, "7");
        assert_eq!(route_kintone(&del).unwrap().app, "101");
        for (payload, field) in [
            (
                json!({"type": "X", "app": {"id": "1"}, "recordId": "1"}),
                "id",
            ),
            (
                json!({"id": "e", "app": {"id": "1"}, "recordId": "1"}),
                "type",
            ),
            (json!({"id": "e", "type": "X", "recordId": "1"}), "app.id"),
            (
                json!({"id": "e", "type": "X", "app": {"id": "1"}}),
                "record.$id.value or recordId",
            ),
        ] {
            match route_kintone(&payload) {
                Err(Refusal::MissingField(f)) => assert_eq!(f, field),
                other => panic!("expected missing {field}, got {other:?}"),
            }
        }
    }
}
