//! Invariants PostgreSQL itself holds, checked against the real database.

use tests::{RULE, TestDb};

/// The history is append-only: an UPDATE or DELETE is refused by a trigger, whoever
/// runs it (the service, a tool, a person with psql).
#[tokio::test]
async fn the_history_refuses_updates_and_deletes() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let store = store::Store::connect(&db.url, 1).await?;
    sqlx::query(
        "INSERT INTO history (rule, source_record_id, kind, summary) VALUES ($1, 'k-1', 'created', 'first')",
    )
    .bind(RULE)
    .execute(store.pool())
    .await?;
    for statement in [
        "UPDATE history SET summary = 'rewritten'",
        "DELETE FROM history",
    ] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(store.pool())
            .await
            .expect_err(statement);
        assert!(
            refused.to_string().contains("history is append-only"),
            "{statement}: {refused}"
        );
    }
    let kept = store.history(RULE, "k-1").await?;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].summary, "first");
    store.pool().close().await;
    db.drop_db().await
}
