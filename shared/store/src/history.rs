//! The append-only history: entries appended in one statement, a record's or a rule's
//! entries read under every name the rule had, and the counts per kind.

use domain::history::Entry;
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use crate::{EventRef, HistoryCount, HistoryRow, Store, StoreError, q, renames};

impl Store {
    /// Appends history entries outside a record transaction (retries, dead letters).
    pub async fn append(
        &self,
        rule: &str,
        record_id: &str,
        ev: &EventRef,
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        insert_history(&mut tx, rule, record_id, ev, entries).await?;
        tx.commit().await.map_err(q("commit"))
    }

    /// A record's history, oldest first.
    pub async fn history(
        &self,
        rule: &str,
        record_id: &str,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        // Under every name the rule had: a rename leaves the history where it was.
        sqlx::query_as::<_, HistoryRow>(sqlx::AssertSqlSafe(format!(
            "{} SELECT id, at, rule, source_record_id, event_id, kind, summary, detail FROM history
             WHERE rule IN (SELECT n FROM names) AND source_record_id = $2 ORDER BY id",
            renames::NAMES
        )))
        .bind(rule)
        .bind(record_id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read history"))
    }

    /// A rule's latest history entries, newest first.
    pub async fn rule_history(
        &self,
        rule: &str,
        limit: i64,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        sqlx::query_as::<_, HistoryRow>(sqlx::AssertSqlSafe(format!(
            "{} SELECT id, at, rule, source_record_id, event_id, kind, summary, detail FROM history
             WHERE rule IN (SELECT n FROM names) ORDER BY id DESC LIMIT $2",
            renames::NAMES
        )))
        .bind(rule)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read a rule's history"))
    }

    /// How many history entries of each kind exist, for one rule or for all, by kind.
    pub async fn history_counts(
        &self,
        rule: Option<&str>,
    ) -> Result<Vec<HistoryCount>, StoreError> {
        sqlx::query_as::<_, HistoryCount>(sqlx::AssertSqlSafe(format!(
            "{} SELECT kind, count(*) FROM history
              WHERE $1::text IS NULL OR rule IN (SELECT n FROM names) GROUP BY kind ORDER BY kind",
            renames::NAMES
        )))
        .bind(rule)
        .fetch_all(&self.pool)
        .await
        .map_err(q("count history"))
    }
}

/// Appends `entries` to the history of `record_id` under `rule`, in `tx`, in one
/// statement.
pub(crate) async fn insert_history(
    tx: &mut Transaction<'static, Postgres>,
    rule: &str,
    record_id: &str,
    ev: &EventRef,
    entries: &[Entry],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    // One statement for all of them.
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let summaries: Vec<&str> = entries.iter().map(|e| e.summary.as_str()).collect();
    let details: Vec<&Value> = entries.iter().map(|e| &e.detail).collect();
    sqlx::query(
        "INSERT INTO history (rule, source_record_id, event_id, correlation_id, kind, summary, detail)
         SELECT $1, $2, $3, $4, k, s, d FROM UNNEST($5::text[], $6::text[], $7::jsonb[]) WITH ORDINALITY AS e(k, s, d, n)
         ORDER BY n",
    )
    .bind(rule)
    .bind(record_id)
    .bind(&ev.event_id)
    .bind(&ev.correlation_id)
    .bind(kinds)
    .bind(summaries)
    .bind(details)
    .execute(&mut **tx)
    .await
    .map_err(q("append history"))?;
    Ok(())
}
