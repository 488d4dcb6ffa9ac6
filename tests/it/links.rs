//! One source record per target record: a match, two resolutions at the same moment,
//! the index that holds the line in PostgreSQL, and the upgrade of a database that
//! already breaks it.

use queue::{Command, CommandV2, Resolution};
use serde_json::json;
use store::{Store, StoreErrorKind};
use tests::{Env, EnvOptions, RULE, TestDb, change, command as cmd};
use worker::step::Done;

fn resolve(id: &str, record_id: &str, conflict_id: i64, target_id: &str) -> CommandV2 {
    cmd(
        id,
        Command::Resolve {
            rule: RULE.into(),
            record_id: record_id.into(),
            conflict_id,
            by: "olga".into(),
            resolution: Resolution::Link {
                target_id: target_id.into(),
            },
        },
    )
}

async fn quiet_env() -> anyhow::Result<Env> {
    Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await
}

/// Requests to the helpdesk that write something.
async fn helpdesk_writes(env: &Env) -> anyhow::Result<usize> {
    Ok(env
        .request_log("helpdesk")
        .await?
        .iter()
        .filter(|e| e["method"] != "GET")
        .count())
}

fn linked_to<'a>(links: &'a [store::LinkRow], target: &str) -> Vec<&'a str> {
    links
        .iter()
        .filter(|l| l.target_id.as_deref() == Some(target))
        .map(|l| l.source_record_id.as_str())
        .collect()
}

#[tokio::test]
async fn a_record_whose_search_finds_a_ticket_linked_elsewhere_is_a_conflict_and_writes_nothing()
-> anyhow::Result<()> {
    let env = quiet_env().await?;
    let step = env.processor()?;
    let first = env
        .kintone_create(json!({"work_order_no": "WO-2100", "件名": "First"}))
        .await?;
    assert_eq!(
        step.step(&change("ev-2100", &first), 1).await?,
        vec![(RULE.to_owned(), Done::Synced)]
    );
    let tickets = env.tickets_for("WO-2100").await?;
    assert_eq!(tickets.len(), 1);
    let ticket = tickets[0]["id"].to_string().trim_matches('"').to_owned();
    let writes_before = helpdesk_writes(&env).await?;

    // A second work order carries the same number (a typo, a copy): its search finds
    // the first one's ticket.
    let second = env
        .kintone_create(json!({"work_order_no": "WO-2100", "件名": "Second"}))
        .await?;
    assert_eq!(
        step.step(&change("ev-2101", &second), 1).await?,
        vec![(RULE.to_owned(), Done::Conflict)]
    );
    assert_eq!(
        helpdesk_writes(&env).await?,
        writes_before,
        "nothing is written to the ticket linked elsewhere"
    );
    let tickets = env.tickets_for("WO-2100").await?;
    assert_eq!(tickets.len(), 1, "and nothing is created");
    assert_eq!(tickets[0]["subject"], "First");
    assert!(!env.written_back(&second).await?);
    let links = env.store.links(RULE).await?;
    assert_eq!(linked_to(&links, &ticket), vec![first.as_str()]);
    let open = env.store.conflicts("open").await?;
    assert!(
        open.iter().any(|c| c.kind == "already_linked"
            && c.source_record_id == second
            && c.summary.contains(&first)),
        "{open:#?}"
    );
    let history = env.history(&second).await?;
    assert!(
        history.iter().any(|h| h.contains(&format!(
            "helpdesk record {ticket} (matched by lookup value) is already linked to source record {first}"
        ))),
        "{history:#?}"
    );
    env.finish().await
}

