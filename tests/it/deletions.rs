//! What a rule does with its target record when the source record is deleted:
//! `delete_target` deletes it too and forgets the link; `flag` keeps it, marked.

use domain::rules::{DeletedFlag, OnDelete, OnTargetDelete, SyncRules};
use serde_json::json;
use tests::{APP, Env, EnvOptions, RULE, change};
use worker::step::Done;

fn deletable(rules: &mut SyncRules) {
    rules.rules[0].on_delete = OnDelete::DeleteTarget;
    rules
        .systems
        .get_mut("helpdesk")
        .and_then(|h| h.entities.get_mut("ticket"))
        .expect("the ticket entity")
        .delete = Some("/api/tickets/{id}".into());
}

fn flagged(rules: &mut SyncRules) {
    rules.rules[0].on_delete = OnDelete::Flag;
    rules.rules[0].deleted_flag = Some(DeletedFlag {
        field: "status".into(),
        value: json!("closed"),
    });
}

async fn linked_then_deleted(env: &Env, no: &str) -> anyhow::Result<(String, String)> {
    let step = env.processor()?;
    let id = env
        .kintone_create_silently(json!({"work_order_no": no, "件名": "Going away"}))
        .await?;
    step.step(&change(&format!("ev-{no}"), &id), 1).await?;
    let ticket = env.tickets_for(no).await?[0]["id"].to_string();
    env.sandbox_admin()
        .delete(&format!(
            "/_admin/kintone/apps/{APP}/records/{id}?webhook=false"
        ))
        .await?;
    let done = step.step(&change(&format!("ev-{no}-gone"), &id), 1).await?;
    assert_eq!(done, vec![(RULE.to_owned(), Done::Deleted)]);
    Ok((id, ticket))
}

#[tokio::test]
async fn delete_target_deletes_the_ticket_and_forgets_the_link() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(deletable),
        ..EnvOptions::default()
    })
    .await?;
    let (id, ticket) = linked_then_deleted(&env, "WO-91").await?;
    assert!(env.tickets_for("WO-91").await?.is_empty());
    assert!(env.store.links(RULE).await?.is_empty());
    let deletes: Vec<_> = env
        .request_log("helpdesk")
        .await?
        .into_iter()
        .filter(|e| e["method"] == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    assert_eq!(deletes[0]["path"], format!("/api/tickets/{ticket}"));
    let history = env.store.history(RULE, &id).await?;
    assert!(
        history.iter().any(|h| h.summary
            == format!("the record no longer exists in kintone; helpdesk record {ticket} was deleted too, and the link was removed")),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn flag_keeps_the_ticket_and_its_link_and_marks_it() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(flagged),
        ..EnvOptions::default()
    })
    .await?;
    let (id, ticket) = linked_then_deleted(&env, "WO-92").await?;
    let tickets = env.tickets_for("WO-92").await?;
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0]["status"], "closed");
    assert_eq!(env.store.links(RULE).await?.len(), 1);
    let history = env.store.history(RULE, &id).await?;
    assert!(
        history.iter().any(|h| h.summary
            == format!("the record no longer exists in kintone; helpdesk record {ticket} was kept, with status set to \"closed\"")),
        "{history:#?}"
    );
    env.finish().await
}

fn two_way_unlink(rules: &mut SyncRules) {
    tests::two_way(rules);
    rules.rules[0].on_target_delete = OnTargetDelete::Unlink;
}

fn two_way_review(rules: &mut SyncRules) {
    tests::two_way(rules);
    rules.rules[0].on_target_delete = OnTargetDelete::Review;
}

/// A linked work order whose ticket an agent then deleted in the helpdesk.
async fn ticket_deleted(env: &Env, no: &str) -> anyhow::Result<(String, String)> {
    let id = env
        .kintone_create_silently(json!({"work_order_no": no, "件名": "Still here"}))
        .await?;
    env.processor()?
        .step(&change(&format!("ev-{no}"), &id), 1)
        .await?;
    let ticket = env.tickets_for(no).await?[0]["id"].to_string();
    env.http
        .delete(format!("{}/api/tickets/{ticket}", env.sandbox.base_url))
        .bearer_auth(&env.sandbox_config.helpdesk_token)
        .send()
        .await?
        .error_for_status()?;
    assert!(env.tickets_for(no).await?.is_empty());
    Ok((id, ticket))
}

