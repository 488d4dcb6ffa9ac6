//! A generic REST connector: an entity is described by URL templates (`{id}`,
//! `{field}`, `{value}`), JSON pointers to the record, the list and the id, an auth
//! header and an optional idempotency header. A helpdesk or a CRM needs configuration,
//! not code.

use std::sync::Arc;
use std::time::Duration;

use domain::record::{Fields, SourceRecord, TargetRecord, value_text};
use domain::rules::RestEntity;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::http::Http;
use crate::{ConnectorError, RecordApi, Redactor, Reply, encode};

/// One entity of a REST system.
pub struct Rest {
    http: Http,
    entity: RestEntity,
}

impl Rest {
    /// A connector for one entity.
    pub fn new(
        http: reqwest::Client,
        system: &str,
        base: &str,
        auth: Option<(String, String)>,
        entity: RestEntity,
        timeout: Duration,
    ) -> Rest {
        let own = auth.iter().map(|(_, value)| value.clone()).collect();
        Rest {
            http: Http::new(http, system, base, auth, own, timeout),
            entity,
        }
    }

    /// Redacts these secrets (every configured one) from upstream errors, instead of
    /// only this connector's header value.
    pub fn with_redactor(mut self, redactor: Arc<Redactor>) -> Rest {
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

    async fn send(&self, req: RequestBuilder) -> Result<Option<Value>, ConnectorError> {
        let answer = self.http.send(req).await?;
        match answer.status {
            200..=299 => Ok(Some(answer.body)),
            404 => Ok(None),
            _ => Err(self.http.error(&answer, &error_message(&answer.body))),
        }
    }

    fn record(&self, body: &Value) -> Result<TargetRecord, ConnectorError> {
        let rec = body
            .pointer(&self.entity.record_pointer)
            .ok_or_else(|| self.bad("no record at the record pointer"))?;
        self.to_record(rec)
    }

    fn to_record(&self, rec: &Value) -> Result<TargetRecord, ConnectorError> {
        let id = rec
            .pointer(&self.entity.id_pointer)
            .and_then(value_text)
            .ok_or_else(|| self.bad("a record without an id"))?;
        let fields = crate::shape::read_fields(&self.entity, rec)
            .ok_or_else(|| self.bad("a record that is not an object"))?;
        Ok(TargetRecord { id, fields })
    }

    fn bad(&self, message: &str) -> ConnectorError {
        self.http.bad(message)
    }

    /// GET one record; `None` on 404.
    pub async fn get(&self, id: &str) -> Result<Option<TargetRecord>, ConnectorError> {
        let path = self.entity.get.replace("{id}", &encode(id));
        match self.send(self.request(Method::GET, &path)).await? {
            Some(body) => self.record(&body).map(Some),
            None => Ok(None),
        }
    }

    /// DELETE one record through the entity's `delete` template: `true` when it was
    /// there, `false` on 404 (already gone, which is what was wanted).
    pub async fn delete(&self, id: &str) -> Result<bool, ConnectorError> {
        let Some(template) = &self.entity.delete else {
            return Err(ConnectorError::Unknown(format!(
                "{}: the entity declares no `delete` template",
                self.system()
            )));
        };
        let path = template.replace("{id}", &encode(id));
        Ok(self
            .send(self.request(Method::DELETE, &path))
            .await?
            .is_some())
    }

    /// GET the records whose `field` equals `value`.
    pub async fn search(
        &self,
        field: &str,
        value: &str,
    ) -> Result<Vec<TargetRecord>, ConnectorError> {
        let path = self
            .entity
            .search
            .replace("{field}", &encode(field))
            .replace("{value}", &encode(value));
        let req = match &self.entity.search_body {
            None => self.request(Method::GET, &path),
            Some(template) => self
                .request(Method::POST, &path)
                .json(&crate::shape::fill(template, field, value)),
        };
        let Some(body) = self.send(req).await? else {
            return Ok(vec![]);
        };
        let list = body
            .pointer(&self.entity.list_pointer)
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad("no list at the list pointer"))?;
        let records: Result<Vec<TargetRecord>, _> =
            list.iter().map(|r| self.to_record(r)).collect();
        // A search API may match loosely (prefix, case); keep exact matches only.
        Ok(records?
            .into_iter()
            .filter(|r| r.fields.get(field).and_then(value_text).as_deref() == Some(value))
            .collect())
    }

