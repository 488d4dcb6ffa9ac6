//! The shape of `sync-rules.json`: the systems recordsync talks to and the rules that
//! say what flows where. These are plain data; loading and validating a file lives in
//! the `config` crate, which names the JSON path of every bad value.
//!
//! The declared field transforms ([`Transform`]) and lookup-value variants
//! ([`Variant`]) are declared here with the rest of the file; what they do lives in
//! the `mapping` and `identity` modules, which depend on this one and never the other
//! way round.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRules {
    /// Where the JSON Schema of this file lives; ignored by the service.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The version of the file format. Only `1` exists.
    pub version: u32,
    /// The systems, by the name rules and webhook URLs use (`/webhooks/{name}`).
    pub systems: BTreeMap<String, SystemSpec>,
    /// The sync rules. Several rules may watch the same source app.
    pub rules: Vec<RuleSpec>,
}

impl SyncRules {
    /// The rules that take changes from `app` of `system`, in file order: those whose
    /// source it is, and the two-way rules whose target it is.
    pub fn rules_for<'a>(
        &'a self,
        system: &'a str,
        app: &'a str,
    ) -> impl Iterator<Item = &'a RuleSpec> + 'a {
        self.rules.iter().filter(move |r| {
            (r.source.system == system && r.source.app == app)
                || (r.both_ways() && r.target.system == system && r.target.entity == app)
        })
    }

    /// The rule with this name.
    pub fn rule(&self, name: &str) -> Option<&RuleSpec> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The fields a rule's rest target takes on writes and never shows
    /// (`write_only`): what it holds for them cannot be read, so it is neither checked
    /// after a write nor compared by reconcile.
    pub fn write_only(&self, rule: &RuleSpec) -> &[String] {
        self.systems
            .get(&rule.target.system)
            .and_then(|s| s.entities.get(&rule.target.entity))
            .map(|e| e.write_only.as_slice())
            .unwrap_or_default()
    }
}

/// One external system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemSpec {
    /// Which connector speaks to it.
    pub kind: SystemKind,
    /// The API's base URL, for example `https://example.cybozu.com` (none for a `file`
    /// system).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_url: String,
    /// How recordsync authenticates to the system's API (none for a `file` system).
    #[serde(default)]
    pub auth: ApiAuth,
    /// How the system's webhooks authenticate to recordsync. Without it, webhooks from
    /// this system are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookAuth>,
    /// Request timeout toward this system, in milliseconds (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// For `rest` systems: the entities and how to reach them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entities: BTreeMap<String, RestEntity>,
    /// For `rest` systems: where webhook payloads keep the fields routing needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_routing: Option<WebhookRouting>,
    /// Limits that hold for the whole fleet of workers together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// When the system accepts writes; without it, at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_windows: Option<crate::windows::WriteWindows>,
    /// A daily request budget (kintone: 10,000 requests per app per day). Every request
    /// counts against it; when the day's forecast exceeds it, resync and reconcile wait
    /// so that live sync keeps what is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Checks, on a schedule, that the fields the rules rely on still exist with the
    /// same type and options (kintone: the app's form fields; rest: a sample record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_check: Option<SchemaCheckSpec>,
}

/// A system's daily API budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Requests per day (UTC), all workers and all kinds of work together.
    pub requests_per_day: u64,
}

/// A system's schema-drift check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaCheckSpec {
    /// Seconds between checks (at least 60). One worker of the fleet runs each.
    pub every_seconds: u64,
    /// For `rest` entities: the id of a record to read as the sample, by entity. An
    /// entity without one is sampled from its `list` (the first record); one that
    /// cannot list is not checked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<String, String>,
}

/// Request limits toward a system, for the whole fleet together. Every request (reads
/// and writes) counts. A 429 with `Retry-After` from a limited system pauses every
/// worker's requests to it until then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per second, for example `10` or `0.5`.
    pub requests_per_second: f64,
    /// Requests allowed at once above the steady rate (default 1: evenly spaced).
    #[serde(default = "one")]
    pub burst: u32,
    /// Requests in flight at once, fleet-wide (default: no cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
}

