//! The request and response shapes a rest entity declares, as pure functions: where a
//! record's fields are read from (top level, a nested `fields_pointer` object, declared
//! `field_paths` — nested objects or arrays of `{id, value}`), how a write's body is
//! built (the same places, inside the `body_pointer` envelope), a search body filled in,
//! and what a bulk answer says of each update.

use domain::record::{Fields, value_text};
use domain::rules::{BulkResults, BulkUpdate, FieldPath, RestEntity};
use serde_json::{Map, Value};

/// A record's fields: its top-level keys, the keys of its `fields_pointer` object (a
/// top-level key of the same name wins) and each declared field path that holds a value.
pub fn read_fields(entity: &RestEntity, record: &Value) -> Option<Fields> {
    let mut fields = record.as_object()?.clone();
    if !entity.fields_pointer.is_empty()
        && let Some(nested) = record
            .pointer(&entity.fields_pointer)
            .and_then(Value::as_object)
    {
        for (k, v) in nested {
            fields.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for (name, path) in &entity.field_paths {
        if let Some(v) = read_path(path, record) {
            fields.insert(name.clone(), v.clone());
        }
    }
    Some(fields)
}

/// The value a field path points at, if the record has it.
fn read_path<'a>(path: &FieldPath, record: &'a Value) -> Option<&'a Value> {
    let at = record.pointer(&path.pointer)?;
    match &path.id {
        None => Some(at),
        Some(id) => at
            .as_array()?
            .iter()
            .find(|e| e.get(&path.id_key).is_some_and(|v| same_id(v, id)))?
            .get(&path.value_key),
    }
}

/// Ids compare as text, so that `360001` and `"360001"` are one id.
fn same_id(a: &Value, b: &Value) -> bool {
    a == b || (value_text(a).is_some() && value_text(a) == value_text(b))
}

/// The fields of a write as the API wants them: declared field paths in their places,
/// the rest at the top level, all inside the `body_pointer` envelope.
pub fn write_body(entity: &RestEntity, fields: &Fields) -> Value {
    envelope(&entity.body_pointer, place(entity, fields))
}

/// The fields as one object of the API's shape, without the envelope.
pub fn place(entity: &RestEntity, fields: &Fields) -> Value {
    let mut body = Value::Object(Map::new());
    for (name, value) in fields {
        match entity.field_paths.get(name) {
            None => {
                body[name.as_str()] = value.clone();
            }
            Some(path) => {
                let slot = slot(&mut body, &path.pointer);
                match &path.id {
                    None => *slot = value.clone(),
                    Some(id) => {
                        if !slot.is_array() {
                            *slot = Value::Array(vec![]);
                        }
                        let mut element = Map::new();
                        element.insert(path.id_key.clone(), id.clone());
                        element.insert(path.value_key.clone(), value.clone());
                        if let Some(list) = slot.as_array_mut() {
                            list.push(Value::Object(element));
                        }
                    }
                }
            }
        }
    }
    body
}

/// The place a JSON pointer names inside `body`, making the objects on the way.
fn slot<'a>(body: &'a mut Value, pointer: &str) -> &'a mut Value {
    let mut at = body;
    for key in pointer.split('/').skip(1) {
        let key = key.replace("~1", "/").replace("~0", "~");
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        at = at
            .as_object_mut()
            .expect("made an object above")
            .entry(key)
            .or_insert(Value::Null);
    }
    at
}

/// `inner` placed at the JSON pointer `pointer` of an otherwise empty body (`""`: `inner`
/// itself).
pub fn envelope(pointer: &str, inner: Value) -> Value {
    let mut body = inner;
    let keys: Vec<&str> = pointer.split('/').skip(1).collect();
    for key in keys.into_iter().rev() {
        let key = key.replace("~1", "/").replace("~0", "~");
        body = serde_json::json!({ key: body });
    }
    body
}

/// A bulk update's body: each update's fields in the entity's shape, beside its id or
/// under `fields_key`, the list at `list_key` (a key, or a JSON pointer).
pub fn bulk_body(entity: &RestEntity, bulk: &BulkUpdate, updates: &[(String, Fields)]) -> Value {
    let list: Vec<Value> = updates
        .iter()
        .map(|(id, fields)| {
            let id = match id.parse::<i64>() {
                Ok(n) if !bulk.string_ids => Value::from(n),
                _ => Value::String(id.clone()),
            };
            let placed = place(entity, fields);
            let mut item = if bulk.fields_key.is_empty() {
                placed
            } else {
                serde_json::json!({ bulk.fields_key.as_str(): placed })
            };
            item[bulk.id_key.as_str()] = id;
            item
        })
        .collect();
    if bulk.list_key.starts_with('/') {
        envelope(&bulk.list_key, Value::Array(list))
    } else {
        serde_json::json!({ bulk.list_key.as_str(): list })
    }
}

