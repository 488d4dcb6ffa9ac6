//! [`RecordApi`], the one trait every connector kind implements: one app or entity of
//! one system as the worker sees it (fetch, search, create, update, list, write one
//! field). An [`Endpoint`] is any of them behind an `Arc`.
//!
//! The methods return boxed futures ([`Reply`]) so that the trait is object-safe: the
//! worker holds an endpoint without knowing its kind. An implementation writes
//! `Box::pin(async move { … })`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use domain::record::{Fields, SourceRecord, TargetRecord};

use crate::ConnectorError;

/// What a connector's call gives back: a future of its result, sendable between
/// threads, borrowing the call's arguments.
pub type Reply<'a, T> = Pin<Box<dyn Future<Output = Result<T, ConnectorError>> + Send + 'a>>;

/// One app or entity of one system, whatever its kind.
pub type Endpoint = Arc<dyn RecordApi>;

/// One app or entity of one system. Every method is one request to it, except the
/// capabilities (`read_many_max`, `bulk_max`, `can_list`), which send nothing.
pub trait RecordApi: Send + Sync {
    /// The system's name.
    fn system(&self) -> &str;

    /// How many records one bulk read takes, where the system reads several ids in one
    /// request (kintone: `records.json` with `$id in (…)`, 100 at a time).
    fn read_many_max(&self) -> Option<usize> {
        None
    }

    /// The most updates one bulk call takes, when the system has bulk updates (kintone:
    /// 100 per `records.json` call).
    fn bulk_max(&self) -> Option<usize> {
        None
    }

    /// Whether [`RecordApi::changed`] can list the records (kintone always; a rest
    /// entity when it declares `list`).
    fn can_list(&self) -> bool {
        false
    }

    /// Reads one record; `None` when it does not exist.
    fn fetch<'a>(&'a self, id: &'a str) -> Reply<'a, Option<SourceRecord>>;

    /// Reads the records of these ids (at most [`RecordApi::read_many_max`]) in one
    /// request: those that exist.
    fn read_many<'a>(&'a self, ids: &'a [&'a str]) -> Reply<'a, Vec<SourceRecord>>;

    /// The records whose `field` equals `value`.
    fn search<'a>(&'a self, field: &'a str, value: &'a str) -> Reply<'a, Vec<TargetRecord>>;

    /// [`RecordApi::create`], with the record as the system answered it, when it answers
    /// one (a rest entity; kintone answers only the id and revision): what it kept.
    fn create_answered<'a>(
        &'a self,
        fields: &'a Fields,
        idempotency_key: &'a str,
    ) -> Reply<'a, (String, Option<i64>, Option<Fields>)>;

    /// [`RecordApi::update`], with the record as the system answered it, when it answers
    /// one (a rest entity).
    fn update_answered<'a>(
        &'a self,
        id: &'a str,
        fields: &'a Fields,
        idempotency_key: &'a str,
    ) -> Reply<'a, (Option<i64>, Option<Fields>)>;

    /// Deletes a record: `true` when it was there, `false` when it was already gone.
    fn delete<'a>(&'a self, id: &'a str) -> Reply<'a, bool>;

    /// Whole records with an id after `after`, in id order, at most `limit`: a page of a
    /// complete listing (see [`RecordApi::can_list`]).
    fn records_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> Reply<'a, Vec<SourceRecord>>;

    /// One page of the records changed at or after `since` (a time and the field code
    /// of the update time; all records without it) whose id comes after `after`, in id
    /// order: from kintone id and revision only; with `with_total`, also how many match
    /// in all. A rest entity lists through its `list` template (whole records).
    fn changed<'a>(
        &'a self,
        since: Option<(chrono::DateTime<chrono::Utc>, &'a str)>,
        after: Option<&'a str>,
        limit: usize,
        with_total: bool,
    ) -> Reply<'a, (Vec<SourceRecord>, Option<u64>)>;

    /// The schema the rules are checked against: a kintone app's form fields; for a
    /// rest entity, the shape of a sample record (the one with `sample` as id, or the
    /// first one listed). `Ok(Err(why))` when there is nothing to check against.
    fn schema<'a>(
        &'a self,
        sample: Option<&'a str>,
    ) -> Reply<'a, Result<domain::drift::Schema, String>>;

    /// Updates several records in one call (at most [`RecordApi::bulk_max`]). What the
    /// answer says of each update, in order: confirmed, or why not. kintone's bulk
    /// update is all-or-nothing.
    fn bulk_update<'a>(
        &'a self,
        updates: &'a [(String, Fields)],
        idempotency_key: &'a str,
    ) -> Reply<'a, Vec<Result<(), String>>>;

    /// Creates a record; the idempotency key makes a repeated create return the first.
    /// Returns its id and revision, when the system tells.
    fn create<'a>(
        &'a self,
        fields: &'a Fields,
        idempotency_key: &'a str,
    ) -> Reply<'a, (String, Option<i64>)> {
        Box::pin(async move {
            let (id, rev, _) = self.create_answered(fields, idempotency_key).await?;
            Ok((id, rev))
        })
    }

    /// Updates some fields of a record; returns the revision the write produced, when
    /// the system tells.
    fn update<'a>(
        &'a self,
        id: &'a str,
        fields: &'a Fields,
        idempotency_key: &'a str,
    ) -> Reply<'a, Option<i64>> {
        Box::pin(async move { Ok(self.update_answered(id, fields, idempotency_key).await?.0) })
    }

    /// Updates some fields of a record only if it is still at `revision` (kintone's
    /// revision check; other systems write unconditionally, which is this default).
    /// `Ok(None)` when the record changed since; otherwise the revision the write
    /// produced.
    fn update_checked<'a>(
        &'a self,
        id: &'a str,
        fields: &'a Fields,
        revision: Option<i64>,
        idempotency_key: &'a str,
    ) -> Reply<'a, Option<Option<i64>>> {
        let _ = revision;
        Box::pin(async move { self.update(id, fields, idempotency_key).await.map(Some) })
    }

    /// Writes one field of a record with a revision check where the system has
    /// revisions (kintone), so that a change made since `revision` was read is never
    /// overwritten. Returns the new revision, or `None` when the record changed
    /// meanwhile.
    fn write_field<'a>(
        &'a self,
        id: &'a str,
        field: &'a str,
        value: &'a str,
        revision: Option<i64>,
    ) -> Reply<'a, Option<i64>> {
        Box::pin(async move {
            let mut fields = Fields::new();
            fields.insert(
                field.to_owned(),
                serde_json::Value::String(value.to_owned()),
            );
            let key = format!("write-field:{id}:{field}:{value}");
            Ok(
                match self.update_checked(id, &fields, revision, &key).await? {
                    Some(new_revision) => new_revision.or(revision),
                    None => None,
                },
            )
        })
    }
}
