//! The harness's own conditions can fail: `Env::quiet` does not call an environment
//! quiet while a delivery is held unacknowledged or a record's lease is held.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use tests::{Env, EnvOptions, RULE};

/// How long `quiet` is given to (wrongly) return while something is still going on.
/// It only bounds how long the test waits to see that it does not: a slow machine
/// makes a wrong return less likely, never a right one.
const NOT_WHILE_BUSY: Duration = Duration::from_secs(3);

#[tokio::test]
async fn quiet_waits_for_a_delivery_held_unacknowledged() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let (publisher, names) = env.publisher().await?;
    let cmd = tests::change("held-1", "1");
    publisher
        .publish(
            "",
            &names.work_queue(),
            &queue::QueueMessage::V2(cmd).encode(),
            "held-1",
            queue::Headers::default(),
        )
        .await?;
    // A consumer takes it and does not acknowledge it yet (as a worker does while its
    // step runs, or while it waits for the record's lease): no queue shows it ready.
    let conn = queue::connect(&tests::amqp_url(), "it-harness-holder").await?;
    let channel = conn.create_channel().await?;
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            names.work_queue().as_str().into(),
            "it-harness-holder".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    let held = consumer.next().await.expect("a delivery")?;
    assert_eq!(publisher.queue_depth(&names.work_queue()).await?, 0);
    assert_eq!(tests::unacked(&env.settings.queue_prefix).await?, 1);

    let early = tokio::time::timeout(NOT_WHILE_BUSY, env.quiet(RULE)).await;
    assert!(
        early.is_err(),
        "quiet returned {early:?} while a delivery was held unacknowledged"
    );

    held.ack(BasicAckOptions::default()).await?;
    env.quiet(RULE).await?;
    assert_eq!(tests::unacked(&env.settings.queue_prefix).await?, 0);
    conn.close(200, "done".into()).await?;
    env.finish().await
}

#[tokio::test]
async fn quiet_waits_for_a_lease_held() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    // A holder of a record's lease (a step between its lease and its commit, renewing
    // the lease meanwhile), with no delivery in the ledger yet.
    let holder = env.store.begin_record(RULE, "9").await?;

    let early = tokio::time::timeout(NOT_WHILE_BUSY, env.quiet(RULE)).await;
    assert!(
        early.is_err(),
        "quiet returned {early:?} while a record's lease was held"
    );

    drop(holder);
    env.quiet(RULE).await?;
    env.finish().await
}
