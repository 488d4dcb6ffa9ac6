//! Operator actions shared by the admin API and the command line: pause, resume,
//! rehydrate.

use connectors::Connectors;
use domain::rules::SyncRules;
use queue::{EventV1, Names, Publisher, QueueMessage, headers, topology::WORK_KEY};
use store::{Store, StoreError};

use crate::process::{REHYDRATE, RESOLVE};

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

/// How a person resolves a conflict.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Resolution {
    /// The value to keep (a manual-review conflict).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Keep `incoming` (what the other system carried) or `current` (the kept value),
    /// instead of giving a value.
    #[serde(default)]
    pub pick: Option<String>,
    /// The target record to link (an identity conflict).
    #[serde(default)]
    pub target_id: Option<String>,
    /// Who resolves, for the history.
    #[serde(default)]
    pub by: Option<String>,
}

/// Queues a resolution: the worker applies it through the normal outbound path and
/// closes the conflict.
pub async fn resolve(
    store: &Store,
    rules: &SyncRules,
    publisher: &Publisher,
    names: &Names,
    id: i64,
    r: &Resolution,
) -> Result<(), OpsError> {
    let c = store
        .conflict(id)
        .await?
        .ok_or_else(|| OpsError::Unknown(format!("no conflict {id}")))?;
    if c.status != "open" {
        return Err(OpsError::Unknown(format!(
            "conflict {id} is {}, not open",
            c.status
        )));
    }
    let rule = rules.rule(&c.rule).ok_or_else(|| {
        OpsError::Unknown(format!(
            "conflict {id} names rule {} that no longer exists",
            c.rule
        ))
    })?;
    let mut payload = serde_json::json!({"rule": c.rule, "conflict_id": id, "by": r.by.clone().unwrap_or_else(|| "an operator".into())});
    match c.kind.as_str() {
        "manual_review" => {
            let value = match (&r.value, r.pick.as_deref()) {
                (Some(v), _) => v.clone(),
                (None, Some("incoming")) => c.detail["incoming"].clone(),
                (None, Some("current")) => c.detail["after"].clone(),
                _ => {
                    return Err(OpsError::Unknown(
                        "give a value, or pick incoming or current".into(),
                    ));
                }
            };
            payload["field"] = c.detail["field"].clone();
            payload["value"] = value;
        }
        "several_matches" | "no_match" => {
            let Some(t) = &r.target_id else {
                return Err(OpsError::Unknown(
                    "give the target_id of the record to link".into(),
                ));
            };
            payload["target_id"] = serde_json::json!(t);
        }
        other => {
            return Err(OpsError::Unknown(format!(
                "a {other} conflict is fixed in the data, then dismissed or rehydrated"
            )));
        }
    }
    let event_id = format!("resolve-{id}-{}", uuid::Uuid::now_v7());
    let message = QueueMessage::V1(EventV1 {
        event_id: event_id.clone(),
        system: rule.source.system.clone(),
        app: rule.source.app.clone(),
        record_id: c.source_record_id.clone(),
        event_type: RESOLVE.to_owned(),
        received_at: chrono::Utc::now(),
        correlation_id: event_id.clone(),
        payload,
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
    Ok(())
}
