//! Two-way sync under field authority: the helpdesk owns the status, kintone owns the
//! rest; echoes are recognised, conflicts decided by the declared strategy.

use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE, two_way};

async fn two_way_env() -> anyhow::Result<Env> {
    let env = Env::start_with(EnvOptions {
        edit_rules: Some(two_way),
        ..EnvOptions::default()
    })
    .await?;
    env.enable_helpdesk_webhooks().await?;
    Ok(env)
}

/// A work order synced to a ticket; returns (kintone id, ticket id).
async fn synced(env: &Env, no: &str, email: &str) -> anyhow::Result<(String, String)> {
    let id = env
        .kintone_create(json!({"work_order_no": no, "件名": "Pump", "顧客メール": email}))
        .await?;
    env.settle("the write-back", || env.written_back(&id))
        .await?;
    quiet(env).await?;
    let ticket = env.kintone_record(&id).await?["helpdesk_ticket_id"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    Ok((id, ticket))
}

/// Waits until nothing is left to happen under the example rule ([`Env::quiet`]).
async fn quiet(env: &Env) -> anyhow::Result<()> {
    env.quiet(RULE).await
}

async fn ticket(env: &Env, id: &str) -> anyhow::Result<Value> {
    let all = env.tickets().await?;
    Ok(all
        .into_iter()
        .find(|t| id.parse::<i64>().ok() == t["id"].as_i64())
        .expect("the ticket"))
}

/// Writes in a system's request log (kintone's holds only the service's: the test edits
/// kintone through the sandbox's admin API, which the log does not record).
fn service_writes(log: &[Value]) -> usize {
    log.iter()
        .filter(|e| e["method"] == "PATCH" || e["method"] == "PUT" || e["method"] == "POST")
        .count()
}

#[tokio::test]
async fn a_status_closed_in_the_helpdesk_flows_back_and_its_echo_writes_nothing()
-> anyhow::Result<()> {
    let env = two_way_env().await?;
    let (id, t) = synced(&env, "WO-1201", "a@example.com").await?;
    let kintone_writes = service_writes(&env.request_log("kintone").await?);
    env.helpdesk_edit(&t, json!({"status": "closed"})).await?;
    env.settle("the status in kintone", || async {
        Ok(env.kintone_record(&id).await?["状態"]["value"] == "完了")
    })
    .await?;
    quiet(&env).await?;
    // One write to kintone (the status), and nothing back to the helpdesk: kintone's
    // webhook for our write is recognised.
    assert_eq!(
        service_writes(&env.request_log("kintone").await?),
        kintone_writes + 1
    );
    let helpdesk = env.request_log("helpdesk").await?;
    assert_eq!(
        helpdesk.iter().filter(|e| e["method"] == "PATCH").count(),
        1,
        "only the agent's own edit"
    );
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(|h| h == "decided: helpdesk carried \"closed\" for status — accepted (status is owned by helpdesk, external_wins); written to kintone"),
        "{history:#?}"
    );
    let ops = env.store.ops(RULE, &id).await?;
    // Kintone's webhook for our write is its confirmation: the operation is marked
    // confirmed, so that later steps no longer read it as a write in flight.
    assert!(
        ops.iter().any(|o| o.system == "kintone"
            && o.fields["status"] == "closed"
            && o.status == "confirmed"),
        "{ops:?}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_change_by_a_system_that_does_not_own_the_field_is_refused_and_restored()
-> anyhow::Result<()> {
    let env = two_way_env().await?;
    let (id, t) = synced(&env, "WO-1202", "a@example.com").await?;
    // The helpdesk agent edits the email, which kintone owns.
    env.helpdesk_edit(&t, json!({"contact_email": "typo@example.com"}))
        .await?;
    env.settle("the email restored", || async {
        Ok(ticket(&env, &t).await?["contact_email"] == "a@example.com")
    })
    .await?;
    // A kintone user sets the status, which the helpdesk owns.
    env.kintone_edit(&id, json!({"状態": "完了"})).await?;
    env.settle("the status restored", || async {
        Ok(env.kintone_record(&id).await?["状態"]["value"] == "未対応")
    })
    .await?;
    quiet(&env).await?;
    assert_eq!(ticket(&env, &t).await?["status"], "open");
    let history = env.history(&id).await?;
    assert!(history.iter().any(|h| h.starts_with("decided: helpdesk carried \"typo@example.com\" for contact_email — refused, kept \"a@example.com\" (contact_email is owned by kintone, local_wins) — correction queued")), "{history:#?}");
    assert!(history.iter().any(|h| h.starts_with("decided: kintone carried \"closed\" for status — refused, kept \"open\" (status is owned by helpdesk, external_wins)")), "{history:#?}");
    env.finish().await
}

#[tokio::test]
async fn the_seed_email_story() -> anyhow::Result<()> {
    let mut env = two_way_env().await?;
    let (id, t) = synced(&env, "WO-1203", "old@example.com").await?;
    // While the workers are away, kintone changes the email and a helpdesk agent,
    // who has not seen that, changes it too.
    env.stop_workers().await?;
    env.kintone_edit(&id, json!({"顧客メール": "new@example.com"}))
        .await?;
    env.helpdesk_edit(&t, json!({"contact_email": "agent@example.com"}))
        .await?;
    env.flush_webhooks().await?;
    env.start_worker().await?;
    env.settle("the correction", || async {
        Ok(ticket(&env, &t).await?["contact_email"] == "new@example.com")
    })
    .await?;
    quiet(&env).await?;
    assert_eq!(
        env.kintone_record(&id).await?["顧客メール"]["value"],
        "new@example.com"
    );
    let history = env.history(&id).await?;
    let story = history
        .iter()
        .find(|h| h.contains("agent@example.com"))
        .expect("the concurrent change in the story");
    assert!(
        story.starts_with("decided: helpdesk carried \"agent@example.com\" for contact_email — concurrent with kintone's change {")
            && story.ends_with("— refused, kept \"new@example.com\" (contact_email is owned by kintone, local_wins) — correction queued"),
        "{story}"
    );
    let admin = env.admin_urls.last().unwrap();
    let timeline = env
        .http
        .get(format!("{admin}/records/{RULE}/{id}/timeline"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        timeline.contains("concurrent with kintone's change"),
        "{timeline}"
    );
    // Times are UTC by default and in a zone a request names, each with its offset,
    // the same moments either way.
    let in_tokyo = env
        .http
        .get(format!(
            "{admin}/records/{RULE}/{id}/timeline?tz=Asia/Tokyo"
        ))
        .send()
        .await?
        .text()
        .await?;
    let moments = |text: &str, suffix: &str| -> Vec<(chrono::DateTime<chrono::Utc>, String)> {
        text.lines()
            .map(|line| {
                let (at, rest) = line.split_once(' ').expect("a time, then the step");
                assert!(at.ends_with(suffix), "{at} in {text}");
                let at = chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
                (at.to_utc(), rest.to_owned())
            })
            .collect()
    };
    let utc = moments(&timeline, "Z");
    assert!(!utc.is_empty());
    assert_eq!(moments(&in_tokyo, "+09:00"), utc);
    let bad = env
        .http
        .get(format!(
            "{admin}/records/{RULE}/{id}/timeline?tz=Mars/Olympus"
        ))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await?;
    assert_eq!(body["error"]["code"], "bad_time_zone", "{body}");
    env.finish().await
}

#[tokio::test]
async fn changes_to_different_fields_made_at_once_are_both_kept() -> anyhow::Result<()> {
    let mut env = two_way_env().await?;
    let (id, t) = synced(&env, "WO-1204", "a@example.com").await?;
    env.stop_workers().await?;
    env.kintone_edit(&id, json!({"件名": "Pump replaced"}))
        .await?;
    env.helpdesk_edit(&t, json!({"status": "in_progress"}))
        .await?;
    env.flush_webhooks().await?;
    env.start_worker().await?;
    env.settle("both changes", || async {
        Ok(ticket(&env, &t).await?["subject"] == "Pump replaced"
            && env.kintone_record(&id).await?["状態"]["value"] == "対応中")
    })
    .await?;
    quiet(&env).await?;
    assert_eq!(ticket(&env, &t).await?["status"], "in_progress");
    env.finish().await
}

fn review_priority(rules: &mut domain::rules::SyncRules) {
    two_way(rules);
    let rule = rules.rules.iter_mut().find(|r| r.name == RULE).unwrap();
    let p = rule
        .fields
        .iter_mut()
        .find(|f| f.target == "priority")
        .unwrap();
    p.owner = Some("shared".into());
    p.strategy = Some(domain::authority::Strategy::ManualReview);
    p.reverse = vec![
        serde_json::from_value(
            json!({"map": {"table": {"high": "高", "normal": "中", "low": "低"}}}),
        )
        .unwrap(),
    ];
}

#[tokio::test]
async fn a_manual_review_conflict_waits_for_a_person_and_the_resolution_reaches_both()
-> anyhow::Result<()> {
    let mut env = Env::start_with(EnvOptions {
        edit_rules: Some(review_priority),
        ..EnvOptions::default()
    })
    .await?;
    env.enable_helpdesk_webhooks().await?;
    let (id, t) = synced(&env, "WO-1205", "a@example.com").await?;
    env.stop_workers().await?;
    env.kintone_edit(&id, json!({"優先度": "高"})).await?;
    env.helpdesk_edit(&t, json!({"priority": "low"})).await?;
    env.flush_webhooks().await?;
    env.start_worker().await?;
    env.settle("the conflict", || async {
        Ok(env
            .store
            .conflicts("open")
            .await?
            .iter()
            .any(|c| c.kind == "manual_review"))
    })
    .await?;
    quiet(&env).await?;
    assert_eq!(
        ticket(&env, &t).await?["priority"],
        "low",
        "nothing is written to the helpdesk while a person decides"
    );
    assert_eq!(
        env.kintone_record(&id).await?["優先度"]["value"],
        "高",
        "nothing is written to kintone while a person decides"
    );
    let c = env
        .store
        .conflicts("open")
        .await?
        .into_iter()
        .find(|c| c.kind == "manual_review")
        .unwrap();
    assert_eq!(c.detail["field"], "priority");
    assert_eq!(c.detail["incoming"], "low");
    assert_eq!(c.detail["after"], "high");

    let admin = env.admin_urls.last().unwrap();
    let r = env
        .http
        .post(format!("{admin}/conflicts/{}/resolve", c.id))
        .json(&json!({"value": "normal", "by": "Sato"}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 202);
    env.settle("the resolution", || async {
        Ok(ticket(&env, &t).await?["priority"] == "normal"
            && env.kintone_record(&id).await?["優先度"]["value"] == "中")
    })
    .await?;
    quiet(&env).await?;
    assert!(
        env.store
            .conflicts("open")
            .await?
            .iter()
            .all(|x| x.id != c.id)
    );
    let history = env.history(&id).await?;
    assert!(
        history
            .iter()
            .any(|h| h == "resolved: Sato resolved priority: \"normal\" — written to every system"),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn hundreds_of_alternating_edits_converge_without_ping_pong() -> anyhow::Result<()> {
    let env = two_way_env().await?;
    let (id, t) = synced(&env, "WO-1206", "a@example.com").await?;
    let before_k = service_writes(&env.request_log("kintone").await?);
    let statuses = ["open", "in_progress", "closed"];
    let rounds = 100;
    for n in 0..rounds {
        env.kintone_edit(&id, json!({"件名": format!("Subject {n}")}))
            .await?;
        env.helpdesk_edit(&t, json!({"status": statuses[n % 3]}))
            .await?;
    }
    quiet(&env).await?;
    let tk = ticket(&env, &t).await?;
    assert_eq!(tk["subject"], format!("Subject {}", rounds - 1));
    assert_eq!(tk["status"], statuses[(rounds - 1) % 3]);
    assert_eq!(
        env.kintone_record(&id).await?["状態"]["value"],
        json!(["未対応", "対応中", "完了"][(rounds - 1) % 3])
    );
    // No echo, by content rather than a count a finite echo could fit: the service's
    // writes (they carry an idempotency key; the agents' edits do not) never send a
    // system back the field it owns, and there is at most one per edit on the other side.
    let helpdesk_log = env.request_log("helpdesk").await?;
    let (ours, agents): (Vec<&Value>, Vec<&Value>) = helpdesk_log
        .iter()
        .filter(|e| e["method"] == "PATCH")
        .partition(|e| !e["idempotency_key"].is_null());
    assert_eq!(agents.len(), rounds, "the agents' edits are told apart");
    // The bodies are read where the fields are: the subjects did go out.
    assert!(
        ours.iter().any(|e| e["body"].get("subject").is_some()),
        "{ours:#?}"
    );
    assert!(
        ours.iter().all(|e| e["body"].get("status").is_none()),
        "a status echoed back to the helpdesk: {ours:#?}"
    );
    assert!(
        ours.len() <= rounds,
        "{} writes to the helpdesk for {rounds} kintone edits",
        ours.len()
    );
    let kintone_log = env.request_log("kintone").await?;
    let ours_to_kintone: Vec<&Value> = kintone_log
        .iter()
        .filter(|e| e["method"] == "PATCH" || e["method"] == "PUT" || e["method"] == "POST")
        .skip(before_k)
        .collect();
    assert!(
        ours_to_kintone
            .iter()
            .any(|e| e["body"]["record"].get("状態").is_some()),
        "{ours_to_kintone:#?}"
    );
    assert!(
        ours_to_kintone
            .iter()
            .all(|e| e["body"]["record"].get("件名").is_none()),
        "a subject echoed back to kintone: {ours_to_kintone:#?}"
    );
    assert!(
        ours_to_kintone.len() <= rounds,
        "{} writes to kintone for {rounds} helpdesk edits",
        ours_to_kintone.len()
    );
    // And it stays quiet: nothing more is written.
    let settled = (
        env.request_log("helpdesk").await?.len(),
        env.request_log("kintone").await?.len(),
    );
    quiet(&env).await?;
    let log_h = env.request_log("helpdesk").await?;
    let log_k = env.request_log("kintone").await?;
    assert_eq!(
        log_h
            .iter()
            .skip(settled.0)
            .filter(|e| e["method"] != "GET")
            .count(),
        0
    );
    assert_eq!(
        log_k
            .iter()
            .skip(settled.1)
            .filter(|e| e["method"] != "GET")
            .count(),
        0
    );
    env.finish().await
}

/// A create under a two-way rule writes the source once (the ticket id) and never
/// again: the status the new ticket starts with is what kintone already holds, so no
/// write sets it, and kintone's revision counts the person's create and our write-back
/// only. Each needless write costs a revision and, on kintone, one of its 60 webhooks
/// a minute.
#[tokio::test]
async fn a_create_writes_the_source_once_and_nothing_it_already_holds() -> anyhow::Result<()> {
    let env = two_way_env().await?;
    // With the status kintone holds sent to the new ticket, and with none (the ticket
    // starts "open" on its own).
    let mut ids = vec![];
    for fields in [
        json!({"work_order_no": "WO-1301", "件名": "Pump", "状態": "未対応"}),
        json!({"work_order_no": "WO-1302", "件名": "Valve"}),
    ] {
        let id = env.kintone_create(fields).await?;
        env.settle("the write-back", || env.written_back(&id))
            .await?;
        ids.push(id);
    }
    quiet(&env).await?;
    let writes: Vec<Value> = env
        .request_log("kintone")
        .await?
        .into_iter()
        .filter(|e| e["method"] == "PUT")
        .collect();
    assert_eq!(writes.len(), 2, "one write-back each: {writes:#?}");
    for (id, w) in ids.iter().zip(&writes) {
        assert_eq!(w["body"]["id"], id.as_str());
        assert_eq!(
            w["body"]["record"].as_object().map(|r| r.len()),
            Some(1),
            "the ticket id alone: {w:#?}"
        );
        let record = env.kintone_record(id).await?;
        assert_eq!(record["$revision"]["value"], "2", "{record:#?}");
    }
    env.finish().await
}
