//! Schema-drift checks: each check of one app or entity, and the baseline the next
//! check compares with.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::{Store, StoreError, q};

/// A check to store.
#[derive(Debug, Clone)]
pub struct NewSchemaCheck<'a> {
    /// The system.
    pub system: &'a str,
    /// The app or entity.
    pub app: &'a str,
    /// The schema read, or `None` when there was nothing to read.
    pub schema: Option<&'a Value>,
    /// Why it was not checked.
    pub not_checked: Option<&'a str>,
    /// The drift found (a JSON array).
    pub drift: &'a Value,
    /// How many drifts are breaking.
    pub breaking: i32,
    /// The rules this check paused.
    pub paused: &'a [String],
    /// Whether the schema becomes the baseline.
    pub baseline: bool,
}

/// A stored check.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SchemaCheckRow {
    /// Its id.
    pub id: i64,
    /// The system.
    pub system: String,
    /// The app or entity.
    pub app: String,
    /// When it ran.
    pub checked_at: DateTime<Utc>,
    /// Why it was not checked, if it was not.
    pub not_checked: Option<String>,
    /// The drift found.
    pub drift: Value,
    /// How many drifts are breaking.
    pub breaking: i32,
    /// The rules it paused.
    pub paused: Vec<String>,
    /// Whether its schema is a baseline.
    pub baseline: bool,
}

impl Store {
    /// The schema of the latest baseline check of `app` of `system`.
    pub async fn schema_baseline(
        &self,
        system: &str,
        app: &str,
    ) -> Result<Option<Value>, StoreError> {
        sqlx::query_scalar(
            "SELECT schema FROM schema_checks
              WHERE system = $1 AND app = $2 AND baseline AND schema IS NOT NULL
              ORDER BY id DESC LIMIT 1",
        )
        .bind(system)
        .bind(app)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("read the schema baseline"))
        .map(Option::flatten)
    }

    /// Stores a check; returns its id.
    pub async fn schema_check_insert(&self, c: &NewSchemaCheck<'_>) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO schema_checks
                 (system, app, schema, not_checked, drift, breaking, paused, baseline)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(c.system)
        .bind(c.app)
        .bind(c.schema)
        .bind(c.not_checked)
        .bind(c.drift)
        .bind(c.breaking)
        .bind(c.paused)
        .bind(c.baseline)
        .fetch_one(&self.pool)
        .await
        .map_err(q("store a schema check"))
    }

    /// The latest check of each app of a system (or of every system), by system and app.
    pub async fn schema_checks_latest(
        &self,
        system: Option<&str>,
    ) -> Result<Vec<SchemaCheckRow>, StoreError> {
        sqlx::query_as::<_, SchemaCheckRow>(
            "SELECT DISTINCT ON (system, app)
                    id, system, app, checked_at, not_checked, drift, breaking, paused, baseline
               FROM schema_checks WHERE $1::text IS NULL OR system = $1
              ORDER BY system, app, id DESC",
        )
        .bind(system)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read schema checks"))
    }

    /// When a system was last checked.
    pub async fn schema_checked_at(
        &self,
        system: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        sqlx::query_scalar("SELECT max(checked_at) FROM schema_checks WHERE system = $1")
            .bind(system)
            .fetch_one(&self.pool)
            .await
            .map_err(q("read the last schema check"))
    }
}
