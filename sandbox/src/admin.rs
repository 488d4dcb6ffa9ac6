//! The unauthenticated admin API under `/_admin`, used by tests and the demo to seed data,
//! inject faults, set rate limits, read the request log and inspect webhooks. Admin requests
//! are neither logged nor subject to faults or limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::faults::{FaultSpec, LimitSpec};
use crate::helpdesk;
use crate::kintone::store::{App, SYSTEM_FIELDS};
use crate::kintone::{self, KError, Update};
use crate::state::{Shared, System};
use crate::webhooks::{self, NewDelivery};

/// How long `POST /_admin/webhooks/flush` waits by default.
const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

type AdminResult = Result<Json<Value>, AdminError>;

/// An error response of the admin API, boxed because responses are large.
struct AdminError(Box<Response>);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<KError> for AdminError {
    fn from(error: KError) -> AdminError {
        AdminError(Box::new(error.into_response()))
    }
}

impl From<helpdesk::HError> for AdminError {
    fn from(error: helpdesk::HError) -> AdminError {
        AdminError(Box::new(error.into_response()))
    }
}

/// An admin error: `{"error": "<message>"}` with the given status.
fn admin_error(status: StatusCode, message: impl Into<String>) -> AdminError {
    AdminError(Box::new(
        (status, Json(json!({"error": message.into()}))).into_response(),
    ))
}

fn bad_request(message: impl Into<String>) -> AdminError {
    admin_error(StatusCode::BAD_REQUEST, message)
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|error| bad_request(format!("invalid body: {error}")))
}

fn parse_system(text: &str) -> Result<System, AdminError> {
    System::parse(text).ok_or_else(|| {
        admin_error(
            StatusCode::NOT_FOUND,
            format!("unknown system `{text}`; use kintone or helpdesk"),
        )
    })
}

fn parse_app_id(text: &str) -> Result<u64, AdminError> {
    text.parse()
        .map_err(|_| bad_request(format!("`{text}` is not an app id")))
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_admin/reset", post(reset))
        .route("/_admin/log", get(read_log).delete(clear_log))
        .route(
            "/_admin/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_admin/faults/{id}", delete(remove_fault))
        .route("/_admin/limits", get(list_limits).post(set_limit))
        .route("/_admin/limits/{system}", delete(remove_limit))
        .route("/_admin/kintone/apps", get(list_apps).post(put_app))
        .route("/_admin/kintone/apps/{app}/webhook", post(set_app_webhook))
        .route(
            "/_admin/kintone/apps/{app}/fields/{code}",
            post(change_field),
        )
        .route(
            "/_admin/kintone/apps/{app}/records",
            get(list_records).post(seed_record),
        )
        .route(
            "/_admin/kintone/apps/{app}/records/{id}",
            get(read_one_record).put(edit_record).delete(delete_record),
        )
        .route(
            "/_admin/kintone/apps/{app}/webhooks/send",
            post(send_custom_webhook),
        )
        .route("/_admin/kintone/webhooks", get(kintone_deliveries))
        .route(
            "/_admin/kintone/webhook_cap",
            get(kintone_cap).post(set_kintone_cap),
        )
        .route(
            "/_admin/kintone/webhooks/{id}/redeliver",
            post(redeliver_kintone),
        )
        .route(
            "/_admin/helpdesk/config",
            get(helpdesk_config).post(set_helpdesk_config),
        )
        .route(
            "/_admin/helpdesk/tickets",
            get(list_tickets).post(seed_ticket),
        )
        .route("/_admin/helpdesk/webhooks", get(helpdesk_deliveries))
        .route(
            "/_admin/helpdesk/webhooks/{id}/redeliver",
            post(redeliver_helpdesk),
        )
        .route("/_admin/webhooks/flush", post(flush))
}

async fn reset(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.reset();
    Json(json!({}))
}

async fn read_log(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
) -> AdminResult {
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    };
    let system = param("system").map(parse_system).transpose()?;
    let since_seq = param("since_seq")
        .map(|text| {
            text.parse::<u64>()
                .map_err(|_| bad_request("since_seq must be a non-negative integer"))
        })
        .transpose()?;
    let entries = shared.lock().log.entries(system, since_seq);
    Ok(Json(json!({ "entries": entries })))
}

