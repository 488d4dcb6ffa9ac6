//! A rule renamed between two rules files: `check-config --previous` names the change
//! and the migration that covers it; `rename-rule` moves what the store holds, so the
//! renamed rule keeps its links (no second ticket) and its whole history.

use serde_json::json;
use store::RenameError;
use tests::{Env, EnvOptions, RULE, change};

const NEW_NAME: &str = "orders-to-tickets";

#[tokio::test]
async fn a_renamed_rule_keeps_its_links_and_its_history() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let processor = env.processor()?;
    let id = env
        .kintone_create_silently(json!({"work_order_no": "WO-61", "件名": "Before"}))
        .await?;
    processor.step(&change("ev-1", &id), 1).await?;
    assert_eq!(env.tickets_for("WO-61").await?.len(), 1);

    let mut renamed = env.rules.clone();
    renamed.rules[0].name = NEW_NAME.into();
    // The check names the rename and what covers it.
    let found = config::migration::orphaning(&env.rules, &renamed);
    assert_eq!(found.len(), 1, "{found:?}");
    let rename: config::migration::Migration = format!("rename:{RULE}={NEW_NAME}")
        .parse()
        .map_err(anyhow::Error::msg)?;
    assert!(found[0].covered_by(&[rename]));

    // A worker still holding a lease under the old name stops the rename.
    let mut lease = env.store.try_begin_record(RULE, &id).await?.expect("free");
    let busy = env.store.rename_rule(RULE, NEW_NAME).await;
    assert!(matches!(busy, Err(RenameError::Busy(_))), "{busy:?}");
    lease.commit().await?;

    let moved = env.store.rename_rule(RULE, NEW_NAME).await?;
    let tables: Vec<&str> = moved.iter().map(|m| m.table).collect();
    assert!(tables.contains(&"sync_records"), "{moved:?}");
    assert!(tables.contains(&"processed_events"), "{moved:?}");
    assert!(env.store.links(RULE).await?.is_empty());

    // Under its new name the rule finds its link: the ticket is updated, not doubled.
    let processor = env.processor_with(&renamed)?;
    env.kintone_edit_silently(&id, json!({"件名": "After"}))
        .await?;
    processor.step(&change("ev-2", &id), 1).await?;
    let tickets = env.tickets_for("WO-61").await?;
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    assert_eq!(tickets[0]["subject"], "After");
    // The history reads as one: the create under the old name, the update under the new.
    let history = env.store.history(NEW_NAME, &id).await?;
    let kinds: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h.rule.as_str(), h.kind.as_str()))
        .collect();
    assert!(kinds.contains(&(RULE, "created")), "{kinds:?}");
    assert!(kinds.contains(&(NEW_NAME, "updated")), "{kinds:?}");

    // The relink migration: the links are forgotten, and the next change matches the
    // same ticket by identity instead of creating one.
    assert_eq!(env.store.forget_links(NEW_NAME).await?, 1);
    assert!(env.store.links(NEW_NAME).await?.is_empty());
    env.kintone_edit_silently(&id, json!({"件名": "Relinked"}))
        .await?;
    processor.step(&change("ev-4", &id), 1).await?;
    let tickets = env.tickets_for("WO-61").await?;
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    assert_eq!(tickets[0]["subject"], "Relinked");
    assert_eq!(env.store.links(NEW_NAME).await?.len(), 1);

    // A name that has records of its own is not taken over, and a rule is not renamed
    // to itself.
    let other = env
        .kintone_create_silently(json!({"work_order_no": "WO-62", "件名": "Other"}))
        .await?;
    env.processor()?.step(&change("ev-3", &other), 1).await?;
    let taken = env.store.rename_rule(NEW_NAME, RULE).await;
    assert!(matches!(taken, Err(RenameError::Taken(_))), "{taken:?}");
    assert!(matches!(
        env.store.rename_rule(RULE, RULE).await,
        Err(RenameError::Same)
    ));
    env.finish().await
}
