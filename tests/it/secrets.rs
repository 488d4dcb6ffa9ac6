//! No secret leaves: an upstream that echoes our request headers (API tokens
//! included) in its error bodies, and the token appears nowhere we store or print.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE};

/// Everything the components log while the guard lives (the test runs on one thread,
/// and so does every task it spawns).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

/// Every row of every table of the environment's database, as text.
async fn every_stored_row(env: &Env) -> anyhow::Result<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(env.store.pool())
    .await?;
    let mut out = String::new();
    for table in tables {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, E'\\n') FROM \"{table}\" t"
        )))
        .fetch_one(env.store.pool())
        .await?;
        out.push_str(&format!("== {table}\n{}\n", rows.unwrap_or_default()));
    }
    Ok(out)
}

async fn get_text(env: &Env, path: &str) -> anyhow::Result<String> {
    let admin = &env.admin_urls[0];
    let resp = env.http.get(format!("{admin}{path}")).send().await?;
    anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
    Ok(resp.text().await?)
}

async fn dead_letters(env: &Env) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_str(&get_text(env, "/dead-letters").await?)?;
    Ok(v["dead_letters"].as_array().cloned().unwrap_or_default())
}

async fn open_conflicts(env: &Env) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_str(&get_text(env, "/conflicts?status=open").await?)?;
    Ok(v["conflicts"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn an_upstream_echoing_our_credentials_leaks_them_nowhere() -> anyhow::Result<()> {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "debug,sqlx=warn,lapin=info,amq_protocol=info,hyper=info,hyper_util=info,reqwest=info,h2=info,rustls=info",
        ))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = Env::start_with(EnvOptions {
        max_attempts: 2,
        ..EnvOptions::default()
    })
    .await?;
    let secrets: Vec<String> = tests::secrets(&env.sandbox_config).into_values().collect();
    // The webhook secret without its prefix is the same secret.
    let mut secrets: Vec<String> = secrets
        .iter()
        .flat_map(|s| [s.clone(), s.trim_start_matches("whsec_").to_owned()])
        .collect();
    secrets.dedup();

    // The helpdesk fails a create with 500 (retried, then dead-lettered) and another
    // with 422 (a conflict), quoting our headers, the bearer token among them.
    for (subject, status) in [("Leaky-500", 500), ("Leaky-422", 422)] {
        env.admin_post(
            "/_admin/faults",
            json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets",
                   "body_contains": subject, "status": status, "echo_headers": true}),
        )
        .await?;
    }
    let dead = env
        .kintone_create(json!({"work_order_no": "WO-501", "件名": "Leaky-500"}))
        .await?;
    let rejected = env
        .kintone_create(json!({"work_order_no": "WO-422", "件名": "Leaky-422"}))
        .await?;
    env.settle("a dead letter and a conflict", || async {
        Ok(dead_letters(&env).await?.len() == 1 && open_conflicts(&env).await?.len() == 1)
    })
    .await?;
    // Then kintone fails the canonical read with 500, quoting its API token.
    env.admin_post(
        "/_admin/faults",
        json!({"system": "kintone", "method": "GET", "path_prefix": "/k/v1/record.json",
               "status": 500, "echo_headers": true}),
    )
    .await?;
    let unread = env
        .kintone_create(json!({"work_order_no": "WO-500", "件名": "Unread"}))
        .await?;
    env.settle("a second dead letter", || async {
        Ok(dead_letters(&env).await?.len() == 2)
    })
    .await?;

    // The premise: the upstreams did echo the credentials, and what we kept says so.
    let letters = dead_letters(&env).await?;
    let reasons: Vec<&str> = letters
        .iter()
        .filter_map(|d| d["reason"].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("authorization: Bearer [redacted]")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("x-cybozu-api-token: [redacted]")),
        "{reasons:?}"
    );
    let conflicts = open_conflicts(&env).await?;
    assert!(
        conflicts[0].to_string().contains("[redacted]"),
        "{conflicts:?}"
    );

    // Everything stored, every admin answer, every log line: no secret.
    let mut outputs = vec![("database".to_owned(), every_stored_row(&env).await?)];
    let mut paths = vec![
        "/dead-letters".to_owned(),
        "/conflicts?status=open".to_owned(),
        "/issues".to_owned(),
        format!("/rules/{RULE}/history?limit=500"),
        "/metrics".to_owned(),
    ];
    for d in &letters {
        paths.push(format!("/dead-letters/{}", d["id"]));
    }
    for id in [&dead, &rejected, &unread] {
        paths.push(format!("/records/{RULE}/{id}"));
        paths.push(format!("/records/{RULE}/{id}/timeline"));
    }
    for path in paths {
        outputs.push((path.clone(), get_text(&env, &path).await?));
    }
    outputs.push((
        "ingest /metrics".to_owned(),
        env.http
            .get(format!("{}/metrics", env.ingest_url))
            .send()
            .await?
            .text()
            .await?,
    ));
    env.finish().await?;
    let logged = logs.text();
    assert!(
        logged.contains("[redacted]"),
        "the retried failure was logged with its (redacted) reason"
    );
    outputs.push(("logs".to_owned(), logged));
    for (what, text) in &outputs {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{secret:?} appears in {what}:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret.as_str()))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    Ok(())
}
