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

mod fields;
mod identity;
mod rest;
mod systems;

pub use fields::{FieldMapping, Transform};
pub use identity::{IdentitySpec, Variant};
pub use rest::{BulkResults, BulkUpdate, FieldPath, RestEntity};
pub use systems::{
    ApiAuth, Budget, Limits, SchemaCheckSpec, SystemKind, SystemSpec, WebhookAuth, WebhookRouting,
};

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

    /// Every rule's name, in file order.
    pub fn rule_names(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.name.clone()).collect()
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
mod tests;
