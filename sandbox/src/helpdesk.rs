//! The helpdesk REST API under `/api`: tickets with optimistic versions, idempotency keys, an
//! eventually consistent search, and Standard Webhooks-signed change notifications.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::state::{SandboxState, Shared, System, now_millis};
use crate::webhooks::{self, Deliveries, Hooks, NewDelivery};

/// The most updates that one bulk request may carry.
const MAX_BULK: usize = 100;

/// Keys that the server owns; clients cannot set them.
const SERVER_KEYS: [&str; 4] = ["id", "version", "created_at", "updated_at"];

/// Keys that every ticket has, in the order in which tickets are rendered.
const LEADING_KEYS: [&str; 7] = [
    "id",
    "external_id",
    "subject",
    "status",
    "priority",
    "assignee",
    "tags",
];

/// Keys that every ticket ends with.
const TRAILING_KEYS: [&str; 3] = ["version", "created_at", "updated_at"];

/// A helpdesk error response: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub(crate) struct HError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl HError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HError {
        HError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn validation(field: impl Into<String>, message: impl Into<String>) -> HError {
        HError {
            field: Some(field.into()),
            ..HError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message,
            )
        }
    }

    fn not_found(id: impl std::fmt::Display) -> HError {
        HError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("ticket {id} not found"),
        )
    }

    /// The field that a validation error names.
    pub(crate) fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The error's message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn version_mismatch(expected: &str, actual: u64) -> HError {
        HError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            format!("the ticket is at version {actual}, not {expected}"),
        )
    }
}

impl IntoResponse for HError {
    fn into_response(self) -> Response {
        let body = error_body(self.code, &self.message, self.field.as_deref());
        (self.status, Json(body)).into_response()
    }
}

/// A helpdesk error body.
pub(crate) fn error_body(code: &str, message: &str, field: Option<&str>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(field) = field {
        error["field"] = json!(field);
    }
    json!({ "error": error })
}

/// A stored ticket and when it was created (`None` for seeded tickets, which are
/// indexed). The search lag hides a ticket from searches and listings until it has been
/// indexed after its creation. An update does not hide it again: a real search index
/// keeps serving a document while its new version is indexed.
#[derive(Clone, Debug)]
pub(crate) struct StoredTicket {
    ticket: Map<String, Value>,
    changed_at: Option<Instant>,
}

/// A response remembered for an idempotency key, with the request that produced it.
#[derive(Clone, Debug)]
struct Replay {
    fingerprint: String,
    status: StatusCode,
    body: Value,
}

/// The tickets by id, and the ids of the tickets that hold each external id.
///
/// The search by external id reads the index instead of scanning every ticket. Every
/// change goes through [`Tickets::put`], which moves the ticket's id in the index when
/// its external id changes, so the index always matches the tickets. An external id may
/// be shared by several tickets; only string external ids are indexed, because only
/// they can equal a searched value.
#[derive(Default)]
struct Tickets {
    by_id: BTreeMap<u64, StoredTicket>,
    by_external_id: HashMap<String, BTreeSet<u64>>,
}

impl Tickets {
    fn get(&self, id: u64) -> Option<&StoredTicket> {
        self.by_id.get(&id)
    }

    fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Every ticket, in id order.
    fn all(&self) -> impl Iterator<Item = &StoredTicket> {
        self.by_id.values()
    }

    /// The tickets with an id above `after`, in id order: a listing's next page starts
    /// there without walking the tickets before it.
    fn after(&self, after: u64) -> impl Iterator<Item = &StoredTicket> {
        self.by_id.range(after.saturating_add(1)..).map(|(_, t)| t)
    }

