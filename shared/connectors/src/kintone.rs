//! kintone's REST API: records are objects of field code → `{"type", "value"}`,
//! numbers are strings, `$id` and `$revision` are system fields, errors are
//! `{"code", "id", "message", "errors"}`, the token goes in `X-Cybozu-API-Token`.

use std::sync::Arc;
use std::time::Duration;

use domain::record::{Fields, SourceRecord, TargetRecord};
use reqwest::{Method, RequestBuilder};
use serde_json::{Map, Value, json};

use crate::http::Http;
use crate::{ConnectorError, RecordApi, Redactor, Reply};

/// A kintone domain.
pub struct Kintone {
    http: Http,
}

impl Kintone {
    /// A connector for the kintone at `base` (e.g. `https://example.cybozu.com`).
    pub fn new(
        http: reqwest::Client,
        system: &str,
        base: &str,
        token: &str,
        timeout: Duration,
    ) -> Kintone {
        let mut own: Vec<String> = token.split(',').map(str::to_owned).collect();
        own.push(token.to_owned());
        let auth = Some(("X-Cybozu-API-Token".to_owned(), token.to_owned()));
        Kintone {
            http: Http::new(http, system, base, auth, own, timeout),
        }
    }

    /// Redacts these secrets (every configured one) from upstream errors, instead of
    /// only this connector's token.
    pub fn with_redactor(mut self, redactor: Arc<Redactor>) -> Kintone {
        self.http.set_redactor(redactor);
        self
    }

