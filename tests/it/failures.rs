//! Retries, dead letters and replay, outages of PostgreSQL and the broker.

use std::time::Duration;

use anyhow::Context;

use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE};

/// The stored dead letters, as the first worker's admin API lists them. An error
/// answer, or an answer without the list, fails the test: it is not "none".
async fn dead_letters(env: &Env) -> anyhow::Result<Vec<Value>> {
    let admin = &env.admin_urls[0];
    let resp = env.http.get(format!("{admin}/dead-letters")).send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(
        status.is_success(),
        "GET /dead-letters answered {status}: {v}"
    );
    v["dead_letters"]
        .as_array()
        .cloned()
        .with_context(|| format!("GET /dead-letters answered no list: {v}"))
}

#[tokio::test]
async fn a_record_the_target_always_rejects_is_dead_lettered_then_replayed_once_fixed()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        max_attempts: 3,
        ..EnvOptions::default()
    })
    .await?;
    let fault = env.admin_post("/_admin/faults", json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": 500})).await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-32", "件名": "Doomed"}))
        .await?;
    env.settle("the stored dead letter", || async {
        Ok(dead_letters(&env).await?.len() == 1)
    })
    .await?;

    let dead = &dead_letters(&env).await?[0];
    assert_eq!(dead["class"], "server");
    assert_eq!(dead["rule"], RULE);
    assert_eq!(dead["record_id"], id);
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .starts_with("helpdesk answered 500"),
        "{dead}"
    );
    let attempts: Vec<i64> = dead["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(
        attempts,
        vec![1, 2, 3],
        "the attempt history travels with the message"
    );
    let history = env.history(&id).await?;
    assert_eq!(
        history
            .iter()
            .filter(|h| h.starts_with("retry_scheduled") && h.contains("answered 500"))
            .count(),
        2,
        "{history:#?}"
    );
    assert!(
        history
            .iter()
            .any(|h| h.contains("gave up after 3 attempts (helpdesk answered 500")),
        "{history:#?}"
    );
    assert!(env.tickets().await?.is_empty());
    // The dead-letter queue itself was drained into PostgreSQL.
    let conn = queue::connect(&tests::amqp_url(), "it-dlq").await?;
    let p = queue::Publisher::open(&conn, Duration::from_secs(2)).await?;
    assert_eq!(
        p.queue_depth(&queue::Names::new(&env.settings.queue_prefix).dead_queue())
            .await?,
        0
    );

    // The operator fixes the cause and replays: it converges, once.
    let admin = &env.admin_urls[0];
    env.sandbox_admin()
        .delete(&format!("/_admin/faults/{}", fault["id"].as_str().unwrap()))
        .await?;
    let replayed: Value = env
        .http
        .post(format!("{admin}/dead-letters/replay"))
        .json(&json!({"rule": RULE}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(replayed["replayed"].as_array().unwrap().len(), 1);
    env.settle("the replay", || env.written_back(&id)).await?;
    assert_eq!(env.tickets_for("WO-32").await?.len(), 1);
    assert!(
        dead_letters(&env).await?.is_empty(),
        "a replayed dead letter leaves the list"
    );
    let again: Value = env
        .http
        .post(format!("{admin}/dead-letters/replay"))
        .json(&json!({"rule": RULE}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        again["replayed"],
        json!([]),
        "a second replay finds nothing"
    );

    // Purge asks for confirmation.
    let refused = env
        .http
        .post(format!("{admin}/dead-letters/purge"))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 400);
    env.finish().await
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_at_once() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let conn = queue::connect(&tests::amqp_url(), "it-garbage").await?;
    let p = queue::Publisher::open(&conn, Duration::from_secs(2)).await?;
    let names = queue::Names::new(&env.settings.queue_prefix);
    p.publish(
        &names.events_exchange(),
        queue::topology::WORK_KEY,
        b"{\"version\":\"7\"}",
        "garbage-1",
        Default::default(),
    )
    .await?;
    env.settle("the dead letter", || async {
        Ok(dead_letters(&env).await?.len() == 1)
    })
    .await?;
    let d = &dead_letters(&env).await?[0];
    assert_eq!(d["class"], "undecodable");
    assert_eq!(d["event_id"], "garbage-1");
    let admin = &env.admin_urls[0];
    let one: Value = env
        .http
        .get(format!("{admin}/dead-letters/{}", d["id"]))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(one["body"], json!({"version": "7"}));
    env.finish().await
}

#[tokio::test]
async fn a_429_with_retry_after_waits_at_least_that_long() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        retry_delays_ms: vec![100, 1_500],
        ..EnvOptions::default()
    })
    .await?;
    env.admin_post("/_admin/faults", json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": 429, "retry_after": "1", "count": 1})).await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-35", "件名": "Slow down"}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    let log = env.request_log("helpdesk").await?;
    let posts: Vec<&Value> = log.iter().filter(|e| e["method"] == "POST").collect();
    assert_eq!(posts.len(), 2);
    let at = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
    let waited = at(posts[1]) - at(posts[0]);
    assert!(
        waited >= chrono::Duration::milliseconds(1_000),
        "waited only {waited}"
    );
    assert!(dead_letters(&env).await?.is_empty());
    env.finish().await
}