async fn clear_log(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.lock().log.clear();
    Json(json!({}))
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.lock().faults.to_json())
}

async fn add_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let spec: FaultSpec = parse_body(&body)?;
    let id = shared.lock().faults.add(spec).map_err(bad_request)?;
    Ok(Json(json!({ "id": id })))
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.lock().faults.clear();
    Json(json!({}))
}

async fn remove_fault(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> AdminResult {
    if shared.lock().faults.remove(&id) {
        Ok(Json(json!({})))
    } else {
        Err(admin_error(
            StatusCode::NOT_FOUND,
            format!("no fault `{id}`"),
        ))
    }
}

async fn list_limits(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.lock().limits.to_json())
}

async fn set_limit(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let spec: LimitSpec = parse_body(&body)?;
    let limit = shared
        .lock()
        .limits
        .set(spec, Instant::now())
        .map_err(bad_request)?;
    Ok(Json(limit))
}

async fn remove_limit(
    State(shared): State<Arc<Shared>>,
    Path(system): Path<String>,
) -> AdminResult {
    let system = parse_system(&system)?;
    let removed = shared.lock().limits.remove(system);
    Ok(Json(json!({ "removed": removed })))
}

async fn list_apps(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let state = shared.lock();
    let apps: Vec<Value> = state
        .kintone
        .apps
        .values()
        .map(App::to_admin_json)
        .collect();
    Json(json!({ "apps": apps }))
}

/// Reads an optional URL that may be explicitly null.
fn optional_url(body: &Map<String, Value>, key: &str) -> Result<Option<String>, AdminError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(url)) if url.is_empty() => Ok(None),
        Some(Value::String(url)) => Ok(Some(url.clone())),
        Some(_) => Err(bad_request(format!("{key} must be a string or null"))),
    }
}

async fn put_app(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let body: Map<String, Value> = parse_body(&body)?;
    let id = body
        .get("app")
        .and_then(|value| match value {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.parse().ok(),
            _ => None,
        })
        .ok_or_else(|| bad_request("app must be a positive integer"))?;
    let name = match body.get("name") {
        None | Some(Value::Null) => format!("App {id}"),
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(bad_request("name must be a string")),
    };
    let mut fields = Vec::new();
    let mut options_of = std::collections::BTreeMap::new();
    let mut required = std::collections::BTreeSet::new();
    match body.get("fields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(schema)) => {
            for (code, spec) in schema {
                // A field is its type, or {"type", "options", "required"}.
                let (field_type, options, is_required) = match spec {
                    Value::String(t) => (t.as_str(), None, false),
                    Value::Object(o) => (
                        o.get("type").and_then(Value::as_str).unwrap_or_default(),
                        string_list(o.get("options"))
                            .map_err(|m| bad_request(format!("field `{code}`: {m}")))?,
                        o.get("required").and_then(Value::as_bool).unwrap_or(false),
                    ),
                    _ => ("", None, false),
                };
                if field_type.is_empty() {
                    return Err(bad_request(format!(
                        "the type of field `{code}` must be a string such as SINGLE_LINE_TEXT"
                    )));
                }
                if let Some(options) = options {
                    options_of.insert(code.clone(), options);
                }
                if is_required {
                    required.insert(code.clone());
                }
                if SYSTEM_FIELDS.iter().any(|(system, _)| system == code) {
                    return Err(bad_request(format!(
                        "`{code}` is a system field and is always present"
                    )));
                }
                fields.push((code.clone(), field_type.to_ascii_uppercase()));
            }
        }
        Some(_) => return Err(bad_request("fields must map field codes to types")),
    }
    let title_field = match body.get("title_field") {
        None | Some(Value::Null) => None,
        Some(Value::String(code)) if fields.iter().any(|(field, _)| field == code) => {
            Some(code.clone())
        }
        Some(_) => return Err(bad_request("title_field must be one of the fields")),
    };
    let webhook_url = optional_url(&body, "webhook_url")?;
    let mut app = App::new(id, name, fields, title_field, webhook_url);
    app.options = options_of;
    app.required = required;
    let summary = app.to_admin_json();
    shared.lock().kintone.apps.insert(id, app);
    Ok(Json(summary))
}