    /// The tickets whose external id is `wanted`, in id order (the order of [`Tickets::all`]).
    fn with_external_id<'a>(&'a self, wanted: &str) -> impl Iterator<Item = &'a StoredTicket> {
        self.by_external_id
            .get(wanted)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    /// Removes the ticket `id`, keeping the index right; whether it was there.
    fn remove(&mut self, id: u64) -> bool {
        let Some(old) = self.by_id.remove(&id) else {
            return false;
        };
        if let Some(key) = external_id_of(&old.ticket)
            && let Some(ids) = self.by_external_id.get_mut(key)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_external_id.remove(key);
            }
        }
        true
    }

    /// Inserts or replaces the ticket `id`, keeping the index right.
    fn put(&mut self, id: u64, stored: StoredTicket) {
        let new_key = external_id_of(&stored.ticket).map(str::to_owned);
        let old = self.by_id.insert(id, stored);
        let old_key = old
            .as_ref()
            .and_then(|old| external_id_of(&old.ticket))
            .map(str::to_owned);
        if old_key == new_key {
            return;
        }
        if let Some(old_key) = old_key
            && let Some(ids) = self.by_external_id.get_mut(&old_key)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_external_id.remove(&old_key);
            }
        }
        if let Some(new_key) = new_key {
            self.by_external_id.entry(new_key).or_default().insert(id);
        }
    }
}

/// A ticket's external id, when it is a string.
fn external_id_of(ticket: &Map<String, Value>) -> Option<&str> {
    ticket.get("external_id").and_then(Value::as_str)
}

#[derive(Default)]
pub(crate) struct HelpdeskState {
    tickets: Tickets,
    last_id: u64,
    pub(crate) search_lag_ms: u64,
    pub(crate) webhook_url: Option<String>,
    /// Plays the many real APIs that ignore `Idempotency-Key`: every request is new.
    pub(crate) ignore_idempotency_keys: bool,
    /// Plays the APIs that want a create's or an update's fields inside an envelope
    /// (`{"ticket": {...}}`): fields outside it are ignored, as those APIs do.
    pub(crate) body_envelope: Option<String>,
    /// Plays an API that silently drops some fields of a write (read-only for the API
    /// user, or named differently): they are accepted and not kept.
    pub(crate) drop_fields: Vec<String>,
    idempotency: HashMap<String, Replay>,
}

impl HelpdeskState {
    pub(crate) fn config_json(&self) -> Value {
        json!({"search_lag_ms": self.search_lag_ms, "webhook_url": self.webhook_url, "ignore_idempotency_keys": self.ignore_idempotency_keys, "body_envelope": self.body_envelope, "drop_fields": self.drop_fields})
    }

    pub(crate) fn tickets_json(&self) -> Value {
        let tickets: Vec<&Map<String, Value>> =
            self.tickets.all().map(|stored| &stored.ticket).collect();
        json!({ "tickets": tickets })
    }

    /// The ticket `id` as stored.
    pub(crate) fn ticket(&self, id: u64) -> Option<&Map<String, Value>> {
        self.tickets.get(id).map(|stored| &stored.ticket)
    }

    /// Stores a new ticket built from client fields under the next id (see [`new_ticket`]).
    /// Searches and listings do not see it until the search lag has passed.
    pub(crate) fn create(&mut self, fields: &Map<String, Value>, now: &str) -> Map<String, Value> {
        self.last_id += 1;
        let ticket = new_ticket(self.last_id, fields, now);
        self.tickets.put(
            self.last_id,
            StoredTicket {
                ticket: ticket.clone(),
                changed_at: Some(Instant::now()),
            },
        );
        ticket
    }

    /// Applies a partial update to the ticket `id` (see [`patch`]) and stores the result;
    /// `None` when there is no such ticket.
    pub(crate) fn update(
        &mut self,
        id: u64,
        fields: &Map<String, Value>,
        now: &str,
    ) -> Option<Map<String, Value>> {
        let stored = self.tickets.get(id)?;
        let ticket = patch(&stored.ticket, fields, now);
        let changed_at = stored.changed_at;
        self.tickets.put(
            id,
            StoredTicket {
                ticket: ticket.clone(),
                changed_at,
            },
        );
        Some(ticket)
    }

