//! The step driven directly, one test per command kind: no broker, no polling. Each
//! command is what a delivery, an operator or (in time) a resync would send.

use queue::{Command, Resolution};
use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE, change, command as cmd};
use worker::step::Done;

fn id_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// An environment with no consuming worker: the webhooks the sandbox sends wait in the
/// queue, and only the test's commands are processed.
async fn quiet_env() -> anyhow::Result<Env> {
    Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_change_syncs_once_and_its_repeat_is_a_duplicate() -> anyhow::Result<()> {
    let env = quiet_env().await?;
    let step = env.processor()?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-81", "件名": "Step"}))
        .await?;
    let c = change("ev-81", &id);
    assert_eq!(
        step.step(&c, 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    assert_eq!(env.tickets_for("WO-81").await?.len(), 1);
    assert!(env.written_back(&id).await?);
    // The timeline says what was searched before the create.
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(|h| h
            == "matched: no helpdesk record matched: searched external_id for \"WO-81\", then \"81\""),
        "{history:#?}"
    );
    assert_eq!(
        step.step(&c, 2).await?,
        vec![(RULE.to_owned(), Done::Duplicate)]
    );
    assert_eq!(env.tickets_for("WO-81").await?.len(), 1);
    env.finish().await
}

#[tokio::test]
async fn rehydrate_resync_and_repair_decide_from_the_canonical_record() -> anyhow::Result<()> {
    let env = quiet_env().await?;
    let step = env.processor()?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-82", "件名": "Original"}))
        .await?;
    step.step(&change("ev-82", &id), 1).await?;
    let ticket = id_text(&env.tickets_for("WO-82").await?[0]["id"]);

    // Drift in the target that no webhook announces: a rehydration restores it.
    env.helpdesk_edit(&ticket, json!({"subject": "Drifted"}))
        .await?;
    let rehydrate = cmd(
        "rh-82",
        Command::Rehydrate {
            rule: RULE.into(),
            record_id: id.clone(),
        },
    );
    assert_eq!(
        step.step(&rehydrate, 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    assert_eq!(env.tickets_for("WO-82").await?[0]["subject"], "Original");

    // A change in kintone that no webhook announced: a resync item carries it.
    env.kintone_edit(&id, json!({"件名": "Edited quietly"}))
        .await?;
    let resync = cmd(
        "rs-82",
        Command::Resync {
            rule: RULE.into(),
            record_id: id.clone(),
            revision: None,
        },
    );
    assert_eq!(
        step.step(&resync, 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    assert_eq!(
        env.tickets_for("WO-82").await?[0]["subject"],
        "Edited quietly"
    );

    // A repair of a record already in step writes nothing.
    let patches_before = patches(&env).await?;
    let repair = cmd(
        "rp-82",
        Command::Repair {
            rule: RULE.into(),
            record_id: id.clone(),
            reason: "hash mismatch".into(),
        },
    );
    let outcome = step.step(&repair, 1).await?;
    assert_eq!(outcome.len(), 1);
    assert!(
        matches!(outcome[0].1, Done::Stale | Done::Unchanged),
        "{outcome:?}"
    );
    assert_eq!(patches(&env).await?, patches_before);
    // Drift in the target that no webhook announced: a repair restores the field the
    // source owns, and writes nothing else.
    env.helpdesk_edit(&ticket, json!({"subject": "Drifted again"}))
        .await?;
    let patches_before = patches(&env).await?;
    let repair = cmd(
        "rp-82b",
        Command::Repair {
            rule: RULE.into(),
            record_id: id.clone(),
            reason: "subject drifted".into(),
        },
    );
    assert_eq!(
        step.step(&repair, 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    assert_eq!(
        env.tickets_for("WO-82").await?[0]["subject"],
        "Edited quietly"
    );
    let log = env.request_log("helpdesk").await?;
    let new_patches: Vec<&Value> = log
        .iter()
        .filter(|e| e["method"] == "PATCH")
        .skip(patches_before)
        .collect();
    assert_eq!(new_patches.len(), 1, "{new_patches:#?}");
    assert_eq!(
        new_patches[0]["body"],
        json!({"subject": "Edited quietly"}),
        "only the drifted field is written"
    );
    // Every command left its trigger in the record's history.
    let history = env.history(&id).await?;
    for kind in [
        "rehydration of this kintone record asked",
        "a resync found this kintone record changed",
        "a reconcile asked to repair this kintone record",
    ] {
        assert!(
            history.iter().any(|h| h.contains(kind)),
            "{kind}: {history:#?}"
        );
    }
    env.finish().await
}

async fn patches(env: &Env) -> anyhow::Result<usize> {
    Ok(env
        .request_log("helpdesk")
        .await?
        .iter()
        .filter(|e| e["method"] == "PATCH")
        .count())
}

#[tokio::test]
async fn a_resolution_links_the_chosen_candidate_and_leaves_the_other() -> anyhow::Result<()> {
    let env = quiet_env().await?;
    let step = env.processor()?;
    let first = env
        .helpdesk_seed(json!({"subject": "one", "external_id": "2000"}))
        .await?;
    let second = env
        .helpdesk_seed(json!({"subject": "two", "external_id": "2000"}))
        .await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-2000", "件名": "Which one?"}))
        .await?;
    assert_eq!(
        step.step(&change("ev-2000", &id), 1).await?,
        vec![(RULE.to_owned(), Done::Conflict)]
    );
    let conflict = env.store.conflicts("open").await?.remove(0);
    let resolve = cmd(
        "res-2000",
        Command::Resolve {
            rule: RULE.into(),
            record_id: id.clone(),
            conflict_id: conflict.id,
            by: "olga".into(),
            resolution: Resolution::Link {
                target_id: second.clone(),
            },
        },
    );
    assert_eq!(
        step.step(&resolve, 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    let links = env.store.links(RULE).await?;
    assert_eq!(links[0].target_id.as_deref(), Some(second.as_str()));
    assert_eq!(
        env.kintone_record(&id).await?["helpdesk_ticket_id"]["value"],
        second.as_str()
    );
    let tickets = env.tickets_for("2000").await?;
    let subject_of = |t: &str| {
        tickets
            .iter()
            .find(|x| id_text(&x["id"]) == t)
            .map(|x| x["subject"].clone())
    };
    assert_eq!(subject_of(&second), Some(json!("Which one?")));
    assert_eq!(
        subject_of(&first),
        Some(json!("one")),
        "the other is untouched"
    );
    assert!(env.store.conflicts("open").await?.is_empty());
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(|h| h.contains("olga resolved the link")),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn a_resolution_naming_a_record_linked_meanwhile_is_refused_under_the_lease()
-> anyhow::Result<()> {
    let env = quiet_env().await?;
    let step = env.processor()?;
    env.helpdesk_seed(json!({"subject": "one", "external_id": "2001"}))
        .await?;
    env.helpdesk_seed(json!({"subject": "two", "external_id": "2001"}))
        .await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-2001", "件名": "Which one?"}))
        .await?;
    step.step(&change("ev-2001", &id), 1).await?;
    let conflict = env.store.conflicts("open").await?.remove(0);
    // Since the operator looked, another work order was linked to a ticket.
    let (other, taken) = env.seed_linked("WO-3001", "Taken").await?;
    let resolve = cmd(
        "res-2001",
        Command::Resolve {
            rule: RULE.into(),
            record_id: id.clone(),
            conflict_id: conflict.id,
            by: "olga".into(),
            resolution: Resolution::Link {
                target_id: taken.clone(),
            },
        },
    );
    assert_eq!(
        step.step(&resolve, 1).await?,
        vec![(RULE.to_owned(), Done::Conflict)]
    );
    let links = env.store.links(RULE).await?;
    let linked_to_taken: Vec<&str> = links
        .iter()
        .filter(|l| l.target_id.as_deref() == Some(taken.as_str()))
        .map(|l| l.source_record_id.as_str())
        .collect();
    assert_eq!(linked_to_taken, vec![other.as_str()], "still one record");
    let open = env.store.conflicts("open").await?;
    assert!(
        open.iter()
            .any(|c| c.kind == "resolution_refused" && c.summary.contains(&other)),
        "{open:#?}"
    );
    assert!(!env.written_back(&id).await?);
    env.finish().await
}

/// Collects the SQL statements one thread sends (sqlx reports each one). The tests share
/// a process, so a statement from another thread is another test's.
#[derive(Clone)]
struct Statements {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: std::thread::ThreadId,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Summary(String);
        impl tracing::field::Visit for Summary {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "summary" {
                    self.0 = value.to_owned();
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        if event.metadata().target() == "sqlx::query" && std::thread::current().id() == self.thread
        {
            let mut s = Summary(String::new());
            event.record(&mut s);
            self.seen.lock().unwrap().push(s.0);
        }
    }
}

impl Statements {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.seen.lock().unwrap())
    }
}

#[tokio::test]
async fn a_create_and_its_duplicate_cost_at_most_7_and_5_statements() -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{Layer, filter};
    // The runtime is current-thread, so every task of this test runs on this thread.
    let statements = Statements {
        seen: Default::default(),
        thread: std::thread::current().id(),
    };
    let subscriber = tracing_subscriber::registry().with(statements.clone().with_filter(
        filter::Targets::new().with_target("sqlx::query", filter::LevelFilter::TRACE),
    ));
    // Global, not scoped: with a scoped subscriber, sqlx's cached "is anyone listening"
    // answer sometimes came from another test's thread, and nothing was counted. When
    // RECORDSYNC_TEST_LOG installed one first, this thread gets its own instead.
    let dispatch = tracing::Dispatch::new(subscriber);
    let _guard = tracing::dispatcher::set_global_default(dispatch.clone())
        .err()
        .map(|_| tracing::dispatcher::set_default(&dispatch));
    let env = quiet_env().await?;
    let step = env.processor()?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-83", "件名": "Counted"}))
        .await?;
    let c = change("ev-83", &id);
    statements.take();
    assert_eq!(
        step.step(&c, 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    // A create: the lease, the memory, the intents, then one transaction (the lease
    // released, the state with its authority, the history with the intent marked sent
    // and the event marked processed, COMMIT).
    let create = statements.take();
    assert!(!create.is_empty(), "sqlx reports its statements");
    assert!(
        create.len() <= 7,
        "{} statements: {create:#?}",
        create.len()
    );
    assert_eq!(
        step.step(&c, 2).await?,
        vec![(RULE.to_owned(), Done::Duplicate)]
    );
    let duplicate = statements.take();
    assert!(
        duplicate.len() <= 5,
        "{} statements: {duplicate:#?}",
        duplicate.len()
    );
    assert!(env.written_back(&id).await?);
    env.finish().await
}

#[tokio::test]
async fn two_workers_stepping_one_record_at_once_create_one_ticket() -> anyhow::Result<()> {
    let env = quiet_env().await?;
    // Nothing else would stop a second create: the helpdesk ignores idempotency keys
    // and its search does not see a new ticket for a minute.
    env.admin_post(
        "/_admin/helpdesk/config",
        json!({"search_lag_ms": 60_000, "ignore_idempotency_keys": true}),
    )
    .await?;
    // The create takes a second, so that both steps are under way together.
    env.admin_post(
        "/_admin/faults",
        json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "latency_ms": 1000, "count": 1}),
    )
    .await?;
    let (one, two) = (env.processor()?, env.processor()?);
    let id = env
        .kintone_create(json!({"work_order_no": "WO-85", "件名": "Raced"}))
        .await?;
    let (first, second) = (change("ev-85a", &id), change("ev-85b", &id));
    let (a, b) = tokio::join!(one.step(&first, 1), two.step(&second, 1));
    let outcomes: Vec<Done> = [a?, b?].into_iter().flatten().map(|(_, d)| d).collect();
    assert_eq!(
        outcomes.iter().filter(|d| **d == Done::Synced).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(env.ticket_posts().await?, 1);
    assert_eq!(env.tickets().await?.len(), 1);
    assert!(env.written_back(&id).await?);
    env.finish().await
}

#[tokio::test]
async fn a_write_back_never_overwrites_an_edit_made_since_the_read() -> anyhow::Result<()> {
    let env = quiet_env().await?;
    let step = env.processor()?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-86", "件名": "Read"}))
        .await?;
    // The write-back reaches kintone 1.5 s late; a user edits the record meanwhile.
    env.admin_post(
        "/_admin/faults",
        json!({"system": "kintone", "method": "PUT", "path_prefix": "/k/v1/record.json", "latency_ms": 1500, "count": 1}),
    )
    .await?;
    let stepping = tokio::spawn({
        let step = step.clone();
        let c = change("ev-86", &id);
        async move { step.step(&c, 1).await }
    });
    tests::wait_for(
        "the ticket to be created",
        std::time::Duration::from_secs(10),
        || async { Ok(env.ticket_posts().await? == 1) },
    )
    .await?;
    env.kintone_edit_silently(&id, json!({"件名": "Edited by a person"}))
        .await?;
    assert_eq!(
        stepping.await??,
        vec![(RULE.to_owned(), Done::Synced)],
        "the ticket was written"
    );
    let record = env.kintone_record(&id).await?;
    assert_eq!(record["件名"]["value"], "Edited by a person", "{record:#}");
    assert_eq!(record["helpdesk_ticket_id"]["value"], "", "{record:#}");
    let puts: Vec<Value> = env
        .request_log("kintone")
        .await?
        .into_iter()
        .filter(|e| e["method"] == "PUT")
        .collect();
    assert_eq!(puts.len(), 1, "{puts:#?}");
    assert_eq!(puts[0]["status"], 409, "{puts:#?}");
    let history = env.history(&id).await?;
    assert!(
        history.iter().any(
            |h| h.starts_with("write_back_deferred") && h.contains("changed since it was read")
        ),
        "{history:#?}"
    );

    // The edit's own event carries the write-back, over the new revision, and the
    // ticket gets the edit: one ticket still.
    assert_eq!(
        step.step(&change("ev-86b", &id), 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    assert!(env.written_back(&id).await?);
    assert_eq!(
        env.kintone_record(&id).await?["件名"]["value"],
        "Edited by a person"
    );
    assert_eq!(env.ticket_posts().await?, 1);
    let ticket = &env.tickets_for("WO-86").await?[0];
    assert_eq!(ticket["subject"], "Edited by a person", "{ticket:#}");
    env.finish().await
}

/// The helpdesk entity sends its fields inside `{"ticket": {...}}`.
fn ticket_envelope(rules: &mut domain::rules::SyncRules) {
    rules
        .systems
        .get_mut("helpdesk")
        .and_then(|h| h.entities.get_mut("ticket"))
        .expect("the ticket entity")
        .body_pointer = "/ticket".into();
}

#[tokio::test]
async fn an_api_that_wants_an_envelope_gets_its_fields_inside_it() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        edit_rules: Some(ticket_envelope),
        ..EnvOptions::default()
    })
    .await?;
    // The helpdesk reads a create's or an update's fields from "ticket" only, and
    // ignores what is outside it, as such APIs do.
    env.admin_post(
        "/_admin/helpdesk/config",
        json!({"body_envelope": "ticket"}),
    )
    .await?;
    let step = env.processor()?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-87", "件名": "Enveloped"}))
        .await?;
    assert_eq!(
        step.step(&change("ev-87", &id), 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    let posts: Vec<Value> = env
        .request_log("helpdesk")
        .await?
        .into_iter()
        .filter(|e| e["method"] == "POST")
        .collect();
    assert_eq!(
        posts[0]["body"]["ticket"]["subject"], "Enveloped",
        "{posts:#?}"
    );
    assert_eq!(env.tickets_for("WO-87").await?[0]["subject"], "Enveloped");
    env.kintone_edit(&id, json!({"件名": "Enveloped again"}))
        .await?;
    assert_eq!(
        step.step(&change("ev-87b", &id), 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    assert_eq!(
        env.tickets_for("WO-87").await?[0]["subject"],
        "Enveloped again"
    );
    env.finish().await
}

#[tokio::test]
async fn a_field_the_target_silently_drops_opens_a_conflict_naming_it() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    // The helpdesk accepts priority and keeps nothing of it, as an API does with a
    // field its user may not write.
    env.admin_post(
        "/_admin/helpdesk/config",
        json!({"drop_fields": ["priority"]}),
    )
    .await?;
    let step = env.processor()?;
    let id = env
        .kintone_create_silently(
            json!({"work_order_no": "WO-88", "件名": "Dropped", "優先度": "高"}),
        )
        .await?;
    // The write stands and the link is made (no second ticket later), and a person
    // hears which field the helpdesk did not keep.
    assert_eq!(
        step.step(&change("ev-88", &id), 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    let tickets = env.tickets_for("WO-88").await?;
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0]["priority"], Value::Null);
    let open = env.store.conflicts("open").await?;
    let dropped: Vec<_> = open.iter().filter(|c| c.kind == "target_dropped").collect();
    assert_eq!(dropped.len(), 1, "{open:#?}");
    assert_eq!(dropped[0].source_record_id, id);
    assert_eq!(
        dropped[0].detail["fields"],
        json!(["priority"]),
        "{dropped:#?}"
    );
    assert!(
        dropped[0]
            .summary
            .contains("helpdesk dropped it without a word"),
        "{}",
        dropped[0].summary
    );
    assert_eq!(env.store.links(RULE).await?.len(), 1);

    // Fields it keeps raise nothing: an update of the subject alone is clean.
    env.admin_post("/_admin/helpdesk/config", json!({"drop_fields": []}))
        .await?;
    env.kintone_edit_silently(&id, json!({"件名": "Kept"}))
        .await?;
    step.step(&change("ev-88b", &id), 1).await?;
    assert_eq!(env.tickets_for("WO-88").await?[0]["subject"], "Kept");
    let open = env.store.conflicts("open").await?;
    assert_eq!(
        open.iter().filter(|c| c.kind == "target_dropped").count(),
        1
    );
    env.finish().await
}