    fn with_key(&self, req: RequestBuilder, key: &str) -> RequestBuilder {
        match &self.entity.idempotency_header {
            Some(h) => req.header(h, key),
            None => req,
        }
    }

    /// POST a new record.
    pub async fn create(
        &self,
        fields: &Fields,
        idempotency_key: &str,
    ) -> Result<TargetRecord, ConnectorError> {
        let req = self
            .with_key(
                self.request(Method::POST, &self.entity.create),
                idempotency_key,
            )
            .json(&self.body(fields));
        let body = self
            .send(req)
            .await?
            .ok_or_else(|| self.bad("404 on create: check the create template"))?;
        self.record(&body)
    }

    /// A create or update body: the fields, inside the entity's envelope if it has one.
    fn body(&self, fields: &Fields) -> Value {
        crate::shape::write_body(&self.entity, fields)
    }

    /// Updates some fields of a record.
    pub async fn update(
        &self,
        id: &str,
        fields: &Fields,
        idempotency_key: &str,
    ) -> Result<TargetRecord, ConnectorError> {
        let method =
            Method::from_bytes(self.entity.update_method.as_bytes()).unwrap_or(Method::PATCH);
        let path = self.entity.update.replace("{id}", &encode(id));
        let req = self
            .with_key(self.request(method, &path), idempotency_key)
            .json(&self.body(fields));
        match self.send(req).await? {
            Some(body) => self.record(&body),
            None => Err(ConnectorError::Rejected {
                system: self.system().to_owned(),
                status: 404,
                message: format!("record {id} does not exist"),
            }),
        }
    }
}

impl Rest {
    /// A record of this entity with its revision and change time, where the entity
    /// declares pointers to them.
    pub fn as_source(&self, t: TargetRecord) -> domain::record::SourceRecord {
        let obj = Value::Object(t.fields.clone());
        let at = |p: &Option<String>| p.as_deref().and_then(|p| obj.pointer(p)).cloned();
        let revision = at(&self.entity.revision_pointer).and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        let changed_at = at(&self.entity.changed_at_pointer).and_then(|v| v.as_str()?.parse().ok());
        domain::record::SourceRecord {
            id: t.id,
            revision,
            changed_at,
            fields: t.fields,
        }
    }

    /// What a write's answer holds, for checking it against what was sent: the
    /// answered record, with the entity's `write_only` fields taken as sent, since the
    /// API never shows them.
    pub fn answered(&self, sent: &Fields, mut answered: Fields) -> Fields {
        for name in &self.entity.write_only {
            if let Some(v) = sent.get(name) {
                answered.insert(name.clone(), v.clone());
            }
        }
        answered
    }

    /// The revision a write answered with, where the entity declares where it is.
    pub fn revision_of(&self, t: &TargetRecord) -> Option<i64> {
        self.as_source(t.clone()).revision
    }

    /// Whether the entity declares a `list` endpoint.
    pub fn can_list(&self) -> bool {
        self.entity.list.is_some()
    }

