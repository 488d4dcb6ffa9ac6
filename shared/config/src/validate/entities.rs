//! A rest system's checks: at least one entity, each entity's pointers, URL templates,
//! search, field paths, bulk update and update method, and its webhook routing.

use domain::rules::{BulkUpdate, RestEntity, SystemSpec};

use super::{Problems, valid_pointer};

/// A rest system's entities and webhook routing, at `at` (`systems.{name}`).
pub(super) fn rest(out: &mut Problems, at: &str, sys: &SystemSpec) {
    if sys.entities.is_empty() {
        out.bad(
            format!("{at}.entities"),
            "a rest system needs at least one entity".into(),
        );
    }
    if sys.webhook.is_some() && sys.webhook_routing.is_none() {
        out.bad(
            format!("{at}.webhook_routing"),
            "a rest system that sends webhooks needs webhook_routing".into(),
        );
    }
    for (ename, e) in &sys.entities {
        entity(out, &format!("{at}.entities.{ename}"), e);
    }
    webhook_routing(out, at, sys);
}

/// One entity, at `eat` (`systems.{name}.entities.{entity}`).
fn entity(out: &mut Problems, eat: &str, e: &RestEntity) {
    for (k, p) in [
        ("record_pointer", &e.record_pointer),
        ("list_pointer", &e.list_pointer),
        ("id_pointer", &e.id_pointer),
    ] {
        if !valid_pointer(p) {
            out.bad(
                format!("{eat}.{k}"),
                format!("\"{p}\" is not a JSON pointer (it starts with '/')"),
            );
        }
    }
    if !e.get.contains("{id}") {
        out.bad(format!("{eat}.get"), "the template needs {id}".into());
    }
    if !e.update.contains("{id}") {
        out.bad(format!("{eat}.update"), "the template needs {id}".into());
    }
    match &e.search_body {
        None if !e.search.contains("{value}") => {
            out.bad(format!("{eat}.search"), "the template needs {value}".into());
        }
        Some(b) if !b.is_object() => out.bad(
            format!("{eat}.search_body"),
            "a JSON object, with {value} inside one of its strings".into(),
        ),
        Some(b) if !b.to_string().contains("{value}") => out.bad(
            format!("{eat}.search_body"),
            "the body needs {value} inside one of its strings".into(),
        ),
        _ => {}
    }
    if !e.fields_pointer.is_empty() && !valid_pointer(&e.fields_pointer) {
        out.bad(
            format!("{eat}.fields_pointer"),
            format!(
                "\"{}\" is not a JSON pointer (it starts with '/')",
                e.fields_pointer
            ),
        );
    }
    for (name, path) in &e.field_paths {
        if path.pointer.is_empty() || !valid_pointer(&path.pointer) {
            out.bad(
                format!("{eat}.field_paths.{name}.pointer"),
                format!(
                    "\"{}\" is not a JSON pointer to somewhere inside the record (it starts with '/')",
                    path.pointer
                ),
            );
        }
        if let Some(id) = &path.id
            && !(id.is_number() || id.is_string())
        {
            out.bad(
                format!("{eat}.field_paths.{name}.id"),
                "an element's id is a number or a string".into(),
            );
        }
    }
    if let Some(b) = &e.bulk_update {
        bulk_update(out, eat, b);
    }
    if !["PATCH", "PUT", "POST"].contains(&e.update_method.as_str()) {
        out.bad(
            format!("{eat}.update_method"),
            "use PATCH, PUT or POST".into(),
        );
    }
}

/// An entity's `bulk_update`: its method, its size and where its answer says what.
fn bulk_update(out: &mut Problems, eat: &str, b: &BulkUpdate) {
    if !["POST", "PUT", "PATCH"].contains(&b.method.as_str()) {
        out.bad(
            format!("{eat}.bulk_update.method"),
            "use POST, PUT or PATCH".into(),
        );
    }
    if b.max == 0 {
        out.bad(format!("{eat}.bulk_update.max"), "at least 1".into());
    }
    if let Some(r) = &b.results {
        let pointers = [
            ("list", Some(&r.list)),
            ("id", Some(&r.id)),
            ("ok", r.ok.as_ref()),
            ("message", r.message.as_ref()),
            ("errors", r.errors.as_ref()),
            ("error_ids", r.error_ids.as_ref()),
        ];
        for (k, p) in pointers {
            if let Some(p) = p
                && !valid_pointer(p)
            {
                out.bad(
                    format!("{eat}.bulk_update.results.{k}"),
                    format!("\"{p}\" is not a JSON pointer (it starts with '/')"),
                );
            }
        }
        if r.errors.is_some() != r.error_ids.is_some() {
            out.bad(
                format!("{eat}.bulk_update.results"),
                "errors and error_ids go together: where the errors are, and which ids each names"
                    .into(),
            );
        }
    }
}

/// `webhook_routing`: where a webhook's event type and record id are.
fn webhook_routing(out: &mut Problems, at: &str, sys: &SystemSpec) {
    if let Some(r) = &sys.webhook_routing {
        for (k, p) in [("event_type", &r.event_type), ("record_id", &r.record_id)] {
            if !p.starts_with('/') {
                out.bad(
                    format!("{at}.webhook_routing.{k}"),
                    format!("\"{p}\" is not a JSON pointer (it starts with '/')"),
                );
            }
        }
    }
}
