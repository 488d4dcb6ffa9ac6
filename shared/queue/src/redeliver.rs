//! Handing a delivery on: a copy to a delay queue (a retry) or to the dead-letter
//! queue, confirmed by the broker, and only then the original acknowledged. The
//! header protocol that carries the attempt, the last error and the attempt history
//! lives here and nowhere else, so no lapin type leaves this crate.

use crate::{Delivery, Names, Publisher, QueueError, headers, number, text};

/// A retry: which delay queue, for how long, and what the copy carries.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    /// The delay tier (its queue dead-letters back to the work queue).
    pub tier: usize,
    /// The per-message expiration, at most the tier's TTL.
    pub delay_ms: u64,
    /// The attempt that failed.
    pub attempt: u32,
    /// The attempt the copy will be. Equal to `attempt` for a wait that is not an
    /// attempt (an in-doubt create not yet visible): it then stays out of the history.
    pub next_attempt: u32,
    /// The failure's class name.
    pub class: &'a str,
    /// The failure, as an operator reads it.
    pub error: &'a str,
}

/// A dead letter: why, after how many attempts, under which rule.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// The failure's class name (`undecodable`, `retries_exhausted`, ...).
    pub class: &'a str,
    /// The last error.
    pub reason: &'a str,
    /// The attempts made.
    pub attempts: u32,
    /// The rule the message concerns, when known.
    pub rule: Option<&'a str>,
}

/// Why a hand-off did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The copy was not confirmed: nothing changed, the original is still held and
    /// should be given back.
    #[error("the copy was not confirmed by the broker: {0}")]
    NotCopied(#[source] QueueError),
    /// The copy is queued but the original could not be acknowledged (the channel is
    /// gone): the broker redelivers it, and its event id makes it a duplicate.
    #[error("the copy is queued, but the original was not acknowledged: {0}")]
    NotAcked(#[source] QueueError),
}

impl Delivery {
    /// Copies the message to the delay queue of `retry.tier` with the attempt headers,
    /// waits for the broker's confirm, then acknowledges the original.
    pub async fn retry(
        &self,
        publisher: &Publisher,
        names: &Names,
        retry: &Retry<'_>,
    ) -> Result<(), HandoffError> {
        let mut table = self.headers();
        table.set(headers::ATTEMPT, number(retry.next_attempt));
        table.set(headers::LAST_ERROR, text(retry.error));
        if retry.next_attempt > retry.attempt {
            table.set(
                headers::HISTORY,
                text(&self.history_with(retry.attempt, retry.class, retry.error)),
            );
        }
        let id = self.message_id().unwrap_or_default();
        // The default exchange routes by queue name; the delay queue dead-letters the
        // message back to the work queue when its TTL (or the per-message expiration)
        // runs out.
        publisher
            .publish_expiring(
                "",
                &names.retry_queue(retry.tier),
                self.body(),
                &id,
                table,
                Some(retry.delay_ms),
            )
            .await
            .map_err(HandoffError::NotCopied)?;
        self.ack().await.map_err(HandoffError::NotAcked)
    }

    /// Copies the message to the dead-letter queue with the reason, last error, attempt
    /// history, a dead-letter id and the rule, waits for the broker's confirm, then
    /// acknowledges the original.
    pub async fn dead_letter(
        &self,
        publisher: &Publisher,
        names: &Names,
        dead: &DeadLetter<'_>,
    ) -> Result<(), HandoffError> {
        let mut table = self.headers();
        table.set(headers::DEAD_REASON, text(dead.class));
        table.set(headers::LAST_ERROR, text(dead.reason));
        table.set(headers::ATTEMPT, number(dead.attempts));
        table.set(
            headers::HISTORY,
            text(&self.history_with(dead.attempts, dead.class, dead.reason)),
        );
        table.set(headers::DEAD_ID, text(&uuid::Uuid::now_v7().to_string()));
        if let Some(rule) = dead.rule {
            table.set(headers::RULE, text(rule));
        }
        let id = self.message_id().unwrap_or_default();
        publisher
            .publish("", &names.dead_queue(), self.body(), &id, table)
            .await
            .map_err(HandoffError::NotCopied)?;
        self.ack().await.map_err(HandoffError::NotAcked)
    }

    /// The attempt history header with one more attempt.
    fn history_with(&self, attempt: u32, class: &str, error: &str) -> String {
        let history = self.header_text(headers::HISTORY);
        append_attempt(history.as_deref(), attempt, class, error)
    }
}

/// An attempt history (a JSON list, or nothing yet) with one more attempt.
fn append_attempt(history: Option<&str>, attempt: u32, class: &str, error: &str) -> String {
    let mut list: Vec<serde_json::Value> = history
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default();
    list.push(serde_json::json!({
        "attempt": attempt,
        "class": class,
        "error": error,
        "at": chrono::Utc::now(),
    }));
    serde_json::Value::Array(list).to_string()
}

#[cfg(test)]
mod tests {
    use super::append_attempt;

    #[test]
    fn the_history_grows_by_one_attempt_and_survives_a_bad_header() {
        let first = append_attempt(None, 1, "server_error", "503");
        let list: Vec<serde_json::Value> = serde_json::from_str(&first).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["attempt"], 1);
        assert_eq!(list[0]["class"], "server_error");
        let second = append_attempt(Some(&first), 2, "timeout", "timed out");
        let list: Vec<serde_json::Value> = serde_json::from_str(&second).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1]["error"], "timed out");
        // A header that is not a list starts the history again rather than failing.
        let fresh = append_attempt(Some("not json"), 3, "timeout", "x");
        let list: Vec<serde_json::Value> = serde_json::from_str(&fresh).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["attempt"], 3);
    }
}
