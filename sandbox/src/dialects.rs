//! The helpdesk's ticket store served through three more request and response shapes, each
//! modelled on a public API and mounted under a prefix of its own:
//!
//! * `/zendesk`: Zendesk Support (`/api/v2/tickets.json`, `{"ticket": {...}}` envelopes,
//!   `custom_fields` as an array of `{id, value}` merged by id on update),
//! * `/hubspot`: HubSpot CRM v3 objects (`/crm/v3/objects/tickets`, string property values,
//!   a filter search and a batch update that answers 207 when some ids are missing),
//! * `/freshdesk`: Freshdesk v2 (`/api/v2/tickets`, flat bodies, integer status and priority,
//!   `custom_fields` as an object merged by key on update, and a query-string search).
//!
//! Every dialect reads and writes the same tickets as `/api/tickets` (one id counter), goes
//! through the same middleware (authorised by the helpdesk token, logged as `helpdesk`,
//! subject to its faults and rate limit), honours the search lag and the configured
//! `drop_fields`, and fires the same `ticket.created` / `ticket.updated` webhooks, whose
//! payload carries the ticket as stored. Each dialect stores a ticket as flat keys:
//!
//! * Zendesk: its fields as sent (`custom_fields` as the array), `status` `"new"` and
//!   `description` null when not sent;
//! * HubSpot: its properties as flat keys, every value as a string (or null);
//! * Freshdesk: its fields as sent (`custom_fields` as the object), `status` 2 and
//!   `priority` 1 when not sent.
//!
//! Authorisation is `Authorization: Bearer <token>` or `Authorization: Basic <token>`, where a
//! Basic credential may also be the base64 of `user:password` with the token as either part
//! (as Zendesk's `email/token:<token>` and Freshdesk's `<token>:X` clients send it).

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::state::Shared;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/zendesk/api/v2/tickets.json",
            get(zendesk::search).post(zendesk::create),
        )
        .route(
            "/zendesk/api/v2/tickets/{id}",
            get(zendesk::show)
                .put(zendesk::update)
                .delete(zendesk::destroy),
        )
        .route("/hubspot/crm/v3/objects/tickets", post(hubspot::create))
        .route(
            "/hubspot/crm/v3/objects/tickets/search",
            post(hubspot::search),
        )
        .route(
            "/hubspot/crm/v3/objects/tickets/batch/update",
            post(hubspot::batch_update),
        )
        .route(
            "/hubspot/crm/v3/objects/tickets/{id}",
            get(hubspot::show)
                .patch(hubspot::update)
                .delete(hubspot::destroy),
        )
        .route("/freshdesk/api/v2/tickets", post(freshdesk::create))
        .route(
            "/freshdesk/api/v2/tickets/{id}",
            get(freshdesk::show)
                .put(freshdesk::update)
                .delete(freshdesk::destroy),
        )
        .route("/freshdesk/api/v2/search/tickets", get(freshdesk::search))
}

/// Whether the request carries the helpdesk token as `Bearer <token>` or `Basic <token>`
/// (a Basic credential may also be the base64 of `user:password` naming the token as either
/// part).
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let token = shared.config.helpdesk_token.as_str();
    let Some((scheme, credential)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
    else {
        return false;
    };
    let credential = credential.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return credential == token;
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    if credential == token {
        return true;
    }
    STANDARD
        .decode(credential)
        .ok()
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .is_some_and(|decoded| {
            decoded
                .split_once(':')
                .is_some_and(|(user, password)| user == token || password == token)
        })
}

/// Parses a request body as a JSON object; the error is a message for the dialect's body.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the request body must be a JSON object".to_owned()),
        Err(error) => Err(format!("the request body is not valid JSON: {error}")),
    }
}

/// A value as text, the way HubSpot stores properties and the searches compare them:
/// strings as they are, numbers and booleans printed, arrays of values joined with `;`
/// (a multi-select value), objects as JSON; `None` for null.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        Value::Bool(_) | Value::Number(_) => Some(value.to_string()),
        Value::Array(items) => Some(items.iter().filter_map(text).collect::<Vec<_>>().join(";")),
        Value::Object(_) => Some(value.to_string()),
    }
}

