//! The kintone data model: apps with a field schema, and records stored per app.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::query::is_number;

/// The host used in record URLs of webhook payloads.
const KINTONE_HOST: &str = "https://sandbox.cybozu.com";

/// The system fields that every record carries, as (code, type).
pub(crate) const SYSTEM_FIELDS: [(&str, &str); 5] = [
    ("$id", "__ID__"),
    ("$revision", "__REVISION__"),
    ("レコード番号", "RECORD_NUMBER"),
    ("作成日時", "CREATED_TIME"),
    ("更新日時", "UPDATED_TIME"),
];

#[derive(Default)]
pub(crate) struct KintoneState {
    pub(crate) apps: BTreeMap<u64, App>,
}

/// A kintone app: its schema, settings and records.
#[derive(Clone, Debug)]
pub(crate) struct App {
    pub(crate) id: u64,
    pub(crate) name: String,
    /// The user-defined fields in schema order, as (code, type).
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) title_field: Option<String>,
    pub(crate) webhook_url: Option<String>,
    pub(crate) records: BTreeMap<u64, StoredRecord>,
    pub(crate) next_id: u64,
    /// The options of choice fields that declare them; a written value must be one.
    pub(crate) options: BTreeMap<String, Vec<String>>,
    /// The fields marked required (shown by the form API).
    pub(crate) required: BTreeSet<String>,
    /// The form's revision: raised by every field change.
    pub(crate) form_revision: u64,
}

/// A stored record; only user-defined values are kept, system fields are derived.
#[derive(Clone, Debug)]
pub(crate) struct StoredRecord {
    pub(crate) id: u64,
    pub(crate) revision: u64,
    pub(crate) values: Map<String, Value>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

/// Whether a field type holds an array value.
fn is_array_type(field_type: &str) -> bool {
    matches!(
        field_type,
        "CHECK_BOX"
            | "MULTI_SELECT"
            | "USER_SELECT"
            | "ORGANIZATION_SELECT"
            | "GROUP_SELECT"
            | "CATEGORY"
            | "FILE"
            | "SUBTABLE"
            | "STATUS_ASSIGNEE"
    )
}

fn default_value(field_type: &str) -> Value {
    if is_array_type(field_type) {
        Value::Array(Vec::new())
    } else {
        Value::String(String::new())
    }
}

/// Appends a validation message under `key` in kintone's `errors` shape.
pub(crate) fn add_error(errors: &mut Map<String, Value>, key: String, message: &str) {
    let entry = errors.entry(key).or_insert_with(|| json!({"messages": []}));
    if let Some(Value::Array(messages)) = entry.get_mut("messages") {
        messages.push(Value::String(message.to_owned()));
    }
}

/// Checks and normalizes one written value for a field of `field_type`.
fn normalize(field_type: &str, value: &Value) -> Result<Value, &'static str> {
    if is_array_type(field_type) {
        return match value {
            Value::Null => Ok(Value::Array(Vec::new())),
            Value::Array(items) => {
                let strings_only = matches!(field_type, "CHECK_BOX" | "MULTI_SELECT");
                if strings_only && !items.iter().all(Value::is_string) {
                    Err("配列の要素は文字列でなければなりません。")
                } else {
                    Ok(value.clone())
                }
            }
            _ => Err("配列を指定してください。"),
        };
    }
    let text = match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) if field_type != "NUMBER" => flag.to_string(),
        _ if field_type == "NUMBER" => return Err("数字でなければなりません。"),
        _ => return Err("文字列を指定してください。"),
    };
    if field_type == "NUMBER" && !text.is_empty() && !is_number(&text) {
        return Err("数字でなければなりません。");
    }
    Ok(Value::String(text))
}