    /// The system's name in the rules.
    pub fn system(&self) -> &str {
        self.http.system()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, path)
    }

    async fn send(&self, req: RequestBuilder) -> Result<Value, ConnectorError> {
        let answer = self.http.send(req).await?;
        if answer.is_success() {
            return Ok(answer.body);
        }
        let code = answer.body["code"].as_str().unwrap_or_default();
        if answer.status == 409 && code == "GAIA_CO02" {
            return Err(ConnectorError::RevisionConflict {
                system: self.system().to_owned(),
            });
        }
        Err(self.http.error(&answer, &error_message(&answer.body)))
    }

    /// GET `record.json`; `None` for kintone's "record not found" (`GAIA_RE01`).
    pub async fn get_record(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Option<SourceRecord>, ConnectorError> {
        let req = self
            .request(Method::GET, "/k/v1/record.json")
            .query(&[("app", app), ("id", id)]);
        match self.send(req).await {
            Ok(body) => from_kintone(&body["record"])
                .map(Some)
                .ok_or_else(|| self.bad("record.json without a record")),
            Err(ConnectorError::Rejected {
                status: 404,
                message,
                ..
            }) if message.starts_with("GAIA_RE01") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET `records.json` with `$id in (…)`: the records of up to 100 ids in one
    /// request (those that exist).
    pub async fn records_by_ids(
        &self,
        app: &str,
        ids: &[&str],
    ) -> Result<Vec<SourceRecord>, ConnectorError> {
        let ids: Vec<i64> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let query = format!("$id in ({}) limit {}", list.join(", "), ids.len().min(500));
        let req = self
            .request(Method::GET, "/k/v1/records.json")
            .query(&[("app", app), ("query", query.as_str())]);
        let body = self.send(req).await?;
        body["records"]
            .as_array()
            .ok_or_else(|| self.bad("records.json without records"))?
            .iter()
            .map(|r| from_kintone(r).ok_or_else(|| self.bad("a record without $id")))
            .collect()
    }

    /// GET `records.json` with `field = "value"`.
    pub async fn search(
        &self,
        app: &str,
        field: &str,
        value: &str,
    ) -> Result<Vec<TargetRecord>, ConnectorError> {
        let query = format!("{field} = \"{}\" limit 500", escape(value));
        let req = self
            .request(Method::GET, "/k/v1/records.json")
            .query(&[("app", app), ("query", query.as_str())]);
        let body = self.send(req).await?;
        let records = body["records"]
            .as_array()
            .ok_or_else(|| self.bad("records.json without records"))?;
        records
            .iter()
            .map(|r| {
                from_kintone(r)
                    .map(|s| TargetRecord {
                        id: s.id,
                        fields: s.fields,
                    })
                    .ok_or_else(|| self.bad("a record without $id"))
            })
            .collect()
    }

    /// POST `record.json`; returns the new id.
    pub async fn create_record(
        &self,
        app: &str,
        fields: &Fields,
    ) -> Result<String, ConnectorError> {
        let req = self
            .request(Method::POST, "/k/v1/record.json")
            .json(&json!({"app": app, "record": to_kintone(fields)}));
        let body = self.send(req).await?;
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.bad("no id in the answer"))
    }

    /// DELETE one record (`records.json` with `ids`): `true` when it was there, `false`
    /// when kintone says it is not (`GAIA_RE01`, already gone).
    pub async fn delete_record(&self, app: &str, id: &str) -> Result<bool, ConnectorError> {
        let req = self
            .request(Method::DELETE, "/k/v1/records.json")
            .query(&[("app", app), ("ids[0]", id)]);
        match self.send(req).await {
            Ok(_) => Ok(true),
            Err(ConnectorError::Rejected {
                status: 404,
                message,
                ..
            }) if message.starts_with("GAIA_RE01") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// PUT `record.json`, with a revision check when `revision` is given; returns the
    /// new revision.
    pub async fn update_record(
        &self,
        app: &str,
        id: &str,
        fields: &Fields,
        revision: Option<i64>,
    ) -> Result<i64, ConnectorError> {
        let mut body = json!({"app": app, "id": id, "record": to_kintone(fields)});
        if let Some(r) = revision {
            body["revision"] = json!(r.to_string());
        }
        let req = self.request(Method::PUT, "/k/v1/record.json").json(&body);
        let answer = self.send(req).await?;
        answer["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| self.bad("no revision in the answer"))
    }

    /// Up to `limit` (at most 500) records of the app whose update-time field (its
    /// code given with `since`) is at or after `since` (all of them without it) and
    /// whose `$id` is above `after`, in `$id` order, with their id and revision only,
    /// and with `with_total` how many match in all. Paging by `$id`, not `offset` (which
    /// kintone caps at 10,000).
    pub async fn changed(
        &self,
        app: &str,
        since: Option<(chrono::DateTime<chrono::Utc>, &str)>,
        after: i64,
        limit: usize,
        with_total: bool,
    ) -> Result<(Vec<SourceRecord>, Option<u64>), ConnectorError> {
        self.page(app, since, after, limit, with_total, true).await
    }

    /// GET `app/form/fields.json`: the app's fields with their types, options and
    /// whether they are required. Fields inside a table are left out.
    pub async fn form_fields(&self, app: &str) -> Result<domain::drift::Schema, ConnectorError> {
        let req = self
            .request(Method::GET, "/k/v1/app/form/fields.json")
            .query(&[("app", app)]);
        let body = self.send(req).await?;
        let properties = body["properties"]
            .as_object()
            .ok_or_else(|| self.bad("form/fields.json without properties"))?;
        Ok(properties
            .iter()
            .map(|(code, p)| {
                // kintone keys options by their label, each with its index.
                let mut options: Vec<(u64, String)> = p["options"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(label, v)| {
                                let index = v["index"].as_str().and_then(|i| i.parse().ok());
                                (index.unwrap_or(u64::MAX), label.clone())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                options.sort();
                let shape = domain::drift::FieldShape {
                    field_type: p["type"].as_str().unwrap_or_default().to_owned(),
                    options: options.into_iter().map(|(_, o)| o).collect(),
                    required: p["required"].as_bool().unwrap_or(false),
                };
                (code.clone(), shape)
            })
            .collect())
    }

    /// Whole records with an id above `after`, in id order, at most `limit` (500).
    pub async fn records_page(
        &self,
        app: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<SourceRecord>, ConnectorError> {
        Ok(self.page(app, None, after, limit, false, false).await?.0)
    }

    async fn page(
        &self,
        app: &str,
        since: Option<(chrono::DateTime<chrono::Utc>, &str)>,
        after: i64,
        limit: usize,
        with_total: bool,
        ids_only: bool,
    ) -> Result<(Vec<SourceRecord>, Option<u64>), ConnectorError> {
        let mut query = String::new();
        if let Some((t, field)) = since {
            query.push_str(&format!(
                "{field} >= \"{}\" and ",
                t.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        query.push_str(&format!(
            "$id > {after} order by $id asc limit {}",
            limit.clamp(1, 500)
        ));
        let mut params = vec![
            ("app", app),
            ("query", query.as_str()),
            ("totalCount", if with_total { "true" } else { "false" }),
        ];
        if ids_only {
            params.extend([("fields[0]", "$id"), ("fields[1]", "$revision")]);
        }
        let req = self
            .request(Method::GET, "/k/v1/records.json")
            .query(&params);
        let body = self.send(req).await?;
        let records = body["records"]
            .as_array()
            .ok_or_else(|| self.bad("records.json without records"))?;
        let total = body["totalCount"].as_str().and_then(|t| t.parse().ok());
        let records = records
            .iter()
            .map(|r| from_kintone(r).ok_or_else(|| self.bad("a record without $id")))
            .collect::<Result<_, _>>()?;
        Ok((records, total))
    }

    /// PUT `records.json`: up to 100 records in one all-or-nothing call, without
    /// revision checks.
    pub async fn update_records(
        &self,
        app: &str,
        updates: &[(String, Fields)],
    ) -> Result<(), ConnectorError> {
        let records: Vec<Value> = updates
            .iter()
            .map(|(id, f)| json!({"id": id, "record": to_kintone(f)}))
            .collect();
        let req = self
            .request(Method::PUT, "/k/v1/records.json")
            .json(&json!({"app": app, "records": records}));
        self.send(req).await.map(drop)
    }

    fn bad(&self, message: &str) -> ConnectorError {
        self.http.bad(message)
    }
}

/// One app of a kintone domain: kintone's [`RecordApi`].
pub struct KintoneApp {
    kintone: Arc<Kintone>,
    app: String,
}

impl KintoneApp {
    /// The app `app` of this kintone.
    pub fn new(kintone: Arc<Kintone>, app: &str) -> KintoneApp {
        KintoneApp {
            kintone,
            app: app.to_owned(),
        }
    }

    /// A page cursor: the last record id listed (0 before the first page).
    fn after(&self, after: Option<&str>) -> Result<i64, ConnectorError> {
        match after {
            None => Ok(0),
            Some(a) => a.parse().map_err(|_| {
                ConnectorError::Unknown(format!(
                    "{}: \"{a}\" is not a kintone record id",
                    self.kintone.system()
                ))
            }),
        }
    }
}

impl RecordApi for KintoneApp {
    fn system(&self) -> &str {
        self.kintone.system()
    }

    fn read_many_max(&self) -> Option<usize> {
        Some(100)
    }

    fn bulk_max(&self) -> Option<usize> {
        Some(100)
    }

    fn can_list(&self) -> bool {
        true
    }

    fn fetch<'a>(&'a self, id: &'a str) -> Reply<'a, Option<SourceRecord>> {
        Box::pin(self.kintone.get_record(&self.app, id))
    }

    fn read_many<'a>(&'a self, ids: &'a [&'a str]) -> Reply<'a, Vec<SourceRecord>> {
        Box::pin(self.kintone.records_by_ids(&self.app, ids))
    }

    fn search<'a>(&'a self, field: &'a str, value: &'a str) -> Reply<'a, Vec<TargetRecord>> {
        Box::pin(self.kintone.search(&self.app, field, value))
    }

    fn create_answered<'a>(
        &'a self,
        fields: &'a Fields,
        _idempotency_key: &'a str,
    ) -> Reply<'a, (String, Option<i64>, Option<Fields>)> {
        // kintone answers a new record's revision: 1.
        Box::pin(async move {
            Ok((
                self.kintone.create_record(&self.app, fields).await?,
                Some(1),
                None,
            ))
        })
    }

    fn update_answered<'a>(
        &'a self,
        id: &'a str,
        fields: &'a Fields,
        _idempotency_key: &'a str,
    ) -> Reply<'a, (Option<i64>, Option<Fields>)> {
        Box::pin(async move {
            let rev = self
                .kintone
                .update_record(&self.app, id, fields, None)
                .await?;
            Ok((Some(rev), None))
        })
    }

    fn update_checked<'a>(
        &'a self,
        id: &'a str,
        fields: &'a Fields,
        revision: Option<i64>,
        _idempotency_key: &'a str,
    ) -> Reply<'a, Option<Option<i64>>> {
        Box::pin(async move {
            match self
                .kintone
                .update_record(&self.app, id, fields, revision)
                .await
            {
                Ok(rev) => Ok(Some(Some(rev))),
                Err(ConnectorError::RevisionConflict { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> Reply<'a, bool> {
        Box::pin(self.kintone.delete_record(&self.app, id))
    }

    fn records_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> Reply<'a, Vec<SourceRecord>> {
        Box::pin(async move {
            let after = self.after(after)?;
            self.kintone.records_page(&self.app, after, limit).await
        })
    }

    fn changed<'a>(
        &'a self,
        since: Option<(chrono::DateTime<chrono::Utc>, &'a str)>,
        after: Option<&'a str>,
        limit: usize,
        with_total: bool,
    ) -> Reply<'a, (Vec<SourceRecord>, Option<u64>)> {
        Box::pin(async move {
            let after = self.after(after)?;
            self.kintone
                .changed(&self.app, since, after, limit, with_total)
                .await
        })
    }

    fn schema<'a>(
        &'a self,
        _sample: Option<&'a str>,
    ) -> Reply<'a, Result<domain::drift::Schema, String>> {
        Box::pin(async move { Ok(Ok(self.kintone.form_fields(&self.app).await?)) })
    }

    fn bulk_update<'a>(
        &'a self,
        updates: &'a [(String, Fields)],
        _idempotency_key: &'a str,
    ) -> Reply<'a, Vec<Result<(), String>>> {
        Box::pin(async move {
            self.kintone.update_records(&self.app, updates).await?;
            Ok(updates.iter().map(|_| Ok(())).collect())
        })
    }
}