/// A stored ticket in a flat dialect shape: every stored key but `version`, less the keys of
/// `hidden_when_null` that are null, with a null `description` and `no_custom_fields` as
/// `custom_fields` when the ticket lacks them, and the timestamps last.
fn flat(ticket: &Map<String, Value>, hidden_when_null: &[&str], no_custom_fields: Value) -> Value {
    let mut out = Map::new();
    for (key, value) in ticket {
        let hidden = hidden_when_null.contains(&key.as_str()) && value.is_null();
        if !hidden && !matches!(key.as_str(), "version" | "created_at" | "updated_at") {
            out.insert(key.clone(), value.clone());
        }
    }
    out.entry("description").or_insert(Value::Null);
    out.entry("custom_fields").or_insert(no_custom_fields);
    for key in ["created_at", "updated_at"] {
        out.insert(
            key.to_owned(),
            ticket.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(out)
}

/// A ticket id from a path segment (`None` when it is not one, which the dialects answer as
/// an unknown ticket).
fn ticket_id(text: &str) -> Option<u64> {
    text.parse().ok()
}

/// The Zendesk Support dialect under `/zendesk/api/v2`.
mod zendesk {
    use std::sync::Arc;

    use axum::Json;
    use axum::body::Bytes;
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Map, Value, json};

    use super::{authorized, flat, parse_object, ticket_id};
    use crate::helpdesk::{HelpdeskState, fire, idempotent, validate_fields};
    use crate::state::{SandboxState, Shared, now_millis};

    /// A Zendesk error: a status and a body such as `{"error", "description"}`.
    pub(super) struct ZError(StatusCode, Value);

    impl IntoResponse for ZError {
        fn into_response(self) -> Response {
            (self.0, Json(self.1)).into_response()
        }
    }

    fn unauthorized() -> ZError {
        ZError(
            StatusCode::UNAUTHORIZED,
            json!({"error": "Couldn't authenticate you"}),
        )
    }

    fn not_found() -> ZError {
        ZError(
            StatusCode::NOT_FOUND,
            json!({"error": "RecordNotFound", "description": "Not found"}),
        )
    }

    fn invalid_endpoint() -> ZError {
        ZError(
            StatusCode::NOT_FOUND,
            json!({"error": "InvalidEndpoint", "description": "Not found"}),
        )
    }

    fn bad_request(description: impl Into<String>) -> ZError {
        ZError(
            StatusCode::BAD_REQUEST,
            json!({"error": "InvalidValue", "description": description.into()}),
        )
    }

    /// 422 `RecordInvalid` naming one field.
    fn invalid(field: &str, description: &str) -> ZError {
        ZError(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({
                "error": "RecordInvalid",
                "description": "Record validation errors",
                "details": { field: [{"description": description}] },
            }),
        )
    }

    /// A ticket in Zendesk's shape.
    fn render(ticket: &Map<String, Value>) -> Value {
        flat(ticket, &["assignee"], json!([]))
    }

    /// The id of a `{id}.json` path segment.
    fn segment_id(segment: &str) -> Result<u64, ZError> {
        let id = segment.strip_suffix(".json").ok_or_else(invalid_endpoint)?;
        ticket_id(id).ok_or_else(not_found)
    }

    /// The fields inside a body's `{"ticket": {...}}`, checked. A create's `comment.body`
    /// becomes the description, as in Zendesk; a comment is not kept on the ticket.
    fn ticket_fields(
        helpdesk: &HelpdeskState,
        body: &[u8],
        creating: bool,
    ) -> Result<Map<String, Value>, ZError> {
        let mut body = parse_object(body).map_err(bad_request)?;
        let Some(Value::Object(mut fields)) = body.remove("ticket") else {
            return Err(bad_request(
                "the request body must be {\"ticket\": {...}} with the ticket's fields",
            ));
        };
        if let Some(comment) = fields.remove("comment")
            && creating
            && !fields.contains_key("description")
            && let Some(text @ Value::String(_)) = comment.get("body")
        {
            fields.insert("description".to_owned(), text.clone());
        }
        helpdesk.drop_configured_fields(&mut fields);
        let blank = match fields.get("subject") {
            None => creating,
            Some(Value::String(subject)) => subject.trim().is_empty(),
            Some(_) => true,
        };
        if blank {
            return Err(invalid("subject", "Subject: cannot be blank"));
        }
        if let Some(custom) = fields.get_mut("custom_fields") {
            *custom = Value::Array(custom_fields(custom)?);
        }
        validate_fields(&fields, false, "")
            .map_err(|error| invalid(error.field().unwrap_or("base"), error.message()))?;
        Ok(fields)
    }

    /// A `custom_fields` value as `{id, value}` entries, each with a numeric id.
    fn custom_fields(value: &Value) -> Result<Vec<Value>, ZError> {
        let refused = || {
            invalid(
                "custom_fields",
                "Custom fields: each entry must be an object with a numeric id",
            )
        };
        let entries = value.as_array().ok_or_else(refused)?;
        entries
            .iter()
            .map(|entry| {
                let id = entry
                    .get("id")
                    .and_then(Value::as_u64)
                    .ok_or_else(refused)?;
                let value = entry.get("value").cloned().unwrap_or(Value::Null);
                Ok(json!({"id": id, "value": value}))
            })
            .collect()
    }

    /// Merges `update`'s entries into the stored array by id: a given id's value replaced,
    /// a new id appended, the others kept.
    fn merge_custom_fields(stored: Option<&Value>, update: &Value) -> Value {
        let mut merged: Vec<Value> = stored
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for entry in update.as_array().into_iter().flatten() {
            let id = entry.get("id").and_then(Value::as_u64);
            match merged
                .iter_mut()
                .find(|existing| existing.get("id").and_then(Value::as_u64) == id)
            {
                Some(existing) => *existing = entry.clone(),
                None => merged.push(entry.clone()),
            }
        }
        Value::Array(merged)
    }

    /// `POST /zendesk/api/v2/tickets.json`, under an optional `Idempotency-Key`.
    pub(super) async fn create(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        if !authorized(&shared, &headers) {
            return unauthorized().into_response();
        }
        let mut state = shared.lock();
        idempotent(
            &mut state,
            &headers,
            "POST /zendesk/api/v2/tickets.json",
            &body,
            |state| {
                let mut fields = ticket_fields(&state.helpdesk, &body, true)?;
                for (key, default) in [
                    ("status", json!("new")),
                    ("description", Value::Null),
                    ("custom_fields", json!([])),
                ] {
                    fields.entry(key).or_insert(default);
                }
                let SandboxState {
                    helpdesk,
                    deliveries,
                    ..
                } = state;
                let ticket = helpdesk.create(&fields, &now_millis());
                fire(
                    &shared.hooks,
                    deliveries,
                    helpdesk.webhook_url.as_ref(),
                    "ticket.created",
                    &ticket,
                );
                Ok::<_, ZError>((StatusCode::CREATED, json!({ "ticket": render(&ticket) })))
            },
        )
    }

    /// `GET /zendesk/api/v2/tickets/{id}.json`.
    pub(super) async fn show(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Path(segment): Path<String>,
    ) -> Result<Json<Value>, ZError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let id = segment_id(&segment)?;
        let state = shared.lock();
        let ticket = state.helpdesk.ticket(id).ok_or_else(not_found)?;
        Ok(Json(json!({ "ticket": render(ticket) })))
    }

    /// `PUT /zendesk/api/v2/tickets/{id}.json`: a partial update.
    pub(super) async fn update(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Path(segment): Path<String>,
        body: Bytes,
    ) -> Result<Json<Value>, ZError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let id = segment_id(&segment)?;
        let mut guard = shared.lock();
        let SandboxState {
            helpdesk,
            deliveries,
            ..
        } = &mut *guard;
        let current = helpdesk.ticket(id).ok_or_else(not_found)?;
        let mut fields = ticket_fields(helpdesk, &body, false)?;
        if let Some(update) = fields.get("custom_fields") {
            let merged = merge_custom_fields(current.get("custom_fields"), update);
            fields.insert("custom_fields".to_owned(), merged);
        }
        let ticket = helpdesk
            .update(id, &fields, &now_millis())
            .ok_or_else(not_found)?;
        fire(
            &shared.hooks,
            deliveries,
            helpdesk.webhook_url.as_ref(),
            "ticket.updated",
            &ticket,
        );
        Ok(Json(json!({ "ticket": render(&ticket) })))
    }

    /// `DELETE /zendesk/api/v2/tickets/{id}.json`: 204, or 404.
    pub(super) async fn destroy(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Path(segment): Path<String>,
    ) -> Result<StatusCode, ZError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let id = segment_id(&segment)?;
        if shared.lock().helpdesk.remove(id) {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(not_found())
        }
    }

    /// `GET /zendesk/api/v2/tickets.json[?external_id=X]`: every ticket, or those whose
    /// external id is exactly `X`, once past the search lag.
    pub(super) async fn search(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Query(pairs): Query<Vec<(String, String)>>,
    ) -> Result<Json<Value>, ZError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let external_id = pairs
            .iter()
            .find(|(key, _)| key == "external_id")
            .map(|(_, value)| value.as_str());
        let state = shared.lock();
        let tickets: Vec<Value> = state
            .helpdesk
            .visible(external_id)
            .into_iter()
            .map(render)
            .collect();
        let count = tickets.len();
        Ok(Json(json!({ "tickets": tickets, "count": count })))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn custom_fields_merge_by_id() {
            let stored = json!([{"id": 1, "value": "a"}, {"id": 2, "value": "b"}]);
            let update = json!([{"id": 2, "value": "B"}, {"id": 3, "value": null}]);
            assert_eq!(
                merge_custom_fields(Some(&stored), &update),
                json!([{"id": 1, "value": "a"}, {"id": 2, "value": "B"}, {"id": 3, "value": null}])
            );
            assert_eq!(
                merge_custom_fields(Some(&json!({"cf": 1})), &update),
                update
            );
        }

        #[test]
        fn segments_need_the_json_suffix() {
            assert_eq!(segment_id("12.json").ok(), Some(12));
            assert_eq!(
                segment_id("12").err().map(|e| e.1["error"].clone()),
                Some(json!("InvalidEndpoint"))
            );
            assert_eq!(
                segment_id("x.json").err().map(|e| e.1["error"].clone()),
                Some(json!("RecordNotFound"))
            );
        }
    }
}

