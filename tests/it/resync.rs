//! Resync: records no webhook announced are found by asking the source what changed,
//! a scan that stops resumes from its cursor without queueing anything twice, and one
//! scan per rule runs at a time.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{APP, Env, EnvOptions, RULE};
use worker::resync::{ResyncError, ResyncJob};

async fn create_silently(env: &Env, fields: Value) -> anyhow::Result<String> {
    env.kintone_create_silently(fields).await
}

/// A kintone record edited with no webhook.
async fn edit_silently(env: &Env, id: &str, fields: Value) -> anyhow::Result<()> {
    env.kintone_edit_silently(id, fields).await
}

async fn cursor(env: &Env) -> anyhow::Result<Value> {
    let v: Value = env
        .http
        .get(format!("{}/resync", env.admin_urls[0]))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["resync"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["rule"] == RULE).cloned())
        .unwrap_or(Value::Null))
}

/// Starts a resync through the admin API and waits until it has completed.
async fn resync_through_the_api(env: &Env) -> anyhow::Result<Value> {
    let before = cursor(env).await?["last_completed_at"].clone();
    let resp = env
        .http
        .post(format!("{}/resync", env.admin_urls[0]))
        .json(&json!({"rule": RULE}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 202, "POST /resync: {}", resp.status());
    tests::wait_for(
        "the resync to complete",
        Duration::from_secs(30),
        || async {
            let c = cursor(env).await?;
            Ok(!c["last_completed_at"].is_null() && c["last_completed_at"] != before)
        },
    )
    .await?;
    cursor(env).await
}

/// Claims the rule's resync, waiting a moment for a lease released by a run that
/// just stopped.
async fn claim(env: &Env) -> anyhow::Result<ResyncJob> {
    let processor = env.processor()?;
    for _ in 0..50 {
        match ResyncJob::claim(&processor, RULE).await {
            Err(ResyncError::AlreadyRunning(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return Ok(other?),
        }
    }
    anyhow::bail!("the resync lease was never released")
}

#[tokio::test]
async fn records_no_webhook_announced_are_found_and_synced_by_the_next_resync() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    let mut ids = vec![];
    for n in 0..3 {
        ids.push(
            create_silently(
                &env,
                json!({"work_order_no": format!("WO-51{n}"), "件名": format!("Silent {n}")}),
            )
            .await?,
        );
    }
    // No webhook: nothing happens until the service asks.
    env.quiet(RULE).await?;
    assert!(env.tickets().await?.is_empty());

    let first = resync_through_the_api(&env).await?;
    assert_eq!(first["last_summary"]["listed"], 3, "{first:#}");
    assert_eq!(first["last_summary"]["queued"], 3, "{first:#}");
    assert_eq!(first["last_summary"]["total"], 3, "{first:#}");
    assert!(
        first["last_summary"]["since"].is_null(),
        "a first scan is a backfill"
    );
    env.settle("every silent record synced", || env.all_written_back(&ids))
        .await?;
    for n in 0..3 {
        assert_eq!(env.tickets_for(&format!("WO-51{n}")).await?.len(), 1);
    }

    // The next scan looks from the previous one's start (minus the overlap): the
    // records are listed again but were synced at that revision, so none is queued.
    let second = resync_through_the_api(&env).await?;
    assert!(!second["last_summary"]["since"].is_null(), "{second:#}");
    assert_eq!(second["last_summary"]["listed"], 3, "{second:#}");
    assert_eq!(second["last_summary"]["queued"], 0, "{second:#}");

    // A silent edit is found by the scan after it.
    edit_silently(&env, &ids[1], json!({"件名": "Edited silently"})).await?;
    let third = resync_through_the_api(&env).await?;
    assert_eq!(third["last_summary"]["queued"], 1, "{third:#}");
    env.settle("the silent edit reaches the helpdesk", || async {
        Ok(env.tickets_for("WO-511").await?[0]["subject"] == "Edited silently")
    })
    .await?;
    assert_eq!(env.ticket_posts().await?, 3, "nothing created twice");
    let history = env.history(&ids[1]).await?;
    assert!(
        history
            .iter()
            .any(|h| h.contains("a resync found this kintone record changed")),
        "the timeline says a resync found it: {history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn an_interrupted_resync_resumes_from_its_cursor_and_queues_nothing_twice()
-> anyhow::Result<()> {
    let mut env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let mut ids = vec![];
    for n in 0..5 {
        ids.push(
            create_silently(
                &env,
                json!({"work_order_no": format!("WO-52{n}"), "件名": format!("Page {n}")}),
            )
            .await?,
        );
    }
    // The listing of the second page fails once (an outage, a crash of the worker
    // running the scan: the scan stops after its first page).
    env.admin_post(
        "/_admin/faults",
        json!({"system": "kintone", "method": "GET", "path_prefix": "/k/v1/records.json",
               "query_contains": format!("$id > {}", ids[1]), "status": 503, "count": 1}),
    )
    .await?;
    let (publisher, names) = env.publisher().await?;
    let processor = env.processor()?;
    let stopped = claim(&env)
        .await?
        .run(&processor, &publisher, &names, false, 2)
        .await;
    assert!(
        matches!(stopped, Err(ResyncError::Source(_))),
        "{stopped:?}"
    );
    let cursors = env.store.resync_cursors().await?;
    let c = &cursors[0];
    assert!(c.scan_started_at.is_some(), "the scan is still in progress");
    assert_eq!(c.after_id.as_deref(), Some(ids[1].as_str()));
    assert_eq!((c.pages, c.listed, c.queued), (1, 2, 2));
    // Its progress: 2 of 5 records, and an estimate of the time left.
    assert_eq!(c.total, Some(5));
    assert!(c.eta_seconds.is_some_and(|s| s >= 0.0), "{c:?}");

    // The next run resumes after the last page queued.
    let report = claim(&env)
        .await?
        .run(&processor, &publisher, &names, false, 2)
        .await?;
    assert_eq!((report.pages, report.listed, report.queued), (2, 3, 3));
    assert_eq!(report.cursor.last_summary.as_ref().unwrap()["queued"], 5);
    assert!(report.cursor.scan_started_at.is_none());
    let log = env.request_log("kintone").await?;
    let listings = log
        .iter()
        .filter(|e| e["path"] == "/k/v1/records.json")
        .count();
    assert_eq!(listings, 4, "pages 1, 2 (failed), 2, 3: {log:#?}");

    // The queued commands are synced once each by a worker started now.
    env.start_worker().await?;
    env.settle("every record synced", || env.all_written_back(&ids))
        .await?;
    assert_eq!(env.ticket_posts().await?, 5, "one create per record");
    env.finish().await
}

#[tokio::test]
async fn one_resync_of_a_rule_runs_at_a_time() -> anyhow::Result<()> {
    let env = Env::start().await?;
    // Another worker holds the rule's resync lease.
    let held = env
        .store
        .begin_record(RULE, worker::resync::LEASE_ID)
        .await?;
    let processor = env.processor()?;
    assert!(matches!(
        ResyncJob::claim(&processor, RULE).await,
        Err(ResyncError::AlreadyRunning(_))
    ));
    let resp = env
        .http
        .post(format!("{}/resync", env.admin_urls[0]))
        .json(&json!({"rule": RULE}))
        .send()
        .await?;
    assert_eq!(resp.status(), 409);
    let unknown = env
        .http
        .post(format!("{}/resync", env.admin_urls[0]))
        .json(&json!({"rule": "no-such-rule"}))
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);
    drop(held);
    claim(&env).await?;
    env.finish().await
}

#[tokio::test]
async fn kintones_webhook_cap_drops_changes_and_a_resync_leaves_zero_drift() -> anyhow::Result<()> {
    let env = Env::start().await?;
    // kintone's cap is 60 a minute per domain; 15 keeps the test short.
    env.admin_post("/_admin/kintone/webhook_cap", json!({"per_minute": 15}))
        .await?;
    let mut ids = vec![];
    for n in 0..30 {
        ids.push(
            env.kintone_create(
                json!({"work_order_no": format!("WO-53{n:02}"), "件名": format!("Made {n}")}),
            )
            .await?,
        );
    }
    for (n, id) in ids.iter().enumerate() {
        env.kintone_edit(id, json!({"件名": format!("Edited {n}")}))
            .await?;
    }
    env.flush_webhooks().await?;
    let cap: Value = env.admin_get("/_admin/kintone/webhook_cap").await?;
    assert!(
        cap["dropped"].as_u64().unwrap_or(0) >= 30,
        "the cap dropped webhooks: {cap}"
    );

    resync_through_the_api(&env).await?;
    let drifted = || async {
        let tickets = env.tickets().await?;
        let mut wrong = vec![];
        for n in 0..30 {
            let mine: Vec<&Value> = tickets
                .iter()
                .filter(|t| t["external_id"] == format!("WO-53{n:02}"))
                .collect();
            if mine.len() != 1 || mine[0]["subject"] != format!("Edited {n}") {
                wrong.push(n);
            }
        }
        anyhow::Ok(wrong)
    };
    env.settle("zero drift after the resync", || async {
        Ok(drifted().await?.is_empty())
    })
    .await?;
    assert_eq!(env.ticket_posts().await?, 30, "no ticket created twice");
    env.finish().await
}

#[tokio::test]
async fn a_scheduled_resync_runs_when_a_worker_starts() -> anyhow::Result<()> {
    fn scheduled(rules: &mut domain::rules::SyncRules) {
        rules.rules[0].resync = Some(domain::rules::ResyncSpec {
            every_seconds: 3600,
            ..domain::rules::ResyncSpec::by_hand()
        });
    }
    let mut env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(scheduled),
        ..EnvOptions::default()
    })
    .await?;
    let mut ids = vec![];
    for n in 0..3 {
        ids.push(
            create_silently(
                &env,
                json!({"work_order_no": format!("WO-54{n}"), "件名": format!("While down {n}")}),
            )
            .await?,
        );
    }
    // A worker that starts runs each schedule at once, then every `every_seconds`;
    // with two workers, the fleet still scans once per period.
    env.start_worker().await?;
    env.start_worker().await?;
    env.settle("the records made while no worker ran", || {
        env.all_written_back(&ids)
    })
    .await?;
    let c = cursor(&env).await?;
    assert_eq!(c["last_summary"]["queued"], 3, "{c:#}");
    // A scan's first listing asks for the total: count the scans that started.
    let scans = || async {
        anyhow::Ok(
            env.request_log("kintone")
                .await?
                .iter()
                .filter(|e| {
                    e["path"] == "/k/v1/records.json"
                        && e["query"]
                            .as_str()
                            .is_some_and(|q| q.contains("totalCount=true"))
                })
                .count(),
        )
    };
    tests::wait_for(
        "both workers' first tick",
        Duration::from_secs(5),
        || async { Ok(scans().await? >= 1) },
    )
    .await?;
    // Both workers have had their turn: one scanned, the other found it taken (or
    // running).
    tests::wait_for("both workers' turn", Duration::from_secs(20), || async {
        Ok(env.scheduled_turns("resync").await?.values().sum::<u64>() >= 2)
    })
    .await?;
    let turns = env.scheduled_turns("resync").await?;
    assert_eq!(turns.get("ran"), Some(&1), "{turns:?}");
    assert_eq!(turns.values().sum::<u64>(), 2, "{turns:?}");
    assert_eq!(scans().await?, 1, "one scan for the fleet this period");
    env.finish().await
}

#[tokio::test]
async fn a_completed_full_resync_finds_a_record_deleted_without_a_webhook() -> anyhow::Result<()> {
    fn unlink_on_delete(rules: &mut domain::rules::SyncRules) {
        rules.rules[0].on_delete = domain::rules::OnDelete::Unlink;
    }
    let env = Env::start_with(EnvOptions {
        edit_rules: Some(unlink_on_delete),
        ..EnvOptions::default()
    })
    .await?;
    let mut ids = vec![];
    for n in 0..3 {
        ids.push(
            env.kintone_create(json!({"work_order_no": format!("WO-55{n}"), "件名": "Kept"}))
                .await?,
        );
    }
    env.settle("every record synced", || env.all_written_back(&ids))
        .await?;
    // Each write-back's own webhook is processed too before the deletion: processed
    // after it, it would find the record gone and unlink it by itself.
    env.flush_webhooks().await?;
    env.settle("the write-backs' echoes", || async {
        Ok(env.store.processed_count(RULE).await? >= 6)
    })
    .await?;
    // The last record is deleted in kintone, and no webhook says so.
    let gone = ids[2].clone();
    env.sandbox_admin()
        .delete(&format!(
            "/_admin/kintone/apps/{APP}/records/{gone}?webhook=false"
        ))
        .await?;

    // A full scan that stops after its first page concludes nothing.
    env.admin_post(
        "/_admin/faults",
        json!({"system": "kintone", "method": "GET", "path_prefix": "/k/v1/records.json",
               "query_contains": format!("$id > {}", ids[1]), "status": 503, "count": 1}),
    )
    .await?;
    let (publisher, names) = env.publisher().await?;
    let processor = env.processor()?;
    let stopped = claim(&env)
        .await?
        .run(&processor, &publisher, &names, true, 2)
        .await;
    assert!(
        matches!(stopped, Err(ResyncError::Source(_))),
        "{stopped:?}"
    );
    // What the first page queued has run its course before the links are read.
    env.quiet(RULE).await?;
    let linked = |links: &[store::LinkRow], id: &str| {
        links
            .iter()
            .any(|l| l.source_record_id == id && l.target_id.is_some())
    };
    assert!(
        linked(&env.store.links(RULE).await?, &gone),
        "an incomplete scan unlinks nothing"
    );

    // Resumed and completed, it knows every id: the record it never listed is checked,
    // found gone, and unlinked as the rule says.
    let report = claim(&env)
        .await?
        .run(&processor, &publisher, &names, false, 2)
        .await?;
    assert_eq!(report.unseen, 1, "{report:?}");
    env.settle("the deleted record unlinked", || async {
        Ok(!linked(&env.store.links(RULE).await?, &gone))
    })
    .await?;
    let links = env.store.links(RULE).await?;
    assert!(
        linked(&links, &ids[0]) && linked(&links, &ids[1]),
        "{links:#?}"
    );
    let history = env.history(&gone).await?;
    assert!(
        history
            .iter()
            .any(|h| h.contains("the record no longer exists in kintone; the link was removed")),
        "{history:#?}"
    );
    env.finish().await
}

/// Listing a source's ids (a rehydration of a whole rule) passes the limiter like any
/// other request: its reservations show in the fleet-wide limiter's state.
#[tokio::test]
async fn rehydrating_a_whole_rule_lists_the_source_through_the_limiter() -> anyhow::Result<()> {
    fn limited_kintone(rules: &mut domain::rules::SyncRules) {
        rules.systems.get_mut("kintone").expect("kintone").limits = Some(domain::rules::Limits {
            requests_per_second: 5.0,
            burst: 1,
            max_concurrent: None,
        });
    }
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(limited_kintone),
        ..EnvOptions::default()
    })
    .await?;
    for n in 0..3 {
        create_silently(
            &env,
            json!({"work_order_no": format!("WO-56{n}"), "件名": "x"}),
        )
        .await?;
    }
    let (publisher, names) = env.publisher().await?;
    let processor = env.processor()?;
    let before = chrono::Utc::now();
    let ids = worker::ops::rehydrate(&processor, &publisher, &names, RULE, None).await?;
    assert_eq!(ids.len(), 3);
    // The listing reserved a slot of kintone's rate: its theoretical arrival time moved.
    let tat: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT tat FROM limiter_state WHERE system = 'kintone'")
            .fetch_one(env.store.pool())
            .await?;
    assert!(tat > before, "tat {tat} is not after {before}");
    env.finish().await
}