/// An optional list of strings.
fn string_list(value: Option<&Value>) -> Result<Option<Vec<String>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| "options must be a list of strings".to_owned()),
        Some(_) => Err("options must be a list of strings".to_owned()),
    }
}

/// Changes a field as an app administrator would in the form settings: `{"code": new
/// code, "type": new type, "options": [...], "required": bool}`, each optional. Values
/// are kept; no webhook fires.
async fn change_field(
    State(shared): State<Arc<Shared>>,
    Path((app, code)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult {
    let app_id = parse_app_id(&app)?;
    let body: Map<String, Value> = parse_body(&body)?;
    let text = |key: &str| match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) if !t.is_empty() => Ok(Some(t.as_str())),
        Some(_) => Err(bad_request(format!("{key} must be a non-empty string"))),
    };
    let new_code = text("code")?;
    let new_type = text("type")?;
    let options = string_list(body.get("options")).map_err(bad_request)?;
    let required = match body.get("required") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(bad_request("required must be true or false")),
    };
    let mut state = shared.lock();
    let app = state
        .kintone
        .apps
        .get_mut(&app_id)
        .ok_or_else(|| KError::app_not_found(app_id))?;
    app.change_field(&code, new_code, new_type, options, required)
        .map_err(bad_request)?;
    Ok(Json(app.to_admin_json()))
}

async fn set_app_webhook(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    body: Bytes,
) -> AdminResult {
    let app_id = parse_app_id(&app)?;
    let body: Map<String, Value> = parse_body(&body)?;
    let url = optional_url(&body, "url")?;
    let mut state = shared.lock();
    let app = state
        .kintone
        .apps
        .get_mut(&app_id)
        .ok_or_else(|| KError::app_not_found(app_id))?;
    app.webhook_url = url;
    Ok(Json(app.to_admin_json()))
}

/// kintone's webhook cap: `{"per_minute": 60}` drops webhooks beyond 60 in any
/// rolling minute, as kintone does; `{"per_minute": null}` lifts it.
async fn set_kintone_cap(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let body: Map<String, Value> = parse_body(&body)?;
    let per_minute = match body.get("per_minute") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad_request("per_minute must be a whole number or null"))?,
        ),
    };
    let mut state = shared.lock();
    state.deliveries.set_kintone_cap(per_minute);
    Ok(Json(state.deliveries.kintone_cap_json()))
}

async fn kintone_cap(State(shared): State<Arc<Shared>>) -> AdminResult {
    Ok(Json(shared.lock().deliveries.kintone_cap_json()))
}

async fn list_records(State(shared): State<Arc<Shared>>, Path(app): Path<String>) -> AdminResult {
    let app_id = parse_app_id(&app)?;
    let state = shared.lock();
    let app = kintone::find_app(&state, app_id)?;
    let records: Vec<Value> = app
        .records
        .values()
        .map(|record| Value::Object(app.render(record)))
        .collect();
    Ok(Json(json!({ "records": records })))
}

/// One record, as `list_records` renders each (a harness reading one of thousands
/// need not read them all).
async fn read_one_record(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
) -> AdminResult {
    let app_id = parse_app_id(&app)?;
    let id: u64 = id
        .parse()
        .map_err(|_| bad_request(format!("`{id}` is not a record id")))?;
    let state = shared.lock();
    let app = kintone::find_app(&state, app_id)?;
    let record = app
        .records
        .get(&id)
        .ok_or_else(|| KError::record_not_found(id))?;
    Ok(Json(json!({ "record": Value::Object(app.render(record)) })))
}

/// Reads the `webhook` flag of an admin record change.
fn webhook_flag(body: &Map<String, Value>, default: bool) -> Result<bool, AdminError> {
    match body.get("webhook") {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(_) => Err(bad_request("webhook must be a boolean")),
    }
}