    /// The records changed at or after `since` (every record when `None`) with an id
    /// after `after`, at most `limit`, in id order; and how many match in all, when
    /// `with_total` and the API says.
    pub async fn changed(
        &self,
        since: Option<chrono::DateTime<chrono::Utc>>,
        after: Option<&str>,
        limit: usize,
        with_total: bool,
    ) -> Result<(Vec<SourceRecord>, Option<u64>), ConnectorError> {
        let Some(template) = &self.entity.list else {
            return Err(ConnectorError::Unknown(format!(
                "{}: the entity declares no `list` endpoint, so its changes cannot be listed",
                self.system()
            )));
        };
        let since = since
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let path = template
            .replace("{since}", &encode(&since))
            .replace("{after}", &encode(after.unwrap_or_default()))
            .replace("{limit}", &limit.to_string());
        let body = self
            .send(self.request(Method::GET, &path))
            .await?
            .ok_or_else(|| self.bad("404 on list: check the list template"))?;
        let list = body
            .pointer(&self.entity.list_pointer)
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad("no list at the list pointer"))?;
        let records = list
            .iter()
            .map(|r| self.to_record(r).map(|t| self.as_source(t)))
            .collect::<Result<Vec<_>, _>>()?;
        let total = self
            .entity
            .total_pointer
            .as_deref()
            .filter(|_| with_total)
            .and_then(|p| body.pointer(p))
            .and_then(Value::as_u64);
        Ok((records, total))
    }

    /// The most updates one bulk call takes, when the entity has a bulk endpoint.
    pub fn bulk_max(&self) -> Option<usize> {
        self.entity.bulk_update.as_ref().map(|b| b.max)
    }

    /// Updates several records in one call. What the answer says of each update, in
    /// order: every one confirmed when the entity declares no `results` (the call is
    /// all-or-nothing), else each by its own result.
    pub async fn bulk_update(
        &self,
        updates: &[(String, Fields)],
        idempotency_key: &str,
    ) -> Result<Vec<Result<(), String>>, ConnectorError> {
        let Some(b) = &self.entity.bulk_update else {
            return Err(ConnectorError::Unknown(format!(
                "{}: no bulk_update endpoint",
                self.system()
            )));
        };
        let body = crate::shape::bulk_body(&self.entity, b, updates);
        let method = Method::from_bytes(b.method.as_bytes()).unwrap_or(Method::POST);
        let req = self
            .with_key(self.request(method, &b.path), idempotency_key)
            .json(&body);
        let answer = self
            .send(req)
            .await?
            .ok_or_else(|| self.bad("404 on the bulk endpoint: check bulk_update.path"))?;
        let ids: Vec<String> = updates.iter().map(|(id, _)| id.clone()).collect();
        Ok(match &b.results {
            None => ids.iter().map(|_| Ok(())).collect(),
            Some(r) => crate::shape::bulk_outcome(r, &answer, &ids),
        })
    }
}

/// A rest entity's [`RecordApi`]: its own methods, adapted (its records as source
/// records with their revision, a write's answer as what the API kept).
impl RecordApi for Rest {
    fn system(&self) -> &str {
        Rest::system(self)
    }

    fn bulk_max(&self) -> Option<usize> {
        Rest::bulk_max(self)
    }

    fn can_list(&self) -> bool {
        Rest::can_list(self)
    }

    fn fetch<'a>(&'a self, id: &'a str) -> Reply<'a, Option<SourceRecord>> {
        Box::pin(async move { Ok(self.get(id).await?.map(|t| self.as_source(t))) })
    }

