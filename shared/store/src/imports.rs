//! Imports of partner files: one row per (rule, file content), with the cursor a
//! crashed import resumes from.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::{Store, StoreError, q};

/// An import of one file under one rule.
#[derive(Debug, Clone, Serialize)]
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

fn import_row(r: &sqlx::postgres::PgRow) -> Result<ImportRun, StoreError> {
    Ok(ImportRun {
        id: r.try_get("id").map_err(q("read"))?,
        rule: r.try_get("rule").map_err(q("read"))?,
        file: r.try_get("file").map_err(q("read"))?,
        sha256: r.try_get("sha256").map_err(q("read"))?,
        records: r.try_get("records").map_err(q("read"))?,
        queued: r.try_get("queued").map_err(q("read"))?,
        summary: r.try_get("summary").map_err(q("read"))?,
        started_at: r.try_get("started_at").map_err(q("read"))?,
        updated_at: r.try_get("updated_at").map_err(q("read"))?,
        finished_at: r.try_get("finished_at").map_err(q("read"))?,
    })
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
        let row = sqlx::query(
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
        .map_err(q("start an import"))?;
        import_row(&row)
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
        let rows = sqlx::query(
            "SELECT * FROM import_runs WHERE $1::text IS NULL OR rule = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(rule)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read imports"))?;
        rows.iter().map(import_row).collect()
    }
}
