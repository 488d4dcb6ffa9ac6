//! The kintone-compatible REST API under `/k/v1` and the record operations shared with the admin
//! API.
//!
//! Besides query-string parameters, the read endpoints also accept their parameters as a JSON
//! body, and `POST` requests with `X-HTTP-Method-Override: GET` are treated as reads, as the
//! official kintone REST API client sends them for long queries.

pub(crate) mod query;
pub(crate) mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use self::store::{App, StoredRecord, add_error};
use crate::state::{SandboxState, Shared, System, kintone_now};
use crate::webhooks::{self, Hooks, NewDelivery};

/// The most records that one bulk request may carry.
const MAX_BULK: usize = 100;
/// The default `limit` of a record query.
const DEFAULT_LIMIT: u64 = 100;
/// The largest `limit` that kintone accepts.
const MAX_LIMIT: u64 = 500;
/// The largest `offset` that kintone accepts.
const MAX_OFFSET: u64 = 10_000;

const CONFLICT_MESSAGE: &str =
    "指定したrevisionは最新ではありません。ほかのユーザーがレコードを更新した可能性があります。";

/// A kintone error response: `{"code", "id", "message", "errors"?}`.
#[derive(Debug)]
pub(crate) struct KError {
    status: StatusCode,
    code: &'static str,
    message: String,
    errors: Option<Map<String, Value>>,
}

impl KError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> KError {
        KError {
            status,
            code,
            message: message.into(),
            errors: None,
        }
    }

    fn unauthorized() -> KError {
        KError::new(
            StatusCode::UNAUTHORIZED,
            "GAIA_IA02",
            "API token is invalid.",
        )
    }

    fn invalid_json() -> KError {
        KError::new(StatusCode::BAD_REQUEST, "CB_IJ01", "不正なJSON文字列です。")
    }

    pub(crate) fn app_not_found(app: u64) -> KError {
        KError::new(
            StatusCode::NOT_FOUND,
            "GAIA_AP01",
            format!(
                "指定したアプリ（id: {app}）が見つかりません。削除されている可能性があります。"
            ),
        )
    }

    pub(crate) fn record_not_found(id: u64) -> KError {
        KError::new(
            StatusCode::NOT_FOUND,
            "GAIA_RE01",
            format!("指定したレコード（id: {id}）が見つかりません。"),
        )
    }

    fn conflict() -> KError {
        KError::new(StatusCode::CONFLICT, "GAIA_CO02", CONFLICT_MESSAGE)
    }

    /// A `CB_VA01` validation error with the given per-key messages.
    pub(crate) fn validation(errors: Map<String, Value>) -> KError {
        KError {
            errors: Some(errors),
            ..KError::new(
                StatusCode::BAD_REQUEST,
                "CB_VA01",
                "入力内容が正しくありません。",
            )
        }
    }

    /// A `CB_VA01` validation error with one message under `key`.
    pub(crate) fn invalid(key: &str, message: &str) -> KError {
        let mut errors = Map::new();
        add_error(&mut errors, key.to_owned(), message);
        KError::validation(errors)
    }
}

impl IntoResponse for KError {
    fn into_response(self) -> Response {
        let mut body = error_body(self.code, &self.message);
        if let Some(errors) = self.errors {
            body["errors"] = Value::Object(errors);
        }
        (self.status, Json(body)).into_response()
    }
}

/// A kintone error body with a fresh error id.
pub(crate) fn error_body(code: &str, message: &str) -> Value {
    let (high, low) = Uuid::new_v4().as_u64_pair();
    json!({
        "code": code,
        "id": format!("{}-{}", high % 10_000_000_000, low % 1_000_000_000),
        "message": message,
    })
}

fn respond(result: Result<Value, KError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/k/v1/record.json",
            get(get_record).post(post_record).put(put_record),
        )
        .route("/k/v1/app/form/fields.json", get(get_form_fields))
        .route(
            "/k/v1/records.json",
            get(get_records)
                .post(post_records)
                .put(put_records)
                .delete(delete_records),
        )
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), KError> {
    let accepted: Vec<&str> = shared
        .config
        .kintone_api_token
        .split(',')
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .collect();
    let presented = headers
        .get("x-cybozu-api-token")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if presented
        .split(',')
        .map(str::trim)
        .any(|token| accepted.contains(&token))
    {
        Ok(())
    } else {
        Err(KError::unauthorized())
    }
}

fn is_read_override(headers: &HeaderMap) -> bool {
    headers
        .get("x-http-method-override")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("GET"))
}