async fn seed_record(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    body: Bytes,
) -> AdminResult {
    let app_id = parse_app_id(&app)?;
    let body: Map<String, Value> = parse_body(&body)?;
    let fire = webhook_flag(&body, false)?;
    let mut state = shared.lock();
    // Many at once for a large app (the bench): `{"records": [...]}`, no limit of 100.
    if let Some(records) = body.get("records") {
        let records = records
            .as_array()
            .ok_or_else(|| bad_request("records must be an array of records"))?;
        let inputs: Vec<Option<&Value>> = records.iter().map(Some).collect();
        let created =
            kintone::create_records(&shared.hooks, &mut state, app_id, &inputs, true, fire)?;
        let ids: Vec<String> = created.iter().map(|(id, _)| id.to_string()).collect();
        return Ok(Json(json!({ "ids": ids })));
    }
    let created = kintone::create_records(
        &shared.hooks,
        &mut state,
        app_id,
        &[body.get("record")],
        false,
        fire,
    )?;
    let (id, revision) = created[0];
    Ok(Json(
        json!({"id": id.to_string(), "revision": revision.to_string()}),
    ))
}

async fn edit_record(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    body: Bytes,
) -> AdminResult {
    let app_id = parse_app_id(&app)?;
    let id: u64 = id
        .parse()
        .map_err(|_| bad_request(format!("`{id}` is not a record id")))?;
    let body: Map<String, Value> = parse_body(&body)?;
    let fire = webhook_flag(&body, true)?;
    let mut state = shared.lock();
    let updated = kintone::update_records(
        &shared.hooks,
        &mut state,
        app_id,
        &[Update {
            id,
            revision: None,
            record: body.get("record"),
        }],
        false,
        fire,
    )?;
    Ok(Json(json!({"revision": updated[0].1.to_string()})))
}

async fn delete_record(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> AdminResult {
    let app_id = parse_app_id(&app)?;
    let id: u64 = id
        .parse()
        .map_err(|_| bad_request(format!("`{id}` is not a record id")))?;
    let fire = match query.iter().find(|(key, _)| key == "webhook") {
        None => true,
        Some((_, value)) => match value.as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(bad_request("webhook must be true or false")),
        },
    };
    let mut state = shared.lock();
    kintone::delete_records_in(&shared.hooks, &mut state, app_id, &[id], &[], fire)?;
    Ok(Json(json!({})))
}

async fn send_custom_webhook(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    body: Bytes,
) -> AdminResult {
    let app_id = parse_app_id(&app)?;
    let body: Map<String, Value> = parse_body(&body)?;
    let Some(payload) = body.get("payload").cloned() else {
        return Err(bad_request("payload is required"));
    };
    let url_override = optional_url(&body, "url")?;
    let mut state = shared.lock();
    let app = state
        .kintone
        .apps
        .get(&app_id)
        .ok_or_else(|| KError::app_not_found(app_id))?;
    let Some(url) = url_override.or_else(|| app.webhook_url.clone()) else {
        return Err(admin_error(
            StatusCode::CONFLICT,
            format!("app {app_id} has no webhook URL; set one or pass `url`"),
        ));
    };
    let id = payload
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let kind = payload
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("CUSTOM")
        .to_owned();
    let record_id = payload
        .pointer("/record/$id/value")
        .or_else(|| payload.get("recordId"))
        .map(|value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        });
    webhooks::enqueue(
        &shared.hooks,
        &mut state.deliveries,
        NewDelivery {
            system: System::Kintone,
            id: id.clone(),
            kind,
            record_id,
            app: Some(app_id),
            url,
            payload,
        },
    );
    Ok(Json(json!({ "id": id })))
}

async fn kintone_deliveries(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.lock().deliveries.to_json(System::Kintone))
}

async fn helpdesk_deliveries(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.lock().deliveries.to_json(System::Helpdesk))
}

