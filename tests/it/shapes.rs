//! The examples in `deploy/examples/`, each against the sandbox's dialect of the public
//! API it is written for: every search, create, update and bulk call leaves in that
//! API's shape, and what the API answers is read back through the same shape.

use serde_json::{Value, json};
use tests::{Env, EnvOptions};
use worker::step::Done;

const ZENDESK: &str = include_str!("../../deploy/examples/zendesk.sync-rules.json");
const HUBSPOT: &str = include_str!("../../deploy/examples/hubspot.sync-rules.json");
const FRESHDESK: &str = include_str!("../../deploy/examples/freshdesk.sync-rules.json");

/// An environment running `rules` (an example file), with no worker: the test calls
/// the step itself.
async fn env_for(rules: &'static str) -> anyhow::Result<Env> {
    Env::start_with(EnvOptions {
        workers: 0,
        rules_text: Some(rules),
        ..EnvOptions::default()
    })
    .await
}

/// The helpdesk requests with this method whose path starts with `prefix`.
async fn requests(env: &Env, method: &str, prefix: &str) -> anyhow::Result<Vec<Value>> {
    Ok(env
        .request_log("helpdesk")
        .await?
        .into_iter()
        .filter(|e| {
            e["method"] == method && e["path"].as_str().is_some_and(|p| p.starts_with(prefix))
        })
        .collect())
}

/// Runs the step for a change of kintone record `id`; returns what each rule did.
async fn step(env: &Env, event: &str, id: &str) -> anyhow::Result<Vec<Done>> {
    let done = env.processor()?.step(&tests::change(event, id), 1).await?;
    Ok(done.into_iter().map(|(_, d)| d).collect())
}

