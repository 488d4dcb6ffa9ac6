//! The fleet-wide limiter's state. The rate is a GCRA whose state is one row per
//! system: each request reserves the next slot in one UPDATE (the row lock orders
//! concurrent reservations across the fleet, and PostgreSQL's clock is the only clock),
//! then waits for it. A 429's `Retry-After` moves `blocked_until`, which every later
//! reservation respects. Concurrency is a set of leased slots; a lease expires, so a
//! worker that dies holding one frees it.

use crate::{Store, StoreError, q};

impl Store {
    /// Creates the system's limiter rows (idempotent) with `max_concurrent` slots.
    pub async fn limiter_init(
        &self,
        system: &str,
        max_concurrent: Option<u32>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO limiter_state (system) VALUES ($1) ON CONFLICT (system) DO NOTHING",
        )
        .bind(system)
        .execute(&self.pool)
        .await
        .map_err(q("initialise the limiter"))?;
        let slots = max_concurrent.map(|n| n as i32).unwrap_or(0);
        sqlx::query(
            "INSERT INTO limiter_slots (system, slot) SELECT $1, s FROM generate_series(0, $2 - 1) AS s
             ON CONFLICT DO NOTHING",
        )
        .bind(system)
        .bind(slots)
        .execute(&self.pool)
        .await
        .map_err(q("initialise the limiter slots"))?;
        sqlx::query("DELETE FROM limiter_slots WHERE system = $1 AND slot >= $2")
            .bind(system)
            .bind(slots)
            .execute(&self.pool)
            .await
            .map_err(q("trim the limiter slots"))?;
        Ok(())
    }

    /// Reserves the next `count` request slots, `interval` apart: returns how many
    /// seconds to wait before sending the first. `interval` is 1 / rate; `tolerance`
    /// is (burst - 1) × interval. The slots are exactly those `count` single
    /// reservations would have been.
    pub async fn limiter_reserve(
        &self,
        system: &str,
        interval: f64,
        tolerance: f64,
        count: u32,
    ) -> Result<f64, StoreError> {
        let wait: f64 = sqlx::query_scalar(
            "UPDATE limiter_state
                SET tat = GREATEST(tat, clock_timestamp(), blocked_until) + $4 * $2 * interval '1 second'
              WHERE system = $1
          RETURNING EXTRACT(EPOCH FROM GREATEST(
                        tat - ($4 * $2 + $3) * interval '1 second',
                        blocked_until
                    ) - clock_timestamp())::float8 AS wait",
        )
        .bind(system)
        .bind(interval)
        .bind(tolerance)
        .bind(f64::from(count.max(1)))
        .fetch_one(&self.pool)
        .await
        .map_err(q("reserve a request slot"))?;
        Ok(wait.max(0.0))
    }

    /// Seconds until the system's block ends (zero when it is not blocked).
    pub async fn limiter_blocked_for(&self, system: &str) -> Result<f64, StoreError> {
        let wait: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM GREATEST(blocked_until, clock_timestamp()) - clock_timestamp())::float8 FROM limiter_state WHERE system = $1",
        )
        .bind(system)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("read a system's block"))?;
        Ok(wait.unwrap_or(0.0))
    }

    /// Blocks every request to the system for `seconds` from now (a 429's
    /// `Retry-After`).
    pub async fn limiter_block(&self, system: &str, seconds: f64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE limiter_state SET blocked_until = GREATEST(blocked_until, clock_timestamp() + $2 * interval '1 second')
              WHERE system = $1",
        )
        .bind(system)
        .bind(seconds)
        .execute(&self.pool)
        .await
        .map_err(q("block a system"))?;
        Ok(())
    }

    /// Takes a free (or expired) concurrency slot for `holder` for `lease` seconds.
    pub async fn limiter_take_slot(
        &self,
        system: &str,
        holder: &str,
        lease: f64,
    ) -> Result<Option<i32>, StoreError> {
        sqlx::query_scalar(
            "UPDATE limiter_slots SET holder = $2, expires_at = clock_timestamp() + $3 * interval '1 second'
              WHERE (system, slot) = (
                    SELECT system, slot FROM limiter_slots
                     WHERE system = $1 AND (holder IS NULL OR expires_at < clock_timestamp())
                     ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
          RETURNING slot",
        )
        .bind(system)
        .bind(holder)
        .bind(lease)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("take a concurrency slot"))
    }

    /// Gives a slot back.
    pub async fn limiter_release_slot(
        &self,
        system: &str,
        slot: i32,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE limiter_slots SET holder = NULL, expires_at = NULL WHERE system = $1 AND slot = $2 AND holder = $3")
            .bind(system)
            .bind(slot)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(q("release a concurrency slot"))?;
        Ok(())
    }
}
