//! The RabbitMQ adapter: the only crate that imports lapin.
//!
//! - [`message`]: the versioned queue message (its own type, not a domain type).
//! - [`topology`]: exchange and queue names (all under a prefix) and their idempotent
//!   declaration: a quorum work queue, per-tier delay queues that dead-letter back to
//!   it, a dead-letter queue.
//! - [`Broker`]: a connection kept alive by a background task that reconnects with
//!   backoff, handing out a confirm-mode [`Publisher`] while connected.
//! - [`Consumer`]/[`Delivery`]: manual-ack consumption with a bounded prefetch.
//! - [`redeliver`]: a delivery handed on to a delay queue ([`Delivery::retry`]) or the
//!   dead-letter queue ([`Delivery::dead_letter`]), confirmed before the ack; the
//!   attempt and history headers.

pub mod message;
pub mod redeliver;
pub mod topology;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ConnectionProperties};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

pub use lapin::Connection;
pub use message::{Command, CommandV2, DecodeError, EventV1, QueueMessage, Resolution};
pub use redeliver::{DeadLetter, HandoffError, Retry};
pub use topology::{Names, Topology};

/// Headers the service puts on messages.
pub mod headers {
    /// The attempt this delivery is (1 for the first).
    pub const ATTEMPT: &str = "x-recordsync-attempt";
    /// The last error, on retries and dead letters.
    pub const LAST_ERROR: &str = "x-recordsync-last-error";
    /// Why a message was dead-lettered.
    pub const DEAD_REASON: &str = "x-recordsync-dead-reason";
    /// The rule being processed when the message was dead-lettered.
    pub const RULE: &str = "x-recordsync-rule";
    /// The correlation id carried through every hop.
    pub const CORRELATION_ID: &str = "x-correlation-id";
    /// The attempt history, a JSON array of `{attempt, class, error, at}`.
    pub const HISTORY: &str = "x-recordsync-history";
    /// A unique id given when a message is dead-lettered.
    pub const DEAD_ID: &str = "x-recordsync-dead-id";
}

/// A broker failure.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker is not connected.
    #[error("the broker is not connected")]
    NotConnected,
    /// An AMQP operation failed.
    #[error("AMQP {op} failed: {source}")]
    Amqp {
        /// What was being done.
        op: &'static str,
        /// The lapin error.
        #[source]
        source: lapin::Error,
    },
    /// The broker did not confirm in time.
    #[error("the broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    /// The broker refused the message (nack).
    #[error("the broker refused the message")]
    Nacked,
    /// No queue is bound for the routing key (a mandatory publish came back).
    #[error("the message was unroutable: no queue is bound for {0}")]
    Unroutable(String),
}

fn amqp(op: &'static str) -> impl FnOnce(lapin::Error) -> QueueError {
    move |source| QueueError::Amqp { op, source }
}

/// Opens a connection with a readable connection name (shown in the management UI).
pub async fn connect(url: &str, name: &str) -> Result<Connection, QueueError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props)
        .await
        .map_err(amqp("connect"))
}

