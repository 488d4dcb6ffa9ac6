//! Conflicts for a person, as operators read and dismiss them (a step opens and resolves
//! them through its [`crate::RecordTx`]).

use crate::{ConflictRow, Store, StoreError, q};

impl Store {
    /// One conflict.
    pub async fn conflict(&self, id: i64) -> Result<Option<ConflictRow>, StoreError> {
        let rows = self.conflicts_where("id = $1", id).await?;
        Ok(rows.into_iter().next())
    }

    async fn conflicts_where(
        &self,
        condition: &'static str,
        id: i64,
    ) -> Result<Vec<ConflictRow>, StoreError> {
        let sql = format!(
            "SELECT id, rule, source_record_id, kind, summary, detail, status, occurrences, opened_at FROM conflicts WHERE {condition}"
        );
        sqlx::query_as::<_, ConflictRow>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read a conflict"))
    }

    /// Dismisses an open conflict; returns whether it was open.
    pub async fn dismiss_conflict(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE conflicts SET status = 'dismissed', closed_at = now(), updated_at = now() WHERE id = $1 AND status = 'open'")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("dismiss a conflict"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Conflicts with a status (`open`, `resolved`, `dismissed`), oldest first.
    pub async fn conflicts(&self, status: &str) -> Result<Vec<ConflictRow>, StoreError> {
        sqlx::query_as::<_, ConflictRow>(
            "SELECT id, rule, source_record_id, kind, summary, detail, status, occurrences, opened_at
             FROM conflicts WHERE status = $1 ORDER BY id",
        )
        .bind(status)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read conflicts"))
    }
}
