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
            let headers = queue::Headers::first_attempt().text(
                queue::headers::CORRELATION_ID,
                &uuid::Uuid::now_v7().to_string(),
            );
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

/// Consumes `count` copies of `envelope` from a fresh quorum work queue with
/// `consumers` consumers (one connection each, as workers have) of `prefetch`
/// unacknowledged messages, acknowledging each, while they are published as ingest
/// publishes them (confirmed, persistent, concurrency 64, on a connection of its own):
/// the broker does both at once, as it does under the service. Returns acknowledged
/// messages per second, from the first publish to the last ack. The topology is
/// deleted before returning.
pub async fn consume_ack(
    janitor: &Janitor,
    envelope: &[u8],
    count: usize,
    consumers: usize,
    prefetch: u16,
) -> anyhow::Result<f64> {
    let prefix = janitor.prefix();
    let measured = drain(&prefix, envelope, count, consumers, prefetch).await;
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

async fn drain(
    prefix: &str,
    envelope: &[u8],
    count: usize,
    consumers: usize,
    prefetch: u16,
) -> anyhow::Result<f64> {
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
    let started = Instant::now();
    let publishing = {
        let (prefix, envelope) = (prefix.to_owned(), envelope.to_vec());
        tokio::spawn(async move { raw_publish_into(&prefix, &envelope, count).await })
    };
    let finished = tokio::time::timeout(Duration::from_secs(300), done.cancelled()).await;
    let elapsed = started.elapsed();
    done.cancel();
    publishing.await??;
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
/// share of `steps` steps shaped as the worker's create is (`store::record`): three
/// statements on their own — the lease (an upsert), the memory read (a SELECT of the
/// record's row), the intent (an INSERT) — then one transaction: the lease released,
/// the state upserted, the intent marked sent, the history appended, `COMMIT`. The
/// tables are plain (logged), so every commit waits for its WAL flush as the worker's
/// do. Returns steps per second.
pub async fn pg_steps(url: &str, connections: usize, steps: usize) -> anyhow::Result<f64> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect_patiently(url).await?);
    }
    for ddl in [
        "CREATE TABLE IF NOT EXISTS bench_leases (record text PRIMARY KEY, owner text NOT NULL, token bigint NOT NULL, expires_at timestamptz NOT NULL)",
        "CREATE TABLE IF NOT EXISTS bench_state (record text PRIMARY KEY, target_id text, state jsonb NOT NULL)",
        "CREATE TABLE IF NOT EXISTS bench_ops (id bigserial PRIMARY KEY, record text NOT NULL, status text NOT NULL, fields jsonb NOT NULL)",
        "CREATE TABLE IF NOT EXISTS bench_history (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), record text NOT NULL, summary text NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&mut conns[0]).await?;
    }
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (n, mut conn) in conns.into_iter().enumerate() {
        let share = steps / connections + usize::from(n < steps % connections);
        tasks.spawn(async move {
            let fields = serde_json::json!({"subject": "a subject", "priority": "normal", "external_id": "WO-100000"});
            for i in 0..share {
                let record = format!("{n}-{i}");
                sqlx::query("INSERT INTO bench_leases VALUES ($1, 'bench', $2, now() + interval '30 s') ON CONFLICT (record) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at")
                    .bind(&record)
                    .bind(i as i64)
                    .execute(&mut conn)
                    .await?;
                sqlx::query("SELECT target_id, state FROM bench_state WHERE record = $1")
                    .bind(&record)
                    .fetch_optional(&mut conn)
                    .await?;
                let op: i64 = sqlx::query_scalar("INSERT INTO bench_ops (record, status, fields) VALUES ($1, 'pending', $2) RETURNING id")
                    .bind(&record)
                    .bind(&fields)
                    .fetch_one(&mut conn)
                    .await?;
                let mut tx = sqlx::Connection::begin(&mut conn).await?;
                sqlx::query("DELETE FROM bench_leases WHERE record = $1 AND token = $2")
                    .bind(&record)
                    .bind(i as i64)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO bench_state VALUES ($1, $2, $3) ON CONFLICT (record) DO UPDATE SET target_id = excluded.target_id, state = excluded.state")
                    .bind(&record)
                    .bind("12345")
                    .bind(&fields)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE bench_ops SET status = 'sent' WHERE id = $1")
                    .bind(op)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO bench_history (record, summary) SELECT $1, s FROM unnest($2::text[]) AS s")
                    .bind(&record)
                    .bind(["fetched the record from kintone at revision 1", "created helpdesk record 12345 with 6 fields", "wrote 12345 back into kintone field helpdesk_ticket_id"])
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
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
        sqlx::query("DROP TABLE bench_leases, bench_state, bench_ops, bench_history")
            .execute(&mut *conn)
            .await?;
    }
    for conn in conns {
        let _ = conn.close().await;
    }
    Ok(steps as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// Connects, waiting up to 30 s while the server has no connection slot left (other
/// test runs on a shared server come and go).
async fn connect_patiently(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    connect_as(url, "recordsync-bench").await
}

/// [`connect_patiently`], naming the connection (`application_name`), so that a count
/// of the fleet's connections can leave it out.
pub(crate) async fn connect_as(url: &str, name: &str) -> anyhow::Result<sqlx::PgConnection> {
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .application_name(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sqlx::PgConnection::connect_with(&options).await {
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