/// ARCHITECTURE.md: a 401 or a 403 is retryable (an operator fixes the secret while
/// the event waits in the delay queues): the create refused with each is retried, not
/// turned into a conflict or a dead letter, and the ticket is made once.
#[tokio::test]
async fn refused_credentials_401_then_403_are_retried_and_create_once() -> anyhow::Result<()> {
    let env = Env::start().await?;
    for status in [401, 403] {
        env.admin_post("/_admin/faults", json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": status, "count": 1})).await?;
    }
    let id = env
        .kintone_create(json!({"work_order_no": "WO-36", "件名": "Wrong token"}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    let statuses: Vec<u64> = env
        .request_log("helpdesk")
        .await?
        .iter()
        .filter(|e| e["method"] == "POST" && e["path"] == "/api/tickets")
        .filter_map(|e| e["status"].as_u64())
        .collect();
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert_eq!(&statuses[..2], [401, 403], "{statuses:?}");
    let history = env.history(&id).await?;
    for status in [401, 403] {
        assert!(
            history.iter().any(|h| h.starts_with("retry_scheduled")
                && h.contains(&format!("refused our credentials ({status})"))),
            "no retry after the {status}: {history:#?}"
        );
    }
    assert_eq!(env.tickets_for("WO-36").await?.len(), 1);
    assert!(env.store.conflicts("open").await?.is_empty());
    assert!(dead_letters(&env).await?.is_empty());
    env.finish().await
}

/// The helpdesk answers within half a second or not at all, as far as the worker cares.
fn helpdesk_timeout_500ms(rules: &mut domain::rules::SyncRules) {
    rules
        .systems
        .get_mut("helpdesk")
        .expect("the helpdesk system")
        .timeout_ms = Some(500);
}

#[tokio::test]
async fn a_target_that_does_not_answer_in_time_is_retried_and_creates_once() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        edit_rules: Some(helpdesk_timeout_500ms),
        retry_delays_ms: vec![100, 1_500],
        ..EnvOptions::default()
    })
    .await?;
    // The first create hangs for 3 s.
    env.admin_post(
        "/_admin/faults",
        json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "latency_ms": 3_000, "count": 1}),
    )
    .await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-36", "件名": "Slow target"}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    let log = env.request_log("helpdesk").await?;
    let posts: Vec<&Value> = log
        .iter()
        .filter(|e| e["method"] == "POST" && e["path"] == "/api/tickets")
        .collect();
    // The hung request was abandoned by the worker at 500 ms, and the sandbox, seeing
    // its client gone, never ran it (its log records answered requests): the retry's
    // create is the only one.
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["status"], 201, "{posts:#?}");
    assert_eq!(env.tickets_for("WO-36").await?.len(), 1);
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(
            |h| h.starts_with("retry_scheduled") && h.contains("helpdesk could not be reached")
        ),
        "{history:#?}"
    );
    assert!(dead_letters(&env).await?.is_empty());
    env.finish().await
}

