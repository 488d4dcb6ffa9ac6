//! Partner files: a rule whose source is a `file` system takes its records from CSV or
//! JSON Lines. Bad rows are named and reach no target; good rows go through the step
//! once; an import that stops resumes without repeating a row.

use std::time::Duration;

use domain::rules::{RuleSpec, SyncRules, SystemKind, SystemSpec};
use serde_json::{Value, json};
use tests::{Env, EnvOptions, wait_for};
use worker::import::{ImportError, ImportReport, import};

const PARTNER_RULE: &str = "partner-orders-to-tickets";

/// The example rules plus a partner without an API whose orders become tickets.
fn with_partner(rules: &mut SyncRules) {
    let partner: SystemSpec = serde_json::from_value(json!({"kind": "file"})).expect("a system");
    assert_eq!(partner.kind, SystemKind::File);
    rules.systems.insert("partner".into(), partner);
    let rule: RuleSpec = serde_json::from_value(json!({
        "name": PARTNER_RULE,
        "source": {"system": "partner", "app": "orders"},
        "target": {"system": "helpdesk", "entity": "ticket"},
        "identity": {"source_field": "order_no", "target_field": "external_id"},
        "fields": [
            {"source": "subject", "target": "subject", "transforms": ["trim"], "required": true},
            {"source": "email", "target": "contact_email", "transforms": ["trim", "lowercase"],
             "validate": {"pattern": "[^@ ]+@[^@ ]+"}}
        ]
    }))
    .expect("a rule");
    rules.rules.push(rule);
}

async fn partner_env(workers: usize) -> anyhow::Result<Env> {
    let env = Env::start_with(EnvOptions {
        workers,
        edit_rules: Some(with_partner),
        ..EnvOptions::default()
    })
    .await?;
    config::validate(&env.rules)
        .is_empty()
        .then_some(())
        .ok_or_else(|| anyhow::anyhow!("{:?}", config::validate(&env.rules)))?;
    Ok(env)
}

/// Imports as the CLI does: checked, then queued through a confirm-mode publisher to
/// the environment's queues.
struct Importer {
    processor: std::sync::Arc<worker::step::Processor>,
    publisher: queue::Publisher,
    names: queue::Names,
}

impl Importer {
    async fn new(env: &Env) -> anyhow::Result<Importer> {
        let (publisher, names) = env.publisher().await?;
        Ok(Importer {
            processor: env.processor()?,
            publisher,
            names,
        })
    }

    async fn file(
        &self,
        rule: &str,
        name: &str,
        text: impl AsRef<[u8]>,
    ) -> Result<ImportReport, ImportError> {
        let queue = Some((&self.publisher, &self.names));
        import(&self.processor, queue, rule, name, text.as_ref(), |_| {}).await
    }
}

fn writes(log: &[Value]) -> usize {
    log.iter().filter(|e| e["method"] != "GET").count()
}

const ORDERS: &str = "order_no,subject,email
PO-1,Pump,a@example.com
PO-2,,b@example.com
,Valve,c@example.com
PO-3,Valve,not-an-email
PO-4,Fan, D@Example.com
PO-1,Pump v2,a@example.com
";

