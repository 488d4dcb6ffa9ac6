//! API usage of the systems with a daily budget: one counter per system and hour.

use domain::budget::Usage;

use crate::{Store, StoreError, q};

/// A system's usage as [`Store::api_usage`] reads it: the counts are sums of counters
/// that only grow, so a negative one is an error.
#[derive(sqlx::FromRow)]
struct UsageRow {
    #[sqlx(try_from = "i64")]
    today: u64,
    #[sqlx(try_from = "i64")]
    recent: u64,
    recent_seconds: f64,
    seconds_left: f64,
}

impl Store {
    /// Counts `n` requests to `system` now.
    pub async fn api_usage_add(&self, system: &str, n: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_usage (system, hour, requests)
             VALUES ($1, date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', $2)
             ON CONFLICT (system, hour) DO UPDATE SET requests = api_usage.requests + EXCLUDED.requests",
        )
        .bind(system)
        .bind(n)
        .execute(&self.pool)
        .await
        .map_err(q("count an API request"))?;
        Ok(())
    }

    /// `system`'s usage today (UTC), with the pace of the current and the previous
    /// hour as the recent window.
    pub async fn api_usage(&self, system: &str) -> Result<Usage, StoreError> {
        let row = sqlx::query_as::<_, UsageRow>(
            "WITH t AS (
                 SELECT now() AS now,
                        date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day,
                        (date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') - interval '1 hour' AS recent)
             SELECT coalesce(sum(u.requests) FILTER (WHERE u.hour >= t.day), 0)::bigint AS today,
                    coalesce(sum(u.requests) FILTER (WHERE u.hour >= t.recent), 0)::bigint AS recent,
                    extract(epoch FROM t.now - t.recent)::float8 AS recent_seconds,
                    extract(epoch FROM t.day + interval '1 day' - t.now)::float8 AS seconds_left
               FROM t LEFT JOIN api_usage u ON u.system = $1 AND u.hour >= least(t.day, t.recent)
              GROUP BY t.now, t.day, t.recent",
        )
        .bind(system)
        .fetch_one(&self.pool)
        .await
        .map_err(q("read API usage"))?;
        Ok(Usage {
            used_today: row.today,
            recent_requests: row.recent,
            recent_seconds: row.recent_seconds,
            seconds_left: row.seconds_left,
        })
    }
}