#[tokio::test]
async fn postgresql_stopped_for_ten_seconds_loses_nothing() -> anyhow::Result<()> {
    let proxy = tests::proxy::Proxy::start("127.0.0.1:5432".parse()?).await?;
    let template = format!("postgres://postgres@{}/{{db}}", proxy.addr);
    // Slow creates and a small prefetch, so that the outage lands mid-stream.
    let env = Env::start_with(EnvOptions {
        worker_database_url: Some(template),
        prefetch: 4,
        ..EnvOptions::default()
    })
    .await?;
    env.admin_post(
        "/_admin/faults",
        json!({"system": "helpdesk", "method": "POST", "latency_ms": 200}),
    )
    .await?;
    let mut ids = vec![];
    for n in 0..20 {
        ids.push(
            env.kintone_create(
                json!({"work_order_no": format!("WO-6{n:02}"), "件名": format!("Outage {n}")}),
            )
            .await?,
        );
    }
    env.flush_webhooks().await?;
    tests::wait_for("the first ticket", Duration::from_secs(10), || async {
        Ok(!env.tickets().await?.is_empty())
    })
    .await?;
    proxy.down();
    // Ingest never touches PostgreSQL: a webhook sent during the outage is accepted.
    let late = env
        .kintone_create_silently(json!({"work_order_no": "WO-620", "件名": "During the outage"}))
        .await?;
    let hook = json!({"id": "ev-during-outage", "type": "ADD_RECORD", "app": {"id": tests::APP},
        "record": {"$id": {"type": "__ID__", "value": late}}});
    let (status, body) = env
        .post_webhook(
            &format!("/webhooks/kintone?token={}", tests::KINTONE_WEBHOOK_TOKEN),
            &[],
            hook.to_string(),
        )
        .await?;
    assert_eq!(status, 202, "accepted while PostgreSQL is down: {body}");
    ids.push(late);
    // The outage lasts ten seconds (the scenario), and the worker must have noticed it:
    // its readiness says PostgreSQL is gone.
    let started = std::time::Instant::now();
    let ready = format!("{}/readyz", env.admin_urls[0]);
    tests::wait_for(
        "the worker to see PostgreSQL gone",
        Duration::from_secs(10),
        || async { Ok(env.http.get(&ready).send().await?.status() == 503) },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    let during = env.tickets().await?.len();
    proxy.up();
    env.settle("every work order", || env.all_written_back(&ids))
        .await?;
    assert!(during < 20, "the outage came too late to test anything");
    for n in 0..=20 {
        assert_eq!(
            env.tickets_for(&format!("WO-6{n:02}")).await?.len(),
            1,
            "WO-6{n:02}"
        );
    }
    assert!(env.store.processed_count(RULE).await? >= 20);
    assert!(
        dead_letters(&env).await?.is_empty(),
        "an outage burns no attempts"
    );
    let metrics = env.worker_metrics().await?;
    assert!(
        !metrics.contains("recordsync_worker_retries_total{"),
        "no retries were scheduled: {metrics}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_broker_restart_under_load_loses_no_accepted_webhook() -> anyhow::Result<()> {
    let proxy = tests::proxy::Proxy::start("127.0.0.1:5672".parse()?).await?;
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let env = Env::start_with(EnvOptions {
        amqp_url: Some(url),
        ..EnvOptions::default()
    })
    .await?;
    // Records exist in kintone; the test plays kintone's webhooks itself so it knows
    // which ones ingest accepted.
    let mut accepted = vec![];
    let mut refused = 0;
    let path = format!("/webhooks/kintone?token={}", tests::KINTONE_WEBHOOK_TOKEN);
    for n in 0..60 {
        if n == 20 {
            proxy.down();
        }
        if n == 40 {
            proxy.up();
            tests::wait_for("ingest to reconnect", Duration::from_secs(15), || async {
                Ok(env
                    .http
                    .get(format!("{}/readyz", env.ingest_url))
                    .send()
                    .await?
                    .status()
                    .as_u16()
                    == 200)
            })
            .await?;
        }
        let v = env.admin_post(&format!("/_admin/kintone/apps/{}/records", tests::APP), json!({"record": tests::kintone_record(&json!({"work_order_no": format!("WO-7{n:02}"), "件名": format!("Load {n}")})), "webhook": false})).await?;
        let id = v["id"].as_str().unwrap().to_owned();
        let record = env.kintone_record(&id).await?;
        let hook = json!({"id": format!("load-{n}"), "type": "ADD_RECORD", "app": {"id": tests::APP, "name": "Work orders"}, "record": record, "recordTitle": "", "url": ""});
        let (status, _) = env.post_webhook(&path, &[], hook.to_string()).await?;
        match status {
            202 => accepted.push((n, id)),
            503 => refused += 1,
            other => anyhow::bail!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused >= 15,
        "ingest must answer 503 while the broker is away ({refused} refused)"
    );
    env.settle("every accepted webhook", || async {
        for (_, id) in &accepted {
            if !env.written_back(id).await? {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    for (n, _) in &accepted {
        assert_eq!(env.tickets_for(&format!("WO-7{n:02}")).await?.len(), 1);
    }
    env.finish().await
}

#[tokio::test]
async fn a_thirty_second_target_outage_is_ridden_out_by_retries() -> anyhow::Result<()> {
    // Delays that add up past the outage: 1 + 4 + 8 + 16 s before the fifth attempt.
    let env = Env::start_with(EnvOptions {
        retry_delays_ms: vec![1_000, 4_000, 8_000, 16_000],
        max_attempts: 6,
        ..EnvOptions::default()
    })
    .await?;
    let outage = env
        .admin_post(
            "/_admin/faults",
            json!({"system": "helpdesk", "status": 503}),
        )
        .await?;
    let started = std::time::Instant::now();
    let mut ids = vec![];
    for n in 0..5 {
        ids.push(
            env.kintone_create(
                json!({"work_order_no": format!("WO-13{n}"), "件名": format!("Outage {n}")}),
            )
            .await?,
        );
    }
    env.flush_webhooks().await?;
    // The outage lasts thirty seconds (the scenario); within it, every record was
    // refused and its retry scheduled, so the retries are what ride it out.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(started.elapsed())).await;
    assert!(
        env.tickets().await?.is_empty(),
        "nothing got through during the outage"
    );
    for id in &ids {
        let history = env.history(id).await?;
        assert!(
            history
                .iter()
                .any(|h| h.starts_with("retry_scheduled") && h.contains("answered 503")),
            "{id} was not retried during the outage: {history:#?}"
        );
    }
    env.sandbox_admin()
        .delete(&format!(
            "/_admin/faults/{}",
            outage["id"].as_str().unwrap()
        ))
        .await?;
    tests::wait_for("every work order", Duration::from_secs(60), || {
        env.all_written_back(&ids)
    })
    .await?;
    for n in 0..5 {
        assert_eq!(env.tickets_for(&format!("WO-13{n}")).await?.len(), 1);
    }
    assert!(dead_letters(&env).await?.is_empty(), "no dead letter");
    let history = env.history(&ids[0]).await?;
    assert!(
        history
            .iter()
            .filter(|h| h.starts_with("retry_scheduled"))
            .count()
            >= 2,
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_retry_the_broker_cannot_take_leaves_the_event_in_the_queue() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (id, _ticket) = env.seed_linked("WO-37", "Before").await?;
    // The delay queues are gone: a retry copy has nowhere to go, and the broker returns
    // it. A worker that acknowledged before the copy was confirmed would lose the edit.
    let names = queue::Names::new(&env.settings.queue_prefix);
    let conn = queue::connect(&tests::amqp_url(), "it-no-retry-queues").await?;
    let channel = conn.create_channel().await?;
    for tier in 0..env.settings.retry_delays_ms.len() {
        channel
            .queue_delete(
                names.retry_queue(tier).as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await?;
    }
    env.admin_post(
        "/_admin/faults",
        json!({"system": "helpdesk", "method": "PATCH", "status": 503, "count": 1}),
    )
    .await?;
    env.kintone_edit(&id, json!({"件名": "After"})).await?;
    env.settle("the edit reaches the helpdesk", || async {
        Ok(env.tickets_for("WO-37").await?[0]["subject"] == "After")
    })
    .await?;
    let history = env.history(&id).await?;
    assert!(
        !history.iter().any(|h| h.starts_with("retry_scheduled")),
        "no retry was scheduled (its copy was refused): {history:#?}"
    );
    let patches = env
        .request_log("helpdesk")
        .await?
        .iter()
        .filter(|e| e["method"] == "PATCH")
        .count();
    assert_eq!(patches, 2, "the failed try and the redelivered one");
    // Put the topology back as the environment declared it, for its teardown.
    queue::Topology::new(
        &env.settings.queue_prefix,
        env.settings.retry_delays_ms.clone(),
    )
    .declare(&channel)
    .await?;
    env.finish().await
}

/// A dead letter the broker cannot take leaves the message in the work queue: the copy
/// is confirmed before the original is acknowledged. With the dead-letter queue gone,
/// an undecodable message (dead-lettered at its first delivery) stays in the work queue
/// through refused copies, held a second each; once the queue is back, it is stored
/// as a dead letter. A worker that acknowledged first would have lost it.
#[tokio::test]
async fn a_dead_letter_the_broker_cannot_take_leaves_the_message_in_the_queue() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    let names = queue::Names::new(&env.settings.queue_prefix);
    let conn = queue::connect(&tests::amqp_url(), "it-no-dead-queue").await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_delete(
            names.dead_queue().as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await?;
    let (publisher, _) = env.publisher().await?;
    publisher
        .publish(
            "",
            &names.work_queue(),
            b"{not a command",
            "undecodable-7",
            queue::Headers::first_attempt(),
        )
        .await?;
    // The worker holds the message, its copy refused, and gives it back a second
    // later, again and again: the broker counts it unacknowledged.
    tests::wait_for(
        "the message held through a refused copy",
        Duration::from_secs(30),
        || async { Ok(tests::unacked(&env.settings.queue_prefix).await? >= 1) },
    )
    .await?;
    // A scrape meanwhile reads the missing queue's depth (on a channel of its own).
    env.worker_metrics().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(dead_letters(&env).await?.is_empty());
    // The queue is back: the next delivery's copy is confirmed, and stored.
    queue::Topology::new(
        &env.settings.queue_prefix,
        env.settings.retry_delays_ms.clone(),
    )
    .declare(&channel)
    .await?;
    tests::wait_for(
        "the dead letter stored",
        Duration::from_secs(30),
        || async {
            Ok(dead_letters(&env)
                .await?
                .iter()
                .any(|d| d["event_id"] == "undecodable-7"))
        },
    )
    .await?;
    env.finish().await
}

/// A poison message, one every consumer gives back (a worker that dies on it, again
/// and again), is dead-lettered by RabbitMQ once past the work queue's delivery limit
/// (quorum `x-delivery-limit`), not redelivered for ever; a worker then stores it as a
/// `poison` dead letter.
#[tokio::test]
async fn a_message_given_back_past_the_delivery_limit_is_dead_lettered_as_poison()
-> anyhow::Result<()> {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
    use lapin::types::FieldTable;

    let mut env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let limit = queue::Topology::new(&env.settings.queue_prefix, vec![]).delivery_limit as usize;
    let (publisher, names) = env.publisher().await?;
    let cmd = tests::change("poison-1", "1");
    publisher
        .publish(
            "",
            &names.work_queue(),
            &queue::QueueMessage::V2(cmd).encode(),
            "poison-1",
            queue::Headers::default(),
        )
        .await?;

    // A consumer that gives every delivery back, until RabbitMQ moves the message to
    // the dead-letter queue.
    let conn = queue::connect(&tests::amqp_url(), "it-poison").await?;
    let channel = conn.create_channel().await?;
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            names.work_queue().as_str().into(),
            "it-poison".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut deliveries = 0;
    let dead_queue = names.dead_queue();
    let gave_up = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            tokio::select! {
                next = consumer.next() => {
                    let delivery = next.context("the consumer ended")??;
                    deliveries += 1;
                    anyhow::ensure!(
                        deliveries <= limit + 1,
                        "delivered {deliveries} times, past the delivery limit of {limit}, and never dead-lettered"
                    );
                    delivery
                        .nack(BasicNackOptions { requeue: true, ..Default::default() })
                        .await?;
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if publisher.queue_depth(&dead_queue).await? == 1 {
                        return anyhow::Ok(());
                    }
                }
            }
        }
    })
    .await;
    conn.close(200, "done".into()).await?;
    gave_up.context("never dead-lettered within 60 s")??;
    assert!(deliveries > 1, "delivered {deliveries} times");
    assert_eq!(publisher.queue_depth(&names.work_queue()).await?, 0);

    // A worker drains it into PostgreSQL, classed `poison`.
    env.start_worker().await?;
    env.settle("the stored poison dead letter", || async {
        Ok(dead_letters(&env).await?.len() == 1)
    })
    .await?;
    let dead = &dead_letters(&env).await?[0];
    assert_eq!(dead["class"], "poison", "{dead}");
    assert_eq!(dead["event_id"], "poison-1", "{dead}");
    assert!(
        dead["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("redelivered past the delivery limit")),
        "{dead}"
    );
    env.finish().await
}

/// The runner gives a step that lost its record's lease back to the queue: not a failed
/// attempt (no retry, no dead letter), and the next delivery decides the record under
/// the new holder. The lease is taken from under the worker while its update to the
/// helpdesk (its first request) is on the wire, as a worker that froze past its lease's expiry would find.
#[tokio::test]
async fn a_step_that_lost_its_lease_gives_the_event_back_without_counting_an_attempt()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let (id, ticket) = env.seed_linked("WO-7301", "Before").await?;
    let hold = env
        .admin_post(
            "/_admin/faults",
            // Under the connector's 3 s timeout; the second holds the retry too, so
            // that the fault is still listed with its hits.
            json!({"system": "helpdesk", "path_prefix": "/api/tickets", "latency_ms": 2_000, "count": 2}),
        )
        .await?;
    let fault_id = hold["id"].as_str().context("a fault id")?.to_owned();
    env.kintone_edit(&id, json!({"件名": "After"})).await?;
    env.flush_webhooks().await?;
    env.fault_hit("the update on the wire", &fault_id, Duration::from_secs(30))
        .await?;
    // Another holder takes the lease (a newer fencing token) for a second.
    let taken_from: Option<String> = sqlx::query_scalar(
        "UPDATE record_leases l SET owner = 'it-intruder', token = nextval('lease_tokens'),
                expires_at = clock_timestamp() + interval '1 second'
          FROM record_leases old
         WHERE l.rule = $1 AND l.source_record_id = $2
           AND old.rule = l.rule AND old.source_record_id = l.source_record_id
         RETURNING old.owner",
    )
    .bind(RULE)
    .bind(&id)
    .fetch_optional(env.store.pool())
    .await?;
    let taken_from = taken_from.context("the worker held no lease while its update was out")?;
    assert_ne!(taken_from, "it-intruder");

    env.settle("the edit synced", || async {
        let t = env.tickets().await?;
        Ok(t.iter()
            .any(|x| x["id"].as_i64() == ticket.parse().ok() && x["subject"] == "After"))
    })
    .await?;
    env.quiet(RULE).await?;
    let metrics = env.worker_metrics().await?;
    let given_back = metrics
        .lines()
        .find_map(|l| l.strip_prefix("recordsync_worker_requeued_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no requeued counter in:\n{metrics}"))?;
    assert!(given_back >= 1.0, "the event was not given back: {metrics}");
    assert!(
        !metrics.contains("recordsync_worker_retries_total{"),
        "losing a lease is not a failed attempt: {metrics}"
    );
    assert!(dead_letters(&env).await?.is_empty());
    assert_eq!(
        env.store.processed_count(RULE).await?,
        1,
        "decided once, by the delivery after the give-back"
    );
    env.finish().await
}