    /// Deletes the ticket `id`; whether there was one.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        self.tickets.remove(id)
    }

    /// The tickets that searches and listings see now, in id order: every ticket, or those
    /// whose external id is `external_id` (read from the index), less those created within
    /// the search lag.
    pub(crate) fn visible(&self, external_id: Option<&str>) -> Vec<&Map<String, Value>> {
        self.visible_after(external_id, None)
    }

    /// [`HelpdeskState::visible`], with an id above `after` only.
    pub(crate) fn visible_after(
        &self,
        external_id: Option<&str>,
        after: Option<u64>,
    ) -> Vec<&Map<String, Value>> {
        let lag = Duration::from_millis(self.search_lag_ms);
        let now = Instant::now();
        let candidates: Box<dyn Iterator<Item = &StoredTicket>> = match (external_id, after) {
            (Some(wanted), _) => Box::new(self.tickets.with_external_id(wanted)),
            (None, Some(after)) => Box::new(self.tickets.after(after)),
            (None, None) => Box::new(self.tickets.all()),
        };
        candidates
            .filter(|stored| {
                stored
                    .changed_at
                    .is_none_or(|changed| now.saturating_duration_since(changed) >= lag)
            })
            .map(|stored| &stored.ticket)
            .collect()
    }

    /// Removes from a write the fields that the configuration drops (`drop_fields`).
    pub(crate) fn drop_configured_fields(&self, fields: &mut Map<String, Value>) {
        for dropped in &self.drop_fields {
            fields.remove(dropped);
        }
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/tickets", get(list_tickets).post(create_ticket))
        .route("/api/tickets/bulk", post(bulk_update))
        .route(
            "/api/tickets/{id}",
            get(get_ticket).patch(patch_ticket).delete(delete_ticket),
        )
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), HError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if presented == Some(shared.config.helpdesk_token.as_str()) {
        Ok(())
    } else {
        Err(HError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        ))
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, HError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(HError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the request body must be a JSON object",
        )),
        Err(error) => Err(HError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not valid JSON: {error}"),
        )),
    }
}

/// The fields of a create or update: inside the configured envelope (what is outside
/// it is ignored), or the body itself.
fn unwrap_envelope(helpdesk: &HelpdeskState, body: Map<String, Value>) -> Map<String, Value> {
    let mut fields = match &helpdesk.body_envelope {
        None => body,
        Some(key) => body
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    };
    helpdesk.drop_configured_fields(&mut fields);
    fields
}

fn parse_ticket_id(text: &str) -> Result<u64, HError> {
    text.parse().map_err(|_| HError::not_found(text))
}

/// Checks client-supplied fields; `prefix` qualifies the reported field name.
pub(crate) fn validate_fields(
    fields: &Map<String, Value>,
    creating: bool,
    prefix: &str,
) -> Result<(), HError> {
    match fields.get("subject") {
        None if creating => {
            return Err(HError::validation(
                format!("{prefix}subject"),
                "subject is required",
            ));
        }
        None => {}
        Some(Value::String(subject)) if !subject.trim().is_empty() => {}
        Some(_) => {
            return Err(HError::validation(
                format!("{prefix}subject"),
                "subject is required",
            ));
        }
    }
    if let Some(external_id) = fields.get("external_id")
        && !(external_id.is_string() || external_id.is_null())
    {
        return Err(HError::validation(
            format!("{prefix}external_id"),
            "external_id must be a string or null",
        ));
    }
    if let Some(status) = fields.get("status")
        && !status.is_string()
    {
        return Err(HError::validation(
            format!("{prefix}status"),
            "status must be a string",
        ));
    }
    if let Some(tags) = fields.get("tags")
        && !tags
            .as_array()
            .is_some_and(|tags| tags.iter().all(Value::is_string))
    {
        return Err(HError::validation(
            format!("{prefix}tags"),
            "tags must be an array of strings",
        ));
    }
    Ok(())
}

/// Puts a ticket's keys in their canonical order: the common keys, any extra keys in the order
/// in which they were first sent, then the version and timestamps.
fn canonical(mut ticket: Map<String, Value>) -> Map<String, Value> {
    let mut ordered = Map::new();
    for key in LEADING_KEYS {
        ordered.insert(key.to_owned(), ticket.remove(key).unwrap_or(Value::Null));
    }
    let trailing: Vec<(String, Value)> = TRAILING_KEYS
        .iter()
        .map(|key| {
            (
                (*key).to_owned(),
                ticket.remove(*key).unwrap_or(Value::Null),
            )
        })
        .collect();
    ordered.extend(ticket);
    ordered.extend(trailing);
    ordered
}

/// Builds a new ticket from client fields.
fn new_ticket(id: u64, fields: &Map<String, Value>, now: &str) -> Map<String, Value> {
    let mut ticket = Map::new();
    ticket.insert("id".to_owned(), json!(id));
    ticket.insert("status".to_owned(), json!("open"));
    ticket.insert("tags".to_owned(), json!([]));
    for (key, value) in fields {
        if !SERVER_KEYS.contains(&key.as_str()) {
            ticket.insert(key.clone(), value.clone());
        }
    }
    ticket.insert("version".to_owned(), json!(1));
    ticket.insert("created_at".to_owned(), json!(now));
    ticket.insert("updated_at".to_owned(), json!(now));
    canonical(ticket)
}

