//! Dead letters: how a dead-lettered message becomes a stored row, and replay. Replay
//! keeps the event id, so a replay that races another delivery is still processed
//! once; and processing always refetches the canonical record, so a replay never
//! writes stale values.

use queue::{Delivery, Publisher, QueueMessage, headers, topology::WORK_KEY};
use store::{DeadFilter, NewDeadLetter, Store, StoreError};

/// The row for a dead-lettered message. Messages RabbitMQ dead-lettered itself (past
/// the delivery limit) carry none of our headers and are classed `poison`.
pub fn from_delivery(d: &Delivery) -> NewDeadLetter {
    let cmd = d.decode().ok().and_then(QueueMessage::command);
    let change = cmd.as_ref().and_then(|c| match &c.command {
        queue::Command::Change { system, app, .. } => Some((system.clone(), app.clone())),
        _ => None,
    });
    let class = d
        .header_text(headers::DEAD_REASON)
        .unwrap_or_else(|| "poison".to_owned());
    let reason = d.header_text(headers::LAST_ERROR).unwrap_or_else(|| {
        "redelivered past the delivery limit: workers kept failing or dying on it".to_owned()
    });
    let dead_id = d.header_text(headers::DEAD_ID).unwrap_or_else(|| {
        format!(
            "{}:{}",
            d.message_id().unwrap_or_default(),
            uuid::Uuid::new_v4()
        )
    });
    NewDeadLetter {
        dead_id,
        event_id: cmd
            .as_ref()
            .map(|c| c.id.clone())
            .or_else(|| d.message_id()),
        rule: d.header_text(headers::RULE),
        system: change.as_ref().map(|(s, _)| s.clone()),
        app: change.map(|(_, a)| a),
        record_id: cmd.as_ref().map(|c| c.command.record_id().to_owned()),
        class,
        reason,
        attempts: d.attempt() as i32,
        history: d
            .header_text(headers::HISTORY)
            .and_then(|h| serde_json::from_str(&h).ok())
            .unwrap_or_else(|| serde_json::json!([])),
        body: d.body().to_vec(),
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker failed.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}

/// Republishes the dead letters matching `filter` to the work queue as first attempts
/// and marks them replayed. Returns the ids replayed.
pub async fn replay(
    store: &Store,
    publisher: &Publisher,
    names: &queue::Names,
    filter: &DeadFilter,
) -> Result<Vec<i64>, ReplayError> {
    let mut replayed = vec![];
    for row in store.dead_letters(filter, 10_000).await? {
        let Some(full) = store.dead_letter(row.id).await? else {
            continue;
        };
        let table =
            queue::Headers::first_attempt().text("x-recordsync-replayed-from", &row.id.to_string());
        let id = full.event_id.clone().unwrap_or_default();
        publisher
            .publish(&names.events_exchange(), WORK_KEY, &full.body, &id, table)
            .await?;
        store.mark_replayed(row.id).await?;
        replayed.push(row.id);
    }
    Ok(replayed)
}
