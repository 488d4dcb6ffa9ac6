//! Operator actions shared by the admin API and the command line: pause, resume,
//! rehydrate, resolve.

use domain::history::Entry;
use domain::rules::SyncRules;
use queue::{Command, CommandV2, Names, Publisher, QueueMessage, topology::WORK_KEY};
use store::{Store, StoreError};

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
    /// A resolution names a target record that is not one of the conflict's candidates,
    /// without an override.
    #[error(
        "target record {target_id} is not one of the candidates of conflict {conflict} ({}); to link it anyway, send \"override\": true with a \"reason\", which is recorded",
        candidates.join(", ")
    )]
    NotACandidate {
        /// The conflict.
        conflict: i64,
        /// The target record named.
        target_id: String,
        /// The candidates the conflict lists.
        candidates: Vec<String>,
    },
    /// A resolution names a target record that another source record is linked to.
    #[error(
        "target record {target_id} is already linked to source record {source_record_id} under rule {rule}; two source records are never linked to one target record"
    )]
    AlreadyLinked {
        /// The rule.
        rule: String,
        /// The target record named.
        target_id: String,
        /// The source record it is linked to.
        source_record_id: String,
    },
    /// A resolution is malformed: an override without a reason, a value out of bounds.
    #[error("{0}")]
    Invalid(String),
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
    processor: &crate::step::Processor,
    publisher: &Publisher,
    names: &Names,
    rule: &str,
    record: Option<&str>,
) -> Result<Vec<String>, OpsError> {
    let spec = processor
        .rules
        .rule(rule)
        .ok_or_else(|| OpsError::Unknown(format!("no rule named \"{rule}\"")))?;
    let ids = match record {
        Some(id) => vec![id.to_owned()],
        None => {
            // Every id, page by page, each listing through the limiter like any
            // other request.
            let endpoint = processor
                .connectors
                .endpoint(&spec.source.system, &spec.source.app)?;
            let source = processor.limiter.limit(&endpoint);
            let mut all: Vec<String> = vec![];
            loop {
                let (page, _) = source
                    .call(|api| api.changed(None, all.last().map(String::as_str), 500, false))
                    .await
                    .map_err(|f| match f {
                        crate::classify::Failure::Connector(e) => OpsError::Connector(e),
                        crate::classify::Failure::Store(e) => OpsError::Store(e),
                        other => OpsError::Unknown(other.to_string()),
                    })?;
                let done = page.len() < 500;
                all.extend(page.into_iter().map(|r| r.id));
                if done {
                    break all;
                }
            }
        }
    };
    for id in &ids {
        let event_id = format!("rehydrate-{}", uuid::Uuid::now_v7());
        let command = Command::Rehydrate {
            rule: spec.name.clone(),
            record_id: id.clone(),
        };
        publish_command(publisher, names, &event_id, &event_id, command).await?;
    }
    Ok(ids)
}

/// Publishes one command (confirmed) as its first attempt, to the work queue.
pub async fn publish_command(
    publisher: &Publisher,
    names: &Names,
    id: &str,
    correlation: &str,
    command: Command,
) -> Result<(), queue::QueueError> {
    let message = QueueMessage::V2(CommandV2 {
        id: id.to_owned(),
        correlation_id: correlation.to_owned(),
        issued_at: chrono::Utc::now(),
        command,
    });
    publisher
        .publish(
            &names.events_exchange(),
            WORK_KEY,
            &message.encode(),
            id,
            queue::Headers::first_attempt(),
        )
        .await
}

/// The longest target id a resolution may name, in characters.
const MAX_TARGET_ID_LEN: usize = 256;
/// The longest override reason, in characters.
const MAX_REASON_LEN: usize = 2_000;

/// How a person resolves a conflict.
#[derive(Debug, Clone, Default, serde::Deserialize)]
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
    /// Who the caller says they are. The admin API uses it only when it has no tokens
    /// (loopback only); with tokens, the token's name is the actor and this is ignored.
    #[serde(default)]
    pub by: Option<String>,
    /// Link a target record that is not one of the conflict's candidates. Needs a
    /// `reason`, which is recorded in the record's history and the resolution.
    #[serde(default, rename = "override")]
    pub override_candidates: bool,
    /// Why the override: required with `override`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The candidate target records a conflict lists (`several_matches` conflicts store