fn one() -> u32 {
    1
}

/// The connector kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemKind {
    /// kintone's REST API (`/k/v1/record.json`, `records.json`).
    Kintone,
    /// A REST API described by URL templates and JSON pointers.
    Rest,
    /// A partner with no API, whose records arrive as files (CSV or JSON Lines) through
    /// `worker import` or `POST /import`: each row is the record as the partner holds
    /// it, keyed by the rule's identity field. Only a one-way rule's source, without
    /// write-back, resync or reconcile.
    File,
}

/// How recordsync authenticates to a system's API. Secrets are never in the file:
/// the file names environment variables that hold them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiAuth {
    /// kintone's `X-Cybozu-API-Token` header.
    KintoneApiToken {
        /// The environment variable holding the token (several comma-separated tokens
        /// are allowed, as kintone allows).
        token_env: String,
    },
    /// A header whose value is `prefix` followed by a secret, e.g. `Authorization:
    /// Bearer …`.
    Header {
        /// The header name.
        header: String,
        /// The environment variable holding the secret.
        value_env: String,
        /// Text put before the secret, e.g. `Bearer `.
        #[serde(default)]
        prefix: String,
    },
    /// No authentication.
    #[default]
    None,
}

/// How a system's webhooks prove where they come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WebhookAuth {
    /// Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`).
    StandardWebhooks {
        /// The environment variable holding the secret(s), `whsec_<base64>`; several
        /// whitespace-separated secrets are accepted during a rotation.
        secret_env: String,
        /// How far the timestamp may be from now, either way, in seconds (default 300).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tolerance_seconds: Option<u64>,
    },
    /// A secret token in the query string (`?token=`), for systems that cannot sign
    /// (kintone webhooks are unsigned).
    Token {
        /// The environment variable holding the token.
        token_env: String,
    },
}

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

/// Where a `rest` system's webhook payload keeps what routing needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRouting {
    /// JSON pointer to the event type, e.g. `/type`.
    pub event_type: String,
    /// The entity (the "app") every webhook of this system concerns, e.g. `ticket`.
    pub entity: String,
    /// JSON pointer to the record id, e.g. `/data/ticket/id`.
    pub record_id: String,
}

/// One sync rule: what flows from a source app to a target entity, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A unique, stable name; it appears in history, metrics and conflicts.
    pub name: String,
    /// Where changes come from.
    pub source: SourceSpec,
    /// Where they are written.
    pub target: TargetSpec,
    /// How a source record finds its target record.
    pub identity: IdentitySpec,
    /// The mapped fields.
    pub fields: Vec<FieldMapping>,
    /// A field of the source record that receives the target's id after a sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<WriteBack>,
    /// What to do when no target record matches.
    #[serde(default)]
    pub on_missing: OnMissing,
    /// What to do when the source record is deleted.
    #[serde(default)]
    pub on_delete: OnDelete,
    /// With `on_delete: flag`: the field and value written into the target record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_flag: Option<DeletedFlag>,
    /// What to do when a two-way rule finds its target record deleted (default
    /// `ignore`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_target_delete: OnTargetDelete,
    /// With `on_target_delete: flag`: the source field and value written into the
    /// source record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_deleted_flag: Option<DeletedFlag>,
    /// Which way changes flow (default `one_way`).
    #[serde(default)]
    pub direction: Direction,
    /// Asks the source, on a schedule, for the records changed since the last time:
    /// what no webhook announced (a dropped webhook, a bulk import) is found and synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync: Option<ResyncSpec>,
    /// Compares both systems on a schedule and repairs drift where the owner is clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileSpec>,
    /// What a breaking schema drift in a field the rule relies on does (default
    /// `alert`): `pause` also pauses the rule, so that it writes nothing wrong until
    /// an operator resumes it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_schema_drift: OnSchemaDrift,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// What a breaking schema drift does to a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaDrift {
    /// Report it (the check's result, a metric and its alert); the rule keeps running.
    #[default]
    Alert,
    /// Report it and pause the rule: its work is parked until an operator resumes it.
    Pause,
}