impl App {
    pub(crate) fn new(
        id: u64,
        name: String,
        fields: Vec<(String, String)>,
        title_field: Option<String>,
        webhook_url: Option<String>,
    ) -> App {
        App {
            id,
            name,
            fields,
            title_field,
            webhook_url,
            records: BTreeMap::new(),
            next_id: 1,
            options: BTreeMap::new(),
            required: BTreeSet::new(),
            form_revision: 1,
        }
    }

    /// The form as `app/form/fields.json` shows it: the user-defined fields and the
    /// system fields a form has (not `$id` and `$revision`).
    pub(crate) fn form_fields(&self) -> Value {
        let mut properties = Map::new();
        let system = SYSTEM_FIELDS
            .iter()
            .filter(|(code, _)| !code.starts_with('$'))
            .map(|(code, t)| ((*code).to_owned(), (*t).to_owned()));
        for (code, field_type) in self.fields.iter().cloned().chain(system) {
            let mut field = json!({
                "type": field_type,
                "code": code,
                "label": code,
                "noLabel": false,
                "required": self.required.contains(&code),
            });
            if let Some(options) = self.options.get(&code) {
                let options: Map<String, Value> = options
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (o.clone(), json!({"label": o, "index": i.to_string()})))
                    .collect();
                field["options"] = Value::Object(options);
            }
            properties.insert(code, field);
        }
        json!({"properties": properties, "revision": self.form_revision.to_string()})
    }

    /// Renames, retypes or re-options a user-defined field, keeping every record's
    /// value (as kintone keeps them when a field code is changed).
    pub(crate) fn change_field(
        &mut self,
        code: &str,
        new_code: Option<&str>,
        new_type: Option<&str>,
        options: Option<Vec<String>>,
        required: Option<bool>,
    ) -> Result<(), String> {
        let Some(at) = self.fields.iter().position(|(c, _)| c == code) else {
            return Err(format!("the app has no field `{code}`"));
        };
        if let Some(to) = new_code.filter(|to| *to != code) {
            if self.field_type(to).is_some() {
                return Err(format!("the app already has a field `{to}`"));
            }
            self.fields[at].0 = to.to_owned();
            for record in self.records.values_mut() {
                if let Some(value) = record.values.remove(code) {
                    record.values.insert(to.to_owned(), value);
                }
            }
            if let Some(o) = self.options.remove(code) {
                self.options.insert(to.to_owned(), o);
            }
            if self.required.remove(code) {
                self.required.insert(to.to_owned());
            }
            if self.title_field.as_deref() == Some(code) {
                self.title_field = Some(to.to_owned());
            }
        }
        let code = self.fields[at].0.clone();
        if let Some(t) = new_type {
            self.fields[at].1 = t.to_ascii_uppercase();
        }
        if let Some(options) = options {
            self.options.insert(code.clone(), options);
        }
        match required {
            Some(true) => {
                self.required.insert(code);
            }
            Some(false) => {
                self.required.remove(&code);
            }
            None => {}
        }
        self.form_revision += 1;
        Ok(())
    }

    /// The type of a user-defined or system field, or `None` when the app has no such field.
    pub(crate) fn field_type(&self, code: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == code)
            .map(|(_, field_type)| field_type.as_str())
            .or_else(|| {
                SYSTEM_FIELDS
                    .iter()
                    .find(|(field, _)| *field == code)
                    .map(|(_, field_type)| *field_type)
            })
    }

    /// Renders a record in kintone's shape: every field of the schema, then the system fields.
    pub(crate) fn render(&self, record: &StoredRecord) -> Map<String, Value> {
        let mut rendered = Map::new();
        for (code, field_type) in &self.fields {
            let value = record
                .values
                .get(code)
                .cloned()
                .unwrap_or_else(|| default_value(field_type));
            rendered.insert(code.clone(), json!({"type": field_type, "value": value}));
        }
        let id = record.id.to_string();
        let system_values = [
            ("$id", id.clone()),
            ("$revision", record.revision.to_string()),
            ("レコード番号", id),
            ("作成日時", record.created_at.clone()),
            ("更新日時", record.updated_at.clone()),
        ];
        for ((code, field_type), (_, value)) in SYSTEM_FIELDS.iter().zip(system_values) {
            rendered.insert(
                (*code).to_owned(),
                json!({"type": field_type, "value": value}),
            );
        }
        rendered
    }

    /// The record title: the value of the title field, or of the first single-line text field.
    pub(crate) fn title(&self, record: &StoredRecord) -> String {
        let code = self.title_field.as_deref().or_else(|| {
            self.fields
                .iter()
                .find(|(_, field_type)| field_type == "SINGLE_LINE_TEXT")
                .map(|(code, _)| code.as_str())
        });
        let Some(code) = code else {
            return String::new();
        };
        match self
            .render(record)
            .get(code)
            .and_then(|field| field.get("value"))
        {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }

    pub(crate) fn record_url(&self, id: u64) -> String {
        format!("{KINTONE_HOST}/k/{}/show#record={id}", self.id)
    }

    /// The `app` object of webhook payloads.
    pub(crate) fn summary(&self) -> Value {
        json!({"id": self.id.to_string(), "name": self.name})
    }

    /// The app as the admin API shows it.
    pub(crate) fn to_admin_json(&self) -> Value {
        let fields: Map<String, Value> = self
            .fields
            .iter()
            .map(|(code, field_type)| (code.clone(), Value::String(field_type.clone())))
            .collect();
        json!({
            "app": self.id,
            "name": self.name,
            "fields": fields,
            "title_field": self.title_field,
            "webhook_url": self.webhook_url,
            "records": self.records.len(),
        })
    }

    /// Whether a normalized value is allowed by the field's options (an empty value
    /// always is; a field without declared options takes anything).
    fn offers(&self, code: &str, value: &Value) -> bool {
        let Some(options) = self.options.get(code) else {
            return true;
        };
        let ok = |v: &Value| {
            v.as_str()
                .is_none_or(|t| t.is_empty() || options.iter().any(|o| o == t))
        };
        match value {
            Value::Array(items) => items.iter().all(ok),
            other => ok(other),
        }
    }

    /// Validates a written record (`{code: {"value": V}}`) and returns its normalized values.
    ///
    /// Problems are added to `errors` under `{prefix}.{code}.value`. System fields in the input
    /// are ignored, as they cannot be written.
    pub(crate) fn validate(
        &self,
        input: Option<&Value>,
        prefix: &str,
        errors: &mut Map<String, Value>,
    ) -> Map<String, Value> {
        let mut values = Map::new();
        let entries = match input {
            None | Some(Value::Null) => return values,
            Some(Value::Object(entries)) => entries,
            Some(_) => {
                add_error(
                    errors,
                    prefix.to_owned(),
                    "オブジェクトを指定してください。",
                );
                return values;
            }
        };
        for (code, entry) in entries {
            if SYSTEM_FIELDS.iter().any(|(system, _)| system == code) {
                continue;
            }
            let key = format!("{prefix}.{code}.value");
            let Some((_, field_type)) = self.fields.iter().find(|(field, _)| field == code) else {
                add_error(
                    errors,
                    key,
                    &format!("指定されたフィールド（code: {code}）が見つかりません。"),
                );
                continue;
            };
            let Some(value) = entry.as_object().and_then(|entry| entry.get("value")) else {
                add_error(errors, key, "valueを指定してください。");
                continue;
            };
            match normalize(field_type, value) {
                Ok(normalized) if !self.offers(code, &normalized) => {
                    add_error(errors, key, "選択肢にない値です。");
                }
                Ok(normalized) => {
                    values.insert(code.clone(), normalized);
                }
                Err(message) => add_error(errors, key, message),
            }
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        App::new(
            7,
            "Orders".to_owned(),
            vec![
                ("件名".to_owned(), "SINGLE_LINE_TEXT".to_owned()),
                ("金額".to_owned(), "NUMBER".to_owned()),
                ("タグ".to_owned(), "CHECK_BOX".to_owned()),
            ],
            None,
            None,
        )
    }

    #[test]
    fn validation_normalizes_and_reports_errors() {
        let app = app();
        let mut errors = Map::new();
        let values = app.validate(
            Some(&json!({
                "件名": {"value": "Pump"},
                "金額": {"value": 12},
                "タグ": {"value": ["a"]},
                "$id": {"value": "99"},
            })),
            "record",
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            Value::Object(values),
            json!({"件名": "Pump", "金額": "12", "タグ": ["a"]})
        );

        let mut errors = Map::new();
        app.validate(
            Some(&json!({
                "金額": {"value": "twelve"},
                "タグ": {"value": "a"},
                "不明": {"value": "x"},
            })),
            "records[1]",
            &mut errors,
        );
        assert_eq!(
            errors.keys().cloned().collect::<Vec<_>>(),
            vec![
                "records[1].金額.value",
                "records[1].タグ.value",
                "records[1].不明.value"
            ]
        );
    }

    #[test]
    fn rendering_includes_defaults_and_system_fields() {
        let app = app();
        let record = StoredRecord {
            id: 3,
            revision: 2,
            values: Map::new(),
            created_at: "2026-11-22T10:08:00Z".to_owned(),
            updated_at: "2026-11-22T10:09:00Z".to_owned(),
        };
        let rendered = Value::Object(app.render(&record));
        assert_eq!(rendered["タグ"], json!({"type": "CHECK_BOX", "value": []}));
        assert_eq!(rendered["$id"], json!({"type": "__ID__", "value": "3"}));
        assert_eq!(
            rendered["$revision"],
            json!({"type": "__REVISION__", "value": "2"})
        );
        assert_eq!(
            rendered["レコード番号"],
            json!({"type": "RECORD_NUMBER", "value": "3"})
        );
        assert_eq!(rendered["更新日時"]["value"], json!("2026-11-22T10:09:00Z"));
        assert_eq!(app.title(&record), "");
        assert_eq!(
            app.record_url(3),
            "https://sandbox.cybozu.com/k/7/show#record=3"
        );
    }

    #[test]
    fn a_renamed_field_keeps_its_values_and_the_form_shows_options_and_required() {
        let mut app = app();
        app.options
            .insert("タグ".to_owned(), vec!["a".to_owned(), "b".to_owned()]);
        app.records.insert(
            1,
            StoredRecord {
                id: 1,
                revision: 1,
                values: json!({"件名": "Pump"}).as_object().cloned().unwrap(),
                created_at: String::new(),
                updated_at: String::new(),
            },
        );
        app.change_field("件名", Some("タイトル"), None, None, Some(true))
            .unwrap();
        assert_eq!(app.records[&1].values["タイトル"], "Pump");
        assert!(!app.records[&1].values.contains_key("件名"));
        let form = app.form_fields();
        assert_eq!(form["revision"], "2");
        assert_eq!(form["properties"]["タイトル"]["required"], true);
        assert!(form["properties"].get("件名").is_none());
        assert!(form["properties"].get("$id").is_none());
        assert_eq!(form["properties"]["更新日時"]["type"], "UPDATED_TIME");
        assert_eq!(form["properties"]["タグ"]["options"]["b"]["index"], "1");
        assert!(
            app.change_field("nope", Some("x"), None, None, None)
                .is_err()
        );
        assert!(
            app.change_field("金額", Some("タグ"), None, None, None)
                .is_err()
        );
        // A value outside the options is refused, an empty one is not.
        let mut errors = Map::new();
        app.validate(
            Some(&json!({"タグ": {"value": ["a", "c"]}})),
            "record",
            &mut errors,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        let mut errors = Map::new();
        app.validate(Some(&json!({"タグ": {"value": []}})), "record", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