/// The parameters of a request: query-string pairs first, then the keys of a JSON body.
struct Params<'a> {
    pairs: &'a [(String, String)],
    body: Map<String, Value>,
}

impl<'a> Params<'a> {
    fn new(pairs: &'a [(String, String)], body: &[u8]) -> Result<Params<'a>, KError> {
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice(body) {
                Ok(Value::Object(map)) => map,
                _ => return Err(KError::invalid_json()),
            }
        };
        Ok(Params { pairs, body })
    }

    fn get(&self, key: &str) -> Option<Value> {
        self.pairs
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| Value::String(value.clone()))
            .or_else(|| self.body.get(key).cloned())
    }

    fn text(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|value| match value {
            Value::String(text) => Some(text),
            Value::Null => None,
            other => Some(other.to_string()),
        })
    }

    /// The values of a list parameter, given as `name[0]=..&name[1]=..` or as a JSON array.
    fn list(&self, name: &str) -> Vec<Value> {
        let mut indexed: BTreeMap<u64, Value> = BTreeMap::new();
        for (key, value) in self.pairs {
            if let Some(index) = key
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('['))
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|index| index.parse().ok())
            {
                indexed.insert(index, Value::String(value.clone()));
            }
        }
        if !indexed.is_empty() {
            return indexed.into_values().collect();
        }
        match self.body.get(name) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        }
    }

    fn required_id(&self, key: &str) -> Result<u64, KError> {
        match self.get(key) {
            None | Some(Value::Null) => Err(KError::invalid(key, "必須です。")),
            Some(value) => {
                value_u64(&value).ok_or_else(|| KError::invalid(key, "数字でなければなりません。"))
            }
        }
    }
}

fn value_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Parses an optional revision; `-1` (skip the check) is kept as is.
fn parse_revision(value: Option<&Value>, key: &str) -> Result<Option<i64>, KError> {
    let parsed = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number.as_i64(),
        Some(Value::String(text)) if text.is_empty() => return Ok(None),
        Some(Value::String(text)) => text.trim().parse().ok(),
        Some(_) => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| KError::invalid(key, "数字でなければなりません。"))
}

pub(crate) fn find_app(state: &SandboxState, app: u64) -> Result<&App, KError> {
    state
        .kintone
        .apps
        .get(&app)
        .ok_or_else(|| KError::app_not_found(app))
}

async fn get_record(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    respond(read_record(&shared, &headers, &pairs, &body))
}

fn read_record(
    shared: &Shared,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    body: &[u8],
) -> Result<Value, KError> {
    authorize(shared, headers)?;
    let params = Params::new(pairs, body)?;
    let app_id = params.required_id("app")?;
    let id = params.required_id("id")?;
    let state = shared.lock();
    let app = find_app(&state, app_id)?;
    let record = app
        .records
        .get(&id)
        .ok_or_else(|| KError::record_not_found(id))?;
    Ok(json!({ "record": app.render(record) }))
}

async fn get_form_fields(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    respond(read_form_fields(&shared, &headers, &pairs, &body))
}

fn read_form_fields(
    shared: &Shared,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    body: &[u8],
) -> Result<Value, KError> {
    authorize(shared, headers)?;
    let params = Params::new(pairs, body)?;
    let app_id = params.required_id("app")?;
    let state = shared.lock();
    Ok(find_app(&state, app_id)?.form_fields())
}

async fn get_records(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    respond(read_records(&shared, &headers, &pairs, &body))
}

