//! Resync cursors: where each rule's scan of the source's changed records stands. A
//! page's records are queued before the page is recorded here, so a scan that stops
//! resumes after the last page it queued, losing nothing.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{Store, StoreError, q};

/// A rule's resync cursor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResyncCursor {
    /// The rule.
    pub rule: String,
    /// Where the next scan starts (the previous scan's start), before the overlap.
    pub since: Option<DateTime<Utc>>,
    /// When the scan in progress started, if one is.
    pub scan_started_at: Option<DateTime<Utc>>,
    /// The lower bound of the scan in progress (`None`: every record, a backfill).
    pub scan_since: Option<DateTime<Utc>>,
    /// The last record id whose page the scan in progress has queued.
    pub after_id: Option<String>,
    /// How many records the scan in progress matched when it began.
    pub total: Option<i64>,
    /// When the scan in progress should end, at its rate so far, in seconds from now.
    pub eta_seconds: Option<f64>,
    /// Pages done in the scan in progress.
    pub pages: i64,
    /// Records listed in the scan in progress.
    pub listed: i64,
    /// Records queued in the scan in progress (the others were already synced at the
    /// listed revision).
    pub queued: i64,
    /// When the last scan completed.
    pub last_completed_at: Option<DateTime<Utc>>,
    /// The last completed scan's figures.
    pub last_summary: Option<Value>,
}

const COLUMNS: &str = "rule, since, scan_started_at, scan_since, after_id, total, pages, listed, queued, last_completed_at, last_summary, now() AS now";

/// A row of `resync_cursors` with the database's clock, as [`COLUMNS`] reads it.
#[derive(sqlx::FromRow)]
struct CursorRow {
    rule: String,
    since: Option<DateTime<Utc>>,
    scan_started_at: Option<DateTime<Utc>>,
    scan_since: Option<DateTime<Utc>>,
    after_id: Option<String>,
    total: Option<i64>,
    pages: i64,
    listed: i64,
    queued: i64,
    last_completed_at: Option<DateTime<Utc>>,
    last_summary: Option<Value>,
    now: DateTime<Utc>,
}

impl From<CursorRow> for ResyncCursor {
    fn from(r: CursorRow) -> ResyncCursor {
        ResyncCursor {
            eta_seconds: eta(r.scan_started_at, r.now, r.listed, r.total),
            rule: r.rule,
            since: r.since,
            scan_started_at: r.scan_started_at,
            scan_since: r.scan_since,
            after_id: r.after_id,
            total: r.total,
            pages: r.pages,
            listed: r.listed,
            queued: r.queued,
            last_completed_at: r.last_completed_at,
            last_summary: r.last_summary,
        }
    }
}

/// The source revision last synced of one record.
#[derive(sqlx::FromRow)]
struct RevisionRow {
    source_record_id: String,
    source_revision: i64,
}

/// The seconds left of a scan at its rate so far: `None` before its first page, or
/// without a total.
pub fn eta(
    started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    listed: i64,
    total: Option<i64>,
) -> Option<f64> {
    let (started, total) = (started?, total?);
    let elapsed = (now - started).num_milliseconds() as f64 / 1000.0;
    if listed <= 0 || elapsed <= 0.0 {
        return None;
    }
    let left = (total - listed).max(0) as f64;
    Some(left / (listed as f64 / elapsed))
}

impl Store {
    /// Every rule's cursor.
    pub async fn resync_cursors(&self) -> Result<Vec<ResyncCursor>, StoreError> {
        let rows = sqlx::query_as::<_, CursorRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM resync_cursors ORDER BY rule"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(q("read the resync cursors"))?;
        Ok(rows.into_iter().map(ResyncCursor::from).collect())
    }