/// kintone's error body as one line: `CODE: message (field: problem; …)`.
fn error_message(body: &Value) -> String {
    let code = body["code"].as_str().unwrap_or("?");
    let message = body["message"].as_str().unwrap_or("no message");
    let mut details = vec![];
    if let Some(errors) = body["errors"].as_object() {
        for (field, e) in errors {
            let msgs: Vec<&str> = e["messages"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            details.push(format!("{field}: {}", msgs.join(", ")));
        }
    }
    if details.is_empty() {
        format!("{code}: {message}")
    } else {
        format!("{code}: {message} ({})", details.join("; "))
    }
}

/// Escapes a value for a double-quoted string in kintone's query language.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A kintone record (`{code: {type, value}}`) as a domain record.
pub fn from_kintone(record: &Value) -> Option<SourceRecord> {
    let obj = record.as_object()?;
    let id = obj.get("$id")?.get("value")?.as_str()?.to_owned();
    let revision = obj
        .get("$revision")
        .and_then(|r| r.get("value"))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok());
    let fields = obj
        .iter()
        .map(|(code, f)| (code.clone(), f.get("value").cloned().unwrap_or(Value::Null)))
        .collect();
    let changed_at = obj
        .values()
        .find(|f| f.get("type").and_then(Value::as_str) == Some("UPDATED_TIME"))
        .and_then(|f| f.get("value")?.as_str()?.parse().ok());
    Some(SourceRecord {
        id,
        revision,
        changed_at,
        fields,
    })
}

