//! A rule's policies: what a deletion on either side does (`on_delete`,
//! `on_target_delete` and their flags), and the write-back of the target's id.

use domain::rules::{OnDelete, OnTargetDelete, RuleSpec, SystemKind, SystemSpec};

use super::Problems;

/// `on_delete`, `on_target_delete` and their flags, at `at` (`rules[i]`).
pub(super) fn deletes(
    out: &mut Problems,
    at: &str,
    rule: &RuleSpec,
    source: Option<&SystemSpec>,
    target: Option<&SystemSpec>,
) {
    match (&rule.on_delete, &rule.deleted_flag) {
        (OnDelete::Flag, None) => out.bad(
            format!("{at}.deleted_flag"),
            "on_delete: flag needs deleted_flag: {\"field\": ..., \"value\": ...}".into(),
        ),
        (OnDelete::Flag, Some(f)) if f.field.trim().is_empty() => out.bad(
            format!("{at}.deleted_flag.field"),
            "name the target field to write".into(),
        ),
        (OnDelete::Flag, Some(_)) | (_, None) => {}
        (_, Some(_)) => out.bad(
            format!("{at}.deleted_flag"),
            "deleted_flag is only written with on_delete: flag".into(),
        ),
    }
    match (&rule.on_target_delete, &rule.target_deleted_flag) {
        (OnTargetDelete::Flag, None) => out.bad(
            format!("{at}.target_deleted_flag"),
            "on_target_delete: flag needs target_deleted_flag: {\"field\": ..., \"value\": ...} (a source field)".into(),
        ),
        (OnTargetDelete::Flag, Some(f)) if f.field.trim().is_empty() => out.bad(
            format!("{at}.target_deleted_flag.field"),
            "name the source field to write".into(),
        ),
        (OnTargetDelete::Flag, Some(_)) | (_, None) => {}
        (_, Some(_)) => out.bad(
            format!("{at}.target_deleted_flag"),
            "target_deleted_flag is only written with on_target_delete: flag".into(),
        ),
    }
    if rule.on_target_delete == OnTargetDelete::DeleteSource
        && let Some(s) = source.filter(|s| s.kind == SystemKind::Rest)
        && s.entities
            .get(&rule.source.app)
            .is_some_and(|e| e.delete.is_none())
    {
        out.bad(
            format!("{at}.on_target_delete"),
            format!(
                "delete_source deletes through the entity's `delete` template: declare it on entity \"{}\" of system \"{}\"",
                rule.source.app, rule.source.system
            ),
        );
    }
    if rule.on_target_delete != OnTargetDelete::Ignore && !rule.both_ways() {
        out.bad(
            format!("{at}.on_target_delete"),
            "only a two-way rule reads its target record and sees it deleted: set \"direction\": \"both\", or remove this".into(),
        );
    }
    if rule.on_delete == OnDelete::DeleteTarget
        && let Some(t) = target.filter(|t| t.kind == SystemKind::Rest)
        && t.entities
            .get(&rule.target.entity)
            .is_some_and(|e| e.delete.is_none())
    {
        out.bad(
            format!("{at}.on_delete"),
            format!(
                "delete_target deletes through the entity's `delete` template: declare it on entity \"{}\" of system \"{}\"",
                rule.target.entity, rule.target.system
            ),
        );
    }
}

/// `write_back`: a field of its own in a kintone source.
pub(super) fn write_back(
    out: &mut Problems,
    at: &str,
    rule: &RuleSpec,
    source: Option<&SystemSpec>,
) {
    if let Some(wb) = &rule.write_back {
        if wb.field.trim().is_empty() {
            out.bad(format!("{at}.write_back.field"), "empty field code".into());
        }
        if wb.field == rule.identity.source_field {
            out.bad(
                format!("{at}.write_back.field"),
                "writing back into the lookup field would change the record's identity".into(),
            );
        }
        if rule.fields.iter().any(|f| f.source == wb.field) {
            out.bad(
                format!("{at}.write_back.field"),
                "a mapped source field cannot also receive the write-back".into(),
            );
        }
        if source.is_some_and(|s| s.kind != SystemKind::Kintone) {
            out.bad(
                format!("{at}.write_back"),
                "write-back is supported for kintone sources".into(),
            );
        }
    }
}
