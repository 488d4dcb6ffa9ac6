//! The ledger: per rule, every event a worker saw (`deliveries`, written on first
//! sight) against what became of it, all from PostgreSQL, none from process memory, so
//! it adds up across restarts and across the fleet.
//!
//! Each delivery falls in exactly one bucket: its outcome (`processed_events`), else
//! dead-lettered (a dead letter not replayed), else parked, else in flight (seen within
//! the settle time, or its record leased now), else unaccounted: seen and then lost,
//! which is the imbalance an operator must look at.

use crate::{Store, StoreError, q};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One rule's ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ledger {
    /// The rule.
    pub rule: String,
    /// Events (and commands) a worker saw under the rule, each counted once.
    pub accepted: i64,
    /// Written to the target or the source.
    pub synced: i64,
    /// Finished without a write, by reason (`unchanged`, `stale`, `skipped` for no
    /// match, `deleted`, `coalesced` into a later parked event, `purged` with its dead
    /// letter).
    pub skipped: BTreeMap<String, i64>,
    /// Ended in a conflict for a person.
    pub conflicts: i64,
    /// In a dead letter not replayed.
    pub dead_lettered: i64,
    /// Waiting in the parked table (a pause or a closed window).
    pub parked: i64,
    /// Seen within the settle time, or its record is leased now.
    pub in_flight: i64,
    /// Seen, then nothing: no outcome, no dead letter, not parked, not in flight.
    pub unaccounted: i64,
    /// The oldest unaccounted deliveries (at most 10).
    pub oldest_unaccounted: Vec<Unaccounted>,
}

/// A delivery the ledger cannot account for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Unaccounted {
    /// The event or command id.
    pub event_id: String,
    /// The record, when known.
    #[sqlx(rename = "source_record_id")]
    pub record_id: Option<String>,
    /// When a worker first saw it.
    pub first_seen_at: DateTime<Utc>,
    /// When a worker last saw it.
    pub last_seen_at: DateTime<Utc>,
    /// How many times it was delivered.
    pub deliveries: i32,
}

/// The last recount of one rule's unaccounted deliveries ([`Store::unaccounted_rolled_up`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RollupRow {
    /// The rule.
    pub rule: String,
    /// Its deliveries first seen within the window and unaccounted for.
    pub unaccounted: i64,
}

/// How many deliveries of one rule fall in one bucket.
#[derive(sqlx::FromRow)]
struct BucketCount {
    rule: String,
    bucket: String,
    count: i64,
}

impl Ledger {
    /// What the buckets do not explain: zero when the ledger balances.
    pub fn imbalance(&self) -> i64 {
        self.accepted
            - self.synced
            - self.skipped.values().sum::<i64>()
            - self.conflicts
            - self.dead_lettered
            - self.parked
            - self.in_flight
    }

    fn add(&mut self, bucket: &str, n: i64) {
        self.accepted += n;
        match bucket {
            "synced" => self.synced += n,
            "conflict" => self.conflicts += n,
            "dead_lettered" => self.dead_lettered += n,
            "parked" => self.parked += n,
            "in_flight" => self.in_flight += n,
            "unaccounted" => self.unaccounted += n,
            other => *self.skipped.entry(other.to_owned()).or_default() += n,
        }
    }
}

/// Classifies each delivery into one bucket. `$1`: a rule or NULL; `$2`: the settle
/// time in seconds; `$3`: only deliveries first seen within that many seconds, or NULL.
macro_rules! buckets {
    () => {
        "
    SELECT d.rule, d.event_id, d.source_record_id, d.first_seen_at, d.last_seen_at, d.deliveries,
           CASE WHEN p.outcome IS NOT NULL THEN p.outcome
                WHEN EXISTS (SELECT 1 FROM dead_letters x
                              WHERE x.event_id = d.event_id AND x.status = 'dead'
                                AND (x.rule IS NULL OR x.rule = d.rule)) THEN 'dead_lettered'
                WHEN EXISTS (SELECT 1 FROM parked k
                              WHERE k.rule = d.rule AND k.source_record_id = d.source_record_id
                                AND k.event_id = d.event_id) THEN 'parked'
                WHEN d.last_seen_at > now() - make_interval(secs => $2)
                  OR EXISTS (SELECT 1 FROM record_leases l
                              WHERE l.rule = d.rule AND l.source_record_id = d.source_record_id
                                AND l.expires_at > now()) THEN 'in_flight'
                ELSE 'unaccounted' END AS bucket
      FROM deliveries d
      LEFT JOIN processed_events p ON p.event_id = d.event_id AND p.rule = d.rule
     WHERE ($1::text IS NULL OR d.rule = $1)
       AND ($3::float8 IS NULL OR d.first_seen_at > now() - make_interval(secs => $3))"
    };
}