/// A rule's reconcile schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSpec {
    /// Seconds between runs (at least 60). One worker of the fleet runs each.
    pub every_seconds: u64,
    /// Queue repairs for what it finds (default true); `false` only reports.
    #[serde(default = "default_true")]
    pub repair: bool,
    /// Leave out records that moved within this many seconds (default: the longest
    /// retry delay and a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_seconds: Option<u64>,
}

fn default_true() -> bool {
    true
}

/// A rule's resync schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResyncSpec {
    /// Seconds between runs (at least 10). One worker of the fleet runs each.
    pub every_seconds: u64,
    /// How far before the previous run's start the next run looks (default 120):
    /// kintone's update times are minute-precise, and the clocks of two systems differ.
    #[serde(default = "default_overlap")]
    pub overlap_seconds: u64,
    /// The field code of the source's update time (the `UPDATED_TIME` field): kintone
    /// names it `更新日時` in Japanese apps and `Updated_datetime` in English ones, and
    /// an administrator may rename it.
    #[serde(default = "default_updated_field")]
    pub updated_field: String,
}

fn default_overlap() -> u64 {
    120
}

fn default_updated_field() -> String {
    "更新日時".to_owned()
}

impl ResyncSpec {
    /// The defaults of a run started by hand for a rule without a schedule.
    pub fn by_hand() -> ResyncSpec {
        ResyncSpec {
            every_seconds: 0,
            overlap_seconds: default_overlap(),
            updated_field: default_updated_field(),
        }
    }
}

/// The source of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A system name from `systems`.
    pub system: String,
    /// The app (kintone app id, as a string) or entity name.
    pub app: String,
}

/// The target of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// A system name from `systems`.
    pub system: String,
    /// The entity: a key of the system's `entities` (rest) or an app id (kintone).
    pub entity: String,
}

/// How a source record is matched to a target record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// The source field holding the lookup value, e.g. `work_order_no`.
    pub source_field: String,
    /// The target field searched for it, e.g. `external_id`. New target records get the
    /// lookup value in this field.
    pub target_field: String,
    /// Other spellings of the lookup value to try, in order, when the value itself
    /// matches nothing (e.g. `WO-1234` → `1234`).
    #[serde(default)]
    pub variants: Vec<Variant>,
}

/// A declared spelling variant of a lookup value. Each variant is applied to the
/// original lookup value, never to another variant's output; a `chain` applies its
/// steps one after the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Variant {
    /// Remove a prefix when present: `WO-1234` → `1234` for `"WO-"`.
    StripPrefix(String),
    /// Add a prefix when absent: `1234` → `WO-1234` for `"WO-"`.
    AddPrefix(String),
    /// Remove a suffix when present.
    StripSuffix(String),
    /// Remove leading zeros: `001234` → `1234` (a value of only zeros becomes `0`).
    StripLeadingZeros,
    /// Keep only ASCII digits: `WO-12/34` → `1234`.
    DigitsOnly,
    /// Lower-case the value.
    Lowercase,
    /// Upper-case the value.
    Uppercase,
    /// Left-pad with zeros to a width: `1234` → `001234` for 6.
    ZeroPad(usize),
    /// Remove a prefix whatever its case: `wo-1234` → `1234` for `"WO-"`.
    StripPrefixIgnoreCase(String),
    /// Several variants applied one after the other, each to the previous output:
    /// `{"chain": [{"strip_prefix_ignore_case": "WO-"}, "strip_leading_zeros"]}` turns
    /// `wo-000123` into `123`. It applies only if every step does.
    Chain(Vec<Variant>),
}