/// A payload record (kintone webhooks carry the same shape) as flat fields.
pub fn payload_fields(record: &Value) -> Fields {
    record
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(code, f)| (code.clone(), f.get("value").cloned().unwrap_or(Value::Null)))
                .collect()
        })
        .unwrap_or_default()
}

/// Domain fields as a kintone record body: numbers become strings, as kintone wants.
pub fn to_kintone(fields: &Fields) -> Value {
    let mut out = Map::new();
    for (code, v) in fields {
        let value = match v {
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(b.to_string()),
            Value::Null => Value::String(String::new()),
            other => other.clone(),
        };
        out.insert(code.clone(), json!({ "value": value }));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_convert_both_ways() {
        let k = json!({
            "$id": {"type": "__ID__", "value": "5"},
            "$revision": {"type": "__REVISION__", "value": "3"},
            "件名": {"type": "SINGLE_LINE_TEXT", "value": "修理"},
            "数量": {"type": "NUMBER", "value": "2"},
            "tags": {"type": "CHECK_BOX", "value": ["a", "b"]}
        });
        let r = from_kintone(&k).unwrap();
        assert_eq!(r.id, "5");
        assert_eq!(r.revision, Some(3));
        assert_eq!(r.fields["件名"], json!("修理"));
        assert_eq!(r.fields["tags"], json!(["a", "b"]));
        let mut f = Fields::new();
        f.insert("数量".into(), json!(2));
        f.insert("tags".into(), json!(["a"]));
        f.insert("memo".into(), Value::Null);
        assert_eq!(
            to_kintone(&f),
            json!({"数量": {"value": "2"}, "tags": {"value": ["a"]}, "memo": {"value": ""}})
        );
        assert!(from_kintone(&json!({"x": {"value": 1}})).is_none());
    }

    #[test]
    fn errors_and_escaping() {
        let body = json!({"code": "CB_VA01", "id": "x", "message": "入力内容が正しくありません。", "errors": {"record.数量.value": {"messages": ["数字でなければなりません。"]}}});
        assert_eq!(
            error_message(&body),
            "CB_VA01: 入力内容が正しくありません。 (record.数量.value: 数字でなければなりません。)"
        );
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
