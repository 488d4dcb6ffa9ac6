//! Imports of partner files: one row per (rule, file content), with the cursor a
//! crashed import resumes from.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::{Store, StoreError, q};

/// An import of one file under one rule.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ImportRun {
    /// Its id.
    pub id: i64,
    /// The rule.
    pub rule: String,
    /// The file's name.
    pub file: String,
    /// The file's SHA-256, in hex.
    pub sha256: String,
    /// The records the file comes to (its valid rows, each record's last).
    pub records: i32,
    /// How many of them are queued, in file order.
    pub queued: i32,
    /// What it found and did.
    pub summary: Value,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
    /// When every record was queued.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Store {
    /// The import of this file content under `rule`: the one started before (to resume
    /// or to say it is done), or a new one.
    pub async fn import_start(
        &self,
        rule: &str,
        file: &str,
        sha256: &str,
        records: i32,
        summary: &Value,
    ) -> Result<ImportRun, StoreError> {
        sqlx::query_as::<_, ImportRun>(
            "INSERT INTO import_runs (rule, file, sha256, records, summary)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (rule, sha256) DO UPDATE SET updated_at = now()
             RETURNING *",
        )
        .bind(rule)
        .bind(file)
        .bind(sha256)
        .bind(records)
        .bind(summary)
        .fetch_one(&self.pool)
        .await
        .map_err(q("start an import"))
    }

    /// Records that the first `queued` records of an import are queued (confirmed by
    /// the broker); `finished` when that is all of them.
    pub async fn import_progress(
        &self,
        id: i64,
        queued: i32,
        finished: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE import_runs SET queued = $2, updated_at = now(),
                    finished_at = CASE WHEN $3 THEN now() ELSE finished_at END
              WHERE id = $1",
        )
        .bind(id)
        .bind(queued)
        .bind(finished)
        .execute(&self.pool)
        .await
        .map_err(q("record an import's progress"))?;
        Ok(())
    }

    /// The latest imports, newest first, of one rule or of all.
    pub async fn imports(
        &self,
        rule: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ImportRun>, StoreError> {
        sqlx::query_as::<_, ImportRun>(
            "SELECT * FROM import_runs WHERE $1::text IS NULL OR rule = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(rule)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read imports"))
    }
}