/// them in their detail), or `None` when it lists none.
pub fn candidates(detail: &serde_json::Value) -> Option<Vec<String>> {
    let list = detail.get("candidates")?.as_array()?;
    Some(
        list.iter()
            .map(|c| match c {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
    )
}

/// What a valid identity resolution links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChoice {
    /// The target record to link.
    pub target_id: String,
    /// The reason, when the target record is outside the candidates by override.
    pub override_reason: Option<String>,
}

/// Checks an identity resolution against the conflict's candidates: the target id is
/// one of them, or the resolution says `override` and gives a reason. An `override`
/// always needs a reason, so that none is ever silent.
pub fn choose_target(
    conflict: i64,
    detail: &serde_json::Value,
    r: &Resolution,
) -> Result<LinkChoice, OpsError> {
    let Some(target_id) = r.target_id.as_deref().map(str::trim) else {
        return Err(OpsError::Unknown(
            "give the target_id of the record to link".into(),
        ));
    };
    if target_id.is_empty() || target_id.chars().count() > MAX_TARGET_ID_LEN {
        return Err(OpsError::Invalid(format!(
            "a target_id has 1 to {MAX_TARGET_ID_LEN} characters"
        )));
    }
    if target_id.chars().any(char::is_control) {
        return Err(OpsError::Invalid(
            "a target_id has no control characters".into(),
        ));
    }
    let reason = r.reason.as_deref().map(str::trim).unwrap_or_default();
    if r.override_candidates {
        if reason.is_empty() {
            return Err(OpsError::Invalid(
                "an override needs a non-empty \"reason\": it is recorded in the record's history"
                    .into(),
            ));
        }
        if reason.chars().count() > MAX_REASON_LEN {
            return Err(OpsError::Invalid(format!(
                "a reason has at most {MAX_REASON_LEN} characters"
            )));
        }
    }
    let listed = candidates(detail);
    let outside = listed
        .as_ref()
        .is_some_and(|c| !c.iter().any(|c| c == target_id));
    if outside && !r.override_candidates {
        return Err(OpsError::NotACandidate {
            conflict,
            target_id: target_id.to_owned(),
            candidates: listed.unwrap_or_default(),
        });
    }
    Ok(LinkChoice {
        target_id: target_id.to_owned(),
        override_reason: outside.then(|| reason.to_owned()),
    })
}

/// Queues a resolution: the worker applies it through the normal outbound path and
/// closes the conflict. `actor` is who is recorded as resolving it (the admin token's
/// name, or the command line's user); `r.by` is not read here.
///
/// An identity resolution must name one of the conflict's candidates, unless it is an
/// override with a reason (recorded in the history before the resolution is queued),
/// and never a target record another source record is linked to.
pub async fn resolve(
    store: &Store,
    rules: &SyncRules,
    publisher: &Publisher,
    names: &Names,
    id: i64,
    r: &Resolution,
    actor: &str,
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
    let event_id = format!("resolve-{id}-{}", uuid::Uuid::now_v7());
    let mut payload = serde_json::json!({"rule": c.rule, "conflict_id": id, "by": actor});
    let mut note = None;
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
            let choice = choose_target(id, &c.detail, r)?;
            if let Some(other) = store.source_for_target(&c.rule, &choice.target_id).await?
                && other != c.source_record_id
            {
                return Err(OpsError::AlreadyLinked {
                    rule: c.rule.clone(),
                    target_id: choice.target_id,
                    source_record_id: other,
                });
            }
            payload["target_id"] = serde_json::json!(choice.target_id);
            if let Some(reason) = &choice.override_reason {
                let listed = candidates(&c.detail).unwrap_or_default();
                payload["override"] = serde_json::json!({"reason": reason, "candidates": listed});
                note = Some(Entry::override_chosen(
                    actor,
                    &rule.target.system,
                    &choice.target_id,
                    &listed,
                    reason,
                ));
            }
        }
        other => {
            return Err(OpsError::Unknown(format!(
                "a {other} conflict is fixed in the data, then dismissed or rehydrated"
            )));
        }
    }
    if let Some(entry) = note {
        // Recorded before the resolution is queued: an override is never applied
        // without its reason in the history.
        let evref = store::EventRef {
            event_id: event_id.clone(),
            correlation_id: event_id.clone(),
        };
        store
            .append(&c.rule, &c.source_record_id, &evref, &[entry])
            .await?;
    }
    let resolution = match payload.get("target_id").and_then(serde_json::Value::as_str) {
        Some(target_id) => queue::Resolution::Link {
            target_id: target_id.to_owned(),
        },
        None => queue::Resolution::Value {
            field: payload["field"].as_str().unwrap_or_default().to_owned(),
            value: payload["value"].clone(),
        },
    };
    let command = Command::Resolve {
        rule: c.rule.clone(),
        record_id: c.source_record_id.clone(),
        conflict_id: id,
        by: actor.to_owned(),
        resolution,
    };
    publish_command(publisher, names, &event_id, &event_id, command).await?;
    Ok(())
}

/// The ledger as JSON: each rule's buckets with its imbalance (what the buckets do not
/// explain: the events seen and then lost).
pub fn ledger_json(ledgers: &[store::Ledger], settle: std::time::Duration) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = ledgers
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).expect("a ledger serializes");
            v["imbalance"] = l.imbalance().into();
            v
        })
        .collect();
    let balanced = ledgers.iter().all(|l| l.imbalance() == 0);
    serde_json::json!({"settle_seconds": settle.as_secs(), "balanced": balanced, "rules": rules})
}

