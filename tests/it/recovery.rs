//! Losing nothing: a killed worker, a lost response, a graceful stop with work in
//! flight.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE};

fn count(log: &[Value], method: &str, path: &str) -> usize {
    log.iter()
        .filter(|e| e["method"] == method && e["path"] == path)
        .count()
}

#[tokio::test]
async fn a_worker_killed_mid_message_leaves_no_duplicate_and_no_lost_update() -> anyhow::Result<()>
{
    let mut env = Env::start().await?;
    // The helpdesk's search lags, so after the kill only the idempotency key can stop
    // a second ticket; and the write-back hangs, so the kill lands after the create.
    env.admin_post("/_admin/helpdesk/config", json!({"search_lag_ms": 60_000}))
        .await?;
    let hang = env.admin_post("/_admin/faults", json!({"system": "kintone", "method": "PUT", "path_prefix": "/k/v1/record.json", "latency_ms": 30_000})).await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-41", "件名": "Killed"}))
        .await?;
    env.flush_webhooks().await?;
    tests::wait_for(
        "the ticket to be created",
        Duration::from_secs(10),
        || async { Ok(count(&env.request_log("helpdesk").await?, "POST", "/api/tickets") == 1) },
    )
    .await?;
    // The worker goes on to the write-back, which hangs (the fault has caught it);
    // then it is killed.
    let fault_id = hang["id"].as_str().unwrap().to_owned();
    env.fault_hit("the write-back to hang", &fault_id, Duration::from_secs(10))
        .await?;
    env.kill_worker().await;
    assert_eq!(
        env.store.processed_count(RULE).await?,
        0,
        "nothing was committed"
    );

    let fault_id = hang["id"].as_str().unwrap();
    env.sandbox_admin()
        .delete(&format!("/_admin/faults/{fault_id}"))
        .await?;
    env.start_worker().await?;
    env.settle("the redelivered event", || env.written_back(&id))
        .await?;

    let tickets = env.tickets_for("WO-41").await?;
    assert_eq!(tickets.len(), 1, "no duplicate: {tickets:#?}");
    let record = env.kintone_record(&id).await?;
    assert_eq!(
        record["helpdesk_ticket_id"]["value"],
        tickets[0]["id"].to_string()
    );
    let log = env.request_log("helpdesk").await?;
    assert_eq!(
        count(&log, "POST", "/api/tickets"),
        2,
        "the redelivery repeats the create with the same key"
    );
    let keys: Vec<&Value> = log
        .iter()
        .filter(|e| e["method"] == "POST")
        .map(|e| &e["idempotency_key"])
        .collect();
    assert_eq!(keys[0], keys[1]);
    env.finish().await
}

#[tokio::test]
async fn a_lost_response_to_a_create_does_not_create_twice() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.admin_post("/_admin/helpdesk/config", json!({"search_lag_ms": 60_000}))
        .await?;
    // The helpdesk creates the ticket, then the answer is lost (503).
    env.admin_post("/_admin/faults", json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": 503, "count": 1, "after": true})).await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-42", "件名": "Lost answer"}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    assert_eq!(env.tickets_for("WO-42").await?.len(), 1);
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(|h| h.starts_with("retry_scheduled")),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_graceful_stop_finishes_work_in_flight_and_loses_nothing() -> anyhow::Result<()> {
    let mut env = Env::start_with(EnvOptions {
        prefetch: 8,
        ..EnvOptions::default()
    })
    .await?;
    // Every ticket's POST takes a second, so that the stop always finds creates in
    // flight and most of the thirty not begun (at 100 ms, a busy machine could see all
    // of them done before the stop took effect).
    env.admin_post(
        "/_admin/faults",
        json!({"system": "helpdesk", "method": "POST", "latency_ms": 1000}),
    )
    .await?;
    let mut ids = vec![];
    for n in 0..30 {
        ids.push(
            env.kintone_create(
                json!({"work_order_no": format!("WO-5{n:02}"), "件名": format!("Order {n}")}),
            )
            .await?,
        );
    }
    env.flush_webhooks().await?;
    tests::wait_for("some work in flight", Duration::from_secs(10), || async {
        Ok(env
            .request_log("helpdesk")
            .await?
            .iter()
            .any(|e| e["method"] == "POST"))
    })
    .await?;
    env.stop_workers().await?;
    let done_at_stop = env.store.processed_count(RULE).await?;
    assert!(
        done_at_stop < 30,
        "the stop came too late to test anything ({done_at_stop} done)"
    );
    env.start_worker().await?;
    env.settle("every work order", || env.all_written_back(&ids))
        .await?;
    assert_eq!(env.tickets().await?.len(), 30);
    let log = env.request_log("helpdesk").await?;
    assert_eq!(
        count(&log, "POST", "/api/tickets"),
        30,
        "a graceful stop abandons nothing half-done"
    );
    env.finish().await
}