fn read_records(
    shared: &Shared,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    body: &[u8],
) -> Result<Value, KError> {
    authorize(shared, headers)?;
    let params = Params::new(pairs, body)?;
    let app_id = params.required_id("app")?;
    let query_text = params.text("query").unwrap_or_default();
    let total_count = params
        .get("totalCount")
        .is_some_and(|value| value == json!(true) || value == json!("true"));
    let projection: Vec<String> = params
        .list("fields")
        .iter()
        .filter_map(|value| value.as_str().map(str::to_owned))
        .collect();
    let parsed = query::parse(&query_text)
        .map_err(|error| KError::new(StatusCode::BAD_REQUEST, "GAIA_IQ03", error.to_string()))?;
    let limit = parsed.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(KError::invalid(
            "query",
            &format!("limitには{MAX_LIMIT}以下の値を指定してください。"),
        ));
    }
    let offset = parsed.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(KError::invalid(
            "query",
            &format!("offsetには{MAX_OFFSET}以下の値を指定してください。"),
        ));
    }

    let state = shared.lock();
    let app = find_app(&state, app_id)?;
    if let Some(unknown) = parsed
        .referenced_fields()
        .into_iter()
        .find(|field| app.field_type(field).is_none())
    {
        return Err(KError::new(
            StatusCode::BAD_REQUEST,
            "GAIA_IQ11",
            format!("指定されたフィールド（code: {unknown}）が見つかりません。"),
        ));
    }
    // Records start in kintone's default order, `$id desc`; the stable sort keeps it for ties.
    // Only the ids a `$id` condition allows are rendered: a large app answers a query
    // by ids without rendering every record.
    let candidates: Box<dyn Iterator<Item = &StoredRecord>> = match parsed.id_filter() {
        Some(query::IdFilter::Among(ids)) => {
            Box::new(ids.into_iter().rev().filter_map(|id| app.records.get(&id)))
        }
        Some(query::IdFilter::Above(n)) => Box::new(
            app.records
                .range(n.saturating_add(1)..)
                .map(|(_, r)| r)
                .rev(),
        ),
        None => Box::new(app.records.values().rev()),
    };
    let mut records: Vec<Map<String, Value>> = candidates
        .map(|record| app.render(record))
        .filter(|record| {
            parsed
                .condition
                .as_ref()
                .is_none_or(|condition| condition.matches(record))
        })
        .collect();
    drop(state);
    query::sort_records(&mut records, &parsed.order_by);
    let total = records.len();
    let page: Vec<Value> = records
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|record| {
            if projection.is_empty() {
                Value::Object(record)
            } else {
                Value::Object(
                    record
                        .into_iter()
                        .filter(|(code, _)| projection.contains(code))
                        .collect(),
                )
            }
        })
        .collect();
    Ok(json!({
        "records": page,
        "totalCount": total_count.then(|| total.to_string()),
    }))
}

async fn post_record(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    if is_read_override(&headers) {
        return respond(read_record(&shared, &headers, &pairs, &body));
    }
    respond(add_record(&shared, &headers, &body))
}

