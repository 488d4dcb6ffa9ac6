//! The spine end to end: kintone → ingest → RabbitMQ → worker → helpdesk (+ write-back).

use serde_json::{Value, json};
use tests::{APP, Env, RULE};

fn posts(log: &[Value], path: &str) -> usize {
    log.iter()
        .filter(|e| e["method"] == "POST" && e["path"] == path)
        .count()
}

fn patches(log: &[Value]) -> usize {
    log.iter().filter(|e| e["method"] == "PATCH").count()
}

async fn processed(env: &Env, n: i64) -> anyhow::Result<bool> {
    Ok(env.store.processed_count(RULE).await? >= n)
}

#[tokio::test]
async fn a_new_work_order_is_created_once_and_its_ticket_id_written_back() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-1001", "件名": " Broken pump ", "優先度": "高", "顧客メール": " A@Example.com ", "tags": ["onsite"]}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    // The write-back's own webhook is processed too, and recognised as already synced.
    env.settle("the write-back echo", || processed(&env, 2))
        .await?;

    let tickets = env.tickets_for("WO-1001").await?;
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    let t = &tickets[0];
    assert_eq!(t["subject"], "Broken pump");
    assert_eq!(t["priority"], "high");
    assert_eq!(t["contact_email"], "a@example.com");
    assert_eq!(t["tags"], json!(["onsite"]));
    let record = env.kintone_record(&id).await?;
    assert_eq!(record["helpdesk_ticket_id"]["value"], t["id"].to_string());

    let log = env.request_log("helpdesk").await?;
    assert_eq!(posts(&log, "/api/tickets"), 1);
    assert_eq!(
        patches(&log),
        0,
        "the echo of the write-back must not write again"
    );
    let history = env.history(&id).await?;
    assert!(
        history
            .iter()
            .any(|h| h.starts_with("created: created helpdesk record")),
        "{history:#?}"
    );
    assert!(
        history.iter().any(|h| h.starts_with("written_back: wrote")),
        "{history:#?}"
    );
    assert!(
        history.iter().any(|h| h.contains("was already synced")),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_variant_matches_an_existing_ticket_without_a_duplicate() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let existing = env
        .helpdesk_seed(json!({"subject": "Old subject", "external_id": "1234"}))
        .await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-1234", "件名": "New subject"}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;

    let tickets = env.tickets().await?;
    assert_eq!(tickets.len(), 1, "no ticket may be created: {tickets:#?}");
    assert_eq!(tickets[0]["id"].to_string(), existing);
    assert_eq!(tickets[0]["subject"], "New subject");
    let links = env.store.links(RULE).await?;
    assert_eq!(links[0].target_id.as_deref(), Some(existing.as_str()));
    assert_eq!(
        links[0].matched_by.as_ref().unwrap()["step"]["step"],
        "variant"
    );
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(|h| h == &format!("matched: matched helpdesk record {existing} by variant 1 (without prefix \"WO-\") \"1234\"")),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn two_candidates_open_a_conflict_and_nothing_is_written() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let a = env
        .helpdesk_seed(json!({"subject": "A", "external_id": "555"}))
        .await?;
    let b = env
        .helpdesk_seed(json!({"subject": "B", "external_id": "555"}))
        .await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-555", "件名": "Which one?"}))
        .await?;
    env.settle("the conflict", || async {
        Ok(!env.store.conflicts("open").await?.is_empty())
    })
    .await?;

    let conflicts = env.store.conflicts("open").await?;
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(c.kind, "several_matches");
    assert_eq!(c.source_record_id, id);
    let mut candidates: Vec<String> = c.detail["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    candidates.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(candidates, expected);
    let log = env.request_log("helpdesk").await?;
    assert_eq!(posts(&log, "/api/tickets"), 0);
    assert_eq!(patches(&log), 0);
    assert_eq!(
        env.kintone_record(&id).await?["helpdesk_ticket_id"]["value"],
        "",
        "nothing is written back"
    );
    assert_eq!(env.tickets().await?.len(), 2);
    env.finish().await
}

#[tokio::test]
async fn the_canonical_value_wins_over_a_lying_payload() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-77", "件名": "Truth"}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    env.settle("the echo", || processed(&env, 2)).await?;
    // A user changes the subject; its webhook is lost. Then a webhook arrives whose
    // payload claims another subject.
    env.kintone_edit_silently(&id, json!({"件名": "Truth v2"}))
        .await?;
    let mut record = env.kintone_record(&id).await?;
    record["件名"]["value"] = json!("LIE");
    let payload = json!({"id": "lying-webhook-1", "type": "UPDATE_RECORD", "app": {"id": APP, "name": "Work orders"}, "record": record, "recordTitle": "LIE", "url": "https://example.cybozu.com/k/101/show#record=1"});
    env.admin_post(
        &format!("/_admin/kintone/apps/{APP}/webhooks/send"),
        json!({"payload": payload}),
    )
    .await?;
    env.settle("the lying webhook", || processed(&env, 3))
        .await?;

    let t = &env.tickets_for("WO-77").await?[0];
    assert_eq!(t["subject"], "Truth v2");
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(|h| h == "payload_disagreed: webhook payload carried \"LIE\" for 件名, the source says \"Truth v2\" — kept the source's value"),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn five_deliveries_of_one_webhook_are_processed_once() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-5", "件名": "Five"}))
        .await?;
    env.flush_webhooks().await?;
    let sent = env.admin_get("/_admin/kintone/webhooks").await?;
    let first = sent
        .as_array()
        .and_then(|a| a.iter().find(|w| w["type"] == "ADD_RECORD"))
        .expect("the ADD_RECORD webhook")
        .clone();
    let webhook_id = first["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        env.admin_post(
            &format!("/_admin/kintone/webhooks/{webhook_id}/redeliver"),
            json!({}),
        )
        .await?;
    }
    env.settle("every delivery", || async {
        let h = env.history(&id).await?;
        Ok(h.iter()
            .filter(|s| s.starts_with("duplicate_skipped"))
            .count()
            == 4)
    })
    .await?;
    env.settle("the echo", || processed(&env, 2)).await?;

    let log = env.request_log("helpdesk").await?;
    assert_eq!(posts(&log, "/api/tickets"), 1);
    // A duplicate writes nothing anywhere: one helpdesk write (the create) and one
    // kintone write (the write-back) for five deliveries.
    let writes = |log: &[serde_json::Value]| log.iter().filter(|e| e["method"] != "GET").count();
    assert_eq!(writes(&log), 1, "{log:#?}");
    let kintone = env.request_log("kintone").await?;
    assert_eq!(writes(&kintone), 1, "{kintone:#?}");
    assert_eq!(env.tickets_for("WO-5").await?.len(), 1);
    // The first delivery's story is told once: one decision, four duplicates.
    let h = env.history(&id).await?;
    assert_eq!(
        h.iter().filter(|s| s.starts_with("created")).count(),
        1,
        "{h:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn an_older_revision_processed_after_a_newer_one_does_not_regress_the_target()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-9", "件名": "v1"}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    env.settle("the echo", || processed(&env, 2)).await?;

    // Two edits whose webhooks arrive in the wrong order.
    env.kintone_edit_silently(&id, json!({"件名": "v2"}))
        .await?;
    let older = env.kintone_record(&id).await?;
    env.kintone_edit_silently(&id, json!({"件名": "v3"}))
        .await?;
    let newer = env.kintone_record(&id).await?;
    let hook = |eid: &str, record: &Value| json!({"id": eid, "type": "UPDATE_RECORD", "app": {"id": APP, "name": "Work orders"}, "record": record, "recordTitle": "", "url": ""});
    env.admin_post(
        &format!("/_admin/kintone/apps/{APP}/webhooks/send"),
        json!({"payload": hook("newer", &newer)}),
    )
    .await?;
    env.settle("the newer webhook", || processed(&env, 3))
        .await?;
    env.admin_post(
        &format!("/_admin/kintone/apps/{APP}/webhooks/send"),
        json!({"payload": hook("older", &older)}),
    )
    .await?;
    env.settle("the older webhook", || processed(&env, 4))
        .await?;

    assert_eq!(env.tickets_for("WO-9").await?[0]["subject"], "v3");
    let log = env.request_log("helpdesk").await?;
    assert_eq!(patches(&log), 1, "only the newer revision is written");
    // The older webhook is a hint: the canonical record it leads to is the newer
    // revision, already synced. Its story says both, exactly.
    let old_rev = older["$revision"]["value"].as_str().unwrap_or_default();
    let new_rev = newer["$revision"]["value"].as_str().unwrap_or_default();
    assert_ne!(old_rev, new_rev);
    let history = env.history(&id).await?;
    assert_eq!(
        &history[history.len() - 2..],
        &[
            "payload_disagreed: webhook payload carried \"v2\" for 件名, the source says \"v3\" — kept the source's value".to_owned(),
            format!("stale_skipped: revision {new_rev} was already synced; nothing written"),
        ],
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_transient_target_failure_is_retried_until_it_succeeds() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.admin_post("/_admin/faults", json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": 503, "count": 2})).await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-31", "件名": "Flaky"}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    // The write-back precedes the commit: wait for the committed story.
    env.settle("the committed story", || async {
        Ok(env
            .history(&id)
            .await?
            .iter()
            .any(|h| h.starts_with("written_back")))
    })
    .await?;
    assert_eq!(env.tickets_for("WO-31").await?.len(), 1);
    let history = env.history(&id).await?;
    assert_eq!(
        history
            .iter()
            .filter(|h| h.starts_with("retry_scheduled") && h.contains("503"))
            .count(),
        2,
        "{history:#?}"
    );
    // A 503 to a create leaves it in doubt: the create is looked for until the settle
    // time, then made again with the same key, and the history says so.
    assert!(
        history
            .iter()
            .any(|h| h.starts_with("in_doubt_resolved") && h.contains("created again")),
        "{history:#?}"
    );
    assert!(!history.iter().any(|h| h.starts_with("dead_lettered")));
    env.finish().await
}