/// The ticket id written back into kintone record `id`.
async fn ticket_of(env: &Env, id: &str) -> anyhow::Result<String> {
    let record = env.kintone_record(id).await?;
    Ok(record["helpdesk_ticket_id"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// The stored ticket with this id, as the sandbox keeps it.
async fn stored(env: &Env, ticket: &str) -> anyhow::Result<Value> {
    let all = env.tickets().await?;
    all.into_iter()
        .find(|t| t["id"].to_string().trim_matches('"') == ticket)
        .ok_or_else(|| anyhow::anyhow!("no ticket {ticket}"))
}

#[tokio::test]
async fn the_zendesk_example_sends_an_envelope_and_custom_fields_by_id() -> anyhow::Result<()> {
    let env = env_for(ZENDESK).await?;
    let id = env
        .kintone_create_silently(json!({"work_order_no": "WO-2001", "件名": " Pump ", "詳細": "It leaks", "優先度": "高", "顧客メール": " Site@Example.com ", "tags": ["urgent"]}))
        .await?;
    assert_eq!(step(&env, "ev-1", &id).await?, vec![Done::Synced]);

    // Searched by external id, then created inside {"ticket": …}, the customer's email
    // in the custom field with its id and the details as the first comment.
    let searches = requests(&env, "GET", "/zendesk/api/v2/tickets.json").await?;
    assert_eq!(searches.len(), 1, "{searches:#?}");
    assert_eq!(searches[0]["query"], "external_id=WO-2001");
    let posts = requests(&env, "POST", "/zendesk/api/v2/tickets.json").await?;
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(
        posts[0]["body"],
        json!({"ticket": {
            "subject": "Pump",
            "comment": {"body": "It leaks"},
            "priority": "high",
            "custom_fields": [{"id": 360012345678u64, "value": "site@example.com"}],
            "tags": ["urgent"],
            "external_id": "WO-2001"
        }})
    );
    assert!(posts[0]["idempotency_key"].is_string(), "{posts:#?}");
    let ticket = ticket_of(&env, &id).await?;
    let t = stored(&env, &ticket).await?;
    assert_eq!(
        t["custom_fields"],
        json!([{"id": 360012345678u64, "value": "site@example.com"}])
    );
    assert_eq!(t["description"], "It leaks");
    // The first comment is write-only: the answer cannot show it, and is not faulted
    // for it.
    assert!(env.store.conflicts("open").await?.is_empty());

    // An edit updates the custom field alone, by its id, with PUT; the comment is not
    // sent again.
    env.kintone_edit_silently(&id, json!({"顧客メール": "ops@example.com"}))
        .await?;
    assert_eq!(step(&env, "ev-2", &id).await?, vec![Done::Synced]);
    let puts = requests(
        &env,
        "PUT",
        &format!("/zendesk/api/v2/tickets/{ticket}.json"),
    )
    .await?;
    assert_eq!(puts.len(), 1, "{puts:#?}");
    assert_eq!(
        puts[0]["body"],
        json!({"ticket": {"custom_fields": [{"id": 360012345678u64, "value": "ops@example.com"}]}})
    );
    let t = stored(&env, &ticket).await?;
    assert_eq!(
        t["custom_fields"],
        json!([{"id": 360012345678u64, "value": "ops@example.com"}])
    );
    env.finish().await
}

#[tokio::test]
async fn the_hubspot_example_searches_by_body_and_confirms_each_bulk_update() -> anyhow::Result<()>
{
    let env = env_for(HUBSPOT).await?;
    let rule = "work-orders-to-hubspot";
    let mut ids = vec![];
    for n in 1..=3 {
        let id = env
            .kintone_create_silently(json!({"work_order_no": format!("WO-400{n}"), "件名": format!("Pump {n}"), "優先度": "低", "状態": "対応中"}))
            .await?;
        assert_eq!(
            step(&env, &format!("ev-c{n}"), &id).await?,
            vec![Done::Synced]
        );
        ids.push(id);
    }
    // The identity lookup is a POSTed search with the value in its filter.
    let searches = requests(&env, "POST", "/hubspot/crm/v3/objects/tickets/search").await?;
    assert_eq!(searches.len(), 3, "{searches:#?}");
    assert_eq!(
        searches[0]["body"]["filterGroups"],
        json!([{"filters": [{"propertyName": "kintone_work_order", "operator": "EQ", "value": "WO-4001"}]}])
    );
    let posts = requests(&env, "POST", "/hubspot/crm/v3/objects/tickets").await?;
    let creates: Vec<&Value> = posts
        .iter()
        .filter(|e| e["path"] == "/hubspot/crm/v3/objects/tickets")
        .collect();
    assert_eq!(creates.len(), 3);
    assert_eq!(
        creates[0]["body"],
        json!({"properties": {"subject": "Pump 1", "content": "", "hs_ticket_priority": "LOW", "hs_pipeline_stage": "2", "kintone_work_order": "WO-4001"}})
    );
    let mut tickets = vec![];
    for id in &ids {
        tickets.push(ticket_of(&env, id).await?);
    }
    // Read back through `properties`: nothing dropped, so no conflict.
    assert!(env.store.conflicts("open").await?.is_empty());

    // Parked edits are flushed in one batch; one ticket was deleted meanwhile, and the
    // answer's 207 names it: the other two are confirmed, it is written on its own.
    worker::ops::pause(&env.store, &env.rules, "rule", rule, Some("batch test")).await?;
    for (n, id) in ids.iter().enumerate() {
        env.kintone_edit_silently(id, json!({"件名": format!("Valve {}", n + 1)}))
            .await?;
        assert_eq!(
            step(&env, &format!("ev-e{n}"), id).await?,
            vec![Done::Parked]
        );
    }
    let gone = env
        .http
        .delete(format!(
            "{}/hubspot/crm/v3/objects/tickets/{}",
            env.sandbox.base_url, tickets[1]
        ))
        .bearer_auth(&env.sandbox_config.helpdesk_token)
        .send()
        .await?;
    assert_eq!(gone.status().as_u16(), 204);
    worker::ops::resume(&env.store, &env.rules, "rule", rule).await?;
    assert_eq!(env.processor()?.flush(rule).await?, 3);

    let batches = requests(&env, "POST", "/hubspot/crm/v3/objects/tickets/batch/update").await?;
    assert_eq!(batches.len(), 1, "{batches:#?}");
    assert_eq!(batches[0]["status"], 207);
    let inputs: Vec<Value> = tickets
        .iter()
        .enumerate()
        .map(|(n, t)| json!({"id": t, "properties": {"subject": format!("Valve {}", n + 1)}}))
        .collect();
    assert_eq!(batches[0]["body"], json!({"inputs": inputs}));
    for n in [0, 2] {
        assert_eq!(
            stored(&env, &tickets[n]).await?["subject"],
            format!("Valve {}", n + 1)
        );
        let history = env.history_of(rule, &ids[n]).await?;
        assert!(
            history.iter().any(|h| h.contains(&format!(
                "updated hubspot record {} in a bulk call of 3",
                tickets[n]
            ))),
            "{history:#?}"
        );
    }
    // The deleted one: not confirmed, tried on its own, and refused by the API.
    let history = env.history_of(rule, &ids[1]).await?;
    assert!(
        history.iter().any(|h| h.contains(&format!("the bulk update did not confirm hubspot record {} (Could not get some TICKET objects", tickets[1]))),
        "{history:#?}"
    );
    let patches = requests(
        &env,
        "PATCH",
        &format!("/hubspot/crm/v3/objects/tickets/{}", tickets[1]),
    )
    .await?;
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert_eq!(patches[0]["status"], 404);
    assert!(env.store.parked(Some(rule)).await?.is_empty());
    env.finish().await
}

#[tokio::test]
async fn the_freshdesk_example_sends_flat_fields_and_a_write_only_requester() -> anyhow::Result<()>
{
    let env = env_for(FRESHDESK).await?;
    let id = env
        .kintone_create_silently(json!({"work_order_no": "WO-3001", "件名": "Pump", "優先度": "高", "状態": "対応中", "顧客メール": "Site@Example.com", "tags": ["a"]}))
        .await?;
    assert_eq!(step(&env, "ev-1", &id).await?, vec![Done::Synced]);
    // Searched with Freshdesk's query language on the custom field.
    let searches = requests(&env, "GET", "/freshdesk/api/v2/search/tickets").await?;
    assert_eq!(searches.len(), 1, "{searches:#?}");
    let query = searches[0]["query"].as_str().unwrap_or_default();
    assert!(query.starts_with("query="), "{query}");
    let decoded = percent_decode(&query["query=".len()..]);
    assert_eq!(decoded, "\"cf_work_order:'WO-3001'\"");
    let posts = requests(&env, "POST", "/freshdesk/api/v2/tickets").await?;
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0]["body"],
        json!({"subject": "Pump", "description": "(no details)", "email": "site@example.com", "priority": 3, "status": 3, "tags": ["a"], "custom_fields": {"cf_work_order": "WO-3001"}})
    );
    // The ticket shows the requester only as a contact id: declared write-only, the
    // email is no dropped field.
    let ticket = ticket_of(&env, &id).await?;
    let t = stored(&env, &ticket).await?;
    assert!(
        t.get("email").is_none() && t["requester_id"].is_u64(),
        "{t}"
    );
    assert!(env.store.conflicts("open").await?.is_empty());

    // An edit sends the changed field alone, with PUT.
    env.kintone_edit_silently(&id, json!({"件名": "Pump, again"}))
        .await?;
    assert_eq!(step(&env, "ev-2", &id).await?, vec![Done::Synced]);
    let puts = requests(&env, "PUT", &format!("/freshdesk/api/v2/tickets/{ticket}")).await?;
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0]["body"], json!({"subject": "Pump, again"}));
    env.finish().await
}

/// Without `write_only`, the requester's email is what it is to a checker: a field the
/// API answered nothing for, a `target_dropped` conflict that names it.
#[tokio::test]
async fn without_write_only_the_freshdesk_requester_reads_as_dropped() -> anyhow::Result<()> {
    let mut rules: Value = serde_json::from_str(FRESHDESK)?;
    rules["systems"]["freshdesk"]["entities"]["ticket"]
        .as_object_mut()
        .expect("the ticket entity")
        .remove("write_only");
    let text: &'static str = Box::leak(rules.to_string().into_boxed_str());
    let env = env_for(text).await?;
    let id = env
        .kintone_create_silently(
            json!({"work_order_no": "WO-3002", "件名": "Pump", "顧客メール": "a@example.com"}),
        )
        .await?;
    step(&env, "ev-1", &id).await?;
    let open = env.store.conflicts("open").await?;
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0].kind, "target_dropped");
    assert!(open[0].summary.contains("email"), "{}", open[0].summary);
    env.finish().await
}

/// `%XX` escapes decoded (the sandbox logs the query as it arrived).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
