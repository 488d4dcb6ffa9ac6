//! A `file` system's endpoint: it has no API, its records arrive only as imported
//! rows, so every call is [`ConnectorError::NoApi`] (and its schema is checked when a
//! file is imported, not here).

use domain::record::{Fields, SourceRecord, TargetRecord};

use crate::{ConnectorError, RecordApi, Reply};

/// A `file` system: nothing to call.
pub struct FileSystem {
    system: String,
}

impl FileSystem {
    /// The endpoint of the file system named `system` in the rules.
    pub fn new(system: &str) -> FileSystem {
        FileSystem {
            system: system.to_owned(),
        }
    }

    fn no_api<'a, T: Send + 'a>(&self) -> Reply<'a, T> {
        let system = self.system.clone();
        Box::pin(async move { Err(ConnectorError::NoApi { system }) })
    }
}

impl RecordApi for FileSystem {
    fn system(&self) -> &str {
        &self.system
    }

    fn fetch<'a>(&'a self, _: &'a str) -> Reply<'a, Option<SourceRecord>> {
        self.no_api()
    }

    fn read_many<'a>(&'a self, _: &'a [&'a str]) -> Reply<'a, Vec<SourceRecord>> {
        self.no_api()
    }

    fn search<'a>(&'a self, _: &'a str, _: &'a str) -> Reply<'a, Vec<TargetRecord>> {
        self.no_api()
    }

    fn create_answered<'a>(
        &'a self,
        _: &'a Fields,
        _: &'a str,
    ) -> Reply<'a, (String, Option<i64>, Option<Fields>)> {
        self.no_api()
    }

    fn update_answered<'a>(
        &'a self,
        _: &'a str,
        _: &'a Fields,
        _: &'a str,
    ) -> Reply<'a, (Option<i64>, Option<Fields>)> {
        self.no_api()
    }

    fn delete<'a>(&'a self, _: &'a str) -> Reply<'a, bool> {
        self.no_api()
    }

    fn records_page<'a>(&'a self, _: Option<&'a str>, _: usize) -> Reply<'a, Vec<SourceRecord>> {
        self.no_api()
    }

    fn changed<'a>(
        &'a self,
        _: Option<(chrono::DateTime<chrono::Utc>, &'a str)>,
        _: Option<&'a str>,
        _: usize,
        _: bool,
    ) -> Reply<'a, (Vec<SourceRecord>, Option<u64>)> {
        self.no_api()
    }

    fn schema<'a>(
        &'a self,
        _: Option<&'a str>,
    ) -> Reply<'a, Result<domain::drift::Schema, String>> {
        Box::pin(async {
            Ok(Err(
                "a file system has no API: its rows are checked when imported".into(),
            ))
        })
    }

    fn bulk_update<'a>(
        &'a self,
        _: &'a [(String, Fields)],
        _: &'a str,
    ) -> Reply<'a, Vec<Result<(), String>>> {
        self.no_api()
    }
}