/// The broker addresses of a setting: one AMQP URL, or several separated by commas
/// (the nodes of a cluster), in the order given.
pub fn addresses(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Connects to the first address of `urls` (comma-separated) that answers, trying them
/// in order from `start`; returns the connection and the index of the address used.
/// Addresses are named by their position only: a URL holds a password.
pub async fn connect_any(
    urls: &str,
    start: usize,
    name: &str,
) -> Result<(Connection, usize), QueueError> {
    let all = addresses(urls);
    if all.is_empty() {
        return Err(QueueError::NotConnected);
    }
    let mut last = None;
    for k in 0..all.len() {
        let i = (start + k) % all.len();
        match connect(all[i], name).await {
            Ok(conn) => return Ok((conn, i)),
            Err(e) => {
                if all.len() > 1 {
                    tracing::warn!(address = i + 1, of = all.len(), error = %e, "broker address unreachable; trying the next");
                }
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least one address was tried"))
}

/// A channel in confirm mode that publishes persistent, mandatory messages and waits
/// for the broker's confirm.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    timeout: Duration,
}

impl Publisher {
    /// Opens a confirm-mode channel on `conn`.
    pub async fn open(conn: &Connection, timeout: Duration) -> Result<Publisher, QueueError> {
        let channel = conn.create_channel().await.map_err(amqp("channel.open"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("confirm.select"))?;
        Ok(Publisher { channel, timeout })
    }

    /// Publishes and waits for the confirm. Returns only when the broker has taken
    /// responsibility for the message; an unroutable or refused message is an error.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        message_id: &str,
        headers: Headers,
    ) -> Result<(), QueueError> {
        self.publish_expiring(exchange, routing_key, body, message_id, headers, None)
            .await
    }

    /// As [`Publisher::publish`], with a per-message TTL (for delay queues).
    pub async fn publish_expiring(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        message_id: &str,
        headers: Headers,
        expiration_ms: Option<u64>,
    ) -> Result<(), QueueError> {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message_id.into())
            .with_headers(headers.0);
        if let Some(ms) = expiration_ms {
            props = props.with_expiration(ms.to_string().as_str().into());
        }
        let confirm = async {
            let pending = self
                .channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    props,
                )
                .await
                .map_err(amqp("basic.publish"))?;
            pending.await.map_err(amqp("publisher confirm"))
        };
        match tokio::time::timeout(self.timeout, confirm).await {
            Err(_) => Err(QueueError::ConfirmTimeout(self.timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => {
                Err(QueueError::Unroutable(format!("{exchange}/{routing_key}")))
            }
            Ok(Ok(Confirmation::Nack(_))) => Err(QueueError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => {
                unreachable!("the channel is in confirm mode")
            }
        }
    }

    /// The number of ready messages in a queue (a passive declare on this publisher's
    /// channel, which a missing queue closes: a service asks [`Broker::queue_depth`]).
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, QueueError> {
        ready_messages(&self.channel, queue).await
    }

    /// The channel, for topology declaration.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// A connection kept alive in the background: while connected it holds a publisher;
/// when the connection drops, the keeper reconnects with exponential backoff and
/// re-declares the topology. Callers see [`QueueError::NotConnected`] meanwhile.
pub struct Broker {
    /// One address, or several (a cluster's nodes), comma-separated.
    url: String,
    /// The address to try first: the one that answered last.
    next: std::sync::atomic::AtomicUsize,
    name: String,
    topology: Topology,
    confirm_timeout: Duration,
    current: RwLock<Option<(Connection, Publisher)>>,
    connected: tokio::sync::watch::Sender<bool>,
}

impl Broker {
    /// Creates the broker handle; nothing connects until [`Broker::spawn_keeper`].
    pub fn new(
        url: &str,
        name: &str,
        topology: Topology,
        confirm_timeout: Duration,
    ) -> Arc<Broker> {
        Arc::new(Broker {
            url: url.to_owned(),
            next: std::sync::atomic::AtomicUsize::new(0),
            name: name.to_owned(),
            topology,
            confirm_timeout,
            current: RwLock::new(None),
            connected: tokio::sync::watch::channel(false).0,
        })
    }

    /// Connects once, declaring the topology; for start-up checks that should fail
    /// fast with a clear message.
    pub async fn connect_once(&self) -> Result<(), QueueError> {
        let start = self.next.load(std::sync::atomic::Ordering::Relaxed);
        let (conn, used) = connect_any(&self.url, start, &self.name).await?;
        if used != start {
            tracing::info!(broker = %self.name, address = used + 1, "failed over to another broker address");
        }
        self.next.store(used, std::sync::atomic::Ordering::Relaxed);
        let publisher = Publisher::open(&conn, self.confirm_timeout).await?;
        self.topology.declare(publisher.channel()).await?;
        *self.current.write().await = Some((conn, publisher));
        self.connected.send_replace(true);
        Ok(())
    }

    /// Keeps the connection alive until `shutdown`, then closes it.
    pub fn spawn_keeper(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let broker = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let alive = broker
                    .current
                    .read()
                    .await
                    .as_ref()
                    .map(|(c, _)| c.status().connected());
                match alive {
                    Some(true) => {}
                    Some(false) => {
                        tracing::warn!(broker = %broker.name, "broker connection lost; reconnecting");
                        *broker.current.write().await = None;
                        broker.connected.send_replace(false);
                        continue;
                    }
                    None => {
                        let attempt = || broker.connect_once();
                        let backoff = ExponentialBuilder::default()
                            .with_min_delay(Duration::from_millis(200))
                            .with_max_delay(Duration::from_secs(5))
                            .with_jitter()
                            .without_max_times();
                        let connecting = attempt
                            .retry(backoff)
                            .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "cannot reach the broker; check that RabbitMQ is running"));
                        tokio::select! {
                            r = connecting => {
                                if r.is_ok() {
                                    tracing::info!(broker = %broker.name, "connected to the broker");
                                }
                            }
                            _ = shutdown.cancelled() => break,
                        }
                        continue;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            if let Some((conn, _)) = broker.current.write().await.take() {
                let _ = conn.close(200, "shutdown".into()).await;
            }
            broker.connected.send_replace(false);
        })
    }

    /// The publisher, while connected.
    pub async fn publisher(&self) -> Result<Publisher, QueueError> {
        match self.current.read().await.as_ref() {
            Some((conn, p)) if conn.status().connected() => Ok(p.clone()),
            _ => Err(QueueError::NotConnected),
        }
    }

    /// The number of ready messages in a queue, read on a channel of its own: a queue
    /// that is missing fails the passive declare, and the broker closes the channel it
    /// was asked on (asked on the publisher's, a `/metrics` scrape while the dead-letter
    /// queue was gone closed it, and the next retry or dead letter failed with it).
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, QueueError> {
        let channel = {
            let guard = self.current.read().await;
            let Some((conn, _)) = guard.as_ref() else {
                return Err(QueueError::NotConnected);
            };
            conn.create_channel().await.map_err(amqp("channel.open"))?
        };
        let depth = ready_messages(&channel, queue).await;
        if depth.is_ok() {
            let _ = channel.close(200, "read".into()).await;
        }
        depth
    }

    /// Opens a manual-ack consumer on the work queue with `prefetch` unacknowledged
    /// messages at most.
    pub async fn consume(&self, tag: &str, prefetch: u16) -> Result<Consumer, QueueError> {
        self.consume_queue(&self.topology.names.work_queue(), tag, prefetch)
            .await
    }

    /// Opens a manual-ack consumer on any queue of the topology.
    pub async fn consume_queue(
        &self,
        queue: &str,
        tag: &str,
        prefetch: u16,
    ) -> Result<Consumer, QueueError> {
        let guard = self.current.read().await;
        let Some((conn, _)) = guard.as_ref() else {
            return Err(QueueError::NotConnected);
        };
        let channel = conn.create_channel().await.map_err(amqp("channel.open"))?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp("basic.qos"))?;
        let inner = channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("basic.consume"))?;
        Ok(Consumer {
            channel,
            inner,
            tag: tag.to_owned(),
        })
    }

    /// Whether the broker is connected now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until the broker is connected.
    pub async fn wait_connected(&self) {
        let mut rx = self.connected.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// The names in use.
    pub fn names(&self) -> &Names {
        &self.topology.names
    }

    /// The topology in use.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}

/// A manual-ack consumer.
pub struct Consumer {
    channel: Channel,
    inner: lapin::Consumer,
    tag: String,
}

impl Consumer {
    /// The next delivery; `None` when the consumer was cancelled or the channel
    /// closed.
    pub async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        let d = self.inner.next().await?;
        Some(d.map(|inner| Delivery { inner }).map_err(amqp("consume")))
    }

    /// Stops deliveries; messages already delivered can still be acknowledged.
    pub async fn cancel(&self) -> Result<(), QueueError> {
        self.channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await
            .map_err(amqp("basic.cancel"))
    }

    /// Closes the channel: unacknowledged messages go back to the queue.
    pub async fn close(&self) {
        let _ = self.channel.close(200, "closing".into()).await;
    }
}

/// One delivered message.
pub struct Delivery {
    inner: lapin::message::Delivery,
}

impl Delivery {
    /// The raw body.
    pub fn body(&self) -> &[u8] {
        &self.inner.data
    }

    /// Decodes the message.
    pub fn decode(&self) -> Result<QueueMessage, DecodeError> {
        QueueMessage::decode(&self.inner.data)
    }

    /// Which attempt this is: 1 unless a retry header says otherwise.
    pub fn attempt(&self) -> u32 {
        match self.header(headers::ATTEMPT) {
            Some(AMQPValue::LongUInt(n)) => *n,
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
            Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(1),
            _ => 1,
        }
    }

    /// Whether the broker delivered this message before (a worker died holding it).
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// The message id (the event id).
    pub fn message_id(&self) -> Option<String> {
        self.inner
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
    }

    /// A text header.
    pub fn header_text(&self, key: &str) -> Option<String> {
        match self.header(key)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        }
    }

    fn header(&self, key: &str) -> Option<&AMQPValue> {
        self.inner
            .properties
            .headers()
            .as_ref()?
            .inner()
            .get(&ShortString::from(key))
    }

    /// The W3C `traceparent` the message carries, if any.
    pub fn traceparent(&self) -> Option<String> {
        match self.header(trace::TRACEPARENT)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        }
    }

    /// The headers, to carry on to a retry or a dead letter.
    pub(crate) fn headers(&self) -> Headers {
        Headers(self.inner.properties.headers().clone().unwrap_or_default())
    }

    /// Acknowledges: the message is done.
    pub async fn ack(&self) -> Result<(), QueueError> {
        self.inner
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(amqp("basic.ack"))
    }

    /// Gives the message back to the queue without counting an attempt (for
    /// infrastructure outages such as PostgreSQL being down).
    pub async fn requeue(&self) -> Result<(), QueueError> {
        self.inner
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(amqp("basic.nack"))
    }
}

