//! The ceilings: what the broker and the database do on this machine with nothing of
//! ours in between, measured in the same run as the figures they bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use queue::topology::WORK_KEY;
use sqlx::Connection;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fixture::{Janitor, topology};
use crate::load::{self, Run};

/// How long a publish may wait for its confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes `count` copies of `envelope` as ingest does (persistent, mandatory, one
/// confirm-mode channel shared by `concurrency` publishers, each waiting for its
/// confirm) to the events exchange of a fresh quorum topology, after a short warm-up.
/// The topology is deleted before returning.
pub async fn raw_publish(
    janitor: &Janitor,
    envelope: &[u8],
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let prefix = janitor.prefix();
    let conn = queue::connect(&tests::amqp_url(), "recordsync-bench-publish").await?;
    let publisher = queue::Publisher::open(&conn, CONFIRM_TIMEOUT).await?;
    topology(&prefix).declare(publisher.channel()).await?;
    let exchange = queue::Names::new(&prefix).events_exchange();
    let envelope: Arc<[u8]> = Arc::from(envelope);
    let op = move |i: usize| {
        let publisher = publisher.clone();
        let exchange = exchange.clone();
        let envelope = Arc::clone(&envelope);
        async move {
            // The same headers ingest puts on every message.
            let headers = queue::header_table(&[
                (queue::headers::ATTEMPT, queue::number(1)),
                (
                    queue::headers::CORRELATION_ID,
                    queue::text(&uuid::Uuid::now_v7().to_string()),
                ),
            ]);
            publisher
                .publish(&exchange, WORK_KEY, &envelope, &format!("raw-{i}"), headers)
                .await?;
            Ok(())
        }
    };
    let op = Arc::new(op);
    let warm = Arc::clone(&op);
    load::closed_loop(warm_up(count), concurrency, move |i| warm(i)).await?;
    let run = load::closed_loop(count, concurrency, move |i| op(i)).await?;
    let _ = conn.close(200, "done".into()).await;
    janitor.delete_prefix(&prefix).await?;
    Ok(run)
}

/// Publishes `count` copies of `envelope` to a fresh quorum work queue, then consumes
/// them with `consumers` consumers (one connection each, as workers have) of
/// `prefetch` unacknowledged messages, acknowledging each. Returns acknowledged
/// messages per second, timed from the first consume to the last ack. The topology is
/// deleted before returning.
pub async fn consume_ack(
    janitor: &Janitor,
    envelope: &[u8],
    count: usize,
    consumers: usize,
    prefetch: u16,
) -> anyhow::Result<f64> {
    let prefix = janitor.prefix();
    let fill = raw_publish_into(&prefix, envelope, count).await;
    let measured = match fill {
        Ok(()) => drain(&prefix, count, consumers, prefetch).await,
        Err(e) => Err(e),
    };
    janitor.delete_prefix(&prefix).await?;
    measured
}

async fn raw_publish_into(prefix: &str, envelope: &[u8], count: usize) -> anyhow::Result<()> {
    let conn = queue::connect(&tests::amqp_url(), "recordsync-bench-fill").await?;
    let publisher = queue::Publisher::open(&conn, CONFIRM_TIMEOUT).await?;
    topology(prefix).declare(publisher.channel()).await?;
    let exchange = queue::Names::new(prefix).events_exchange();
    let envelope: Arc<[u8]> = Arc::from(envelope);
    load::closed_loop(count, 64, move |i| {
        let publisher = publisher.clone();
        let exchange = exchange.clone();
        let envelope = Arc::clone(&envelope);
        async move {
            publisher
                .publish(
                    &exchange,
                    WORK_KEY,
                    &envelope,
                    &format!("fill-{i}"),
                    Default::default(),
                )
                .await?;
            Ok(())
        }
    })
    .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

async fn drain(prefix: &str, count: usize, consumers: usize, prefetch: u16) -> anyhow::Result<f64> {
    let stop = CancellationToken::new();
    let mut brokers = Vec::new();
    let mut keepers = Vec::new();
    for _ in 0..consumers {
        let broker = queue::Broker::new(
            &tests::amqp_url(),
            "recordsync-bench-consume",
            topology(prefix),
            CONFIRM_TIMEOUT,
        );
        keepers.push(broker.spawn_keeper(stop.clone()));
        tokio::time::timeout(Duration::from_secs(10), broker.wait_connected())
            .await
            .context("the consume ceiling could not connect to RabbitMQ")?;
        brokers.push(broker);
    }
    let acked = Arc::new(AtomicUsize::new(0));
    let done = CancellationToken::new();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (n, broker) in brokers.iter().enumerate() {
        let mut consumer = broker
            .consume(&format!("bench-ceiling-{n}"), prefetch)
            .await?;
        let acked = Arc::clone(&acked);
        let done = done.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    next = consumer.next() => match next {
                        Some(delivery) => {
                            delivery?.ack().await?;
                            if acked.fetch_add(1, Ordering::Relaxed) + 1 >= count {
                                done.cancel();
                            }
                        }
                        None => break,
                    },
                    _ = done.cancelled() => break,
                }
            }
            consumer.close().await;
            anyhow::Ok(())
        });
    }
    let finished = tokio::time::timeout(Duration::from_secs(300), done.cancelled()).await;
    let elapsed = started.elapsed();
    done.cancel();
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    stop.cancel();
    for keeper in keepers {
        let _ = keeper.await;
    }
    finished.context("the consume ceiling did not drain the queue within 300 s")?;
    Ok(count as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// Opens `connections` connections to the database at `url`, then has each do its
/// share of `commits` single-row INSERTs in autocommit mode into a plain (logged)
/// table, as the worker's commits are: each commit waits for its WAL flush. Returns
/// commits per second.
pub async fn pg_commits(url: &str, connections: usize, commits: usize) -> anyhow::Result<f64> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect_patiently(url).await?);
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, conn int NOT NULL, body text NOT NULL)",
    )
    .execute(&mut conns[0])
    .await?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (n, mut conn) in conns.into_iter().enumerate() {
        let share = commits / connections + usize::from(n < commits % connections);
        tasks.spawn(async move {
            for _ in 0..share {
                sqlx::query("INSERT INTO bench_commits (conn, body) VALUES ($1, $2)")
                    .bind(n as i32)
                    .bind("a row of about the size of a processed-event mark")
                    .execute(&mut conn)
                    .await?;
            }
            anyhow::Ok(conn)
        });
    }
    let mut conns = Vec::with_capacity(connections);
    while let Some(joined) = tasks.join_next().await {
        conns.push(joined??);
    }
    let elapsed = started.elapsed();
    if let Some(conn) = conns.first_mut() {
        sqlx::query("DROP TABLE bench_commits")
            .execute(&mut *conn)
            .await?;
    }
    for conn in conns {
        let _ = conn.close().await;
    }
    Ok(commits as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// Connects, waiting up to 30 s while the server has no connection slot left (other
/// test runs on a shared server come and go).
async fn connect_patiently(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(e) if e.to_string().contains("too many clients") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("the PostgreSQL ceiling could not connect"),
        }
    }
}

/// The warm-up before a timed run: enough to open every connection and fill the
/// caches, small beside the run itself.
pub fn warm_up(count: usize) -> usize {
    (count / 10).clamp(1, 256)
}