    /// Starts a scan of `rule`'s source unless one is in progress (which is then
    /// resumed); `full` starts a backfill of every record, even over one in
    /// progress. A new scan looks from `overlap` before the previous scan's start.
    pub async fn resync_start(
        &self,
        rule: &str,
        overlap: Duration,
        full: bool,
    ) -> Result<ResyncCursor, StoreError> {
        sqlx::query("INSERT INTO resync_cursors (rule) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(rule)
            .execute(&self.pool)
            .await
            .map_err(q("create a resync cursor"))?;
        let row = sqlx::query_as::<_, CursorRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE resync_cursors SET
                scan_started_at = CASE WHEN scan_started_at IS NULL OR $3 THEN now() ELSE scan_started_at END,
                scan_since = CASE WHEN $3 THEN NULL
                                  WHEN scan_started_at IS NULL THEN since - $2 * interval '1 second'
                                  ELSE scan_since END,
                after_id = CASE WHEN scan_started_at IS NULL OR $3 THEN NULL ELSE after_id END,
                pages = CASE WHEN scan_started_at IS NULL OR $3 THEN 0 ELSE pages END,
                listed = CASE WHEN scan_started_at IS NULL OR $3 THEN 0 ELSE listed END,
                queued = CASE WHEN scan_started_at IS NULL OR $3 THEN 0 ELSE queued END,
                total = CASE WHEN scan_started_at IS NULL OR $3 THEN NULL ELSE total END,
                updated_at = now()
              WHERE rule = $1
          RETURNING {COLUMNS}"
        )))
        .bind(rule)
        .bind(overlap.as_secs_f64())
        .bind(full)
        .fetch_one(&self.pool)
        .await
        .map_err(q("start a resync scan"))?;
        Ok(row.into())
    }

    /// Notes ids a full scan listed.
    pub async fn resync_seen(&self, rule: &str, ids: &[String]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO resync_seen (rule, source_record_id) SELECT $1, r FROM UNNEST($2::text[]) AS r
             ON CONFLICT DO NOTHING",
        )
        .bind(rule)
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(q("note the records a scan listed"))?;
        Ok(())
    }

    /// The linked records a completed full scan never listed (gone from the source
    /// unannounced, or created after the scan passed their id: the step tells which).
    pub async fn resync_unseen(&self, rule: &str) -> Result<Vec<String>, StoreError> {
        let unseen: Vec<String> = sqlx::query_scalar(
            "SELECT s.source_record_id FROM sync_records s
              WHERE s.rule = $1 AND s.target_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM resync_seen r
                                 WHERE r.rule = s.rule AND r.source_record_id = s.source_record_id)
              ORDER BY s.source_record_id",
        )
        .bind(rule)
        .fetch_all(&self.pool)
        .await
        .map_err(q("find the records a scan did not list"))?;
        Ok(unseen)
    }

    /// Forgets the ids a scan listed (a new full scan starts from none).
    pub async fn resync_forget_seen(&self, rule: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM resync_seen WHERE rule = $1")
            .bind(rule)
            .execute(&self.pool)
            .await
            .map_err(q("forget the records a scan listed"))?;
        Ok(())
    }

    /// Records a page whose records are queued: the scan resumes after `after_id`.
    pub async fn resync_page_done(
        &self,
        rule: &str,
        after_id: &str,
        listed: usize,
        queued: usize,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE resync_cursors SET after_id = $2, pages = pages + 1, listed = listed + $3,
                    queued = queued + $4, updated_at = now()
              WHERE rule = $1",
        )
        .bind(rule)
        .bind(after_id)
        .bind(listed as i64)
        .bind(queued as i64)
        .execute(&self.pool)
        .await
        .map_err(q("record a resync page"))?;
        Ok(())
    }

    /// Records how many records the scan in progress matched when it began.
    pub async fn resync_total(&self, rule: &str, total: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE resync_cursors SET total = $2 WHERE rule = $1")
            .bind(rule)
            .bind(total as i64)
            .execute(&self.pool)
            .await
            .map_err(q("record a resync's total"))?;
        Ok(())
    }

    /// Completes the scan in progress (`unseen`: linked records a full scan did not
    /// list, queued to be checked): the next one starts from its start.
    pub async fn resync_complete(
        &self,
        rule: &str,
        unseen: usize,
    ) -> Result<ResyncCursor, StoreError> {
        let row = sqlx::query_as::<_, CursorRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE resync_cursors SET
                since = COALESCE(scan_started_at, since),
                last_completed_at = now(),
                last_summary = jsonb_build_object(
                    'started_at', scan_started_at, 'since', scan_since, 'pages', pages,
                    'total', total, 'listed', listed, 'queued', queued, 'unseen', $2::bigint,
                    'took_ms', (EXTRACT(EPOCH FROM now() - scan_started_at) * 1000)::bigint),
                scan_started_at = NULL, scan_since = NULL, after_id = NULL,
                updated_at = now()
              WHERE rule = $1
          RETURNING {COLUMNS}"
        )))
        .bind(rule)
        .bind(unseen as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(q("complete a resync scan"))?;
        Ok(row.into())
    }

    /// The source revision last synced for each of `ids` that has one.
    pub async fn synced_revisions(
        &self,
        rule: &str,
        ids: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let rows = sqlx::query_as::<_, RevisionRow>(
            "SELECT source_record_id, source_revision FROM sync_records
              WHERE rule = $1 AND source_record_id = ANY($2) AND source_revision IS NOT NULL",
        )
        .bind(rule)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read synced revisions"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.source_record_id, r.source_revision))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_follows_the_rate_so_far() {
        let start: DateTime<Utc> = "2026-11-29T10:00:00Z".parse().unwrap();
        let now = start + chrono::Duration::seconds(10);
        // 100 records in 10 s, 900 left: 90 s.
        assert_eq!(eta(Some(start), now, 100, Some(1000)), Some(90.0));
        assert_eq!(eta(Some(start), now, 1000, Some(1000)), Some(0.0));
        assert_eq!(eta(Some(start), now, 1200, Some(1000)), Some(0.0));
        assert_eq!(eta(Some(start), now, 0, Some(1000)), None);
        assert_eq!(eta(None, now, 100, Some(1000)), None);
        assert_eq!(eta(Some(start), now, 100, None), None);
    }
}