#[tokio::test]
async fn a_deleted_source_record_under_review_keeps_its_ticket_and_asks_a_person()
-> anyhow::Result<()> {
    fn review_on_delete(rules: &mut domain::rules::SyncRules) {
        rules.rules[0].on_delete = domain::rules::OnDelete::Review;
    }
    let env = Env::start_with(EnvOptions {
        edit_rules: Some(review_on_delete),
        ..EnvOptions::default()
    })
    .await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-570", "件名": "To be deleted"}))
        .await?;
    env.settle("synced", || env.written_back(&id)).await?;
    let ticket = env.tickets_for("WO-570").await?[0]["id"].clone();
    let writes_before = env
        .request_log("helpdesk")
        .await?
        .iter()
        .filter(|e| e["method"] != "GET")
        .count();
    // Deleted in kintone, with its DELETE_RECORD webhook.
    env.sandbox_admin()
        .delete(&format!("/_admin/kintone/apps/{APP}/records/{id}"))
        .await?;
    env.settle("a conflict for a person", || async {
        Ok(env
            .store
            .conflicts("open")
            .await?
            .iter()
            .any(|c| c.kind == "source_deleted" && c.source_record_id == id))
    })
    .await?;
    let writes_after = env
        .request_log("helpdesk")
        .await?
        .iter()
        .filter(|e| e["method"] != "GET")
        .count();
    assert_eq!(
        writes_after, writes_before,
        "nothing written to the helpdesk"
    );
    assert_eq!(
        env.tickets_for("WO-570").await?.len(),
        1,
        "the ticket is kept"
    );
    let links = env.store.links(RULE).await?;
    let ticket_id = ticket.as_i64().map(|n| n.to_string()).unwrap_or_default();
    assert!(
        links
            .iter()
            .any(|l| l.source_record_id == id && l.target_id.as_deref() == Some(ticket_id.as_str())),
        "the link is kept: {links:#?}"
    );
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(|h| h.contains(&format!(
            "the record no longer exists in kintone; target record {ticket_id} and its link were kept — the rule asks a person to decide"
        ))),
        "{history:#?}"
    );
    env.finish().await
}