#[tokio::test]
async fn a_two_way_rule_that_unlinks_a_deleted_ticket_restores_it_at_the_next_change()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(two_way_unlink),
        ..EnvOptions::default()
    })
    .await?;
    let (id, old) = ticket_deleted(&env, "WO-93").await?;
    let step = env.processor()?;
    env.kintone_edit_silently(&id, json!({"件名": "Changed"}))
        .await?;
    assert_eq!(
        step.step(&change("ev-93-a", &id), 1).await?,
        vec![(RULE.to_owned(), Done::Deleted)]
    );
    assert!(env.store.links(RULE).await?.is_empty());
    // The next change matches afresh, finds nothing, and creates it again.
    env.kintone_edit_silently(&id, json!({"件名": "Changed again"}))
        .await?;
    step.step(&change("ev-93-b", &id), 1).await?;
    let tickets = env.tickets_for("WO-93").await?;
    assert_eq!(
        tickets.len(),
        1,
        "{:#?}",
        env.store
            .history(RULE, &id)
            .await?
            .iter()
            .map(|h| h.summary.clone())
            .collect::<Vec<_>>()
    );
    assert_ne!(tickets[0]["id"].to_string(), old);
    assert_eq!(tickets[0]["subject"], "Changed again");
    let history = env.store.history(RULE, &id).await?;
    assert!(
        history.iter().any(|h| h.summary
            == format!("helpdesk record {old} no longer exists; the link was removed, so the next change matches afresh")),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_two_way_rule_that_reviews_a_deleted_ticket_asks_a_person() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(two_way_review),
        ..EnvOptions::default()
    })
    .await?;
    let (id, old) = ticket_deleted(&env, "WO-94").await?;
    env.kintone_edit_silently(&id, json!({"件名": "Changed"}))
        .await?;
    env.processor()?.step(&change("ev-94-a", &id), 1).await?;
    let open = env.store.conflicts("open").await?;
    let c: Vec<_> = open.iter().filter(|c| c.kind == "target_deleted").collect();
    assert_eq!(c.len(), 1, "{open:#?}");
    assert!(
        c[0].summary
            .contains(&format!("helpdesk record {old} no longer exists"))
    );
    // The link is kept and nothing is created.
    assert_eq!(
        env.store.links(RULE).await?[0].target_id.as_deref(),
        Some(old.as_str())
    );
    assert!(env.tickets_for("WO-94").await?.is_empty());
    env.finish().await
}

fn two_way_delete_source(rules: &mut SyncRules) {
    tests::two_way(rules);
    rules.rules[0].on_target_delete = OnTargetDelete::DeleteSource;
}

fn two_way_flag(rules: &mut SyncRules) {
    tests::two_way(rules);
    rules.rules[0].on_target_delete = OnTargetDelete::Flag;
    rules.rules[0].target_deleted_flag = Some(DeletedFlag {
        field: "状態".into(),
        value: json!("完了"),
    });
}

/// The kintone writes the service made: PUT `record.json`, DELETE `records.json`.
async fn kintone_writes(env: &Env, method: &str) -> anyhow::Result<usize> {
    Ok(env
        .request_log("kintone")
        .await?
        .iter()
        .filter(|e| {
            e["method"] == method
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/k/v1/record"))
        })
        .count())
}

#[tokio::test]
async fn a_two_way_rule_that_deletes_the_source_follows_a_deleted_ticket() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(two_way_delete_source),
        ..EnvOptions::default()
    })
    .await?;
    let (id, _) = ticket_deleted(&env, "WO-95").await?;
    env.kintone_edit_silently(&id, json!({"件名": "Changed"}))
        .await?;
    let step = env.processor()?;
    assert_eq!(
        step.step(&change("ev-95-a", &id), 1).await?,
        vec![(RULE.to_owned(), Done::Deleted)]
    );
    assert!(
        env.kintone_record(&id).await.is_err(),
        "the work order is deleted"
    );
    assert_eq!(kintone_writes(&env, "DELETE").await?, 1);
    assert!(env.store.links(RULE).await?.is_empty());
    let history = env.store.history(RULE, &id).await?;
    assert!(
        history.iter().any(|h| h.summary
            == format!("the record no longer exists in helpdesk; kintone record {id} was deleted too, and the link was removed")),
        "{history:#?}"
    );
    // Its deletion's own event finds nothing to do, and nothing is created.
    let done = step.step(&change("ev-95-b", &id), 1).await?;
    assert_eq!(done, vec![(RULE.to_owned(), Done::Deleted)]);
    assert!(env.tickets_for("WO-95").await?.is_empty());
    env.finish().await
}

#[tokio::test]
async fn a_two_way_rule_that_flags_the_source_writes_the_flag_once() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(two_way_flag),
        ..EnvOptions::default()
    })
    .await?;
    let (id, old) = ticket_deleted(&env, "WO-96").await?;
    env.kintone_edit_silently(&id, json!({"件名": "Changed"}))
        .await?;
    let step = env.processor()?;
    let before = kintone_writes(&env, "PUT").await?;
    assert_eq!(
        step.step(&change("ev-96-a", &id), 1).await?,
        vec![(RULE.to_owned(), Done::Deleted)]
    );
    assert_eq!(env.kintone_record(&id).await?["状態"]["value"], "完了");
    assert_eq!(kintone_writes(&env, "PUT").await?, before + 1);
    // The link is kept, so nothing is created for it either.
    assert_eq!(
        env.store.links(RULE).await?[0].target_id.as_deref(),
        Some(old.as_str())
    );
    // The flag's own change comes back: the record holds the flag, nothing is written.
    assert_eq!(
        step.step(&change("ev-96-b", &id), 1).await?,
        vec![(RULE.to_owned(), Done::Deleted)]
    );
    assert_eq!(
        kintone_writes(&env, "PUT").await?,
        before + 1,
        "the flag, once"
    );
    assert!(env.tickets_for("WO-96").await?.is_empty());
    let history: Vec<String> = env
        .store
        .history(RULE, &id)
        .await?
        .into_iter()
        .map(|h| h.summary)
        .collect();
    assert!(
        history.contains(&format!("the record no longer exists in helpdesk; kintone record {id} was kept, with 状態 set to \"完了\"")),
        "{history:#?}"
    );
    assert!(
        history.contains(&format!("helpdesk record {old} no longer exists; the kintone record is flagged already, so nothing was written")),
        "{history:#?}"
    );
    env.finish().await
}
