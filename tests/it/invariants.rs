//! Invariants checked on their own: what PostgreSQL itself holds, checked against the
//! real database; which crate may depend on which; a write-back that never replaces
//! another target's id.

use serde_json::json;
use tests::{Env, RULE, TestDb};

/// The history is append-only: an UPDATE or DELETE is refused by a trigger, whoever
/// runs it (the service, a tool, a person with psql).
#[tokio::test]
async fn the_history_refuses_updates_and_deletes() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let store = store::Store::connect(&db.url, 1).await?;
    sqlx::query(
        "INSERT INTO history (rule, source_record_id, kind, summary) VALUES ($1, 'k-1', 'created', 'first')",
    )
    .bind(RULE)
    .execute(store.pool())
    .await?;
    for statement in [
        "UPDATE history SET summary = 'rewritten'",
        "DELETE FROM history",
    ] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(store.pool())
            .await
            .expect_err(statement);
        assert!(
            refused.to_string().contains("history is append-only"),
            "{statement}: {refused}"
        );
    }
    let kept = store.history(RULE, "k-1").await?;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].summary, "first");
    store.pool().close().await;
    db.drop_db().await
}

/// The `[dependencies]` table of a workspace crate's manifest, as the names it lists.
fn dependencies(manifest: &str) -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(manifest)).expect("the manifest");
    let mut names = vec![];
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside && let Some((name, _)) = line.split_once('=') {
            names.push(name.trim().trim_end_matches(".workspace").to_owned());
        }
    }
    names
}

/// ARCHITECTURE's first invariant: `domain` stays pure, and each outside protocol's
/// crate lives in one place — lapin only in `queue`, sqlx only in `store`, reqwest
/// only in `connectors` (and the sandbox and the tests, which play and drive the
/// outside world).
#[test]
fn each_crate_depends_only_on_what_the_architecture_lets_it() {
    let domain = dependencies("shared/domain/Cargo.toml");
    assert!(!domain.is_empty(), "no dependencies read");
    for forbidden in [
        "tokio", "sqlx", "lapin", "reqwest", "axum", "store", "queue",
    ] {
        assert!(
            !domain.iter().any(|d| d == forbidden),
            "domain depends on {forbidden}"
        );
    }
    for (name, manifest) in [
        ("config", "shared/config/Cargo.toml"),
        ("store", "shared/store/Cargo.toml"),
        ("queue", "shared/queue/Cargo.toml"),
        ("connectors", "shared/connectors/Cargo.toml"),
        ("ingest", "ingest/Cargo.toml"),
        ("worker", "worker/Cargo.toml"),
    ] {
        let deps = dependencies(manifest);
        assert!(!deps.is_empty(), "{name}: no dependencies read");
        for (protocol, home) in [
            ("lapin", "queue"),
            ("sqlx", "store"),
            ("reqwest", "connectors"),
        ] {
            if name != home {
                assert!(
                    !deps.iter().any(|d| d == protocol),
                    "{name} depends on {protocol}, which lives only in {home}"
                );
            }
        }
    }
    assert!(
        dependencies("ingest/Cargo.toml")
            .iter()
            .all(|d| d != "store"),
        "ingest never touches PostgreSQL"
    );
}

/// The worker's modules a file names (`crate::x`, or `super::super::x` from a wing's
/// sub-module), each once.
fn worker_modules_named(path: &std::path::Path) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(path).expect("a source file");
    let mut named = std::collections::BTreeSet::new();
    for prefix in ["crate::", "super::super::"] {
        for (at, _) in text.match_indices(prefix) {
            let rest = &text[at + prefix.len()..];
            let lead = |item: &str| -> String {
                item.trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect()
            };
            match rest.strip_prefix('{') {
                // `crate::{a, b::c, d::{e, f}}`: the group's top-level names.
                Some(group) => {
                    let mut depth = 0;
                    let mut item = String::new();
                    for c in group.chars() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => break,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                named.insert(lead(&item));
                                item.clear();
                                continue;
                            }
                            _ => {}
                        }
                        item.push(c);
                    }
                    named.insert(lead(&item));
                }
                None => {
                    named.insert(lead(rest));
                }
            }
        }
        named.remove("");
    }
    named
}

/// Every `.rs` file under `dir` (or `dir` itself when it is a file).
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    if dir.is_file() {
        return vec![dir.to_owned()];
    }
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// ARCHITECTURE's code map: the worker's wings depend downward only. The step knows
/// nothing of who runs it; the jobs know nothing of the runner, the admin API or the
/// command line; the runner (which wires the rest, and builds the admin API's state)
/// nothing of the command line; the admin API nothing of the runner. (What a module-graph view would show as an arrow
/// running back up fails here, naming the file.)
#[test]
fn the_worker_wings_depend_only_downward() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/src");
    let above =
        |forbidden: &[&str]| -> Vec<String> { forbidden.iter().map(|s| s.to_string()).collect() };
    let rules: [(&str, Vec<String>); 6] = [
        (
            "step",
            above(&[
                "runner",
                "admin",
                "cli",
                "jobs",
                "ops",
                "resync",
                "reconcile",
                "import",
                "preview",
                "schema",
                "dlq",
                "budget",
            ]),
        ),
        (
            "classify.rs",
            above(&["step", "runner", "admin", "cli", "jobs", "limiter"]),
        ),
        (
            "limiter",
            above(&["step", "runner", "admin", "cli", "jobs"]),
        ),
        ("jobs.rs", above(&["runner", "admin", "cli"])),
        ("runner", above(&["cli"])),
        ("admin", above(&["runner", "cli"])),
    ];
    // The scanner itself: grouped and nested imports, and a sub-module's reach up.
    let probe = std::env::temp_dir().join(format!("rs-wings-{}.rs", std::process::id()));
    std::fs::write(
        &probe,
        "use crate::{admin, auth::Auth, step::{plan, Known}};\nuse super::super::runner::Worker;\nfn f() { crate::jobs::run(); }\n",
    )
    .expect("a probe file");
    let named = worker_modules_named(&probe);
    std::fs::remove_file(&probe).expect("the probe removed");
    assert_eq!(
        named.into_iter().collect::<Vec<_>>(),
        ["admin", "auth", "jobs", "runner", "step"]
    );
    let mut checked = 0;
    for (wing, forbidden) in rules {
        for file in rust_files(&src.join(wing)) {
            let named = worker_modules_named(&file);
            for up in &forbidden {
                assert!(
                    !named.contains(up),
                    "{} names crate::{up}: {wing} must not depend on {up}",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} files read");
}

/// A write-back never silently replaces another id already in the source's write-back
/// field when this step made the link: a `write_back_clash` conflict, and the field
/// keeps what it held.
#[tokio::test]
async fn a_write_back_never_replaces_another_id_the_source_already_holds() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ticket = env
        .helpdesk_seed(json!({"subject": "Existing", "external_id": "WO-880"}))
        .await?;
    let id = env
        .kintone_create(
            json!({"work_order_no": "WO-880", "件名": "Names another ticket", "helpdesk_ticket_id": "999999"}),
        )
        .await?;
    env.settle("the clash", || async {
        Ok(env
            .store
            .conflicts("open")
            .await?
            .iter()
            .any(|c| c.source_record_id == id && c.kind == "write_back_clash"))
    })
    .await?;
    let record = env.kintone_record(&id).await?;
    assert_eq!(record["helpdesk_ticket_id"]["value"], "999999", "{record}");
    let history = env.history(&id).await?;
    assert!(
        history
            .iter()
            .any(|h| h.contains("999999") && h.contains(&ticket)),
        "{history:#?}"
    );
    env.finish().await
}