    fn read_many<'a>(&'a self, _ids: &'a [&'a str]) -> Reply<'a, Vec<SourceRecord>> {
        let e = ConnectorError::Unknown(format!(
            "{}: a rest entity has no bulk read",
            Rest::system(self)
        ));
        Box::pin(async move { Err(e) })
    }

    fn search<'a>(&'a self, field: &'a str, value: &'a str) -> Reply<'a, Vec<TargetRecord>> {
        Box::pin(Rest::search(self, field, value))
    }

    fn create_answered<'a>(
        &'a self,
        fields: &'a Fields,
        idempotency_key: &'a str,
    ) -> Reply<'a, (String, Option<i64>, Option<Fields>)> {
        Box::pin(async move {
            let t = Rest::create(self, fields, idempotency_key).await?;
            let rev = self.revision_of(&t);
            let answered = self.answered(fields, t.fields);
            Ok((t.id, rev, Some(answered)))
        })
    }

    fn update_answered<'a>(
        &'a self,
        id: &'a str,
        fields: &'a Fields,
        idempotency_key: &'a str,
    ) -> Reply<'a, (Option<i64>, Option<Fields>)> {
        Box::pin(async move {
            let t = Rest::update(self, id, fields, idempotency_key).await?;
            let rev = self.revision_of(&t);
            Ok((rev, Some(self.answered(fields, t.fields))))
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> Reply<'a, bool> {
        Box::pin(Rest::delete(self, id))
    }

    fn records_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> Reply<'a, Vec<SourceRecord>> {
        Box::pin(async move { Ok(Rest::changed(self, None, after, limit, false).await?.0) })
    }

    fn changed<'a>(
        &'a self,
        since: Option<(chrono::DateTime<chrono::Utc>, &'a str)>,
        after: Option<&'a str>,
        limit: usize,
        with_total: bool,
    ) -> Reply<'a, (Vec<SourceRecord>, Option<u64>)> {
        // A rest API's listing filters by its own update time: the field name is in its
        // `list` template.
        Box::pin(Rest::changed(
            self,
            since.map(|(t, _)| t),
            after,
            limit,
            with_total,
        ))
    }

    fn schema<'a>(
        &'a self,
        sample: Option<&'a str>,
    ) -> Reply<'a, Result<domain::drift::Schema, String>> {
        Box::pin(async move {
            let record = match sample {
                Some(id) => match self.get(id).await? {
                    Some(t) => t.fields,
                    None => return Ok(Err(format!("the sample record {id} does not exist"))),
                },
                None if Rest::can_list(self) => {
                    match Rest::changed(self, None, None, 1, false).await?.0.pop() {
                        Some(s) => s.fields,
                        None => return Ok(Err("no record to sample: the listing is empty".into())),
                    }
                }
                None => {
                    return Ok(Err(
                        "the entity declares no list and no sample record".into()
                    ));
                }
            };
            Ok(Ok(domain::drift::sample_schema(&record)))
        })
    }

    fn bulk_update<'a>(
        &'a self,
        updates: &'a [(String, Fields)],
        idempotency_key: &'a str,
    ) -> Reply<'a, Vec<Result<(), String>>> {
        Box::pin(Rest::bulk_update(self, updates, idempotency_key))
    }
}

/// A REST error body as one line, whatever its shape: `error.message`, `message`,
/// `error`, or the body itself.
fn error_message(body: &Value) -> String {
    let field = body.pointer("/error/field").and_then(Value::as_str);
    let msg = body
        .pointer("/error/message")
        .or_else(|| body.get("message"))
        .or_else(|| body.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if body.is_null() {
                "no body".to_owned()
            } else {
                body.to_string()
            }
        });
    match field {
        Some(f) => format!("{msg} (field {f})"),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_only_fields_are_taken_as_sent_and_nothing_else_is() {
        let entity: RestEntity = serde_json::from_value(json!({
            "get": "/t/{id}", "search": "/t?q={value}", "create": "/t", "update": "/t/{id}",
            "write_only": ["email"]
        }))
        .unwrap();
        let rest = Rest::new(
            crate::http_client(),
            "freshdesk",
            "http://127.0.0.1:9",
            None,
            entity,
            Duration::from_secs(1),
        );
        let sent = json!({"email": "a@example.com", "subject": "Pump", "priority": 2});
        let answered = json!({"id": 1, "subject": "Pump", "requester_id": 7});
        let got = rest.answered(
            sent.as_object().unwrap(),
            answered.as_object().unwrap().clone(),
        );
        assert_eq!(got["email"], "a@example.com");
        assert!(
            !got.contains_key("priority"),
            "a dropped field stays missing"
        );
        assert_eq!(
            domain::sync::dropped_fields(sent.as_object().unwrap(), &got),
            vec!["priority"]
        );
    }

    #[test]
    fn error_bodies_read_as_one_line() {
        assert_eq!(
            error_message(
                &json!({"error": {"code": "validation_failed", "message": "subject is required", "field": "subject"}})
            ),
            "subject is required (field subject)"
        );
        assert_eq!(error_message(&json!({"message": "nope"})), "nope");
        assert_eq!(error_message(&Value::Null), "no body");
    }
}