#[tokio::test]
async fn two_resolutions_to_one_ticket_at_the_same_moment_link_only_one() -> anyhow::Result<()> {
    let env = quiet_env().await?;
    let step = env.processor()?;
    env.helpdesk_seed(json!({"subject": "one", "external_id": "2200"}))
        .await?;
    let chosen = env
        .helpdesk_seed(json!({"subject": "two", "external_id": "2200"}))
        .await?;
    let mut records = vec![];
    for (n, subject) in [(1, "Mine"), (2, "No, mine")] {
        let id = env
            .kintone_create(json!({"work_order_no": "WO-2200", "件名": subject}))
            .await?;
        assert_eq!(
            step.step(&change(&format!("ev-2200-{n}"), &id), 1).await?,
            vec![(RULE.to_owned(), Done::Conflict)],
            "two tickets match: a person chooses"
        );
        records.push(id);
    }
    let open = env.store.conflicts("open").await?;
    let conflict_of = |id: &str| {
        open.iter()
            .find(|c| c.source_record_id == id)
            .map(|c| c.id)
            .expect("a conflict per record")
    };
    let (a, b) = (
        resolve("res-a", &records[0], conflict_of(&records[0]), &chosen),
        resolve("res-b", &records[1], conflict_of(&records[1]), &chosen),
    );
    // Two operators choose the same ticket for two records at the same moment.
    let (ra, rb) = tokio::join!(step.step(&a, 1), step.step(&b, 1));
    let mut outcomes = vec![ra?[0].1, rb?[0].1];
    outcomes.sort_by_key(|d| d.as_str());
    assert_eq!(outcomes, vec![Done::Conflict, Done::Synced], "one wins");

    let links = env.store.links(RULE).await?;
    let holders = linked_to(&links, &chosen);
    assert_eq!(holders.len(), 1, "one source record per target: {links:#?}");
    let loser = records.iter().find(|r| *r != holders[0]).unwrap();
    let open = env.store.conflicts("open").await?;
    assert!(
        open.iter().any(|c| &c.source_record_id == loser
            && (c.kind == "already_linked" || c.kind == "resolution_refused")
            && c.summary.contains(holders[0])),
        "the other record's conflict names the winner: {open:#?}"
    );
    env.finish().await
}

/// Without the code's checks, PostgreSQL itself refuses a second link to one target,
/// and the refused holder learns which record holds it.
#[tokio::test]
async fn the_index_refuses_a_second_link_and_names_the_holder() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let store = Store::connect(&db.url, 2).await?;
    let mut first = store.begin_record(RULE, "k-1").await?;
    let mut second = store.begin_record(RULE, "k-2").await?;
    first.save_state(Some("T-9"), None, Some(1), &Default::default());
    second.save_state(Some("T-9"), None, Some(1), &Default::default());
    first.commit().await?;
    let refused = second.commit().await.expect_err("a second link to T-9");
    assert_eq!(refused.kind(), StoreErrorKind::Data);
    assert_eq!(refused.constraint(), Some(store::ONE_SOURCE_PER_TARGET));
    assert_eq!(
        second.link_taken(&refused).await?,
        Some(store::LinkTaken {
            target_id: "T-9".to_owned(),
            source_record_id: "k-1".to_owned()
        })
    );
    // Unlinked records (no target yet) are not limited.
    for id in ["k-3", "k-4"] {
        let mut tx = store.begin_record(RULE, id).await?;
        tx.save_state(None, None, Some(1), &Default::default());
        tx.commit().await?;
    }
    store.pool().close().await;
    db.drop_db().await
}

/// A database that already holds two records linked to one target (as an unchecked
/// resolution could leave it) upgrades: the earliest link stays, the later record is
/// unlinked with a conflict and a history line that say why.
#[tokio::test]
async fn the_upgrade_keeps_the_earliest_link_and_explains_the_others() -> anyhow::Result<()> {
    let db = TestDb::create_at(6).await?;
    let store = Store::connect(&db.url, 1).await?;
    sqlx::query(
        "INSERT INTO sync_records (rule, source_record_id, target_id, linked_at) VALUES
            ($1, 'early', 'T-1', now() - interval '2 days'),
            ($1, 'late', 'T-1', now() - interval '1 day'),
            ($1, 'alone', 'T-2', now())",
    )
    .bind(RULE)
    .execute(store.pool())
    .await?;
    store.migrate().await?;

    let links = store.links(RULE).await?;
    assert_eq!(linked_to(&links, "T-1"), vec!["early"]);
    assert_eq!(linked_to(&links, "T-2"), vec!["alone"]);
    let late = links
        .iter()
        .find(|l| l.source_record_id == "late")
        .expect("the later record is kept, unlinked");
    assert_eq!(late.target_id, None);
    let open = store.conflicts("open").await?;
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0].kind, "already_linked");
    assert_eq!(open[0].source_record_id, "late");
    assert!(open[0].summary.contains("early"), "{}", open[0].summary);
    let history = store.history(RULE, "late").await?;
    assert!(
        history
            .iter()
            .any(|h| h.summary.contains("unlinked from T-1 when upgrading")),
        "{history:#?}"
    );
    store.pool().close().await;
    db.drop_db().await
}