/// One mapped field. Its canonical name is the target field name; values are kept in
/// the target's form (after `transforms`), and `reverse` turns them back into the
/// source's form when they flow back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// The source field code (kintone field codes may be non-ASCII).
    pub source: String,
    /// The target field name.
    pub target: String,
    /// Transforms applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
    /// When true, an empty or missing value is a data-quality problem: nothing is
    /// written and a conflict is opened.
    #[serde(default)]
    pub required: bool,
    /// Who may change the field: the rule's source system, its target system, or
    /// `shared` (default: the source system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// What decides a concurrent change (default: `local_wins` for a source-owned
    /// field, `external_wins` for a target-owned one, `latest_valid_change` for a
    /// shared one). `local_wins` needs the source as owner, `external_wins` the target,
    /// the others `shared`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::authority::Strategy>,
    /// What a valid value is (for `latest_valid_change`, and for every change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<crate::authority::Validation>,
    /// How `merge` combines concurrent changes (default `union`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<crate::authority::MergeKind>,
    /// Transforms from the target's form back to the source's, for values that flow
    /// back (e.g. a `map` from `closed` to `完了`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverse: Vec<Transform>,
}

/// A declared transform of a field value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// Trim white space around text.
    Trim,
    /// Lower-case text.
    Lowercase,
    /// Upper-case text.
    Uppercase,
    /// Text to a JSON number (kintone sends numbers as strings); empty text becomes
    /// null.
    ToNumber,
    /// A number or boolean to text.
    ToText,
    /// Put a prefix before text.
    Prefix(String),
    /// Remove a prefix from text when present.
    StripPrefix(String),
    /// Replace a value by the table's entry for it; values not in the table are kept
    /// unless `default` is given.
    Map {
        /// From (as text) → to.
        table: BTreeMap<String, serde_json::Value>,
        /// The value for anything not in the table.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<serde_json::Value>,
    },
    /// Use this value when the value is empty or missing.
    Default(serde_json::Value),
    /// Join a list into text with a separator.
    Join(String),
    /// Split text into a list on a separator (empty parts dropped, parts trimmed).
    Split(String),
}

impl FieldMapping {
    /// The owner, resolved against the rule.
    pub fn owner_of(&self, rule: &RuleSpec) -> crate::authority::Owner {
        match self.owner.as_deref() {
            Some("shared") => crate::authority::Owner::Shared,
            Some(system) => crate::authority::Owner::System(system.to_owned()),
            None => crate::authority::Owner::System(rule.source.system.clone()),
        }
    }

    /// The strategy, resolved against the rule.
    pub fn strategy_of(&self, rule: &RuleSpec) -> crate::authority::Strategy {
        use crate::authority::{Owner, Strategy};
        self.strategy.unwrap_or(match self.owner_of(rule) {
            Owner::Shared => Strategy::LatestValidChange,
            Owner::System(s) if s == rule.target.system => Strategy::ExternalWins,
            Owner::System(_) => Strategy::LocalWins,
        })
    }
}

impl RuleSpec {
    /// The field policies of the rule, by canonical (target) field name.
    pub fn policies(&self) -> Vec<crate::authority::FieldPolicy> {
        self.fields
            .iter()
            .map(|f| crate::authority::FieldPolicy {
                field: f.target.clone(),
                owner: f.owner_of(self),
                strategy: f.strategy_of(self),
                validation: f.validate.clone().unwrap_or_default(),
                merge: f.merge.unwrap_or_default(),
            })
            .collect()
    }

    /// Whether changes flow both ways.
    pub fn both_ways(&self) -> bool {
        self.direction == Direction::Both
    }
}

/// Which way changes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the source to the target only.
    #[default]
    OneWay,
    /// Both ways: the target's webhooks are processed too, and fields it owns (or
    /// shares) flow back to the source.
    Both,
}