/// Applies a partial update, bumping the version and `updated_at`.
fn patch(
    ticket: &Map<String, Value>,
    fields: &Map<String, Value>,
    now: &str,
) -> Map<String, Value> {
    let mut ticket = ticket.clone();
    for (key, value) in fields {
        if !SERVER_KEYS.contains(&key.as_str()) {
            ticket.insert(key.clone(), value.clone());
        }
    }
    let version = ticket_version(&ticket) + 1;
    ticket.insert("version".to_owned(), json!(version));
    ticket.insert("updated_at".to_owned(), json!(now));
    canonical(ticket)
}

fn ticket_version(ticket: &Map<String, Value>) -> u64 {
    ticket.get("version").and_then(Value::as_u64).unwrap_or(0)
}

/// Compares an `If-Match` value (optionally quoted or weak) with the current version.
fn check_version(expected: Option<&str>, ticket: &Map<String, Value>) -> Result<(), HError> {
    let Some(raw) = expected else {
        return Ok(());
    };
    let wanted = raw.trim().trim_start_matches("W/").trim_matches('"');
    let actual = ticket_version(ticket);
    if wanted == actual.to_string() {
        Ok(())
    } else {
        Err(HError::version_mismatch(wanted, actual))
    }
}

/// Queues a `ticket.created` or `ticket.updated` webhook when a webhook URL is configured.
pub(crate) fn fire(
    hooks: &Hooks,
    deliveries: &mut Deliveries,
    url: Option<&String>,
    kind: &str,
    ticket: &Map<String, Value>,
) {
    let Some(url) = url else {
        return;
    };
    let id = format!("msg_{}", Uuid::new_v4().simple());
    let payload = json!({
        "type": kind,
        "timestamp": now_millis(),
        "data": { "ticket": ticket },
    });
    webhooks::enqueue(
        hooks,
        deliveries,
        NewDelivery {
            system: System::Helpdesk,
            id,
            kind: kind.to_owned(),
            record_id: ticket.get("id").map(|id| id.to_string()),
            app: None,
            url: url.clone(),
            payload,
        },
    );
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Runs a state-changing operation under an optional idempotency key.
///
/// A key seen before with the same method, path and body replays the stored response with
/// `Idempotent-Replayed: true`; the same key with a different request is refused with 422
/// `idempotency_key_reused`. Only successful responses are stored, so a request that failed
/// can be retried with its key. `request` names the method and path; the operation's
/// errors may be in any shape.
pub(crate) fn idempotent<E: IntoResponse>(
    state: &mut SandboxState,
    headers: &HeaderMap,
    request: &str,
    body: &[u8],
    operation: impl FnOnce(&mut SandboxState) -> Result<(StatusCode, Value), E>,
) -> Response {
    let key = header_text(headers, "idempotency-key")
        .filter(|_| !state.helpdesk.ignore_idempotency_keys)
        .map(str::to_owned);
    let fingerprint = format!("{request} {:x}", Sha256::digest(body));
    if let Some(key) = &key
        && let Some(replay) = state.helpdesk.idempotency.get(key)
    {
        if replay.fingerprint != fingerprint {
            return HError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request",
            )
            .into_response();
        }
        let mut response = (replay.status, Json(replay.body.clone())).into_response();
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return response;
    }
    match operation(state) {
        Ok((status, body)) => {
            if let Some(key) = key {
                state.helpdesk.idempotency.insert(
                    key,
                    Replay {
                        fingerprint,
                        status,
                        body: body.clone(),
                    },
                );
            }
            (status, Json(body)).into_response()
        }
        Err(error) => error.into_response(),
    }
}