impl Store {
    /// The ledger of one rule, or of every rule a worker saw work for, by rule name.
    /// A delivery unaccounted for is one last seen longer than `settle` ago.
    pub async fn ledger(
        &self,
        rule: Option<&str>,
        settle: Duration,
    ) -> Result<Vec<Ledger>, StoreError> {
        let rows = sqlx::query_as::<_, BucketCount>(concat!(
            "SELECT rule, bucket, count(*) FROM (",
            buckets!(),
            ") b GROUP BY rule, bucket ORDER BY rule, bucket"
        ))
        .bind(rule)
        .bind(settle.as_secs_f64())
        .bind(None::<f64>)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read the ledger"))?;
        let mut by_rule: BTreeMap<String, Ledger> = BTreeMap::new();
        for r in rows {
            by_rule
                .entry(r.rule.clone())
                .or_insert_with(|| Ledger {
                    rule: r.rule,
                    ..Ledger::default()
                })
                .add(&r.bucket, r.count);
        }
        for ledger in by_rule.values_mut().filter(|l| l.unaccounted > 0) {
            ledger.oldest_unaccounted = sqlx::query_as::<_, Unaccounted>(concat!(
                "SELECT event_id, source_record_id, first_seen_at, last_seen_at, deliveries FROM (",
                buckets!(),
                ") b WHERE bucket = 'unaccounted' ORDER BY first_seen_at, event_id LIMIT 10"
            ))
            .bind(&ledger.rule)
            .bind(settle.as_secs_f64())
            .bind(None::<f64>)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read the ledger's unaccounted events"))?;
        }
        Ok(by_rule.into_values().collect())
    }

    /// Recounts, per rule, the deliveries first seen within `window` that are
    /// unaccounted for (seen, then lost) into `ledger_rollup`, unless another worker
    /// did within `every` or is doing it now (an advisory lock): one recount per period
    /// for the fleet. Every rule of `rules` gets a row (0 when none is unaccounted), and
    /// rules no longer configured lose theirs. Returns whether this call recounted.
    pub async fn roll_up_unaccounted(
        &self,
        rules: &[String],
        settle: Duration,
        window: Duration,
        every: Duration,
    ) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(q("begin the ledger rollup"))?;
        let due: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtext('recordsync.ledger_rollup'))
                AND COALESCE((SELECT max(computed_at) FROM ledger_rollup)
                             < now() - make_interval(secs => $1), true)",
        )
        .bind(every.as_secs_f64() * 0.9)
        .fetch_one(&mut *tx)
        .await
        .map_err(q("claim the ledger rollup"))?;
        if !due {
            return Ok(false);
        }
        sqlx::query(concat!(
            "WITH counted AS (
                SELECT rule, count(*) FILTER (WHERE bucket = 'unaccounted') AS n FROM (",
            buckets!(),
            ") b GROUP BY rule
             ), fresh AS (
                SELECT r.rule, COALESCE(c.n, 0) AS n
                  FROM unnest($4::text[]) AS r(rule) LEFT JOIN counted c USING (rule)
             ), gone AS (
                DELETE FROM ledger_rollup WHERE rule <> ALL($4)
             )
             INSERT INTO ledger_rollup (rule, unaccounted, computed_at)
             SELECT rule, n, now() FROM fresh
             ON CONFLICT (rule) DO UPDATE
                SET unaccounted = EXCLUDED.unaccounted, computed_at = EXCLUDED.computed_at"
        ))
        .bind(None::<String>)
        .bind(settle.as_secs_f64())
        .bind(window.as_secs_f64())
        .bind(rules)
        .execute(&mut *tx)
        .await
        .map_err(q("recount the ledger's unaccounted events"))?;
        tx.commit().await.map_err(q("commit the ledger rollup"))?;
        Ok(true)
    }

    /// The last recount of the ledger's unaccounted events per rule (see
    /// [`Store::roll_up_unaccounted`]): one row per configured rule, read by a scrape.
    pub async fn unaccounted_rolled_up(&self) -> Result<Vec<RollupRow>, StoreError> {
        sqlx::query_as::<_, RollupRow>("SELECT rule, unaccounted FROM ledger_rollup ORDER BY rule")
            .fetch_all(&self.pool)
            .await
            .map_err(q("read the ledger rollup"))
    }
}