/// The HubSpot CRM v3 objects dialect under `/hubspot/crm/v3/objects/tickets`.
mod hubspot {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use axum::Json;
    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Map, Value, json};

    use super::{authorized, parse_object, text, ticket_id};
    use crate::helpdesk::{HelpdeskState, fire};
    use crate::state::{SandboxState, Shared, now_millis};

    /// The most inputs that one batch may carry.
    const MAX_BATCH: usize = 100;

    /// The most results that one search page may carry.
    const MAX_SEARCH_LIMIT: u64 = 200;

    /// Properties that HubSpot computes; a write's values for them are ignored.
    const READ_ONLY: [&str; 3] = ["hs_object_id", "createdate", "hs_lastmodifieddate"];

    /// A HubSpot error: `{"status": "error", "message", "category"}` with a status.
    pub(super) struct HubError(StatusCode, Value);

    impl IntoResponse for HubError {
        fn into_response(self) -> Response {
            (self.0, Json(self.1)).into_response()
        }
    }

    fn error(status: StatusCode, category: &str, message: impl Into<String>) -> HubError {
        HubError(
            status,
            json!({"status": "error", "message": message.into(), "category": category}),
        )
    }

    fn unauthorized() -> HubError {
        error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found.",
        )
    }

    fn not_found() -> HubError {
        error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        )
    }

    fn validation(message: impl Into<String>) -> HubError {
        error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    /// A ticket as a HubSpot object: the id as a string, every stored key but the server's
    /// as a string property (null stays null), and HubSpot's computed properties.
    fn record(ticket: &Map<String, Value>) -> Value {
        let id = ticket.get("id").and_then(text).unwrap_or_default();
        let created = ticket.get("created_at").cloned().unwrap_or(Value::Null);
        let updated = ticket.get("updated_at").cloned().unwrap_or(Value::Null);
        Value::Object(
            [
                ("id".to_owned(), json!(id)),
                ("properties".to_owned(), Value::Object(properties(ticket))),
                ("createdAt".to_owned(), created),
                ("updatedAt".to_owned(), updated),
                ("archived".to_owned(), json!(false)),
            ]
            .into_iter()
            .collect(),
        )
    }

    /// A ticket's properties, sorted by name.
    fn properties(ticket: &Map<String, Value>) -> Map<String, Value> {
        let mut properties: Vec<(String, Value)> = ticket
            .iter()
            .filter(|(key, _)| {
                !matches!(key.as_str(), "id" | "version" | "created_at" | "updated_at")
            })
            .map(|(key, value)| (key.clone(), text(value).map_or(Value::Null, Value::String)))
            .collect();
        let id = ticket.get("id").and_then(text).unwrap_or_default();
        properties.push(("hs_object_id".to_owned(), json!(id)));
        for (key, stored) in [
            ("createdate", "created_at"),
            ("hs_lastmodifieddate", "updated_at"),
        ] {
            let value = ticket.get(stored).cloned().unwrap_or(Value::Null);
            properties.push((key.to_owned(), value));
        }
        properties.sort_by(|a, b| a.0.cmp(&b.0));
        properties.into_iter().collect()
    }

    /// The checked properties of a write, as the strings that HubSpot stores.
    fn write_properties(
        helpdesk: &HelpdeskState,
        input: &Map<String, Value>,
        creating: bool,
    ) -> Result<Map<String, Value>, HubError> {
        let Some(Value::Object(sent)) = input.get("properties") else {
            return Err(validation(
                "Invalid input JSON: properties must be an object of property values",
            ));
        };
        let mut properties = Map::new();
        for (key, value) in sent {
            if READ_ONLY.contains(&key.as_str()) {
                continue;
            }
            let stored = match value {
                Value::Null => Value::Null,
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    text(value).map_or(Value::Null, Value::String)
                }
                Value::Array(_) | Value::Object(_) => {
                    return Err(validation(format!(
                        "Property values were not valid: {key} must be a string, a number or a boolean"
                    )));
                }
            };
            properties.insert(key.clone(), stored);
        }
        helpdesk.drop_configured_fields(&mut properties);
        let blank = match properties.get("subject") {
            None => creating,
            Some(subject) => subject.as_str().is_none_or(|s| s.trim().is_empty()),
        };
        if blank {
            return Err(validation(
                "Property values were not valid: subject is required",
            ));
        }
        Ok(properties)
    }

    fn body_object(body: &[u8]) -> Result<Map<String, Value>, HubError> {
        parse_object(body).map_err(|message| validation(format!("Invalid input JSON: {message}")))
    }

    /// `POST /hubspot/crm/v3/objects/tickets`: every request creates (no idempotency keys).
    pub(super) async fn create(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, Json<Value>), HubError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let input = body_object(&body)?;
        let mut guard = shared.lock();
        let SandboxState {
            helpdesk,
            deliveries,
            ..
        } = &mut *guard;
        let properties = write_properties(helpdesk, &input, true)?;
        let ticket = helpdesk.create(&properties, &now_millis());
        fire(
            &shared.hooks,
            deliveries,
            helpdesk.webhook_url.as_ref(),
            "ticket.created",
            &ticket,
        );
        Ok((StatusCode::CREATED, Json(record(&ticket))))
    }

    /// `GET /hubspot/crm/v3/objects/tickets/{id}`.
    pub(super) async fn show(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Path(id): Path<String>,
    ) -> Result<Json<Value>, HubError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let id = ticket_id(&id).ok_or_else(not_found)?;
        let state = shared.lock();
        let ticket = state.helpdesk.ticket(id).ok_or_else(not_found)?;
        Ok(Json(record(ticket)))
    }

    /// `PATCH /hubspot/crm/v3/objects/tickets/{id}`.
    pub(super) async fn update(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Path(id): Path<String>,
        body: Bytes,
    ) -> Result<Json<Value>, HubError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let id = ticket_id(&id).ok_or_else(not_found)?;
        let input = body_object(&body)?;
        let mut guard = shared.lock();
        let SandboxState {
            helpdesk,
            deliveries,
            ..
        } = &mut *guard;
        if helpdesk.ticket(id).is_none() {
            return Err(not_found());
        }
        let properties = write_properties(helpdesk, &input, false)?;
        let ticket = helpdesk
            .update(id, &properties, &now_millis())
            .ok_or_else(not_found)?;
        fire(
            &shared.hooks,
            deliveries,
            helpdesk.webhook_url.as_ref(),
            "ticket.updated",
            &ticket,
        );
        Ok(Json(record(&ticket)))
    }

    /// `DELETE /hubspot/crm/v3/objects/tickets/{id}`: 204, or 404.
    pub(super) async fn destroy(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Path(id): Path<String>,
    ) -> Result<StatusCode, HubError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let id = ticket_id(&id).ok_or_else(not_found)?;
        if shared.lock().helpdesk.remove(id) {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(not_found())
        }
    }

    /// One `EQ` filter: a property name and the text that it must equal.
    struct Filter {
        property: String,
        value: Option<String>,
    }

    /// The filter groups of a search body: groups are ORed, a group's filters ANDed.
    fn filter_groups(request: &Map<String, Value>) -> Result<Vec<Vec<Filter>>, HubError> {
        let groups = match request.get("filterGroups") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(groups)) => groups,
            Some(_) => return Err(validation("filterGroups must be an array")),
        };
        groups
            .iter()
            .map(|group| {
                let filters = match group.get("filters") {
                    None | Some(Value::Null) => return Ok(Vec::new()),
                    Some(Value::Array(filters)) => filters,
                    Some(_) => return Err(validation("filters must be an array")),
                };
                filters
                    .iter()
                    .map(|filter| {
                        let property = filter
                            .get("propertyName")
                            .and_then(Value::as_str)
                            .ok_or_else(|| validation("each filter needs a propertyName"))?;
                        match filter.get("operator").and_then(Value::as_str) {
                            Some("EQ") => {}
                            Some(other) => {
                                return Err(validation(format!(
                                    "operator {other} is not supported by the sandbox; use EQ"
                                )));
                            }
                            None => return Err(validation("each filter needs an operator")),
                        }
                        Ok(Filter {
                            property: property.to_owned(),
                            value: filter.get("value").and_then(text),
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Whether a ticket's properties meet the filter groups (no groups: every ticket).
    fn matches(properties: &Map<String, Value>, groups: &[Vec<Filter>]) -> bool {
        groups.is_empty()
            || groups.iter().any(|filters| {
                filters.iter().all(|filter| {
                    filter.value.is_some()
                        && properties.get(&filter.property).and_then(text) == filter.value
                })
            })
    }

    /// A non-negative integer of a search body, given as a number or a numeric string.
    fn count_of(request: &Map<String, Value>, key: &str) -> Result<Option<u64>, HubError> {
        match request.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
                .map(Some)
                .ok_or_else(|| validation(format!("{key} must be a non-negative integer"))),
        }
    }

    /// `POST /hubspot/crm/v3/objects/tickets/search`: `EQ` filters compared as strings, in id
    /// order, `limit` (default 10, at most 200) from the offset `after`, once past the search
    /// lag. `paging.next.after` is given when more results follow.
    pub(super) async fn search(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Json<Value>, HubError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let request = body_object(&body)?;
        let groups = filter_groups(&request)?;
        let limit = count_of(&request, "limit")?.unwrap_or(10);
        if limit > MAX_SEARCH_LIMIT {
            return Err(validation(format!(
                "limit must be at most {MAX_SEARCH_LIMIT}"
            )));
        }
        let after = count_of(&request, "after")?.unwrap_or(0);
        let state = shared.lock();
        let found: Vec<&Map<String, Value>> = state
            .helpdesk
            .visible(None)
            .into_iter()
            .filter(|ticket| matches(&properties(ticket), &groups))
            .collect();
        let total = found.len();
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(total);
        let page = usize::try_from(limit).unwrap_or(usize::MAX);
        let results: Vec<Value> = found[start..]
            .iter()
            .take(page)
            .map(|ticket| record(ticket))
            .collect();
        let mut answer = json!({ "total": total, "results": results });
        let next = start.saturating_add(page);
        if next < total {
            answer["paging"] = json!({"next": {"after": next.to_string()}});
        }
        Ok(Json(answer))
    }

    /// `POST /hubspot/crm/v3/objects/tickets/batch/update`: up to 100 inputs, each checked
    /// first; the inputs whose ticket exists are applied, the others reported (207).
    pub(super) async fn batch_update(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, Json<Value>), HubError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let started_at = now_millis();
        let request = body_object(&body)?;
        let inputs = match request.get("inputs") {
            Some(Value::Array(inputs)) if inputs.len() > MAX_BATCH => {
                return Err(validation(format!(
                    "Too many inputs: at most {MAX_BATCH} are allowed per batch, not {}",
                    inputs.len()
                )));
            }
            Some(Value::Array(inputs)) => inputs,
            _ => {
                return Err(validation(
                    "Invalid input JSON: inputs must be an array of {id, properties}",
                ));
            }
        };
        let mut guard = shared.lock();
        let SandboxState {
            helpdesk,
            deliveries,
            ..
        } = &mut *guard;
        let mut checked = Vec::with_capacity(inputs.len());
        let mut seen = BTreeSet::new();
        for input in inputs {
            let input = input
                .as_object()
                .ok_or_else(|| validation("each input must be an object"))?;
            let id = match input.get("id") {
                Some(Value::String(id)) => id.clone(),
                Some(id @ Value::Number(_)) => id.to_string(),
                _ => return Err(validation("each input needs an id")),
            };
            if !seen.insert(id.clone()) {
                return Err(validation(format!(
                    "Duplicate IDs found in batch input: [{id}]. IDs must be unique"
                )));
            }
            checked.push((id, write_properties(helpdesk, input, false)?));
        }
        let now = now_millis();
        let mut results = Vec::with_capacity(checked.len());
        let mut missing = Vec::new();
        for (id, properties) in checked {
            match ticket_id(&id).and_then(|number| helpdesk.update(number, &properties, &now)) {
                Some(ticket) => {
                    fire(
                        &shared.hooks,
                        deliveries,
                        helpdesk.webhook_url.as_ref(),
                        "ticket.updated",
                        &ticket,
                    );
                    results.push(record(&ticket));
                }
                None => missing.push(id),
            }
        }
        let mut answer = json!({
            "status": "COMPLETE",
            "results": results,
            "startedAt": started_at,
            "completedAt": now_millis(),
        });
        if missing.is_empty() {
            return Ok((StatusCode::OK, Json(answer)));
        }
        answer["numErrors"] = json!(1);
        answer["errors"] = json!([{
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some TICKET objects, they may be deleted or not exist. Check that ids are valid.",
            "context": {"ids": missing},
        }]);
        Ok((StatusCode::MULTI_STATUS, Json(answer)))
    }
}

/// The Freshdesk v2 dialect under `/freshdesk/api/v2`.
mod freshdesk {
    use std::sync::Arc;

    use axum::Json;
    use axum::body::Bytes;
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Map, Value, json};

    use super::{authorized, flat, parse_object, text, ticket_id};
    use crate::helpdesk::{HelpdeskState, fire, validate_fields};
    use crate::state::{SandboxState, Shared, now_millis};

    /// A Freshdesk error: a status and its body.
    pub(super) struct FError(StatusCode, Value);

    impl IntoResponse for FError {
        fn into_response(self) -> Response {
            (self.0, Json(self.1)).into_response()
        }
    }

    fn unauthorized() -> FError {
        FError(
            StatusCode::UNAUTHORIZED,
            json!({"code": "invalid_credentials", "message": "You have to be logged in to perform this action."}),
        )
    }

    fn not_found() -> FError {
        FError(
            StatusCode::NOT_FOUND,
            json!({"code": "access_denied", "message": "There is no such ticket, or you are not authorized to see it."}),
        )
    }

    fn invalid_json(message: String) -> FError {
        FError(
            StatusCode::BAD_REQUEST,
            json!({"code": "invalid_json", "message": message}),
        )
    }

    /// 400 `Validation failed` with every error found.
    fn validation(errors: Vec<Value>) -> FError {
        FError(
            StatusCode::BAD_REQUEST,
            json!({"description": "Validation failed", "errors": errors}),
        )
    }

    fn field_error(field: &str, message: &str, code: &str) -> Value {
        json!({"field": field, "message": message, "code": code})
    }

    /// A ticket in Freshdesk's flat shape.
    fn render(ticket: &Map<String, Value>) -> Value {
        flat(ticket, &["external_id", "assignee"], json!({}))
    }

    /// The contact id of a requester's email: the same email, the same contact.
    pub(super) fn requester_id(email: &str) -> u64 {
        // FNV-1a, so that the id is stable across runs.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in email.trim().to_lowercase().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h % 1_000_000_000 + 1
    }

    /// Whether `value` is an integer within `range`.
    fn in_range(value: &Value, range: std::ops::RangeInclusive<u64>) -> bool {
        value.as_u64().is_some_and(|number| range.contains(&number))
    }

    /// The checked fields of a flat create or update body; every error is reported at once.
    fn ticket_fields(
        helpdesk: &HelpdeskState,
        body: &[u8],
        creating: bool,
    ) -> Result<Map<String, Value>, FError> {
        let mut fields = parse_object(body).map_err(invalid_json)?;
        helpdesk.drop_configured_fields(&mut fields);
        let mut errors = Vec::new();
        let blank = match fields.get("subject") {
            None => creating,
            Some(Value::String(subject)) => subject.trim().is_empty(),
            Some(_) => true,
        };
        if blank {
            errors.push(field_error(
                "subject",
                "It should be a/an String",
                "missing_field",
            ));
        }
        if let Some(status) = fields.get("status")
            && !in_range(status, 2..=5)
        {
            errors.push(field_error(
                "status",
                "It should be one of these values: '2,3,4,5'",
                "invalid_value",
            ));
        }
        if let Some(priority) = fields.get("priority")
            && !in_range(priority, 1..=4)
        {
            errors.push(field_error(
                "priority",
                "It should be one of these values: '1,2,3,4'",
                "invalid_value",
            ));
        }
        if fields.get("custom_fields").is_some_and(|c| !c.is_object()) {
            errors.push(field_error(
                "custom_fields",
                "It should be a/an key/value pair",
                "datatype_mismatch",
            ));
        }
        // The requester is given by email and kept as a contact: a ticket shows only
        // its `requester_id`, never the email it was created with.
        if creating && !fields.contains_key("email") && !fields.contains_key("requester_id") {
            errors.push(field_error(
                "requester_id",
                "Please fill at least 1 of email, mobile, phone, twitter_id, fb_profile_id, unique_external_id fields",
                "missing_field",
            ));
        }
        if let Some(email) = fields.remove("email") {
            match email.as_str().filter(|e| e.contains('@')) {
                Some(e) => {
                    fields.insert("requester_id".into(), json!(requester_id(e)));
                }
                None => errors.push(field_error(
                    "email",
                    "It should be in the 'valid email address' format",
                    "invalid_value",
                )),
            }
        }
        // The helpdesk's own checks (external id, tags), less its string status.
        let mut rest = fields.clone();
        rest.remove("subject");
        rest.remove("status");
        if let Err(error) = validate_fields(&rest, false, "") {
            errors.push(field_error(
                error.field().unwrap_or("base"),
                error.message(),
                "invalid_value",
            ));
        }
        if errors.is_empty() {
            Ok(fields)
        } else {
            Err(validation(errors))
        }
    }

    /// `POST /freshdesk/api/v2/tickets`.
    pub(super) async fn create(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, Json<Value>), FError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let mut guard = shared.lock();
        let SandboxState {
            helpdesk,
            deliveries,
            ..
        } = &mut *guard;
        let mut fields = ticket_fields(helpdesk, &body, true)?;
        for (key, default) in [
            ("status", json!(2)),
            ("priority", json!(1)),
            ("description", Value::Null),
            ("custom_fields", json!({})),
        ] {
            fields.entry(key).or_insert(default);
        }
        let ticket = helpdesk.create(&fields, &now_millis());
        fire(
            &shared.hooks,
            deliveries,
            helpdesk.webhook_url.as_ref(),
            "ticket.created",
            &ticket,
        );
        Ok((StatusCode::CREATED, Json(render(&ticket))))
    }

    /// `GET /freshdesk/api/v2/tickets/{id}`.
    pub(super) async fn show(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Path(id): Path<String>,
    ) -> Result<Json<Value>, FError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let id = ticket_id(&id).ok_or_else(not_found)?;
        let state = shared.lock();
        let ticket = state.helpdesk.ticket(id).ok_or_else(not_found)?;
        Ok(Json(render(ticket)))
    }

    /// `PUT /freshdesk/api/v2/tickets/{id}`: a partial update; `custom_fields` merges by key.
    pub(super) async fn update(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Path(id): Path<String>,
        body: Bytes,
    ) -> Result<Json<Value>, FError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let id = ticket_id(&id).ok_or_else(not_found)?;
        let mut guard = shared.lock();
        let SandboxState {
            helpdesk,
            deliveries,
            ..
        } = &mut *guard;
        let current = helpdesk.ticket(id).ok_or_else(not_found)?;
        let mut fields = ticket_fields(helpdesk, &body, false)?;
        if let Some(Value::Object(update)) = fields.get("custom_fields") {
            let mut merged = current
                .get("custom_fields")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            merged.extend(update.clone());
            fields.insert("custom_fields".to_owned(), Value::Object(merged));
        }
        let ticket = helpdesk
            .update(id, &fields, &now_millis())
            .ok_or_else(not_found)?;
        fire(
            &shared.hooks,
            deliveries,
            helpdesk.webhook_url.as_ref(),
            "ticket.updated",
            &ticket,
        );
        Ok(Json(render(&ticket)))
    }

    /// `DELETE /freshdesk/api/v2/tickets/{id}`: 204, or 404.
    pub(super) async fn destroy(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Path(id): Path<String>,
    ) -> Result<StatusCode, FError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let id = ticket_id(&id).ok_or_else(not_found)?;
        if shared.lock().helpdesk.remove(id) {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(not_found())
        }
    }

    /// Parses a search query, `"<field>:'<value>'"` (or `"<field>:<value>"` for a bare
    /// number or word), into its field and value.
    fn parse_query(query: &str) -> Result<(&str, &str), String> {
        let inner = query
            .trim()
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .ok_or("the query must be wrapped in double quotes, as in \"cf_work_order:'WO-1'\"")?;
        let (field, value) = inner
            .split_once(':')
            .ok_or("the query must be <field>:'<value>'")?;
        let field = field.trim();
        if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{field:?} is not a field name"));
        }
        let value = value.trim();
        let value = match value.strip_prefix('\'') {
            Some(quoted) => quoted
                .strip_suffix('\'')
                .filter(|inside| !inside.contains('\''))
                .ok_or("the value must be one single-quoted string, as in 'WO-1'")?,
            None if !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) =>
            {
                value
            }
            None => return Err("the value must be quoted, as in 'WO-1'".to_owned()),
        };
        Ok((field, value))
    }

    /// A ticket's value for a searched field: in `custom_fields` first, then at the top level.
    fn field_value<'a>(ticket: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
        ticket
            .get("custom_fields")
            .and_then(Value::as_object)
            .and_then(|custom| custom.get(field))
            .or_else(|| ticket.get(field))
    }

    /// `GET /freshdesk/api/v2/search/tickets?query="<field>:'<value>'"`: exact matches as
    /// strings, once past the search lag.
    pub(super) async fn search(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        Query(pairs): Query<Vec<(String, String)>>,
    ) -> Result<Json<Value>, FError> {
        if !authorized(&shared, &headers) {
            return Err(unauthorized());
        }
        let query = pairs
            .iter()
            .find(|(key, _)| key == "query")
            .map(|(_, value)| value.as_str())
            .unwrap_or_default();
        let (field, wanted) = parse_query(query)
            .map_err(|message| validation(vec![field_error("query", &message, "invalid_value")]))?;
        let state = shared.lock();
        let results: Vec<Value> = state
            .helpdesk
            .visible(None)
            .into_iter()
            .filter(|ticket| field_value(ticket, field).and_then(text).as_deref() == Some(wanted))
            .map(render)
            .collect();
        let total = results.len();
        Ok(Json(json!({ "results": results, "total": total })))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn queries_name_a_field_and_a_value() {
            assert_eq!(
                parse_query("\"cf_work_order:'WO-1'\""),
                Ok(("cf_work_order", "WO-1"))
            );
            assert_eq!(parse_query("\" status : 2 \""), Ok(("status", "2")));
            assert_eq!(parse_query("\"subject:'a b'\""), Ok(("subject", "a b")));
            for bad in [
                "",
                "\"",
                "cf_work_order:'WO-1'",
                "\"cf_work_order\"",
                "\"cf_work_order:'WO-1\"",
                "\"cf work:'x'\"",
                "\"cf:'a'b'\"",
                "\"cf:a b\"",
                "\"cf:\"",
            ] {
                assert!(parse_query(bad).is_err(), "{bad} should be refused");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each dialect driven over HTTP against a sandbox on an ephemeral port, as the
    //! integration tests drive `/api/tickets`.

    use std::time::Duration;

    use reqwest::{Method, RequestBuilder};
    use serde_json::{Value, json};

    use super::*;
    use crate::{Sandbox, SandboxConfig};

    struct Env {
        sandbox: Sandbox,
        client: reqwest::Client,
        token: String,
    }

    impl Env {
        async fn start() -> Env {
            // reqwest is built without a default crypto provider; plain HTTP still needs one.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = SandboxConfig::default();
            let token = config.helpdesk_token.clone();
            let sandbox = Sandbox::start(config).await.expect("the sandbox starts");
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("the client builds");
            Env {
                sandbox,
                client,
                token,
            }
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.sandbox.base_url)
        }

        /// A request with `Authorization: Basic <token>`.
        fn basic(&self, method: Method, path: &str) -> RequestBuilder {
            self.client
                .request(method, self.url(path))
                .header("Authorization", format!("Basic {}", self.token))
        }

        /// A request with `Authorization: Bearer <token>`.
        fn bearer(&self, method: Method, path: &str) -> RequestBuilder {
            self.client
                .request(method, self.url(path))
                .bearer_auth(&self.token)
        }

        async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
            let mut request = self.client.request(method, self.url(path));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let (status, body) = send(request).await;
            assert!((200..300).contains(&status), "{path}: {status} {body}");
            body
        }

        /// The tickets as stored, from the admin listing.
        async fn stored(&self) -> Vec<Value> {
            let body = self
                .admin(Method::GET, "/_admin/helpdesk/tickets", None)
                .await;
            body["tickets"].as_array().cloned().unwrap_or_default()
        }
    }

    /// Sends a request; its status and JSON body (null when empty, a string when not JSON).
    async fn send(request: RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("the request is sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    fn is_rfc3339(value: &Value) -> bool {
        value
            .as_str()
            .is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok())
    }

    #[test]
    fn basic_credentials_may_be_encoded() {
        let shared = Shared::new(
            SandboxConfig::default(),
            Vec::new(),
            crate::webhooks::channels().0,
        );
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().expect("a header"));
            authorized(&shared, &headers)
        };
        assert!(check("Bearer helpdesk-token"));
        assert!(check("Basic helpdesk-token"));
        assert!(check(&format!(
            "Basic {}",
            STANDARD.encode("me@example.com/token:helpdesk-token")
        )));
        assert!(check(&format!(
            "Basic {}",
            STANDARD.encode("helpdesk-token:X")
        )));
        assert!(!check(&format!("Basic {}", STANDARD.encode("me:other"))));
        assert!(!check("Basic other"));
        assert!(!check("Token helpdesk-token"));
    }

    #[test]
    fn values_become_text() {
        assert_eq!(text(&json!(3)), Some("3".to_owned()));
        assert_eq!(text(&json!(true)), Some("true".to_owned()));
        assert_eq!(text(&json!("a")), Some("a".to_owned()));
        assert_eq!(text(&json!(["a", "b"])), Some("a;b".to_owned()));
        assert_eq!(text(&Value::Null), None);
    }

    #[tokio::test]
    async fn zendesk_tickets() {
        let env = Env::start().await;

        let (status, body) = send(
            env.client
                .get(env.url("/zendesk/api/v2/tickets/1.json"))
                .header("Authorization", "Basic wrong"),
        )
        .await;
        assert_eq!(status, 401, "{body}");

        // Validation: a subject is required, custom fields need numeric ids.
        let (status, body) = send(
            env.basic(Method::POST, "/zendesk/api/v2/tickets.json")
                .json(&json!({"ticket": {"subject": " "}})),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(
            body,
            json!({"error": "RecordInvalid", "description": "Record validation errors",
                   "details": {"subject": [{"description": "Subject: cannot be blank"}]}})
        );
        let (status, body) = send(
            env.basic(Method::POST, "/zendesk/api/v2/tickets.json")
                .json(&json!({"ticket": {"subject": "s", "custom_fields": [{"id": "x", "value": 1}]}})),
        )
        .await;
        assert_eq!(status, 422);
        assert!(body["details"]["custom_fields"].is_array(), "{body}");

        // Create, under an idempotency key.
        let create = json!({"ticket": {
            "subject": "Pump broken",
            "comment": {"body": "It leaks."},
            "external_id": "WO-1",
            "tags": ["pump"],
            "custom_fields": [{"id": 100, "value": "大阪"}, {"id": 200, "value": 3}],
        }});
        let post = |body: &Value| {
            env.basic(Method::POST, "/zendesk/api/v2/tickets.json")
                .header("Idempotency-Key", "zd-1")
                .json(body)
        };
        let (status, body) = send(post(&create)).await;
        assert_eq!(status, 201, "{body}");
        let ticket = &body["ticket"];
        assert_eq!(ticket["id"], json!(1));
        assert_eq!(ticket["subject"], json!("Pump broken"));
        assert_eq!(ticket["description"], json!("It leaks."));
        assert_eq!(ticket["status"], json!("new"));
        assert_eq!(ticket["priority"], Value::Null);
        assert_eq!(ticket["tags"], json!(["pump"]));
        assert_eq!(ticket["external_id"], json!("WO-1"));
        assert!(ticket.get("comment").is_none() && ticket.get("version").is_none());
        assert!(is_rfc3339(&ticket["created_at"]) && is_rfc3339(&ticket["updated_at"]));
        let (status, replay) = send(post(&create)).await;
        assert_eq!((status, &replay), (201, &body));
        let (status, refused) = send(post(&json!({"ticket": {"subject": "other"}}))).await;
        assert_eq!(status, 422);
        assert_eq!(refused["error"]["code"], json!("idempotency_key_reused"));

        // Read; an unknown id and a segment without `.json` are 404.
        let (status, read) = send(env.bearer(Method::GET, "/zendesk/api/v2/tickets/1.json")).await;
        assert_eq!((status, &read), (200, &body));
        let (status, missing) =
            send(env.basic(Method::GET, "/zendesk/api/v2/tickets/9.json")).await;
        assert_eq!(status, 404);
        assert_eq!(
            missing,
            json!({"error": "RecordNotFound", "description": "Not found"})
        );
        let (status, _) = send(env.basic(Method::GET, "/zendesk/api/v2/tickets/1")).await;
        assert_eq!(status, 404);

        // Update: custom fields merge by id.
        let (status, body) = send(
            env.basic(Method::PUT, "/zendesk/api/v2/tickets/1.json")
                .json(&json!({"ticket": {
                    "status": "open",
                    "custom_fields": [{"id": 200, "value": 4}, {"id": 300, "value": true}],
                }})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ticket"]["status"], json!("open"));
        assert_eq!(body["ticket"]["subject"], json!("Pump broken"));
        assert_eq!(
            body["ticket"]["custom_fields"],
            json!([{"id": 100, "value": "大阪"}, {"id": 200, "value": 4}, {"id": 300, "value": true}])
        );
        let (status, _) = send(
            env.basic(Method::PUT, "/zendesk/api/v2/tickets/1.json")
                .json(&json!({"ticket": {"subject": ""}})),
        )
        .await;
        assert_eq!(status, 422);

        // Search by external id; a ticket made within the search lag is not found yet.
        let (status, body) = send(
            env.basic(Method::GET, "/zendesk/api/v2/tickets.json")
                .query(&[("external_id", "WO-1")]),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["count"], json!(1));
        assert_eq!(body["tickets"][0]["id"], json!(1));
        env.admin(
            Method::POST,
            "/_admin/helpdesk/config",
            Some(json!({"search_lag_ms": 60_000})),
        )
        .await;
        let (status, _) = send(
            env.basic(Method::POST, "/zendesk/api/v2/tickets.json")
                .json(&json!({"ticket": {"subject": "later", "external_id": "WO-2"}})),
        )
        .await;
        assert_eq!(status, 201);
        let (_, body) = send(
            env.basic(Method::GET, "/zendesk/api/v2/tickets.json")
                .query(&[("external_id", "WO-2")]),
        )
        .await;
        assert_eq!(body, json!({"tickets": [], "count": 0}));

        // The admin listing shows the stored ticket.
        let stored = env.stored().await;
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0]["custom_fields"].as_array().map(Vec::len), Some(3));
        assert_eq!(stored[0]["description"], json!("It leaks."));
        assert_eq!(stored[0]["version"], json!(2));

        // Delete.
        let (status, _) = send(env.basic(Method::DELETE, "/zendesk/api/v2/tickets/1.json")).await;
        assert_eq!(status, 204);
        let (status, _) = send(env.basic(Method::DELETE, "/zendesk/api/v2/tickets/1.json")).await;
        assert_eq!(status, 404);

        // Every request went through the helpdesk's gate and log.
        let log = env
            .admin(Method::GET, "/_admin/log?system=helpdesk", None)
            .await;
        let paths: Vec<&str> = log["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry["path"].as_str())
            .collect();
        assert!(paths.contains(&"/zendesk/api/v2/tickets/1.json"), "{log}");
    }

    #[tokio::test]
    async fn hubspot_tickets() {
        let env = Env::start().await;
        let base = "/hubspot/crm/v3/objects/tickets";

        let (status, body) = send(
            env.bearer(Method::POST, base)
                .json(&json!({"properties": {"hs_pipeline": "0"}})),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"status": "error", "message": "Property values were not valid: subject is required", "category": "VALIDATION_ERROR"})
        );

        // Create: every value comes back as a string; every POST creates.
        let create = json!({"properties": {
            "subject": "Pump broken",
            "external_id": "WO-1",
            "hs_ticket_priority": 3,
            "urgent": true,
            "content": null,
        }});
        let (status, body) = send(
            env.bearer(Method::POST, base)
                .header("Idempotency-Key", "hs-1")
                .json(&create),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["id"], json!("1"));
        assert_eq!(body["archived"], json!(false));
        let properties = &body["properties"];
        assert_eq!(properties["subject"], json!("Pump broken"));
        assert_eq!(properties["hs_ticket_priority"], json!("3"));
        assert_eq!(properties["urgent"], json!("true"));
        assert_eq!(properties["content"], Value::Null);
        assert_eq!(properties["hs_object_id"], json!("1"));
        assert_eq!(properties["createdate"], body["createdAt"]);
        assert_eq!(properties["hs_lastmodifieddate"], body["updatedAt"]);
        assert!(is_rfc3339(&body["createdAt"]));
        let (status, second) = send(
            env.bearer(Method::POST, base)
                .header("Idempotency-Key", "hs-1")
                .json(&create),
        )
        .await;
        assert_eq!((status, &second["id"]), (201, &json!("2")));
        let (status, _) = send(
            env.bearer(Method::POST, base)
                .json(&json!({"properties": {"subject": "x", "list": [1]}})),
        )
        .await;
        assert_eq!(status, 400);

        // Read and update.
        let (status, read) = send(env.basic(Method::GET, &format!("{base}/1"))).await;
        assert_eq!((status, &read), (200, &body));
        let (status, missing) = send(env.basic(Method::GET, &format!("{base}/99"))).await;
        assert_eq!(status, 404);
        assert_eq!(
            missing,
            json!({"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"})
        );
        let (status, body) = send(
            env.bearer(Method::PATCH, &format!("{base}/1"))
                .json(&json!({"properties": {"hs_ticket_priority": 4, "hs_object_id": "77"}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["properties"]["hs_ticket_priority"], json!("4"));
        assert_eq!(body["properties"]["hs_object_id"], json!("1"));
        assert_eq!(body["properties"]["subject"], json!("Pump broken"));

        // Search: EQ only, groups ORed, filters ANDed, values compared as strings.
        let search = |body: Value| {
            env.bearer(Method::POST, &format!("{base}/search"))
                .json(&body)
        };
        let (status, body) = send(search(json!({
            "filterGroups": [{"filters": [{"propertyName": "external_id", "operator": "EQ", "value": "WO-1"}]}],
            "limit": 10,
        })))
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], json!(2));
        assert_eq!(body["results"][0]["id"], json!("1"));
        let (_, body) = send(search(json!({
            "filterGroups": [{"filters": [
                {"propertyName": "external_id", "operator": "EQ", "value": "WO-1"},
                {"propertyName": "hs_ticket_priority", "operator": "EQ", "value": 3},
            ]}],
        })))
        .await;
        assert_eq!(body["total"], json!(1));
        assert_eq!(body["results"][0]["id"], json!("2"));
        let (_, body) = send(search(json!({
            "filterGroups": [
                {"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": "1"}]},
                {"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": "2"}]},
            ],
            "limit": 1,
        })))
        .await;
        assert_eq!(body["total"], json!(2));
        assert_eq!(body["results"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["paging"]["next"]["after"], json!("1"));
        let (status, body) = send(search(json!({
            "filterGroups": [{"filters": [{"propertyName": "subject", "operator": "CONTAINS_TOKEN", "value": "Pump"}]}],
        })))
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["category"], json!("VALIDATION_ERROR"));

        // Batch update: all found → 200; some missing → 207.
        let batch = |body: Value| {
            env.bearer(Method::POST, &format!("{base}/batch/update"))
                .json(&body)
        };
        let (status, body) = send(batch(json!({"inputs": [
            {"id": "1", "properties": {"status": "closed"}},
            {"id": "2", "properties": {"status": "pending"}},
        ]})))
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], json!("COMPLETE"));
        assert_eq!(body["results"][1]["properties"]["status"], json!("pending"));
        assert!(body.get("errors").is_none());
        assert!(is_rfc3339(&body["startedAt"]) && is_rfc3339(&body["completedAt"]));
        let (status, body) = send(batch(json!({"inputs": [
            {"id": "1", "properties": {"status": "open"}},
            {"id": "99", "properties": {"status": "open"}},
            {"id": "98", "properties": {"status": "open"}},
        ]})))
        .await;
        assert_eq!(status, 207, "{body}");
        assert_eq!(body["results"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["results"][0]["properties"]["status"], json!("open"));
        assert_eq!(body["numErrors"], json!(1));
        assert_eq!(
            body["errors"],
            json!([{
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some TICKET objects, they may be deleted or not exist. Check that ids are valid.",
                "context": {"ids": ["99", "98"]},
            }])
        );
        let inputs: Vec<Value> = (1..=101)
            .map(|id| json!({"id": id.to_string(), "properties": {}}))
            .collect();
        let (status, _) = send(batch(json!({ "inputs": inputs }))).await;
        assert_eq!(status, 400);

        // The store holds the properties as flat string keys.
        let stored = env.stored().await;
        assert_eq!(stored[0]["hs_ticket_priority"], json!("4"));
        assert_eq!(stored[0]["status"], json!("open"));
        assert!(stored[0].get("hs_object_id").is_none());

        // Delete.
        let (status, _) = send(env.bearer(Method::DELETE, &format!("{base}/2"))).await;
        assert_eq!(status, 204);
        let (status, _) = send(env.bearer(Method::GET, &format!("{base}/2"))).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn freshdesk_tickets() {
        let env = Env::start().await;
        let base = "/freshdesk/api/v2/tickets";

        let (status, body) = send(
            env.basic(Method::POST, base)
                .json(&json!({"status": 9, "priority": 2, "custom_fields": []})),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"description": "Validation failed", "errors": [
                {"field": "subject", "message": "It should be a/an String", "code": "missing_field"},
                {"field": "status", "message": "It should be one of these values: '2,3,4,5'", "code": "invalid_value"},
                {"field": "custom_fields", "message": "It should be a/an key/value pair", "code": "datatype_mismatch"},
                {"field": "requester_id", "message": "Please fill at least 1 of email, mobile, phone, twitter_id, fb_profile_id, unique_external_id fields", "code": "missing_field"},
            ]})
        );
        let (status, body) = send(
            env.basic(Method::POST, base)
                .json(&json!({"subject": "s", "priority": "high", "email": "a@example.com"})),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["field"], json!("priority"));

        // Create with defaults and extra keys.
        let (status, body) = send(env.basic(Method::POST, base).json(&json!({
            "subject": "Pump broken",
            "description": "It leaks.",
            "email": "site@example.com",
            "custom_fields": {"cf_work_order": "WO-1", "cf_site": "大阪"},
        })))
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["id"], json!(1));
        assert_eq!(body["status"], json!(2));
        assert_eq!(body["priority"], json!(1));
        assert_eq!(body["tags"], json!([]));
        // The email names the requester, and only its contact id shows.
        assert!(body.get("email").is_none(), "{body}");
        assert_eq!(
            body["requester_id"],
            json!(super::freshdesk::requester_id("site@example.com"))
        );
        assert!(body.get("external_id").is_none() && body.get("version").is_none());
        assert!(is_rfc3339(&body["created_at"]));

        // Read.
        let (status, read) = send(env.bearer(Method::GET, &format!("{base}/1"))).await;
        assert_eq!((status, &read), (200, &body));
        let (status, missing) = send(env.basic(Method::GET, &format!("{base}/5"))).await;
        assert_eq!(status, 404);
        assert_eq!(missing["code"], json!("access_denied"));

        // Update: custom fields merge by key.
        let (status, body) = send(env.basic(Method::PUT, &format!("{base}/1")).json(&json!({
            "status": 4,
            "custom_fields": {"cf_site": "京都", "cf_floor": 3},
        })))
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], json!(4));
        assert_eq!(
            body["custom_fields"],
            json!({"cf_work_order": "WO-1", "cf_site": "京都", "cf_floor": 3})
        );
        let (status, _) = send(
            env.basic(Method::PUT, &format!("{base}/1"))
                .json(&json!({"status": 1})),
        )
        .await;
        assert_eq!(status, 400);

        // Search: custom fields first, then top-level keys, compared as strings.
        let search = |query: &str| {
            env.basic(Method::GET, "/freshdesk/api/v2/search/tickets")
                .query(&[("query", query)])
        };
        let (status, body) = send(search("\"cf_work_order:'WO-1'\"")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], json!(1));
        assert_eq!(body["results"][0]["id"], json!(1));
        let (_, body) = send(search("\"cf_floor:'3'\"")).await;
        assert_eq!(body["total"], json!(1));
        let (_, body) = send(search("\"status:4\"")).await;
        assert_eq!(body["total"], json!(1));
        let (_, body) = send(search("\"cf_work_order:'WO-2'\"")).await;
        assert_eq!(body, json!({"results": [], "total": 0}));
        let (status, body) = send(search("cf_work_order:'WO-1'")).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["field"], json!("query"));

        // The store holds the flat fields, custom fields as an object.
        let stored = env.stored().await;
        assert_eq!(stored[0]["status"], json!(4));
        assert_eq!(stored[0]["custom_fields"]["cf_site"], json!("京都"));

        // Delete.
        let (status, _) = send(env.basic(Method::DELETE, &format!("{base}/1"))).await;
        assert_eq!(status, 204);
        let (status, _) = send(env.basic(Method::GET, &format!("{base}/1"))).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn the_dialects_share_one_store_and_the_helpdesk_gate() {
        let env = Env::start().await;
        // Nothing listens there; the deliveries are recorded all the same.
        env.admin(
            Method::POST,
            "/_admin/helpdesk/config",
            Some(json!({"webhook_url": "http://127.0.0.1:9/hook"})),
        )
        .await;
        let (status, _) = send(
            env.basic(Method::POST, "/zendesk/api/v2/tickets.json")
                .json(&json!({"ticket": {"subject": "from zendesk"}})),
        )
        .await;
        assert_eq!(status, 201);
        let (_, body) = send(
            env.bearer(Method::POST, "/hubspot/crm/v3/objects/tickets")
                .json(&json!({"properties": {"subject": "from hubspot"}})),
        )
        .await;
        assert_eq!(body["id"], json!("2"));
        let (_, body) = send(
            env.basic(Method::POST, "/freshdesk/api/v2/tickets")
                .json(&json!({"subject": "from freshdesk", "email": "a@example.com"})),
        )
        .await;
        assert_eq!(body["id"], json!(3));
        let (status, _) = send(
            env.bearer(Method::PATCH, "/hubspot/crm/v3/objects/tickets/3")
                .json(&json!({"properties": {"status": "closed"}})),
        )
        .await;
        assert_eq!(status, 200);
        let deliveries = env
            .admin(Method::GET, "/_admin/helpdesk/webhooks", None)
            .await;
        let kinds: Vec<(&str, &str)> = deliveries
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| Some((d["type"].as_str()?, d["record_id"].as_str()?)))
            .collect();
        assert_eq!(
            kinds,
            [
                ("ticket.created", "1"),
                ("ticket.created", "2"),
                ("ticket.created", "3"),
                ("ticket.updated", "3"),
            ],
            "{deliveries}"
        );
        let (_, body) = send(env.bearer(Method::GET, "/api/tickets/2")).await;
        assert_eq!(body["ticket"]["subject"], json!("from hubspot"));
        let (_, body) = send(env.bearer(Method::GET, "/hubspot/crm/v3/objects/tickets/1")).await;
        assert_eq!(body["properties"]["subject"], json!("from zendesk"));

        // A helpdesk fault answers the dialects too.
        env.admin(
            Method::POST,
            "/_admin/faults",
            Some(json!({"system": "helpdesk", "status": 503, "path_prefix": "/freshdesk"})),
        )
        .await;
        let (status, _) = send(env.basic(Method::GET, "/freshdesk/api/v2/tickets/3")).await;
        assert_eq!(status, 503);
        let log = env
            .admin(Method::GET, "/_admin/log?system=helpdesk", None)
            .await;
        let entries = log["entries"].as_array().cloned().unwrap_or_default();
        assert_eq!(entries.len(), 7, "{log}");
        assert!(entries.last().is_some_and(|e| e["status"] == json!(503)));
    }
}