/// The write-back of the target id into the source record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteBack {
    /// The source field that receives the target record's id.
    pub field: String,
}

/// What to do when no target record matches a source record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Create the target record.
    #[default]
    Create,
    /// Do nothing, and say so in the history.
    Skip,
    /// Open a data-quality conflict for a person to decide.
    Conflict,
}

/// What to do when the source record is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// Keep the target record and the link; record the deletion in the history.
    #[default]
    Ignore,
    /// Forget the link, so a record re-created later is matched afresh.
    Unlink,
    /// Keep the target record and the link, and open a `source_deleted` conflict: a
    /// person decides what becomes of the target record.
    Review,
    /// Delete the target record too (kintone; a rest entity with `delete`), and
    /// forget the link.
    DeleteTarget,
    /// Keep the target record and the link, and write `deleted_flag` into it (e.g.
    /// `status: closed`), so that people working in the target see it.
    Flag,
}

/// What a two-way rule does when its linked target record is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnTargetDelete {
    /// Keep the link and the source record; record it in the history.
    #[default]
    Ignore,
    /// Forget the link: the source record's next change matches afresh and, with
    /// nothing to match, `on_missing` decides (a create restores the record).
    Unlink,
    /// Keep the link and open a `target_deleted` conflict: a person decides.
    Review,
    /// Delete the source record too (kintone; a rest source entity with `delete`),
    /// and forget the link.
    DeleteSource,
    /// Keep the source record and the link, and write `target_deleted_flag` into the
    /// source record (e.g. `状態: 取消`), once: a record that already holds it is left
    /// alone.
    Flag,
}