fn add_record(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Value, KError> {
    authorize(shared, headers)?;
    let params = Params::new(&[], body)?;
    let app_id = params.required_id("app")?;
    let mut state = shared.lock();
    let created = create_records(
        &shared.hooks,
        &mut state,
        app_id,
        &[params.body.get("record")],
        false,
        true,
    )?;
    let (id, revision) = created[0];
    Ok(json!({"id": id.to_string(), "revision": revision.to_string()}))
}

async fn put_record(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(edit_record(&shared, &headers, &body))
}

fn edit_record(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Value, KError> {
    authorize(shared, headers)?;
    let params = Params::new(&[], body)?;
    let app_id = params.required_id("app")?;
    let id = params.required_id("id")?;
    let revision = parse_revision(params.body.get("revision"), "revision")?;
    let mut state = shared.lock();
    let updated = update_records(
        &shared.hooks,
        &mut state,
        app_id,
        &[Update {
            id,
            revision,
            record: params.body.get("record"),
        }],
        false,
        true,
    )?;
    Ok(json!({"revision": updated[0].1.to_string()}))
}

async fn post_records(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    if is_read_override(&headers) {
        return respond(read_records(&shared, &headers, &pairs, &body));
    }
    respond(add_records(&shared, &headers, &body))
}

fn bulk_items<'a>(params: &'a Params<'_>) -> Result<&'a [Value], KError> {
    match params.body.get("records") {
        Some(Value::Array(items)) if items.len() > MAX_BULK => Err(KError::invalid(
            "records",
            &format!("一度に{MAX_BULK}件までのレコードを指定できます。"),
        )),
        Some(Value::Array(items)) => Ok(items),
        None | Some(Value::Null) => Err(KError::invalid("records", "必須です。")),
        Some(_) => Err(KError::invalid("records", "配列を指定してください。")),
    }
}

fn add_records(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Value, KError> {
    authorize(shared, headers)?;
    let params = Params::new(&[], body)?;
    let app_id = params.required_id("app")?;
    let items = bulk_items(&params)?;
    let inputs: Vec<Option<&Value>> = items.iter().map(Some).collect();
    let mut state = shared.lock();
    let created = create_records(&shared.hooks, &mut state, app_id, &inputs, true, true)?;
    let ids: Vec<String> = created.iter().map(|(id, _)| id.to_string()).collect();
    let revisions: Vec<String> = created.iter().map(|(_, rev)| rev.to_string()).collect();
    Ok(json!({"ids": ids, "revisions": revisions}))
}

async fn put_records(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(edit_records(&shared, &headers, &body))
}

fn edit_records(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Value, KError> {
    authorize(shared, headers)?;
    let params = Params::new(&[], body)?;
    let app_id = params.required_id("app")?;
    let items = bulk_items(&params)?;
    let mut updates = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let key = format!("records[{index}]");
        let id = item
            .get("id")
            .ok_or_else(|| KError::invalid(&format!("{key}.id"), "必須です。"))
            .and_then(|value| {
                value_u64(value).ok_or_else(|| {
                    KError::invalid(&format!("{key}.id"), "数字でなければなりません。")
                })
            })?;
        let revision = parse_revision(item.get("revision"), &format!("{key}.revision"))?;
        updates.push(Update {
            id,
            revision,
            record: item.get("record"),
        });
    }
    let mut state = shared.lock();
    let updated = update_records(&shared.hooks, &mut state, app_id, &updates, true, true)?;
    let records: Vec<Value> = updated
        .iter()
        .map(|(id, revision)| json!({"id": id.to_string(), "revision": revision.to_string()}))
        .collect();
    Ok(json!({ "records": records }))
}

async fn delete_records(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    respond(remove_records(&shared, &headers, &pairs, &body))
}

fn remove_records(
    shared: &Shared,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    body: &[u8],
) -> Result<Value, KError> {
    authorize(shared, headers)?;
    let params = Params::new(pairs, body)?;
    let app_id = params.required_id("app")?;
    let raw_ids = params.list("ids");
    if raw_ids.is_empty() {
        return Err(KError::invalid("ids", "必須です。"));
    }
    if raw_ids.len() > MAX_BULK {
        return Err(KError::invalid(
            "ids",
            &format!("一度に{MAX_BULK}件までのレコードを指定できます。"),
        ));
    }
    let ids = raw_ids
        .iter()
        .enumerate()
        .map(|(index, value)| {
            value_u64(value).ok_or_else(|| {
                KError::invalid(&format!("ids[{index}]"), "数字でなければなりません。")
            })
        })
        .collect::<Result<Vec<u64>, KError>>()?;
    let revisions = params
        .list("revisions")
        .iter()
        .enumerate()
        .map(|(index, value)| parse_revision(Some(value), &format!("revisions[{index}]")))
        .collect::<Result<Vec<Option<i64>>, KError>>()?;
    if !revisions.is_empty() && revisions.len() != ids.len() {
        return Err(KError::invalid(
            "revisions",
            "idsと同じ数の要素を指定してください。",
        ));
    }
    let mut state = shared.lock();
    delete_records_in(&shared.hooks, &mut state, app_id, &ids, &revisions, true)?;
    Ok(json!({}))
}

/// The error key prefix of the record at `index` of a request.
fn record_prefix(bulk: bool, index: usize) -> String {
    if bulk {
        format!("records[{index}]")
    } else {
        "record".to_owned()
    }
}

/// Queues an `ADD_RECORD` or `UPDATE_RECORD` webhook when the app has a webhook URL.
fn fire_upsert(
    hooks: &Hooks,
    deliveries: &mut webhooks::Deliveries,
    app: &App,
    kind: &str,
    record: &StoredRecord,
) {
    let Some(url) = app.webhook_url.clone() else {
        return;
    };
    let id = Uuid::new_v4().to_string();
    let payload = json!({
        "id": id,
        "type": kind,
        "app": app.summary(),
        "record": app.render(record),
        "recordTitle": app.title(record),
        "url": app.record_url(record.id),
    });
    webhooks::enqueue(
        hooks,
        deliveries,
        NewDelivery {
            system: System::Kintone,
            id,
            kind: kind.to_owned(),
            record_id: Some(record.id.to_string()),
            app: Some(app.id),
            url,
            payload,
        },
    );
}

/// Queues a `DELETE_RECORD` webhook when the app has a webhook URL.
fn fire_delete(hooks: &Hooks, deliveries: &mut webhooks::Deliveries, app: &App, record_id: u64) {
    let Some(url) = app.webhook_url.clone() else {
        return;
    };
    let id = Uuid::new_v4().to_string();
    let payload = json!({
        "id": id,
        "type": "DELETE_RECORD",
        "app": app.summary(),
        "recordId": record_id.to_string(),
        "deleteBy": {"code": "sandbox", "name": "Sandbox"},
        "url": app.record_url(record_id),
    });
    webhooks::enqueue(
        hooks,
        deliveries,
        NewDelivery {
            system: System::Kintone,
            id,
            kind: "DELETE_RECORD".to_owned(),
            record_id: Some(record_id.to_string()),
            app: Some(app.id),
            url,
            payload,
        },
    );
}

/// Creates records all-or-nothing and returns their (id, revision) pairs.
pub(crate) fn create_records(
    hooks: &Hooks,
    state: &mut SandboxState,
    app_id: u64,
    inputs: &[Option<&Value>],
    bulk: bool,
    fire: bool,
) -> Result<Vec<(u64, u64)>, KError> {
    let SandboxState {
        kintone,
        deliveries,
        ..
    } = state;
    let app = kintone
        .apps
        .get_mut(&app_id)
        .ok_or_else(|| KError::app_not_found(app_id))?;
    let mut errors = Map::new();
    let normalized: Vec<Map<String, Value>> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| app.validate(*input, &record_prefix(bulk, index), &mut errors))
        .collect();
    if !errors.is_empty() {
        return Err(KError::validation(errors));
    }
    let now = kintone_now();
    let mut created = Vec::with_capacity(normalized.len());
    for values in normalized {
        let id = app.next_id;
        app.next_id += 1;
        let record = StoredRecord {
            id,
            revision: 1,
            values,
            created_at: now.clone(),
            updated_at: now.clone(),
        };
        if fire {
            fire_upsert(hooks, deliveries, app, "ADD_RECORD", &record);
        }
        app.records.insert(id, record);
        created.push((id, 1));
    }
    Ok(created)
}

/// One record update: the record's id, the expected revision, and the changed fields.
pub(crate) struct Update<'a> {
    pub(crate) id: u64,
    pub(crate) revision: Option<i64>,
    pub(crate) record: Option<&'a Value>,
}

/// Applies partial updates all-or-nothing and returns the (id, new revision) pairs.
///
/// Missing records fail with `GAIA_RE01`, stale revisions with `GAIA_CO02` and invalid values
/// with `CB_VA01`; a revision of -1 skips the check. An id may appear more than once, in which
/// case the later update sees the earlier one.
pub(crate) fn update_records(
    hooks: &Hooks,
    state: &mut SandboxState,
    app_id: u64,
    updates: &[Update<'_>],
    bulk: bool,
    fire: bool,
) -> Result<Vec<(u64, u64)>, KError> {
    let SandboxState {
        kintone,
        deliveries,
        ..
    } = state;
    let app = kintone
        .apps
        .get_mut(&app_id)
        .ok_or_else(|| KError::app_not_found(app_id))?;
    let mut staged: BTreeMap<u64, StoredRecord> = BTreeMap::new();
    let mut snapshots = Vec::with_capacity(updates.len());
    let mut errors = Map::new();
    let now = kintone_now();
    for (index, update) in updates.iter().enumerate() {
        let mut record = staged
            .get(&update.id)
            .or_else(|| app.records.get(&update.id))
            .cloned()
            .ok_or_else(|| KError::record_not_found(update.id))?;
        if let Some(expected) = update.revision
            && expected != -1
            && u64::try_from(expected).ok() != Some(record.revision)
        {
            return Err(KError::conflict());
        }
        let values = app.validate(update.record, &record_prefix(bulk, index), &mut errors);
        record.values.extend(values);
        record.revision += 1;
        record.updated_at.clone_from(&now);
        staged.insert(update.id, record.clone());
        snapshots.push(record);
    }
    if !errors.is_empty() {
        return Err(KError::validation(errors));
    }
    app.records.extend(staged);
    if fire {
        for snapshot in &snapshots {
            fire_upsert(hooks, deliveries, app, "UPDATE_RECORD", snapshot);
        }
    }
    Ok(snapshots
        .iter()
        .map(|record| (record.id, record.revision))
        .collect())
}

/// Deletes records all-or-nothing; `revisions` is either empty or parallel to `ids`.
pub(crate) fn delete_records_in(
    hooks: &Hooks,
    state: &mut SandboxState,
    app_id: u64,
    ids: &[u64],
    revisions: &[Option<i64>],
    fire: bool,
) -> Result<(), KError> {
    let SandboxState {
        kintone,
        deliveries,
        ..
    } = state;
    let app = kintone
        .apps
        .get_mut(&app_id)
        .ok_or_else(|| KError::app_not_found(app_id))?;
    for (index, id) in ids.iter().enumerate() {
        let record = app
            .records
            .get(id)
            .ok_or_else(|| KError::record_not_found(*id))?;
        if let Some(Some(expected)) = revisions.get(index)
            && *expected != -1
            && u64::try_from(*expected).ok() != Some(record.revision)
        {
            return Err(KError::conflict());
        }
    }
    for id in ids {
        if app.records.remove(id).is_some() && fire {
            fire_delete(hooks, deliveries, app, *id);
        }
    }
    Ok(())
}