#[tokio::test]
async fn bad_rows_are_named_and_good_rows_are_synced_once() -> anyhow::Result<()> {
    let env = partner_env(1).await?;
    let processor = env.processor()?;

    // A dry run names every bad row and writes nothing anywhere.
    let dry = import(
        &processor,
        None,
        PARTNER_RULE,
        "orders.csv",
        ORDERS.as_bytes(),
        |_| {},
    )
    .await?;
    let named: Vec<(u64, &str)> = dry
        .invalid
        .iter()
        .map(|p| (p.line, p.column.as_str()))
        .collect();
    assert_eq!(
        named,
        vec![(3, "subject"), (4, "order_no"), (5, "email")],
        "{dry:#?}"
    );
    assert!(dry.invalid[2].reason.contains("does not match"), "{dry:#?}");
    assert_eq!((dry.rows, dry.invalid_rows, dry.records), (6, 3, 2));
    assert_eq!(dry.superseded, vec![(2, 7)]);
    assert!(dry.dry_run);
    assert_eq!(dry.queued, 0);
    assert!(env.store.imports(None, 10).await?.is_empty());

    let importer = Importer::new(&env).await?;
    let report = importer.file(PARTNER_RULE, "orders.csv", ORDERS).await?;
    assert_eq!(report.queued, 2);
    assert_eq!(report.invalid, dry.invalid);
    wait_for("both tickets", Duration::from_secs(30), || async {
        Ok(env.tickets_for("PO-4").await?.len() == 1 && env.tickets_for("PO-1").await?.len() == 1)
    })
    .await?;
    // Only the last row of PO-1 was imported; the bad rows reached nothing.
    assert_eq!(env.tickets_for("PO-1").await?[0]["subject"], "Pump v2");
    assert_eq!(
        env.tickets_for("PO-4").await?[0]["contact_email"],
        "d@example.com"
    );
    for bad in ["PO-2", "PO-3"] {
        assert!(
            env.tickets_for(bad).await?.is_empty(),
            "{bad} reached the helpdesk"
        );
    }
    assert_eq!(env.tickets().await?.len(), 2);
    // The record's history says where the row came from.
    let history = env.store.history(PARTNER_RULE, "PO-1").await?;
    assert!(
        history
            .iter()
            .any(|h| h.summary == "imported from partner's file orders.csv, line 7"),
        "{history:#?}"
    );

    // The same file again: nothing is queued, nothing written.
    let before = writes(&env.request_log("helpdesk").await?);
    let again = importer.file(PARTNER_RULE, "orders.csv", ORDERS).await?;
    assert!(again.already_imported, "{again:#?}");
    assert_eq!(again.queued, 0);
    // A new file with one changed order updates its ticket; the unchanged one is not
    // written again.
    let update = "order_no,subject\nPO-4,Fan (replaced)\nPO-1,Pump v2\n";
    importer.file(PARTNER_RULE, "orders-2.csv", update).await?;
    wait_for("the changed ticket", Duration::from_secs(30), || async {
        Ok(env.tickets_for("PO-4").await?[0]["subject"] == "Fan (replaced)")
    })
    .await?;
    let ledger_settled = || async {
        let processed = env.store.history(PARTNER_RULE, "PO-1").await?;
        Ok(processed
            .iter()
            .filter(|h| h.summary.starts_with("imported from"))
            .count()
            == 2)
    };
    wait_for(
        "PO-1's second import decided",
        Duration::from_secs(30),
        ledger_settled,
    )
    .await?;
    assert_eq!(
        writes(&env.request_log("helpdesk").await?) - before,
        1,
        "only the changed ticket was written"
    );
    assert_eq!(env.tickets().await?.len(), 2);

    // A rehydration has no API to read the record from: a conflict says what to do,
    // and nothing is written.
    let before = writes(&env.request_log("helpdesk").await?);
    worker::ops::rehydrate(
        &processor,
        &importer.publisher,
        &importer.names,
        PARTNER_RULE,
        Some("PO-1"),
    )
    .await?;
    wait_for(
        "the rehydration's conflict",
        Duration::from_secs(30),
        || async {
            let open = env.store.conflicts("open").await?;
            Ok(open
                .iter()
                .any(|c| c.rule == PARTNER_RULE && c.source_record_id == "PO-1"))
        },
    )
    .await?;
    let open = env.store.conflicts("open").await?;
    let conflict = open
        .iter()
        .find(|c| c.source_record_id == "PO-1")
        .expect("the conflict");
    assert!(
        conflict.summary.contains("import the partner's file again"),
        "{conflict:#?}"
    );
    assert_eq!(writes(&env.request_log("helpdesk").await?), before);
    env.finish().await
}

