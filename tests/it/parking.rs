//! Parked work: write windows, pause and resume, rehydration.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE};

/// The helpdesk accepts writes from eight seconds after the environment starts.
fn window_soon(rules: &mut domain::rules::SyncRules) {
    let opens = Utc::now() + chrono::Duration::seconds(8);
    let closes = opens + chrono::Duration::hours(2);
    let h = rules
        .systems
        .get_mut("helpdesk")
        .expect("the helpdesk system");
    h.write_windows = Some(domain::windows::WriteWindows {
        time_zone: "UTC".into(),
        windows: vec![domain::windows::Window {
            days: vec![],
            from: opens.format("%H:%M:%S").to_string(),
            to: closes.format("%H:%M:%S").to_string(),
        }],
    });
}

fn at(e: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn writes_wait_for_the_window_coalesced_per_record_and_flushed_in_bulk() -> anyhow::Result<()>
{
    let started = Utc::now();
    let env = Env::start_with(EnvOptions {
        edit_rules: Some(window_soon),
        ..EnvOptions::default()
    })
    .await?;
    // The window opens at the whole second the rules name.
    let from = &env.rules.systems["helpdesk"]
        .write_windows
        .as_ref()
        .unwrap()
        .windows[0]
        .from;
    let from = chrono::NaiveTime::parse_from_str(from, "%H:%M:%S")?;
    let mut opens = started.date_naive().and_time(from).and_utc();
    if opens < started - chrono::Duration::hours(1) {
        opens += chrono::Duration::days(1);
    }
    let (a, ta) = env.seed_linked("WO-901", "A0").await?;
    let (b, _) = env.seed_linked("WO-902", "B0").await?;
    let (c, _) = env.seed_linked("WO-903", "C0").await?;
    for n in 1..=5 {
        env.kintone_edit(&a, json!({"件名": format!("A{n}")}))
            .await?;
    }
    env.kintone_edit(&b, json!({"件名": "B1"})).await?;
    env.kintone_edit(&c, json!({"件名": "C1"})).await?;
    env.settle("everything parked", || async {
        let parked = env.store.parked(Some(RULE)).await?;
        Ok(parked.len() == 3
            && parked
                .iter()
                .any(|p| p.source_record_id == a && p.events == 5))
    })
    .await?;
    assert!(
        Utc::now() < opens,
        "the setup took too long to test a closed window"
    );
    assert!(
        env.request_log("helpdesk").await?.is_empty(),
        "nothing reaches the target outside its window"
    );

    tests::wait_for("the flush", Duration::from_secs(30), || async {
        Ok(env.store.parked(Some(RULE)).await?.is_empty())
    })
    .await?;
    let log = env.request_log("helpdesk").await?;
    assert!(
        log.iter().all(|e| at(e) >= opens),
        "nothing, not even a read, before the window opened"
    );
    // Reads (the first look at each linked ticket) aside, one write: a bulk call.
    let log: Vec<Value> = log.into_iter().filter(|e| e["method"] != "GET").collect();
    assert_eq!(log.len(), 1, "one bulk call for three records: {log:#?}");
    assert_eq!(log[0]["method"], "POST");
    assert_eq!(log[0]["path"], "/api/tickets/bulk");
    assert!(
        at(&log[0]) >= opens,
        "the write came at {} before the window opened at {opens}",
        log[0]["at"]
    );
    let tickets = env.tickets().await?;
    let subject = |id: &str| {
        tickets
            .iter()
            .find(|t| id.parse::<i64>().ok() == t["id"].as_i64())
            .map(|t| t["subject"].clone())
    };
    assert_eq!(
        subject(&ta),
        Some(json!("A5")),
        "only the latest state is written"
    );
    let history = env.history(&a).await?;
    assert_eq!(
        history.iter().filter(|h| h.starts_with("parked:")).count(),
        5,
        "{history:#?}"
    );
    assert!(
        history
            .iter()
            .any(|h| h
                .contains("5 changes wait for this record, only the latest state will be written")),
        "{history:#?}"
    );
    assert!(
        history
            .iter()
            .any(|h| h.contains("in a bulk call of 3: subject")),
        "{history:#?}"
    );
    // Each parked line says when the window opens.
    let when = format!("the next opens at {} UTC", opens.format("%Y-%m-%d %H:%M"));
    assert!(
        history
            .iter()
            .filter(|h| h.starts_with("parked:"))
            .all(|h| h.contains(&when)),
        "{when}: {history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_paused_rule_parks_its_work_and_resuming_drains_it() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let admin = env.admin_urls[0].clone();
    let paused = env
        .http
        .post(format!("{admin}/pause"))
        .json(&json!({"scope": "rule", "name": RULE, "reason": "maintenance"}))
        .send()
        .await?;
    assert_eq!(paused.status().as_u16(), 200);
    let unknown = env
        .http
        .post(format!("{admin}/pause"))
        .json(&json!({"scope": "rule", "name": "nope"}))
        .send()
        .await?;
    assert_eq!(unknown.status().as_u16(), 404);
    let id = env
        .kintone_create(json!({"work_order_no": "WO-911", "件名": "Paused"}))
        .await?;
    env.settle("parked", || async {
        Ok(env.store.parked(Some(RULE)).await?.len() == 1)
    })
    .await?;
    // Parked means committed: a request would have come before the commit.
    assert!(
        env.request_log("helpdesk").await?.is_empty(),
        "a paused rule sends nothing"
    );
    let kintone = env.request_log("kintone").await?;
    assert!(
        kintone.is_empty(),
        "a paused rule's work is parked before anything is fetched: {kintone:#?}"
    );
    let state: Value = env
        .http
        .get(format!("{admin}/paused"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(state["paused"], json!([{"scope": "rule", "name": RULE}]));

    env.http
        .post(format!("{admin}/resume"))
        .json(&json!({"scope": "rule", "name": RULE}))
        .send()
        .await?
        .error_for_status()?;
    env.settle("the write-back", || env.written_back(&id))
        .await?;
    assert_eq!(env.tickets_for("WO-911").await?.len(), 1);
    // The write-back is visible in kintone just before the flush commits.
    tests::wait_for("the flush to commit", Duration::from_secs(10), || async {
        Ok(env.store.parked(None).await?.is_empty())
    })
    .await?;
    env.finish().await
}

#[tokio::test]
async fn rehydrating_a_record_repairs_drift_in_the_target() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (id, ticket) = env.seed_linked("WO-921", "Correct").await?;
    // Someone edits the ticket by hand in the helpdesk.
    env.http
        .patch(format!("{}/api/tickets/{ticket}", env.sandbox.base_url))
        .bearer_auth(&env.sandbox_config.helpdesk_token)
        .json(&json!({"subject": "Drifted"}))
        .send()
        .await?
        .error_for_status()?;
    let admin = &env.admin_urls[0];
    let queued: Value = env
        .http
        .post(format!("{admin}/rehydrate"))
        .json(&json!({"rule": RULE, "record_id": id}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(queued["queued"], json!([id]));
    env.settle("the repair", || async {
        Ok(env.tickets_for("WO-921").await?[0]["subject"] == "Correct")
    })
    .await?;
    // The whole rule can be rehydrated too: every kintone record is queued.
    let all: Value = env
        .http
        .post(format!("{admin}/rehydrate"))
        .json(&json!({"rule": RULE}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(all["queued"], json!([id]));
    env.finish().await
}

#[tokio::test]
async fn a_flush_that_fails_keeps_everything_parked_and_the_next_one_writes_it()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let step = env.processor()?;
    worker::ops::pause(&env.store, &env.rules, "rule", RULE, Some("flush test")).await?;
    let mut tickets = vec![];
    for n in 1..=3 {
        let (id, ticket) = env.seed_linked(&format!("WO-7{n}"), "Before").await?;
        env.kintone_edit(&id, json!({"件名": format!("After {n}")}))
            .await?;
        let done = step
            .step(&tests::change(&format!("ev-7{n}"), &id), 1)
            .await?;
        assert_eq!(done, vec![(RULE.to_owned(), worker::step::Done::Parked)]);
        tickets.push(ticket);
    }
    worker::ops::resume(&env.store, &env.rules, "rule", RULE).await?;
    // The tickets' subjects, in the order the records were made.
    let subjects = || async {
        let all = env.tickets().await?;
        let subject = |t: &String| {
            all.iter()
                .find(|v| {
                    v["id"]
                        .as_str()
                        .map_or_else(|| v["id"].to_string(), str::to_owned)
                        == *t
                })
                .map(|v| v["subject"].clone())
                .unwrap_or(Value::Null)
        };
        anyhow::Ok(tickets.iter().map(subject).collect::<Vec<Value>>())
    };

    // The bulk update fails: the batch is dropped whole.
    env.admin_post(
        "/_admin/faults",
        json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets/bulk", "status": 500, "count": 1}),
    )
    .await?;
    assert!(step.flush(RULE).await.is_err());
    let parked = env.store.parked(Some(RULE)).await?;
    assert_eq!(parked.len(), 3, "{parked:#?}");
    assert!(parked.iter().all(|p| p.events == 1), "{parked:#?}");
    assert_eq!(env.store.processed_count(RULE).await?, 0);
    assert_eq!(subjects().await?, vec![json!("Before"); 3]);

    // The next flush writes all three, once.
    assert_eq!(step.flush(RULE).await?, 3);
    assert!(env.store.parked(Some(RULE)).await?.is_empty());
    assert_eq!(env.store.processed_count(RULE).await?, 3);
    assert_eq!(
        subjects().await?,
        vec![json!("After 1"), json!("After 2"), json!("After 3")]
    );
    env.finish().await
}

#[tokio::test]
async fn a_paused_system_parks_every_rule_that_touches_it_until_resumed() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let step = env.processor()?;
    // The helpdesk is the rule's target: pausing it pauses the rule's writes and reads.
    worker::ops::pause(
        &env.store,
        &env.rules,
        "system",
        "helpdesk",
        Some("migration"),
    )
    .await?;
    let id = env
        .kintone_create_silently(json!({"work_order_no": "WO-920", "件名": "System paused"}))
        .await?;
    assert_eq!(
        step.step(&tests::change("ev-920", &id), 1).await?,
        vec![(RULE.to_owned(), worker::step::Done::Parked)]
    );
    assert!(env.request_log("helpdesk").await?.is_empty());
    assert!(
        env.request_log("kintone").await?.is_empty(),
        "nothing fetched"
    );
    // Flushing while paused does nothing.
    assert_eq!(step.flush(RULE).await?, 0);
    assert_eq!(env.store.parked(Some(RULE)).await?.len(), 1);

    worker::ops::resume(&env.store, &env.rules, "system", "helpdesk").await?;
    assert_eq!(step.flush(RULE).await?, 1);
    assert!(env.written_back(&id).await?);
    assert_eq!(env.tickets_for("WO-920").await?.len(), 1);
    env.finish().await
}

#[tokio::test]
async fn a_parked_repair_is_not_replaced_by_a_later_change() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let step = env.processor()?;
    let (id, ticket) = env.seed_linked("WO-940", "Seeded").await?;
    env.helpdesk_edit(&ticket, json!({"subject": "Drifted"}))
        .await?;
    worker::ops::pause(&env.store, &env.rules, "rule", RULE, Some("repair test")).await?;
    let repair = tests::command(
        "rp-940",
        queue::Command::Repair {
            rule: RULE.into(),
            record_id: id.clone(),
            reason: "subject differs".into(),
        },
    );
    let parked = vec![(RULE.to_owned(), worker::step::Done::Parked)];
    assert_eq!(step.step(&repair, 1).await?, parked);
    // A plain change arrives while the repair waits: the repair keeps its place.
    env.kintone_edit_silently(&id, json!({"詳細": "Added later"}))
        .await?;
    assert_eq!(step.step(&tests::change("ev-940", &id), 1).await?, parked);
    let rows = env.store.parked(Some(RULE)).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].event["command"]["kind"], "repair",
        "{:#}",
        rows[0].event
    );
    assert_eq!(rows[0].events, 2);
    let ledger = &env.store.ledger(Some(RULE), Duration::ZERO).await?[0];
    assert_eq!(ledger.skipped.get("coalesced"), Some(&1), "{ledger:#?}");
    assert_eq!(ledger.parked, 1, "{ledger:#?}");

    worker::ops::resume(&env.store, &env.rules, "rule", RULE).await?;
    assert_eq!(step.flush(RULE).await?, 1);
    // The repair decided from both systems: the drift is restored, and the later edit,
    // read with the record, is written too.
    let t = &env.tickets_for("WO-940").await?[0];
    assert_eq!(t["subject"], "Seeded", "{t:#}");
    assert_eq!(t["description"], "Added later", "{t:#}");
    env.finish().await
}