/// A rule whose source is the helpdesk (a rest system): tickets are looked up in kintone
/// by their external id and skipped when none matches, so the test sees the scans and
/// the step's decisions without any write.
fn tickets_rule() -> domain::rules::RuleSpec {
    serde_json::from_value(json!({
        "name": "tickets-to-orders",
        "source": {"system": "helpdesk", "app": "ticket"},
        "target": {"system": "kintone", "entity": APP},
        "identity": {"source_field": "external_id", "target_field": "work_order_no"},
        "fields": [{"source": "subject", "target": "件名"}],
        "on_missing": "skip",
        "resync": {"every_seconds": 3600, "overlap_seconds": 0}
    }))
    .expect("a valid rule")
}

#[tokio::test]
async fn a_rest_source_is_listed_by_its_update_time_and_paged_by_id() -> anyhow::Result<()> {
    let rule = tickets_rule();
    let name = rule.name.clone();
    let env = Env::start_with(EnvOptions {
        workers: 0,
        extra_rules: vec![rule],
        ..EnvOptions::default()
    })
    .await?;
    let processor = env.processor()?;
    let (publisher, names) = env.publisher().await?;
    let mut tickets = vec![];
    for n in 0..3 {
        tickets.push(
            env.helpdesk_seed(
                json!({"subject": format!("T{n}"), "external_id": format!("EXT-{n}")}),
            )
            .await?,
        );
    }
    let scan = |full: bool| {
        let processor = processor.clone();
        let (publisher, names, name) = (&publisher, &names, name.clone());
        async move {
            let job = ResyncJob::claim(&processor, &name).await?;
            anyhow::Ok(job.run(&processor, publisher, names, full, 2).await?)
        }
    };
    // The backfill: every ticket, two per page, with the total from the first page.
    let first = scan(false).await?;
    assert_eq!(
        (first.pages, first.listed, first.queued),
        (2, 3, 3),
        "{first:#?}"
    );
    assert_eq!(first.cursor.total, Some(3), "{first:#?}");
    // The step decides each from the ticket as read now (none matches in kintone).
    for (n, t) in tickets.iter().enumerate() {
        let done = processor
            .step(
                &tests::command(
                    &format!("resync-{n}"),
                    queue::Command::Resync {
                        rule: name.clone(),
                        record_id: t.clone(),
                        revision: Some(1),
                    },
                ),
                1,
            )
            .await?;
        assert_eq!(done, vec![(name.clone(), worker::step::Done::Skipped)]);
    }
    // The next scan asks only for what changed since the previous one began: nothing.
    let second = scan(false).await?;
    assert_eq!((second.listed, second.queued), (0, 0), "{second:#?}");
    // An edit in the helpdesk, which no webhook announced, is listed and queued.
    env.helpdesk_edit(&tickets[1], json!({"subject": "T1 edited"}))
        .await?;
    let third = scan(false).await?;
    assert_eq!((third.listed, third.queued), (1, 1), "{third:#?}");
    // Each listing passed the limiter and carried the cursor: since, after, limit.
    let lists: Vec<String> = env
        .request_log("helpdesk")
        .await?
        .into_iter()
        .filter(|e| e["method"] == "GET" && e["path"] == "/api/tickets")
        .filter_map(|e| e["query"].as_str().map(str::to_owned))
        .filter(|q| q.contains("limit=2"))
        .collect();
    assert!(
        lists
            .iter()
            .any(|q| q.contains("after_id=") && !q.contains("after_id=&")),
        "the second page starts after the first's last id: {lists:#?}"
    );
    assert!(
        lists.iter().any(|q| q.contains("updated_since=2")),
        "a later scan passes its start time: {lists:#?}"
    );
    env.finish().await
}