async fn list_tickets(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(error) = authorize(&shared, &headers) {
        return error.into_response();
    }
    let filter = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let external_id = filter("external_id");
    let status = filter("status");
    // A listing for sync: tickets updated at or after `updated_since` (RFC 3339), with
    // an id above `after_id`, in id order, at most `limit`; `total` counts them all.
    let since = match filter("updated_since").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match chrono::DateTime::parse_from_rfc3339(&v) {
            Ok(t) => Some(t.with_timezone(&chrono::Utc)),
            Err(_) => {
                return HError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    format!("updated_since must be an RFC 3339 time, not {v:?}"),
                )
                .into_response();
            }
        },
    };
    let after: Option<u64> = match filter("after_id").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                return HError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    format!("after_id must be a ticket id, not {v:?}"),
                )
                .into_response();
            }
        },
    };
    let limit: Option<usize> = filter("limit").and_then(|v| v.parse().ok());
    let state = shared.lock();
    // A search by external id reads only the tickets the index names, in the same id
    // order as a scan of every ticket would find them.
    let tickets: Vec<&Map<String, Value>> = state
        .helpdesk
        .visible_after(external_id.as_deref(), after)
        .into_iter()
        .filter(|ticket| {
            status
                .as_deref()
                .is_none_or(|wanted| ticket.get("status") == Some(&json!(wanted)))
        })
        .filter(|ticket| {
            since.is_none_or(|since| {
                ticket
                    .get("updated_at")
                    .and_then(Value::as_str)
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t >= since)
            })
        })
        .filter(|ticket| {
            after.is_none_or(|after| ticket.get("id").and_then(Value::as_u64) > Some(after))
        })
        .collect();
    let total = tickets.len();
    let tickets: Vec<&Map<String, Value>> = tickets
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    Json(json!({ "tickets": tickets, "total": total })).into_response()
}

async fn get_ticket(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = authorize(&shared, &headers).and_then(|()| {
        let id = parse_ticket_id(&id)?;
        let state = shared.lock();
        state
            .helpdesk
            .tickets
            .get(id)
            .map(|stored| json!({ "ticket": stored.ticket }))
            .ok_or_else(|| HError::not_found(id))
    });
    match result {
        Ok(body) => Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn create_ticket(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create_ticket_now(&shared, &headers, &body)
}

fn create_ticket_now(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(error) = authorize(shared, headers) {
        return error.into_response();
    }
    let mut state = shared.lock();
    idempotent(&mut state, headers, "POST /api/tickets", body, |state| {
        let fields = unwrap_envelope(&state.helpdesk, parse_object(body)?);
        validate_fields(&fields, true, "")?;
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
        Ok::<_, HError>((StatusCode::CREATED, json!({ "ticket": ticket })))
    })
}

/// DELETE a ticket: 204, or 404 when there is none (no webhook fires).
async fn delete_ticket(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(error) = authorize(&shared, &headers) {
        return error.into_response();
    }
    let id = match parse_ticket_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    if shared.lock().helpdesk.remove(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        HError::not_found(id).into_response()
    }
}

async fn patch_ticket(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    patch_ticket_now(&shared, &headers, &id, &body)
}

fn patch_ticket_now(shared: &Shared, headers: &HeaderMap, id: &str, body: &[u8]) -> Response {
    if let Err(error) = authorize(shared, headers) {
        return error.into_response();
    }
    let request = format!("PATCH /api/tickets/{id}");
    let mut state = shared.lock();
    idempotent(&mut state, headers, &request, body, |state| {
        let id = parse_ticket_id(id)?;
        let fields = unwrap_envelope(&state.helpdesk, parse_object(body)?);
        let SandboxState {
            helpdesk,
            deliveries,
            ..
        } = state;
        let stored = helpdesk
            .tickets
            .get(id)
            .ok_or_else(|| HError::not_found(id))?;
        check_version(header_text(headers, "if-match"), &stored.ticket)?;
        validate_fields(&fields, false, "")?;
        let ticket = helpdesk
            .update(id, &fields, &now_millis())
            .ok_or_else(|| HError::not_found(id))?;
        fire(
            &shared.hooks,
            deliveries,
            helpdesk.webhook_url.as_ref(),
            "ticket.updated",
            &ticket,
        );
        Ok::<_, HError>((StatusCode::OK, json!({ "ticket": ticket })))
    })
}

async fn bulk_update(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bulk_update_now(&shared, &headers, &body)
}

fn bulk_update_now(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(error) = authorize(shared, headers) {
        return error.into_response();
    }
    let mut state = shared.lock();
    idempotent(
        &mut state,
        headers,
        "POST /api/tickets/bulk",
        body,
        |state| {
            let request = parse_object(body)?;
            let updates = match request.get("updates") {
                Some(Value::Array(updates)) if updates.len() > MAX_BULK => {
                    return Err(HError::validation(
                        "updates",
                        format!("at most {MAX_BULK} updates are allowed per request"),
                    ));
                }
                Some(Value::Array(updates)) => updates,
                _ => {
                    return Err(HError::validation(
                        "updates",
                        "updates must be an array of {id, fields}",
                    ));
                }
            };
            let SandboxState {
                helpdesk,
                deliveries,
                ..
            } = state;
            let now = now_millis();
            let mut staged: BTreeMap<u64, Map<String, Value>> = BTreeMap::new();
            let mut results = Vec::with_capacity(updates.len());
            for (index, update) in updates.iter().enumerate() {
                let prefix = format!("updates[{index}].");
                let id = update.get("id").and_then(Value::as_u64).ok_or_else(|| {
                    HError::validation(format!("{prefix}id"), "id must be an integer")
                })?;
                let fields = match update.get("fields") {
                    Some(Value::Object(fields)) => fields,
                    _ => {
                        return Err(HError::validation(
                            format!("{prefix}fields"),
                            "fields must be an object",
                        ));
                    }
                };
                let current = staged
                    .get(&id)
                    .or_else(|| helpdesk.tickets.get(id).map(|stored| &stored.ticket))
                    .ok_or_else(|| HError::not_found(id))?;
                let expected = match update.get("version") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(text)) => Some(text.clone()),
                    Some(other) => Some(other.to_string()),
                };
                check_version(expected.as_deref(), current)?;
                validate_fields(fields, false, &prefix)?;
                let ticket = patch(current, fields, &now);
                staged.insert(id, ticket.clone());
                results.push(ticket);
            }
            for (id, ticket) in staged {
                let changed_at = helpdesk.tickets.get(id).and_then(|t| t.changed_at);
                helpdesk
                    .tickets
                    .put(id, StoredTicket { ticket, changed_at });
            }
            for ticket in &results {
                fire(
                    &shared.hooks,
                    deliveries,
                    helpdesk.webhook_url.as_ref(),
                    "ticket.updated",
                    ticket,
                );
            }
            Ok((StatusCode::OK, json!({ "tickets": results })))
        },
    )
}