/// The ledger in plain words, one block per rule.
pub fn ledger_lines(ledgers: &[store::Ledger]) -> Vec<String> {
    let mut lines = vec![];
    for l in ledgers {
        let skipped: i64 = l.skipped.values().sum();
        let reasons: Vec<String> = l.skipped.iter().map(|(k, n)| format!("{k} {n}")).collect();
        lines.push(format!(
            "{}: accepted {} = synced {} + skipped {} ({}) + conflicts {} + dead-lettered {} + parked {} + in flight {}{}",
            l.rule,
            l.accepted,
            l.synced,
            skipped,
            if reasons.is_empty() { "none".to_owned() } else { reasons.join(", ") },
            l.conflicts,
            l.dead_lettered,
            l.parked,
            l.in_flight,
            match l.imbalance() {
                0 => String::new(),
                n => format!("; {n} unaccounted for"),
            }
        ));
        for u in &l.oldest_unaccounted {
            lines.push(format!(
                "  unaccounted: event {} (record {}), first seen {}, last seen {}, delivered {} time(s)",
                u.event_id,
                u.record_id.as_deref().unwrap_or("?"),
                u.first_seen_at.to_rfc3339(),
                u.last_seen_at.to_rfc3339(),
                u.deliveries
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn linking(target: &str) -> Resolution {
        Resolution {
            target_id: Some(target.into()),
            ..Resolution::default()
        }
    }

    #[test]
    fn the_ledger_in_words_names_the_imbalance_and_the_lost_events() {
        let mut l = store::Ledger {
            rule: "r".into(),
            accepted: 5,
            synced: 2,
            skipped: [("stale".to_owned(), 1)].into_iter().collect(),
            conflicts: 1,
            unaccounted: 1,
            ..store::Ledger::default()
        };
        l.oldest_unaccounted.push(store::Unaccounted {
            event_id: "ev-9".into(),
            record_id: Some("42".into()),
            first_seen_at: chrono::DateTime::UNIX_EPOCH,
            last_seen_at: chrono::DateTime::UNIX_EPOCH,
            deliveries: 3,
        });
        let lines = ledger_lines(std::slice::from_ref(&l));
        assert_eq!(
            lines[0],
            "r: accepted 5 = synced 2 + skipped 1 (stale 1) + conflicts 1 + dead-lettered 0 + parked 0 + in flight 0; 1 unaccounted for"
        );
        assert!(lines[1].contains("event ev-9 (record 42)"), "{lines:?}");
        assert!(lines[1].contains("delivered 3 time(s)"), "{lines:?}");
        let v = ledger_json(&[l.clone()], std::time::Duration::from_secs(60));
        assert_eq!(v["balanced"], false);
        assert_eq!(v["rules"][0]["imbalance"], 1);
        l.accepted = 4;
        l.unaccounted = 0;
        assert_eq!(
            ledger_json(&[l], std::time::Duration::ZERO)["balanced"],
            true
        );
    }

    #[test]
    fn a_target_must_be_a_candidate_unless_overridden_with_a_reason() {
        let detail = json!({"reason": "several_matches", "candidates": ["3", "8"]});
        assert_eq!(
            choose_target(1, &detail, &linking("8")).expect("a candidate"),
            LinkChoice {
                target_id: "8".into(),
                override_reason: None
            }
        );
        let e = choose_target(1, &detail, &linking("5")).expect_err("not a candidate");
        assert!(matches!(e, OpsError::NotACandidate { .. }), "{e:?}");
        assert!(e.to_string().contains("(3, 8)"), "{e}");
        let mut r = linking("5");
        r.override_candidates = true;
        let e = choose_target(1, &detail, &r).expect_err("no reason");
        assert!(e.to_string().contains("reason"), "{e}");
        r.reason = Some("   ".into());
        assert!(choose_target(1, &detail, &r).is_err(), "a blank reason");
        r.reason = Some(" merged by hand ".into());
        assert_eq!(
            choose_target(1, &detail, &r).expect("an override"),
            LinkChoice {
                target_id: "5".into(),
                override_reason: Some("merged by hand".into())
            }
        );
        r.target_id = Some("3".into());
        assert_eq!(
            choose_target(1, &detail, &r)
                .expect("a candidate")
                .override_reason,
            None,
            "a candidate needs no override"
        );
    }

    #[test]
    fn a_conflict_without_candidates_takes_any_target_but_checks_its_shape() {
        let detail = json!({"reason": "no_match", "value": "55"});
        assert!(choose_target(1, &detail, &linking("77")).is_ok());
        for bad in ["", "  ", "a\u{0}b"] {
            assert!(
                matches!(
                    choose_target(1, &detail, &linking(bad)),
                    Err(OpsError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(choose_target(1, &detail, &linking(&"9".repeat(257))).is_err());
        assert!(matches!(
            choose_target(1, &detail, &Resolution::default()),
            Err(OpsError::Unknown(_))
        ));
    }

    #[test]
    fn a_body_says_override_and_its_by_is_only_a_claim() {
        let r: Resolution = serde_json::from_value(
            json!({"target_id": "5", "override": true, "reason": "x", "by": "someone-else"}),
        )
        .expect("a resolution");
        assert!(r.override_candidates);
        assert_eq!(r.reason.as_deref(), Some("x"));
    }
}