/// The ready messages of `queue` (a passive declare, which closes `channel` when the
/// queue is missing).
async fn ready_messages(channel: &Channel, queue: &str) -> Result<u32, QueueError> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp("queue.declare passive"))?;
    Ok(q.message_count())
}

/// A message's headers, as a publisher gives them: text and numbers by name. The
/// broker's own types stay in this crate.
#[derive(Debug, Clone, Default)]
pub struct Headers(FieldTable);

impl Headers {
    /// The headers of a message's first attempt (`x-attempt: 1`), as ingest, a replay
    /// and a scheduled job publish it.
    pub fn first_attempt() -> Headers {
        Headers::default().number(headers::ATTEMPT, 1)
    }

    /// Sets a text header.
    pub fn text(mut self, key: &str, value: &str) -> Headers {
        self.set(key, text(value));
        self
    }

    /// Sets a number header.
    pub fn number(mut self, key: &str, value: u32) -> Headers {
        self.set(key, number(value));
        self
    }

    pub(crate) fn set(&mut self, key: &str, value: AMQPValue) {
        self.0.insert(key.into(), value);
    }
}

/// A text header value.
pub(crate) fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// A number header value.
pub(crate) fn number(n: u32) -> AMQPValue {
    AMQPValue::LongUInt(n)
}
