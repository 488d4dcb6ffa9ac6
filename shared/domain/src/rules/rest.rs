//! How a `rest` system's entities are reached: URL templates, JSON pointers into its
//! records and answers, fields kept deeper than the top level, and bulk updates.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A REST entity: URL templates are relative to the system's base URL. `{id}`,
/// `{field}` and `{value}` are replaced (percent-encoded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestEntity {
    /// GET one record, e.g. `/api/tickets/{id}`.
    pub get: String,
    /// GET records whose `{field}` equals `{value}`, e.g.
    /// `/api/tickets?{field}={value}` (with `search_body`, the path the search is POSTed
    /// to).
    pub search: String,
    /// POST a new record, e.g. `/api/tickets`.
    pub create: String,
    /// Update a record, e.g. `/api/tickets/{id}`.
    pub update: String,
    /// The HTTP method of updates (default `PATCH`).
    #[serde(default = "default_update_method")]
    pub update_method: String,
    /// JSON pointer to the record in a get/create/update response (e.g. `/ticket`;
    /// empty means the whole body).
    #[serde(default)]
    pub record_pointer: String,
    /// JSON pointer to where the fields go in a create or update body, for APIs that
    /// want them inside an envelope: `/ticket` sends `{"ticket": {...}}`, `/data/attributes`
    /// sends `{"data": {"attributes": {...}}}`. Empty (the default) sends them flat.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body_pointer: String,
    /// JSON pointer to the array of records in a search response (e.g. `/tickets`).
    #[serde(default)]
    pub list_pointer: String,
    /// JSON pointer to the id inside a record (default `/id`).
    #[serde(default = "default_id_pointer")]
    pub id_pointer: String,
    /// The header that carries an idempotency key on writes, if the API supports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_header: Option<String>,
    /// JSON pointer to the record's revision counter inside a record (e.g.
    /// `/version`), so that stale reads and late webhooks are recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_pointer: Option<String>,
    /// DELETE a record, e.g. `/api/tickets/{id}` (for `on_delete: delete_target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
    /// JSON pointer to when the record last changed (RFC 3339, e.g. `/updated_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at_pointer: Option<String>,
    /// A bulk update endpoint, used when parked writes are flushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_update: Option<BulkUpdate>,
    /// GET the records changed since a time, for resync: a template with `{since}`
    /// (RFC 3339; empty for a full scan), `{after}` (the last id of the previous page;
    /// empty at first) and `{limit}`, e.g.
    /// `/api/tickets?updated_since={since}&after_id={after}&limit={limit}`. The API
    /// answers in ascending id order, the records at `list_pointer`. Paging by id, not
    /// by offset, so that a record changed during the scan is not skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// JSON pointer to how many records a listing matches in all, when the API says
    /// (e.g. `/total`): a resync shows its progress and ETA with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_pointer: Option<String>,
    /// JSON pointer to where a record keeps its own fields, for APIs that nest them
    /// (`/properties`, `/attributes`): they are read as the record's fields, beside its
    /// top-level keys (a top-level key of the same name wins). Writes place fields with
    /// `body_pointer`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fields_pointer: String,
    /// Fields that live deeper than the top level, by the name the rules use: a nested
    /// object (`{"pointer": "/custom_fields/cf_po"}`) or an element of an array of
    /// `{id, value}` objects (`{"pointer": "/custom_fields", "id": 360001}`). They are
    /// read from there and written there, inside the body's envelope.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_paths: BTreeMap<String, FieldPath>,
    /// A search sent as `POST` to the `search` path with this JSON body, for APIs that
    /// search by body (`{"filterGroups": [{"filters": [{"propertyName": "{field}",
    /// "operator": "EQ", "value": "{value}"}]}]}`): `{field}` and `{value}` are replaced
    /// inside its strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_body: Option<serde_json::Value>,
    /// Fields the API takes on writes and never shows in a record (a requester's
    /// email, a first comment's body): a write is not checked for them, and reconcile
    /// does not compare them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_only: Vec<String>,
}

/// Where a field lives inside a record, when not at its top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldPath {
    /// JSON pointer, relative to the record (and to the body's envelope on writes): the
    /// field itself, or with `id`, the array that holds it.
    pub pointer: String,
    /// The field is the element of the array at `pointer` whose `id_key` equals this
    /// (a number or a string), and its value is that element's `value_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
    /// The key of an element's id (default `id`).
    #[serde(default = "id_key")]
    pub id_key: String,
    /// The key of an element's value (default `value`).
    #[serde(default = "value_key")]
    pub value_key: String,
}

fn value_key() -> String {
    "value".to_owned()
}

/// A bulk update endpoint: the body is `{"<list_key>": [{"<id_key>": id,
/// "<fields_key>": {...}}, ...]}` (or the fields beside the id when `fields_key` is
/// empty). Without `results` a call is all-or-nothing; with it, each update is
/// confirmed by its own result, and the ones not confirmed are written one by one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkUpdate {
    /// The path, e.g. `/api/tickets/bulk`.
    pub path: String,
    /// The HTTP method (default `POST`).
    #[serde(default = "post_method")]
    pub method: String,
    /// Send ids as JSON strings (`"42"`), as some APIs want; by default an id that is
    /// a number is sent as one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub string_ids: bool,
    /// Where the answer says how each update went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<BulkResults>,
    /// The most updates in one call (default 100).
    #[serde(default = "hundred")]
    pub max: usize,
    /// The key of the list (default `updates`), or a JSON pointer for an API that
    /// wants it deeper in the body (`/data/items` sends `{"data": {"items": [...]}}`).
    #[serde(default = "updates_key")]
    pub list_key: String,
    /// The key of each id (default `id`).
    #[serde(default = "id_key")]
    pub id_key: String,
    /// The key of each update's fields (default `fields`).
    #[serde(default = "fields_key")]
    pub fields_key: String,
}

fn hundred() -> usize {
    100
}

fn post_method() -> String {
    "POST".to_owned()
}

/// Where a bulk answer reports each update: a list of results (an update is confirmed
/// when its id is there, and `ok` is true when declared) and, optionally, a list of
/// errors naming the ids they concern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkResults {
    /// JSON pointer to the array of per-update results (`/results`; empty: the answer
    /// is the array).
    pub list: String,
    /// JSON pointer to a result's record id (default `/id`).
    #[serde(default = "default_id_pointer")]
    pub id: String,
    /// JSON pointer to a result's success flag (`/success`), when results include
    /// failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<String>,
    /// JSON pointer to a result's or an error's message (`/message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// JSON pointer to an array of errors beside the results (`/errors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
    /// JSON pointer, inside an error, to the ids it concerns (`/context/ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ids: Option<String>,
}

fn updates_key() -> String {
    "updates".to_owned()
}

fn id_key() -> String {
    "id".to_owned()
}

fn fields_key() -> String {
    "fields".to_owned()
}

fn default_update_method() -> String {
    "PATCH".to_owned()
}

fn default_id_pointer() -> String {
    "/id".to_owned()
}
