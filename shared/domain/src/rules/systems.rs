//! The systems of `sync-rules.json`: which connector speaks to each, how it
//! authenticates both ways, its limits, budget, write windows and schema check, and
//! where a `rest` system's webhooks keep what routing needs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RestEntity;

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