#[tokio::test]
async fn the_admin_api_tells_a_records_story() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-43", "件名": "Story"}))
        .await?;
    env.settle("write-back", || env.written_back(&id)).await?;
    env.settle("the echo", || async {
        Ok(env.store.processed_count(RULE).await? >= 2)
    })
    .await?;
    let admin = &env.admin_urls[0];
    let text = env
        .http
        .get(format!("{admin}/records/{RULE}/{id}/timeline"))
        .send()
        .await?
        .text()
        .await?;
    let lines: Vec<&str> = text.lines().map(|l| l.split_once(' ').unwrap().1).collect();
    assert_eq!(lines[0], "kintone webhook ADD_RECORD received");
    assert_eq!(lines[1], "fetched the record from kintone at revision 1");
    assert_eq!(
        lines[2],
        "no helpdesk record matched: searched external_id for \"WO-43\", then \"43\""
    );
    assert!(lines[3].starts_with("created helpdesk record "), "{text}");
    assert!(
        lines.contains(&"revision 2 was already synced; nothing written"),
        "{text}"
    );
    let json: Value = env
        .http
        .get(format!("{admin}/records/{RULE}/{id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(json["link"]["source_revision"], 2);
    let missing = env
        .http
        .get(format!("{admin}/records/{RULE}/nope/timeline"))
        .send()
        .await?;
    assert_eq!(missing.status().as_u16(), 404);
    let metrics = env.worker_metrics().await?;
    assert!(
        metrics.contains(&format!(
            "recordsync_worker_events_total{{rule=\"{RULE}\",outcome=\"synced\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("recordsync_queue_depth_messages{queue=\"work\"} 0"),
        "{metrics}"
    );
    // The step's time and the end-to-end lag: one observation per event processed (the
    // write-back's echo may be processed meanwhile, so the three are read together
    // until they agree).
    let agree = |metrics: &str| {
        let events: u64 = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("recordsync_worker_events_total{{rule=\"{RULE}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        events >= 1
            && ["processing", "lag"].iter().all(|h| {
                metrics.contains(&format!(
                    "recordsync_worker_{h}_seconds_count{{rule=\"{RULE}\"}} {events}\n"
                ))
            })
    };
    tests::wait_for(
        "the histograms to count every event",
        std::time::Duration::from_secs(10),
        || async { Ok(agree(&env.worker_metrics().await?)) },
    )
    .await?;
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    // Every request to another system is counted with its outcome.
    assert!(
        metrics.contains("recordsync_target_requests_total{system=\"helpdesk\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recordsync_limiter_wait_seconds_count{system=\"kintone\"}"),
        "{metrics}"
    );
    env.finish().await
}

/// RabbitMQ itself restarts while accepted webhooks wait in the work queue: a node of
/// the test's own, stopped with `rabbitmqctl stop` and started again on its data (not a
/// TCP cut). What ingest accepted (202: a confirmed, persistent publish to a quorum
/// queue) is still there afterwards, and each becomes exactly one ticket.
#[tokio::test]
async fn accepted_webhooks_survive_a_rabbitmq_restart() -> anyhow::Result<()> {
    let mut rabbit = tests::servers::OwnRabbit::start().await?;
    let mut env = Env::start_with(EnvOptions {
        amqp_url: Some(rabbit.url()),
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let mut ids = vec![];
    for n in 0..5 {
        ids.push(
            env.kintone_create(
                json!({"work_order_no": format!("WO-8{n:02}"), "件名": format!("Before the restart {n}")}),
            )
            .await?,
        );
    }
    env.flush_webhooks().await?;
    let sent = env.admin_get("/_admin/kintone/webhooks").await?;
    let statuses: Vec<Value> = sent
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!(202); 5],
        "ingest accepted each: {sent}"
    );

    rabbit.down().await?;
    rabbit.up().await?;
    env.start_worker().await?;
    env.settle("every work order", || env.all_written_back(&ids))
        .await?;
    assert_eq!(env.tickets().await?.len(), 5);
    let log = env.request_log("helpdesk").await?;
    assert_eq!(count(&log, "POST", "/api/tickets"), 5, "one create each");
    env.finish().await
}
