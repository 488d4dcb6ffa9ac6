//! A failed delivery handed on: to the delay queue its failure's tier calls for
//! (`classify::retry_tier`, jittered by `classify::jittered`), or to the dead-letter
//! queue. The copy is confirmed by the broker before the original is acknowledged
//! (`queue::Delivery::retry`, `queue::Delivery::dead_letter`); a copy that is not
//! confirmed gives the original back, after [`REFUSED_PAUSE`].

use std::time::Duration;

use domain::history::Entry;
use queue::{CommandV2, DeadLetter, Delivery, HandoffError, Retry};

use super::{Disposition, Worker};

/// How long a delivery whose copy the broker refused is held before it is given back.
/// Given back at once, it came straight back, and the work queue's delivery limit
/// (20) was spent in a moment: the broker's own dead-lettering then took the message to
/// wherever the refused copy could not go. Held, the limit lasts about 20 s of a queue
/// that refuses (deleted, or full with `reject-publish`).
pub const REFUSED_PAUSE: Duration = Duration::from_secs(1);
use crate::classify;
use crate::metrics::Event;
use crate::step::Failure;

impl Worker {
    /// Sends `delivery` to the delay queue for its next attempt (or, for an in-doubt
    /// create not yet visible, for the same attempt again).
    pub(super) async fn retry(
        &self,
        delivery: &Delivery,
        ev: &CommandV2,
        attempt: u32,
        failure: &Failure,
        after: Option<Duration>,
    ) -> Disposition {
        let next_attempt = match failure {
            Failure::InDoubt { .. } => attempt,
            _ => attempt + 1,
        };
        let topology = self.broker.topology();
        let tier = classify::retry_tier(topology, next_attempt, after);
        let delay_ms = classify::jittered(topology.retry_delays_ms[tier], after, random_u64());
        let Ok(publisher) = self.broker.publisher().await else {
            return self.requeue(delivery).await;
        };
        let class = failure.class();
        let error = failure.to_string();
        let retry = Retry {
            tier,
            delay_ms,
            attempt,
            next_attempt,
            class,
            error: &error,
        };
        match delivery.retry(&publisher, &topology.names, &retry).await {
            Err(HandoffError::NotCopied(e)) => {
                tracing::error!(error = %e, "could not schedule the retry; the event goes back to the queue");
                tokio::time::sleep(REFUSED_PAUSE).await;
                self.requeue(delivery).await
            }
            handed => {
                self.metrics.emit(Event::Retried {
                    class,
                    next_attempt,
                    delay_ms,
                    error: failure,
                });
                self.note(ev, Entry::retry_scheduled(&error, attempt, delay_ms))
                    .await;
                match handed {
                    Ok(()) => Disposition::Retried { next_attempt },
                    Err(e) => not_acked(&e),
                }
            }
        }
    }

    /// Sends `delivery` to the dead-letter queue with its reason.
    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        ev: Option<&CommandV2>,
        class: &str,
        reason: &str,
        attempts: u32,
    ) -> Disposition {
        let Ok(publisher) = self.broker.publisher().await else {
            return self.requeue(delivery).await;
        };
        let rule = ev.and_then(|ev| self.rules_of(ev).into_iter().next());
        let dead = DeadLetter {
            class,
            reason,
            attempts,
            rule: rule.as_deref(),
        };
        match delivery
            .dead_letter(&publisher, self.broker.names(), &dead)
            .await
        {
            Err(HandoffError::NotCopied(e)) => {
                tracing::error!(error = %e, "could not dead-letter; the event goes back to the queue");
                tokio::time::sleep(REFUSED_PAUSE).await;
                self.requeue(delivery).await
            }
            handed => {
                self.metrics.emit(Event::DeadLettered {
                    class,
                    attempts,
                    reason,
                });
                match handed {
                    Ok(()) => Disposition::DeadLettered,
                    Err(e) => not_acked(&e),
                }
            }
        }
    }
}

/// The copy is queued but the original was not acknowledged: the broker redelivers it,
/// and the event id makes the redelivery a recognised duplicate.
fn not_acked(e: &HandoffError) -> Disposition {
    tracing::warn!(error = %e, "could not acknowledge; the broker will redeliver and the duplicate will be skipped");
    Disposition::Requeued
}

/// A random number for jitter.
fn random_u64() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"))
}
