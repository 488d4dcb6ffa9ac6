//! What became of the events and what was sent for them, as operators read it: the
//! events processed under a rule and a record's outbound operations.

use crate::{OutboundOpRow, Store, StoreError, q};

impl Store {
    /// The outbound operations of a record, oldest first.
    pub async fn ops(&self, rule: &str, record_id: &str) -> Result<Vec<OutboundOpRow>, StoreError> {
        sqlx::query_as::<_, OutboundOpRow>("SELECT system, status, fields FROM outbound_ops WHERE rule = $1 AND source_record_id = $2 ORDER BY id")
            .bind(rule)
            .bind(record_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read outbound operations"))
    }

    /// How many events were processed for a rule.
    pub async fn processed_count(&self, rule: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE rule = $1")
            .bind(rule)
            .fetch_one(&self.pool)
            .await
            .map_err(q("count processed events"))
    }
}