/// Seeds a ticket through the admin API: no webhook and no search lag. Unlike the public API,
/// the seed may set `id`, `version`, `created_at` and `updated_at`.
pub(crate) fn seed_ticket(
    state: &mut SandboxState,
    fields: &Map<String, Value>,
) -> Result<Map<String, Value>, HError> {
    validate_fields(fields, true, "")?;
    let helpdesk = &mut state.helpdesk;
    let id = match fields.get("id") {
        None | Some(Value::Null) => helpdesk.last_id + 1,
        Some(value) => value
            .as_u64()
            .filter(|id| *id > 0)
            .ok_or_else(|| HError::validation("id", "id must be a positive integer"))?,
    };
    if helpdesk.tickets.contains(id) {
        return Err(HError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("ticket {id} already exists"),
        ));
    }
    let now = now_millis();
    let mut ticket = new_ticket(id, fields, &now);
    for key in ["version", "created_at", "updated_at"] {
        if let Some(value) = fields.get(key) {
            ticket.insert(key.to_owned(), value.clone());
        }
    }
    helpdesk.last_id = helpdesk.last_id.max(id);
    helpdesk.tickets.put(
        id,
        StoredTicket {
            ticket: ticket.clone(),
            changed_at: None,
        },
    );
    Ok(ticket)
}

