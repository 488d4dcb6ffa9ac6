//! Links and sync state (`sync_records`) as operators and background jobs read them:
//! a rule's links, one record's, the records an id may mean, links imported in bulk.

use chrono::{DateTime, Utc};

use crate::{FoundRecord, LinkRow, Store, StoreError, q};

impl Store {
    /// The source records of a rule synced at or after `since`.
    pub async fn synced_since(
        &self,
        rule: &str,
        since: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT source_record_id FROM sync_records WHERE rule = $1 AND updated_at >= $2",
        )
        .bind(rule)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read the records synced since"))?;
        Ok(ids.into_iter().collect())
    }

    /// The links, with how each was matched.
    pub async fn links(&self, rule: &str) -> Result<Vec<LinkRow>, StoreError> {
        sqlx::query_as::<_, LinkRow>(
            "SELECT rule, source_record_id, target_id, matched_by, source_revision, sent, state FROM sync_records
             WHERE rule = $1 ORDER BY source_record_id",
        )
        .bind(rule)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read links"))
    }

    /// One source record's link under a rule, if it has one.
    pub async fn link(&self, rule: &str, record_id: &str) -> Result<Option<LinkRow>, StoreError> {
        sqlx::query_as::<_, LinkRow>(
            "SELECT rule, source_record_id, target_id, matched_by, source_revision, sent, state FROM sync_records
             WHERE rule = $1 AND source_record_id = $2",
        )
        .bind(rule)
        .bind(record_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("read a link"))
    }

    /// The records an operator may mean by `id` under `rules`: a source record of
    /// that id (linked, or with a history only) or the source record linked to a
    /// target record of that id, at most `limit`, by rule and source record.
    pub async fn find_records(
        &self,
        rules: &[String],
        id: &str,
        limit: i64,
    ) -> Result<Vec<FoundRecord>, StoreError> {
        sqlx::query_as::<_, FoundRecord>(
            "SELECT r.rule, s.source_record_id, s.target_id
               FROM unnest($1::text[]) AS r(rule)
               JOIN sync_records s ON s.rule = r.rule AND (s.source_record_id = $2 OR s.target_id = $2)
             UNION
             SELECT DISTINCT h.rule, h.source_record_id, NULL
               FROM unnest($1::text[]) AS r(rule)
               JOIN history h ON h.rule = r.rule AND h.source_record_id = $2
              WHERE NOT EXISTS (SELECT 1 FROM sync_records s
                                 WHERE s.rule = h.rule AND s.source_record_id = h.source_record_id)
             ORDER BY 1, 2 LIMIT $3",
        )
        .bind(rules)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("find records"))
    }

    /// Links made outside the step, in one statement: `(source record, target record,
    /// source revision)` under `rule`, as a sync would have left them without their
    /// authority state (the next step observes both sides as a first link does). For
    /// seeding a large rule (the reconcile bench) and for importing links.
    pub async fn insert_links(
        &self,
        rule: &str,
        links: &[(String, String, Option<i64>)],
    ) -> Result<u64, StoreError> {
        let sources: Vec<&str> = links.iter().map(|l| l.0.as_str()).collect();
        let targets: Vec<&str> = links.iter().map(|l| l.1.as_str()).collect();
        let revisions: Vec<Option<i64>> = links.iter().map(|l| l.2).collect();
        let done = sqlx::query(
            "INSERT INTO sync_records (rule, source_record_id, target_id, matched_by, source_revision, linked_at)
             SELECT $1, s, t, '{\"step\": \"imported\"}'::jsonb, r, now()
             FROM unnest($2::text[], $3::text[], $4::bigint[]) AS l(s, t, r)
             ON CONFLICT (rule, source_record_id) DO NOTHING",
        )
        .bind(rule)
        .bind(&sources)
        .bind(&targets)
        .bind(&revisions)
        .execute(&self.pool)
        .await
        .map_err(q("insert links"))?;
        Ok(done.rows_affected())
    }

    /// The source record linked to a target record under a rule.
    pub async fn source_for_target(
        &self,
        rule: &str,
        target_id: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT source_record_id FROM sync_records WHERE rule = $1 AND target_id = $2 LIMIT 1",
        )
        .bind(rule)
        .bind(target_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("find the linked record"))
    }
}