#[tokio::test]
async fn an_import_that_stops_resumes_without_repeating_a_row() -> anyhow::Result<()> {
    let env = partner_env(0).await?;
    let processor = env.processor()?;
    let (publisher, names) = env.publisher().await?;
    let n = worker::import::PAGE_SIZE * 3 + 7;
    let mut file = String::from("order_no,subject\n");
    for i in 0..n {
        file.push_str(&format!("PO-{i},Order {i}\n"));
    }
    // The import is stopped (its task dropped, as a crash would) once a page is
    // recorded.
    let task = {
        let processor = processor.clone();
        let (publisher, names) = (publisher.clone(), names.clone());
        let file = file.clone();
        tokio::spawn(async move {
            import(
                &processor,
                Some((&publisher, &names)),
                PARTNER_RULE,
                "big.csv",
                file.as_bytes(),
                |p| {
                    if p.done >= worker::import::PAGE_SIZE {
                        // Slow down after the first page so that the stop lands mid-import.
                        std::thread::sleep(Duration::from_millis(300));
                    }
                },
            )
            .await
        })
    };
    wait_for("a page recorded", Duration::from_secs(30), || async {
        Ok(env
            .store
            .imports(None, 1)
            .await?
            .first()
            .is_some_and(|r| r.queued > 0))
    })
    .await?;
    task.abort();
    let _ = task.await;
    let stopped = env.store.imports(None, 1).await?.remove(0);
    assert!(
        stopped.finished_at.is_none(),
        "it finished before the stop: {stopped:?}"
    );
    let queued_before = usize::try_from(stopped.queued)?;
    assert!(queued_before > 0 && queued_before < n, "{stopped:?}");

    let importer = Importer::new(&env).await?;
    let resumed: ImportReport = importer.file(PARTNER_RULE, "big.csv", file).await?;
    assert_eq!(resumed.resumed_from, queued_before);
    assert_eq!(resumed.queued, n - queued_before);
    let run = env.store.imports(None, 1).await?.remove(0);
    assert_eq!(usize::try_from(run.queued)?, n);
    assert!(run.finished_at.is_some());

    // The workers sync every order once: a page queued twice (published, then
    // stopped before it was recorded) is a duplicate for the step.
    let mut env = env;
    env.start_worker().await?;
    env.start_worker().await?;
    wait_for("every order synced", Duration::from_secs(120), || async {
        Ok(env.tickets().await?.len() >= n)
    })
    .await?;
    // The echoes of the write-backs are taken and decided before the tickets are
    // counted.
    env.quiet(PARTNER_RULE).await?;
    let tickets = env.tickets().await?;
    assert_eq!(tickets.len(), n, "one ticket per order");
    let mut ids: Vec<&str> = tickets
        .iter()
        .filter_map(|t| t["external_id"].as_str())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    env.finish().await
}

#[tokio::test]
async fn an_unknown_column_refuses_the_file_and_a_rule_with_an_api_source_takes_no_file()
-> anyhow::Result<()> {
    let env = partner_env(0).await?;
    let importer = Importer::new(&env).await?;
    let misspelt = "order_no,subjet\nPO-1,Pump\n";
    let err = importer
        .file(PARTNER_RULE, "o.csv", misspelt)
        .await
        .expect_err("refused");
    let ImportError::Unreadable { problems, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(problems[0].column, "subjet");
    assert!(err.to_string().contains("nothing was imported"), "{err}");
    assert!(env.store.imports(None, 10).await?.is_empty());

    let err = importer
        .file(tests::RULE, "o.csv", b"x\n1\n")
        .await
        .expect_err("refused");
    assert!(matches!(err, ImportError::NotAFileSource { .. }), "{err}");
    assert!(err.to_string().contains("which has an API"), "{err}");
    env.finish().await
}

#[tokio::test]
async fn a_file_uploaded_to_the_admin_api_is_checked_and_imported() -> anyhow::Result<()> {
    let env = partner_env(1).await?;
    let url = format!("{}/import", env.admin_urls[0]);
    let upload = |query: &'static str, body: &'static str| {
        env.http
            .post(format!("{url}?rule={PARTNER_RULE}{query}"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    let refused = upload(
        "&file=o.jsonl",
        "{\"order_no\": \"PO-9\", \"subjet\": \"x\"}\n",
    )
    .await?;
    assert_eq!(refused.status().as_u16(), 422);
    let body: Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "unreadable");
    assert_eq!(body["error"]["problems"][0]["column"], "subjet", "{body:#}");

    let lines = "{\"order_no\": \"PO-9\", \"subject\": \"Crane\"}\n{\"order_no\": \"PO-10\"}\n";
    let resp = upload("&file=o.jsonl", lines).await?;
    assert_eq!(resp.status().as_u16(), 200);
    let report: Value = resp.json().await?;
    assert_eq!(report["queued"], 1, "{report:#}");
    assert_eq!(report["invalid"][0]["line"], 2, "{report:#}");
    assert_eq!(report["invalid"][0]["column"], "subject", "{report:#}");
    wait_for("the uploaded order", Duration::from_secs(30), || async {
        Ok(env.tickets_for("PO-9").await?.len() == 1)
    })
    .await?;
    assert!(env.tickets_for("PO-10").await?.is_empty());
    let listed: Value = env.http.get(&url).send().await?.json().await?;
    assert_eq!(listed["imports"][0]["file"], "o.jsonl", "{listed:#}");
    assert_eq!(listed["imports"][0]["queued"], 1, "{listed:#}");
    env.finish().await
}