#[tokio::test]
async fn a_validation_error_from_the_target_opens_a_conflict_without_retrying() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    env.admin_post("/_admin/faults", json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": 422})).await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-33", "件名": "Refused"}))
        .await?;
    env.settle("the conflict", || async {
        Ok(!env.store.conflicts("open").await?.is_empty())
    })
    .await?;
    let c = &env.store.conflicts("open").await?[0];
    assert_eq!(c.kind, "rejected");
    assert_eq!(c.source_record_id, id);
    let log = env.request_log("helpdesk").await?;
    assert_eq!(posts(&log, "/api/tickets"), 1, "no blind retry");
    let history = env.history(&id).await?;
    assert!(
        !history.iter().any(|h| h.starts_with("retry_scheduled")),
        "{history:#?}"
    );
    // The story up to the refusal is kept.
    assert!(
        history
            .iter()
            .any(|h| h.starts_with("fetched: fetched the record from kintone")),
        "{history:#?}"
    );
    assert!(
        history
            .last()
            .unwrap()
            .starts_with("conflict_opened: helpdesk refused the write (422"),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_record_missing_a_required_field_opens_a_conflict() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-34", "件名": "   "}))
        .await?;
    env.settle("the conflict", || async {
        Ok(!env.store.conflicts("open").await?.is_empty())
    })
    .await?;
    let c = &env.store.conflicts("open").await?[0];
    assert_eq!(c.kind, "invalid");
    assert_eq!(
        c.summary,
        "the record cannot be synced: 件名: is required but empty; nothing written"
    );
    assert_eq!(c.source_record_id, id);
    assert!(env.tickets().await?.is_empty());
    env.finish().await
}