/// A search body template with `{field}` and `{value}` replaced inside every string.
pub fn fill(template: &Value, field: &str, value: &str) -> Value {
    match template {
        Value::String(s) => Value::String(s.replace("{field}", field).replace("{value}", value)),
        Value::Array(a) => Value::Array(a.iter().map(|v| fill(v, field, value)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), fill(v, field, value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What a bulk answer says of each update, in the order of `ids`: confirmed, or why not.
pub fn bulk_outcome(
    results: &BulkResults,
    answer: &Value,
    ids: &[String],
) -> Vec<Result<(), String>> {
    let text = |v: &Value, p: &Option<String>| {
        p.as_deref().and_then(|p| v.pointer(p)).and_then(value_text)
    };
    let mut confirmed = std::collections::BTreeSet::new();
    let mut refused = std::collections::BTreeMap::new();
    for r in answer
        .pointer(&results.list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(id) = r.pointer(&results.id).and_then(value_text) else {
            continue;
        };
        let ok = match &results.ok {
            None => true,
            Some(p) => r.pointer(p) == Some(&Value::Bool(true)),
        };
        if ok {
            confirmed.insert(id);
        } else {
            let why = text(r, &results.message).unwrap_or_else(|| "refused".to_owned());
            refused.insert(id, why);
        }
    }
    for e in results
        .errors
        .as_deref()
        .and_then(|p| answer.pointer(p))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let why = text(e, &results.message).unwrap_or_else(|| e.to_string());
        let ids = results
            .error_ids
            .as_deref()
            .and_then(|p| e.pointer(p))
            .and_then(Value::as_array);
        for id in ids.into_iter().flatten().filter_map(value_text) {
            refused.entry(id).or_insert_with(|| why.clone());
        }
    }
    ids.iter()
        .map(|id| {
            if let Some(why) = refused.get(id) {
                Err(why.clone())
            } else if confirmed.contains(id) {
                Ok(())
            } else {
                Err("the answer has no result for it".to_owned())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(extra: Value) -> RestEntity {
        let mut e = json!({
            "get": "/t/{id}", "search": "/t?{field}={value}", "create": "/t", "update": "/t/{id}"
        });
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        serde_json::from_value(e).unwrap()
    }

    fn fields(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn fields_go_inside_the_declared_envelope() {
        let f = json!({"subject": "A"});
        assert_eq!(envelope("", f.clone()), json!({"subject": "A"}));
        assert_eq!(
            envelope("/ticket", f.clone()),
            json!({"ticket": {"subject": "A"}})
        );
        assert_eq!(
            envelope("/data/attributes", f.clone()),
            json!({"data": {"attributes": {"subject": "A"}}})
        );
        assert_eq!(envelope("/a~1b", f), json!({"a/b": {"subject": "A"}}));
    }

    #[test]
    fn array_custom_fields_are_read_and_written_by_id() {
        let e = entity(json!({
            "body_pointer": "/ticket",
            "field_paths": {
                "po": {"pointer": "/custom_fields", "id": 360001},
                "site": {"pointer": "/custom_fields", "id": "360002"}
            }
        }));
        let record = json!({"id": 7, "subject": "Pump", "custom_fields": [
            {"id": 360002, "value": "Osaka"}, {"id": 360001, "value": "PO-9"}, {"id": 5, "value": "x"}
        ]});
        let read = read_fields(&e, &record).unwrap();
        assert_eq!(read["po"], "PO-9");
        assert_eq!(read["site"], "Osaka", "a string id matches a number id");
        assert_eq!(read["subject"], "Pump");
        let body = write_body(
            &e,
            &fields(json!({"subject": "Pump", "po": "PO-9", "site": null})),
        );
        assert_eq!(
            body,
            json!({"ticket": {"subject": "Pump", "custom_fields": [
                {"id": 360001, "value": "PO-9"}, {"id": "360002", "value": null}
            ]}})
        );
        // A record without the array, or without the element, has no value for it.
        let read = read_fields(
            &e,
            &json!({"id": 8, "custom_fields": [{"id": 5, "value": 1}]}),
        )
        .unwrap();
        assert!(!read.contains_key("po") && !read.contains_key("site"));
    }

    #[test]
    fn nested_objects_and_a_fields_pointer() {
        let e = entity(json!({
            "body_pointer": "/properties",
            "fields_pointer": "/properties",
            "field_paths": {"city": {"pointer": "/address/city"}, "key": {"pointer": "/id_key", "id_key": "k", "value_key": "v", "id": 1}}
        }));
        let record = json!({"id": "51", "updatedAt": "2026-11-30T00:00:00Z",
            "properties": {"subject": "Pump", "id": "not this one", "hs_object_id": "51"},
            "address": {"city": "Kyoto"}, "id_key": [{"k": 1, "v": "yes"}]});
        let read = read_fields(&e, &record).unwrap();
        assert_eq!(read["subject"], "Pump");
        assert_eq!(read["id"], "51", "a top-level key wins");
        assert_eq!(read["city"], "Kyoto");
        assert_eq!(read["key"], "yes", "declared id and value keys");
        assert_eq!(read["updatedAt"], "2026-11-30T00:00:00Z");
        let body = write_body(&e, &fields(json!({"subject": "Pump", "city": "Nara"})));
        assert_eq!(
            body,
            json!({"properties": {"subject": "Pump", "address": {"city": "Nara"}}})
        );
    }

    #[test]
    fn a_search_body_is_filled_in_every_string() {
        let t = json!({"filterGroups": [{"filters": [{"propertyName": "{field}", "operator": "EQ", "value": "{value}"}]}], "limit": 10});
        assert_eq!(
            fill(&t, "external_id", "WO-1 \"x\""),
            json!({"filterGroups": [{"filters": [{"propertyName": "external_id", "operator": "EQ", "value": "WO-1 \"x\""}]}], "limit": 10})
        );
    }

    #[test]
    fn bulk_bodies_take_the_declared_shape() {
        let e = entity(json!({"field_paths": {"po": {"pointer": "/custom_fields", "id": 7}}}));
        let updates = vec![
            (
                "12".to_owned(),
                fields(json!({"subject": "A", "po": "PO-1"})),
            ),
            ("x-3".to_owned(), fields(json!({"subject": "B"}))),
        ];
        let bulk = |v: Value| -> BulkUpdate { serde_json::from_value(v).unwrap() };
        // The defaults: {"updates": [{"id", "fields"}]}, numeric ids as numbers.
        assert_eq!(
            bulk_body(&e, &bulk(json!({"path": "/b"})), &updates),
            json!({"updates": [
                {"id": 12, "fields": {"subject": "A", "custom_fields": [{"id": 7, "value": "PO-1"}]}},
                {"id": "x-3", "fields": {"subject": "B"}}
            ]})
        );
        // HubSpot: inputs, string ids, properties.
        assert_eq!(
            bulk_body(
                &e,
                &bulk(
                    json!({"path": "/b", "list_key": "inputs", "fields_key": "properties", "string_ids": true})
                ),
                &updates[..1]
            ),
            json!({"inputs": [{"id": "12", "properties": {"subject": "A", "custom_fields": [{"id": 7, "value": "PO-1"}]}}]})
        );
        // Flat items in a list deeper in the body.
        assert_eq!(
            bulk_body(
                &e,
                &bulk(
                    json!({"path": "/b", "list_key": "/data/items", "fields_key": "", "id_key": "ticket_id"})
                ),
                &updates[1..]
            ),
            json!({"data": {"items": [{"ticket_id": "x-3", "subject": "B"}]}})
        );
    }

    fn results(v: Value) -> BulkResults {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_bulk_answer_confirms_each_update_or_says_why_not() {
        let ids: Vec<String> = ["1", "2", "99"].map(String::from).to_vec();
        // Results beside errors naming the ids they concern.
        let r = results(
            json!({"list": "/results", "errors": "/errors", "error_ids": "/context/ids", "message": "/message"}),
        );
        let answer = json!({"status": "COMPLETE", "results": [{"id": "2"}, {"id": "1"}],
            "errors": [{"message": "not found", "context": {"ids": ["99"]}}]});
        assert_eq!(
            bulk_outcome(&r, &answer, &ids),
            vec![Ok(()), Ok(()), Err("not found".to_owned())]
        );
        // An array of results with a success flag.
        let r = results(json!({"list": "", "ok": "/success", "message": "/errors/0/message"}));
        let answer = json!([{"id": 1, "success": true}, {"id": 2, "success": false, "errors": [{"message": "bad status"}]}]);
        assert_eq!(
            bulk_outcome(&r, &answer, &ids),
            vec![
                Ok(()),
                Err("bad status".to_owned()),
                Err("the answer has no result for it".to_owned())
            ]
        );
        // An answer of another shape confirms nothing.
        assert!(
            bulk_outcome(&r, &json!({"job": 1}), &ids)
                .iter()
                .all(Result::is_err)
        );
    }
}