/// The current webhook URL of the helpdesk, for redeliveries.
pub(crate) fn webhook_url(state: &SandboxState) -> Option<String> {
    state.helpdesk.webhook_url.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("expected an object"),
        }
    }

    #[test]
    fn new_tickets_have_defaults_and_keep_extra_keys() {
        let fields = object(json!({
            "custom": {"a": 1},
            "subject": "Broken pump",
            "id": 99,
            "version": 7,
        }));
        let ticket = Value::Object(new_ticket(3, &fields, "2026-11-22T10:08:00.000Z"));
        assert_eq!(
            ticket,
            json!({
                "id": 3,
                "external_id": null,
                "subject": "Broken pump",
                "status": "open",
                "priority": null,
                "assignee": null,
                "tags": [],
                "custom": {"a": 1},
                "version": 1,
                "created_at": "2026-11-22T10:08:00.000Z",
                "updated_at": "2026-11-22T10:08:00.000Z",
            })
        );
        let keys: Vec<&String> = ticket
            .as_object()
            .map(|t| t.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys[7], "custom");
        assert_eq!(keys[8], "version");
    }

    #[test]
    fn patches_bump_the_version() {
        let ticket = new_ticket(1, &object(json!({"subject": "a"})), "t0");
        let patched = patch(
            &ticket,
            &object(json!({"status": "closed", "version": 40})),
            "t1",
        );
        assert_eq!(patched["version"], json!(2));
        assert_eq!(patched["status"], json!("closed"));
        assert_eq!(patched["created_at"], json!("t0"));
        assert_eq!(patched["updated_at"], json!("t1"));
        assert!(check_version(Some("\"2\""), &patched).is_ok());
        assert!(check_version(Some("W/\"2\""), &patched).is_ok());
        assert!(check_version(Some("1"), &patched).is_err());
        assert!(check_version(None, &patched).is_ok());
    }

    fn stored(id: u64, external_id: Value) -> StoredTicket {
        let fields = object(json!({"subject": "s", "external_id": external_id}));
        StoredTicket {
            ticket: new_ticket(id, &fields, "t0"),
            changed_at: None,
        }
    }

    fn ids_for(tickets: &Tickets, external_id: &str) -> Vec<u64> {
        tickets
            .with_external_id(external_id)
            .filter_map(|stored| stored.ticket["id"].as_u64())
            .collect()
    }

    #[test]
    fn the_external_id_index_follows_every_change() {
        let mut tickets = Tickets::default();
        tickets.put(3, stored(3, json!("A")));
        tickets.put(1, stored(1, json!("A")));
        tickets.put(2, stored(2, json!("B")));
        tickets.put(4, stored(4, Value::Null));
        // Several tickets may share an external id; they come in id order.
        assert_eq!(ids_for(&tickets, "A"), vec![1, 3]);
        assert_eq!(ids_for(&tickets, "B"), vec![2]);
        assert_eq!(ids_for(&tickets, "C"), Vec::<u64>::new());
        // A change of external id moves the ticket; an emptied entry goes away.
        tickets.put(2, stored(2, json!("A")));
        assert_eq!(ids_for(&tickets, "A"), vec![1, 2, 3]);
        assert_eq!(ids_for(&tickets, "B"), Vec::<u64>::new());
        assert!(!tickets.by_external_id.contains_key("B"));
        // A ticket whose external id becomes null leaves the index; one that gains one
        // enters it.
        tickets.put(1, stored(1, Value::Null));
        tickets.put(4, stored(4, json!("B")));
        assert_eq!(ids_for(&tickets, "A"), vec![2, 3]);
        assert_eq!(ids_for(&tickets, "B"), vec![4]);
        // The index names exactly the tickets a scan would find.
        for wanted in ["A", "B", "C"] {
            let scanned: Vec<u64> = tickets
                .all()
                .filter(|stored| external_id_of(&stored.ticket) == Some(wanted))
                .filter_map(|stored| stored.ticket["id"].as_u64())
                .collect();
            assert_eq!(ids_for(&tickets, wanted), scanned);
        }
    }

    #[test]
    fn validation_rejects_bad_fields() {
        let field = |value: Value, creating: bool| {
            validate_fields(&object(value), creating, "")
                .err()
                .and_then(|error| error.field)
        };
        assert_eq!(field(json!({}), true), Some("subject".to_owned()));
        assert_eq!(field(json!({}), false), None);
        assert_eq!(
            field(json!({"subject": "  "}), false),
            Some("subject".to_owned())
        );
        assert_eq!(
            field(json!({"subject": 5}), true),
            Some("subject".to_owned())
        );
        assert_eq!(
            field(json!({"subject": "a", "external_id": 5}), true),
            Some("external_id".to_owned())
        );
        assert_eq!(
            field(json!({"subject": "a", "tags": ["x", 1]}), true),
            Some("tags".to_owned())
        );
        assert_eq!(
            field(json!({"subject": "a", "external_id": null}), true),
            None
        );
    }
}
