//! Renaming a rule: what the store holds under the old name moves to the new one in one
//! transaction, and the append-only history is read under every name the rule had.

use crate::{Store, StoreError, q};

/// The tables whose `rule` column a rename moves (every rule-keyed table but the
/// append-only history, and the leases, which are dropped: none is held).
const RULE_TABLES: [&str; 11] = [
    "sync_records",
    "processed_events",
    "conflicts",
    "dead_letters",
    "parked",
    "outbound_ops",
    "resync_cursors",
    "resync_seen",
    "deliveries",
    "reconcile_runs",
    "import_runs",
];

/// The names a rule's history is kept under: its own and every former one.
pub(crate) const NAMES: &str = "WITH RECURSIVE names(n) AS (
        SELECT $1::text
        UNION SELECT r.old_name FROM rule_renames r JOIN names ON r.new_name = names.n)";

/// The rows a rename moved in one table ([`Store::rename_rule`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The table.
    pub table: &'static str,
    /// How many of its rows moved.
    pub rows: u64,
}

/// Why a rename cannot run.
#[derive(Debug, thiserror::Error)]
pub enum RenameError {
    /// A worker holds a lease under the old name: it is still processing.
    #[error(
        "a worker is processing rule {0} (it holds a lease): stop the workers, or pause the rule and wait for its leases to end, then rename"
    )]
    Busy(String),
    /// The new name already has records of its own.
    #[error("rule {0} already has records of its own: rename before the new rules are deployed")]
    Taken(String),
    /// Old and new are the same.
    #[error("a rule cannot be renamed to its own name")]
    Same,
    /// PostgreSQL failed; nothing was moved.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `Busy` while a worker holds a lease of `rule` (it is processing one of its records).
async fn refuse_if_held(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rule: &str,
) -> Result<(), RenameError> {
    let held: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM record_leases WHERE rule = $1 AND expires_at > now())",
    )
    .bind(rule)
    .fetch_one(&mut **tx)
    .await
    .map_err(q("read the rule's leases"))?;
    if held {
        return Err(RenameError::Busy(rule.to_owned()));
    }
    Ok(())
}

impl Store {
    /// Forgets a rule's links and sync state (its source or target moved): each record
    /// is matched afresh, by identity, at its next change. Refused while a worker holds
    /// a lease of the rule. Returns the links forgotten.
    pub async fn forget_links(&self, rule: &str) -> Result<u64, RenameError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        refuse_if_held(&mut tx, rule).await?;
        let done = sqlx::query("DELETE FROM sync_records WHERE rule = $1")
            .bind(rule)
            .execute(&mut *tx)
            .await
            .map_err(q("forget a rule's links"))?;
        tx.commit().await.map_err(q("commit"))?;
        Ok(done.rows_affected())
    }

    /// Moves everything stored under rule `from` to rule `to`, in one transaction;
    /// returns the rows moved per table (those with any).
    pub async fn rename_rule(&self, from: &str, to: &str) -> Result<Vec<Moved>, RenameError> {
        if from == to {
            return Err(RenameError::Same);
        }
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        refuse_if_held(&mut tx, from).await?;
        let taken: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sync_records WHERE rule = $1)
                 OR EXISTS (SELECT 1 FROM processed_events WHERE rule = $1)",
        )
        .bind(to)
        .fetch_one(&mut *tx)
        .await
        .map_err(q("read the new name's records"))?;
        if taken {
            return Err(RenameError::Taken(to.to_owned()));
        }
        // Expired leases only (none is held): the next holder takes a fresh one.
        sqlx::query("DELETE FROM record_leases WHERE rule = $1")
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(q("drop a rule's expired leases"))?;
        let mut moved = vec![];
        for table in RULE_TABLES {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET rule = $2 WHERE rule = $1"
            )))
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await
            .map_err(q("move a rule's rows"))?;
            if done.rows_affected() > 0 {
                moved.push(Moved {
                    table,
                    rows: done.rows_affected(),
                });
            }
        }
        let paused = sqlx::query("UPDATE paused SET name = $2 WHERE scope = 'rule' AND name = $1")
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await
            .map_err(q("move a rule's pause"))?;
        if paused.rows_affected() > 0 {
            moved.push(Moved {
                table: "paused",
                rows: paused.rows_affected(),
            });
        }
        sqlx::query(
            "INSERT INTO rule_renames (old_name, new_name) VALUES ($1, $2)
             ON CONFLICT (old_name) DO UPDATE SET new_name = EXCLUDED.new_name, renamed_at = now()",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await
        .map_err(q("record a rename"))?;
        tx.commit().await.map_err(q("commit"))?;
        Ok(moved)
    }
}