/// What `on_delete: flag` writes into the target record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletedFlag {
    /// The target field.
    pub field: String,
    /// The value it is given.
    pub value: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{Owner, Strategy};
    use serde_json::json;

    /// The project's own rules file, with what a test changes.
    fn rules(edit: impl FnOnce(&mut serde_json::Value)) -> SyncRules {
        let mut v: serde_json::Value =
            serde_json::from_str(include_str!("../../../sync-rules.json")).expect("JSON");
        edit(&mut v);
        serde_json::from_value(v).expect("valid rules")
    }

    /// Every default a rules file may leave out is the one its schema documents.
    #[test]
    fn what_a_rules_file_leaves_out_takes_its_documented_default() {
        let r = rules(|v| {
            let helpdesk = &mut v["systems"]["helpdesk"];
            helpdesk["limits"] = json!({"requests_per_second": 5.0});
            let ticket = &mut helpdesk["entities"]["ticket"];
            ticket
                .as_object_mut()
                .expect("an entity")
                .remove("update_method");
            ticket["bulk_update"] =
                json!({"path": "/api/tickets/bulk", "results": {"list": "/results"}});
            ticket["field_paths"] = json!({"po": {"pointer": "/custom_fields", "id": 7}});
            let rule = &mut v["rules"][0];
            rule["resync"] = json!({"every_seconds": 60});
            rule["reconcile"] = json!({"every_seconds": 600});
        });
        let helpdesk = &r.systems["helpdesk"];
        assert_eq!(helpdesk.limits.as_ref().map(|l| l.burst), Some(1));
        let ticket = &helpdesk.entities["ticket"];
        assert_eq!(ticket.update_method, "PATCH");
        let bulk = ticket.bulk_update.as_ref().expect("bulk");
        assert_eq!(
            (
                bulk.method.as_str(),
                bulk.max,
                bulk.list_key.as_str(),
                bulk.id_key.as_str(),
                bulk.fields_key.as_str(),
                bulk.string_ids
            ),
            ("POST", 100, "updates", "id", "fields", false)
        );
        assert_eq!(bulk.results.as_ref().map(|x| x.id.as_str()), Some("/id"));
        let po = &ticket.field_paths["po"];
        assert_eq!((po.id_key.as_str(), po.value_key.as_str()), ("id", "value"));
        let rule = &r.rules[0];
        let resync = rule.resync.as_ref().expect("resync");
        assert_eq!(
            (resync.overlap_seconds, resync.updated_field.as_str()),
            (120, "更新日時")
        );
        assert!(rule.reconcile.as_ref().is_some_and(|c| c.repair));
        assert_eq!(rule.on_schema_drift, OnSchemaDrift::Alert);
        // A default is left out when the file is written back; anything else is kept.
        let written = serde_json::to_value(rule).expect("serializes");
        assert!(written.get("on_schema_drift").is_none(), "{written}");
        let mut paused = rule.clone();
        paused.on_schema_drift = OnSchemaDrift::Pause;
        assert_eq!(
            serde_json::to_value(&paused).expect("serializes")["on_schema_drift"],
            "pause"
        );
    }

    #[test]
    fn a_change_is_taken_by_the_rules_whose_source_it_is_and_the_two_way_rules_whose_target_it_is()
    {
        let r = rules(|v| {
            let mut second = v["rules"][0].clone();
            second["name"] = json!("tickets-back");
            second["direction"] = json!("both");
            second["source"] = json!({"system": "kintone", "app": "202"});
            let mut third = v["rules"][0].clone();
            third["name"] = json!("one-way-elsewhere");
            third["source"] = json!({"system": "kintone", "app": "303"});
            let list = v["rules"].as_array_mut().expect("rules");
            list.push(second);
            list.push(third);
        });
        let names = |system: &str, app: &str| -> Vec<String> {
            r.rules_for(system, app).map(|x| x.name.clone()).collect()
        };
        assert_eq!(names("kintone", "101"), ["work-orders-to-tickets"]);
        assert_eq!(names("kintone", "202"), ["tickets-back"]);
        assert_eq!(names("kintone", "303"), ["one-way-elsewhere"]);
        // The helpdesk's tickets feed only the two-way rule that targets them.
        assert_eq!(names("helpdesk", "ticket"), ["tickets-back"]);
        assert!(names("helpdesk", "other").is_empty());
        assert!(names("kintone", "ticket").is_empty());
        assert!(names("crm", "101").is_empty());
        assert_eq!(
            r.rule("tickets-back").map(|x| x.source.app.as_str()),
            Some("202")
        );
        assert!(r.rule("nope").is_none());
    }

    #[test]
    fn write_only_fields_are_the_rules_target_entitys() {
        let r = rules(|v| {
            v["systems"]["helpdesk"]["entities"]["ticket"]["write_only"] = json!(["requester"]);
        });
        assert_eq!(r.write_only(&r.rules[0]), ["requester"]);
        let mut elsewhere = r.rules[0].clone();
        elsewhere.target.entity = "contact".into();
        assert!(r.write_only(&elsewhere).is_empty());
    }

    #[test]
    fn a_fields_strategy_follows_its_owner_unless_given() {
        let r = rules(|_| {});
        let rule = &r.rules[0];
        let mut f = rule.fields[0].clone();
        f.strategy = None;
        f.owner = None;
        assert_eq!(f.owner_of(rule), Owner::System("kintone".into()));
        assert_eq!(f.strategy_of(rule), Strategy::LocalWins);
        f.owner = Some("helpdesk".into());
        assert_eq!(f.strategy_of(rule), Strategy::ExternalWins);
        f.owner = Some("crm".into());
        assert_eq!(f.strategy_of(rule), Strategy::LocalWins);
        f.owner = Some("shared".into());
        assert_eq!(f.owner_of(rule), Owner::Shared);
        assert_eq!(f.strategy_of(rule), Strategy::LatestValidChange);
        f.strategy = Some(Strategy::ExternalWins);
        assert_eq!(f.strategy_of(rule), Strategy::ExternalWins);
    }
}
