//! Names and declaration of the exchanges and queues. Everything carries a prefix so
//! that environments and tests never share a queue. Declaration is idempotent; note
//! that RabbitMQ refuses to re-declare a queue with different arguments, so changing
//! the retry delays of an existing prefix means deleting its delay queues first.

use lapin::Channel;
use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::{QueueError, amqp};

/// The routing key of work messages.
pub const WORK_KEY: &str = "work";

/// The names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    /// The direct exchange ingest publishes to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The quorum work queue the workers consume.
    pub fn work_queue(&self) -> String {
        format!("{}.work", self.prefix)
    }

    /// The delay queue of retry tier `tier` (0-based).
    pub fn retry_queue(&self, tier: usize) -> String {
        format!("{}.retry.{tier}", self.prefix)
    }

    /// The dead-letter queue.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
}

/// The whole topology: names and retry tiers.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The names.
    pub names: Names,
    /// The delay of each retry tier, in milliseconds.
    pub retry_delays_ms: Vec<u64>,
    /// How many times RabbitMQ redelivers one message (workers dying while holding
    /// it) before it dead-letters it as poison.
    pub delivery_limit: u32,
}

impl Topology {
    /// The topology for a prefix and retry tiers.
    pub fn new(prefix: &str, retry_delays_ms: Vec<u64>) -> Topology {
        Topology {
            names: Names::new(prefix),
            retry_delays_ms,
            delivery_limit: 20,
        }
    }

    /// The tier a retry before attempt `next_attempt` (2 for the first retry) waits in.
    pub fn tier_for(&self, next_attempt: u32) -> usize {
        (next_attempt.saturating_sub(2) as usize).min(self.retry_delays_ms.len().saturating_sub(1))
    }

    /// Declares everything. Safe to call on every start-up and every reconnect.
    pub async fn declare(&self, ch: &Channel) -> Result<(), QueueError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.names.events_exchange().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp("exchange.declare"))?;

        ch.queue_declare(self.names.dead_queue().into(), durable, quorum(&[]))
            .await
            .map_err(amqp("queue.declare dead"))?;

        // Poison messages (redelivered past the limit) are dead-lettered at least once.
        let dead = self.names.dead_queue();
        let work_args = quorum(&[
            (
                "x-delivery-limit",
                AMQPValue::LongInt(self.delivery_limit as i32),
            ),
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString(dead.as_str().into()),
            ),
            (
                "x-dead-letter-strategy",
                AMQPValue::LongString("at-least-once".into()),
            ),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]);
        ch.queue_declare(self.names.work_queue().into(), durable, work_args)
            .await
            .map_err(amqp("queue.declare work"))?;
        ch.queue_bind(
            self.names.work_queue().into(),
            self.names.events_exchange().into(),
            WORK_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp("queue.bind work"))?;

        // Each delay queue holds messages for its TTL, then dead-letters them back to
        // the work queue, at least once.
        for (tier, delay) in self.retry_delays_ms.iter().enumerate() {
            let args = quorum(&[
                ("x-message-ttl", AMQPValue::LongLongInt(*delay as i64)),
                (
                    "x-dead-letter-exchange",
                    AMQPValue::LongString(self.names.events_exchange().as_str().into()),
                ),
                (
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString(WORK_KEY.into()),
                ),
                (
                    "x-dead-letter-strategy",
                    AMQPValue::LongString("at-least-once".into()),
                ),
                ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            ]);
            ch.queue_declare(self.names.retry_queue(tier).into(), durable, args)
                .await
                .map_err(amqp("queue.declare retry"))?;
        }
        Ok(())
    }

    /// Deletes every queue and the exchange (tests and `worker` tooling clean-up).
    pub async fn delete(&self, ch: &Channel) -> Result<(), QueueError> {
        let mut queues = vec![self.names.work_queue(), self.names.dead_queue()];
        queues.extend((0..self.retry_delays_ms.len()).map(|t| self.names.retry_queue(t)));
        for q in queues {
            ch.queue_delete(q.into(), Default::default())
                .await
                .map_err(amqp("queue.delete"))?;
        }
        ch.exchange_delete(self.names.events_exchange().into(), Default::default())
            .await
            .map_err(amqp("exchange.delete"))
    }
}

fn quorum(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_tiers_saturate() {
        let t = Topology::new("t1", vec![10, 20, 30]);
        assert_eq!(t.names.work_queue(), "t1.work");
        assert_eq!(t.names.retry_queue(2), "t1.retry.2");
        assert_eq!(t.names.dead_queue(), "t1.dead");
        assert_eq!(t.names.events_exchange(), "t1.events");
        assert_eq!(t.tier_for(2), 0);
        assert_eq!(t.tier_for(3), 1);
        assert_eq!(t.tier_for(4), 2);
        assert_eq!(t.tier_for(40), 2);
    }
}