async fn redeliver_kintone(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> AdminResult {
    let mut state = shared.lock();
    let app = state
        .deliveries
        .find(System::Kintone, &id)
        .and_then(|delivery| delivery.app);
    let current_url = app
        .and_then(|app| state.kintone.apps.get(&app))
        .and_then(|app| app.webhook_url.clone());
    redeliver(&shared, &mut state, System::Kintone, &id, current_url)
}

async fn redeliver_helpdesk(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> AdminResult {
    let mut state = shared.lock();
    let current_url = helpdesk::webhook_url(&state);
    redeliver(&shared, &mut state, System::Helpdesk, &id, current_url)
}

/// Queues another attempt of a delivery, to the current webhook URL when there is one.
fn redeliver(
    shared: &Shared,
    state: &mut crate::state::SandboxState,
    system: System,
    id: &str,
    current_url: Option<String>,
) -> AdminResult {
    if webhooks::redeliver(
        &shared.hooks,
        &mut state.deliveries,
        system,
        id,
        current_url,
    ) {
        Ok(Json(json!({ "id": id })))
    } else {
        Err(admin_error(
            StatusCode::NOT_FOUND,
            format!("no {} webhook delivery `{id}`", system.as_str()),
        ))
    }
}

async fn helpdesk_config(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.lock().helpdesk.config_json())
}

async fn set_helpdesk_config(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let body: Map<String, Value> = parse_body(&body)?;
    let lag = match body.get("search_lag_ms") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or_else(|| bad_request("search_lag_ms must be a non-negative integer"))?,
        ),
    };
    let url = if body.contains_key("webhook_url") {
        Some(optional_url(&body, "webhook_url")?)
    } else {
        None
    };
    let ignore_keys = match body.get("ignore_idempotency_keys") {
        None => None,
        Some(value) => Some(
            value
                .as_bool()
                .ok_or_else(|| bad_request("ignore_idempotency_keys must be true or false"))?,
        ),
    };
    let envelope = match body.get("body_envelope") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(key)) if !key.is_empty() => Some(Some(key.clone())),
        Some(_) => return Err(bad_request("body_envelope must be a key name or null")),
    };
    let drop_fields = string_list(body.get("drop_fields"))
        .map_err(|_| bad_request("drop_fields must be a list of field names"))?;
    let mut state = shared.lock();
    if let Some(envelope) = envelope {
        state.helpdesk.body_envelope = envelope;
    }
    if let Some(drop_fields) = drop_fields {
        state.helpdesk.drop_fields = drop_fields;
    }
    if let Some(lag) = lag {
        state.helpdesk.search_lag_ms = lag;
    }
    if let Some(ignore) = ignore_keys {
        state.helpdesk.ignore_idempotency_keys = ignore;
    }
    if let Some(url) = url {
        state.helpdesk.webhook_url = url;
    }
    Ok(Json(state.helpdesk.config_json()))
}

async fn list_tickets(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(shared.lock().helpdesk.tickets_json())
}

async fn seed_ticket(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let mut body: Map<String, Value> = parse_body(&body)?;
    // Many at once for a large helpdesk (the bench): `{"tickets": [...]}`.
    if let Some(Value::Array(tickets)) = body.get("tickets") {
        let mut state = shared.lock();
        let mut ids = Vec::with_capacity(tickets.len());
        for (i, t) in tickets.iter().enumerate() {
            let t = t
                .as_object()
                .ok_or_else(|| bad_request(format!("tickets[{i}] must be an object")))?;
            let ticket = helpdesk::seed_ticket(&mut state, t)?;
            ids.push(ticket.get("id").cloned().unwrap_or(Value::Null));
        }
        return Ok(Json(json!({ "ids": ids })));
    }
    // The ticket may be sent bare or wrapped as {"ticket": {...}}.
    if !body.contains_key("subject")
        && let Some(Value::Object(inner)) = body.remove("ticket")
    {
        body = inner;
    }
    let ticket = helpdesk::seed_ticket(&mut shared.lock(), &body)?;
    Ok(Json(json!({ "ticket": ticket })))
}

async fn flush(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let body: Map<String, Value> = parse_body(&body)?;
    let timeout = match body.get("timeout_ms") {
        None | Some(Value::Null) => DEFAULT_FLUSH_TIMEOUT,
        Some(value) => Duration::from_millis(
            value
                .as_u64()
                .ok_or_else(|| bad_request("timeout_ms must be a non-negative integer"))?,
        ),
    };
    let pending = shared.hooks.flush(timeout).await;
    Ok(Json(json!({ "pending": pending })))
}
