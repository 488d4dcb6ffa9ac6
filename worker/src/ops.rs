//! Operator actions shared by the admin API and the command line: pause, resume,
//! rehydrate.

use connectors::Connectors;
use domain::rules::SyncRules;
use queue::{EventV1, Names, Publisher, QueueMessage, headers, topology::WORK_KEY};
use store::{Store, StoreError};

use crate::process::REHYDRATE;

/// Why an operator action failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request names something that does not exist.
    #[error("{0}")]
    Unknown(String),
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker failed.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    /// The source system failed.
    #[error(transparent)]
    Connector(#[from] connectors::ConnectorError),
}

/// Checks that `scope` is `rule` or `system` and `name` exists in the rules.
pub fn check_scope(rules: &SyncRules, scope: &str, name: &str) -> Result<(), OpsError> {
    let known = match scope {
        "rule" => rules.rule(name).is_some(),
        "system" => rules.systems.contains_key(name),
        other => {
            return Err(OpsError::Unknown(format!(
                "scope \"{other}\" is neither rule nor system"
            )));
        }
    };
    if known {
        Ok(())
    } else {
        Err(OpsError::Unknown(format!("no {scope} named \"{name}\"")))
    }
}

/// Pauses a rule or a system: its work is parked from now on.
pub async fn pause(
    store: &Store,
    rules: &SyncRules,
    scope: &str,
    name: &str,
    reason: Option<&str>,
) -> Result<(), OpsError> {
    check_scope(rules, scope, name)?;
    store.pause(scope, name, reason).await?;
    Ok(())
}

/// Resumes a rule or a system: the workers flush what was parked.
pub async fn resume(
    store: &Store,
    rules: &SyncRules,
    scope: &str,
    name: &str,
) -> Result<bool, OpsError> {
    check_scope(rules, scope, name)?;
    Ok(store.resume(scope, name).await?)
}

/// Queues a rehydration of one record, or of every record of the rule's source:
/// each is refetched and resynced in full. Returns the records queued.
pub async fn rehydrate(
    rules: &SyncRules,
    connectors: &Connectors,
    publisher: &Publisher,
    names: &Names,
    rule: &str,
    record: Option<&str>,
) -> Result<Vec<String>, OpsError> {
    let spec = rules
        .rule(rule)
        .ok_or_else(|| OpsError::Unknown(format!("no rule named \"{rule}\"")))?;
    let ids = match record {
        Some(id) => vec![id.to_owned()],
        None => {
            connectors
                .endpoint(&spec.source.system, &spec.source.app)?
                .list_ids()
                .await?
        }
    };
    for id in &ids {
        let event_id = format!("rehydrate-{}", uuid::Uuid::now_v7());
        let message = QueueMessage::V1(EventV1 {
            event_id: event_id.clone(),
            system: spec.source.system.clone(),
            app: spec.source.app.clone(),
            record_id: id.clone(),
            event_type: REHYDRATE.to_owned(),
            received_at: chrono::Utc::now(),
            correlation_id: event_id.clone(),
            payload: serde_json::Value::Null,
        });
        let table = queue::header_table(&[(headers::ATTEMPT, queue::number(1))]);
        publisher
            .publish(
                &names.events_exchange(),
                WORK_KEY,
                &message.encode(),
                &event_id,
                table,
            )
            .await?;
    }
    Ok(ids)
}
