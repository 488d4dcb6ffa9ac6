//! The admin API's security: bearer tokens with roles, rotation, the metrics token, the
//! Host check, resolutions checked against the conflict's candidates and credited to
//! the token's name, and the refusal to serve an open API on a network address.
//!
//! The harness serves its workers' admin APIs without tokens on loopback, so these
//! tests serve the admin router themselves, with the credentials they need, over the
//! environment's database and queues (the environment's worker applies resolutions).

use std::time::Duration;

use anyhow::Context;
use config::ConfigError;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use worker::admin::router;
use worker::auth::{Access, Auth, Role};

pub(crate) const VIEWER: &str = "viewer-token-0123456789";
pub(crate) const OPERATOR: &str = "operator-token-0123456789";
pub(crate) const ADMIN: &str = "admin-token-0123456789";
pub(crate) const WRONG: &str = "not-a-token-of-ours-0123456789";

/// A viewer `vera`, an operator `olga` and an admin `ada`.
pub(crate) fn roles() -> anyhow::Result<Auth> {
    Ok(Auth::from_spec(&format!(
        "vera:viewer:{VIEWER},olga:operator:{OPERATOR},ada:admin:{ADMIN}"
    ))?)
}

/// An admin API served with explicit credentials on its own loopback listener.
pub(crate) struct Admin {
    pub(crate) url: String,
    pub(crate) http: reqwest::Client,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Admin {
    /// Serves the admin router over `env`'s database and queues, behind `auth`.
    pub(crate) async fn serve(env: &Env, auth: Auth) -> anyhow::Result<Admin> {
        let worker = worker_for(env)?;
        let stop = CancellationToken::new();
        let broker = worker.broker();
        broker.spawn_keeper(stop.clone());
        tokio::time::timeout(Duration::from_secs(10), broker.wait_connected())
            .await
            .context("the admin API's broker did not connect")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let app = router(worker.admin_state(), Access::new(auth, local)?);
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        });
        Ok(Admin {
            url: format!("http://{local}"),
            http: tests::http_client(),
            stop,
            task,
        })
    }

    /// A request with an optional bearer token and an optional JSON body.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        Ok(req.send().await?)
    }

    /// Stops serving.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// A worker over `env`'s settings and rules (not run: its admin state is served).
fn worker_for(env: &Env) -> anyhow::Result<worker::Worker> {
    let secrets = tests::secrets(&env.sandbox_config);
    let connectors = connectors::Connectors::build(&env.rules, |path, var| {
        secrets
            .get(var)
            .cloned()
            .ok_or_else(|| ConfigError::MissingSecret {
                path: path.to_owned(),
                var: var.to_owned(),
            })
    })?;
    worker::Worker::with_connectors(env.settings.clone(), env.rules.clone(), connectors)
}

/// One admin route: its method and template, a concrete harmless request, and the
/// role it needs.
struct Route {
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    needs: Role,
}

fn route(
    method: Method,
    template: &'static str,
    path: impl Into<String>,
    body: Option<Value>,
    needs: Role,
) -> Route {
    Route {
        method,
        template,
        path: path.into(),
        body,
        needs,
    }
}

/// Every route that needs a token. The requests name nothing that exists, so that
/// they change nothing when they are let through.
fn guarded_routes() -> Vec<Route> {
    use Role::{Admin, Operator, Viewer};
    vec![
        route(
            Method::GET,
            "/records/{rule}/{record_id}",
            format!("/records/{RULE}/1"),
            None,
            Viewer,
        ),
        route(
            Method::GET,
            "/records/{rule}/{record_id}/timeline",
            format!("/records/{RULE}/1/timeline"),
            None,
            Viewer,
        ),
        route(Method::GET, "/issues", "/issues", None, Viewer),
        route(
            Method::GET,
            "/rules/{rule}/history",
            format!("/rules/{RULE}/history"),
            None,
            Viewer,
        ),
        route(Method::GET, "/conflicts", "/conflicts", None, Viewer),
        route(Method::GET, "/dead-letters", "/dead-letters", None, Viewer),
        route(
            Method::GET,
            "/dead-letters/{id}",
            "/dead-letters/999999",
            None,
            Viewer,
        ),
        route(Method::GET, "/paused", "/paused", None, Viewer),
        route(Method::GET, "/resync", "/resync", None, Viewer),
        route(Method::GET, "/ledger", "/ledger", None, Viewer),
        route(Method::GET, "/reconcile", "/reconcile", None, Viewer),
        route(Method::GET, "/schema-check", "/schema-check", None, Viewer),
        route(Method::GET, "/import", "/import", None, Viewer),
        route(Method::GET, "/budget", "/budget", None, Viewer),
        route(
            Method::POST,
            "/conflicts/{id}/resolve",
            "/conflicts/999999/resolve",
            Some(json!({"target_id": "1"})),
            Operator,
        ),
        route(
            Method::POST,
            "/conflicts/{id}/dismiss",
            "/conflicts/999999/dismiss",
            Some(json!({})),
            Operator,
        ),
        route(
            Method::POST,
            "/dead-letters/replay",
            "/dead-letters/replay",
            Some(json!({"ids": [999999]})),
            Operator,
        ),
        route(
            Method::POST,
            "/pause",
            "/pause",
            Some(json!({"scope": "rule", "name": "no-such-rule"})),
            Operator,
        ),
        route(
            Method::POST,
            "/resume",
            "/resume",
            Some(json!({"scope": "rule", "name": "no-such-rule"})),
            Operator,
        ),
        route(
            Method::POST,
            "/rehydrate",
            "/rehydrate",
            Some(json!({"rule": "no-such-rule"})),
            Operator,
        ),
        route(
            Method::POST,
            "/resync",
            "/resync",
            Some(json!({"rule": "no-such-rule"})),
            Operator,
        ),
        route(
            Method::POST,
            "/reconcile",
            "/reconcile",
            Some(json!({"rule": "no-such-rule"})),
            Operator,
        ),
        route(
            Method::POST,
            "/preview",
            "/preview",
            Some(json!({"rule": "no-such-rule", "rules": {}})),
            Operator,
        ),
        route(
            Method::POST,
            "/schema-check",
            "/schema-check",
            Some(json!({"system": "no-such-system"})),
            Operator,
        ),
        route(
            Method::POST,
            "/import",
            "/import?rule=no-such-rule&dry_run=true",
            Some(json!({})),
            Operator,
        ),
        route(
            Method::POST,
            "/dead-letters/purge",
            "/dead-letters/purge",
            Some(json!({"ids": [999999], "confirm": true})),
            Admin,
        ),
    ]
}

/// The operations the OpenAPI document says need a role: `(METHOD, template, role)`.
fn documented_guarded() -> Vec<(String, String, String)> {
    let doc: Value = serde_json::from_str(include_str!("../../worker/openapi.json"))
        .expect("openapi.json is JSON");
    let mut out = vec![];
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let role = op["x-role"].as_str().unwrap_or_default();
            if ["viewer", "operator", "admin"].contains(&role) {
                out.push((method.to_uppercase(), path.clone(), role.to_owned()));
            }
        }
    }
    out.sort();
    out
}

fn www_authenticate(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn every_admin_route_needs_a_token_and_a_strong_enough_role() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let routes = guarded_routes();
    let mut tested: Vec<(String, String, String)> = routes
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.template.to_owned(),
                r.needs.as_str().to_owned(),
            )
        })
        .collect();
    tested.sort();
    assert_eq!(
        tested,
        documented_guarded(),
        "every documented guarded route is tested here, with its documented role"
    );

    let admin = Admin::serve(&env, roles()?).await?;
    for r in &routes {
        let what = format!("{} {}", r.method, r.path);
        let resp = admin
            .send(r.method.clone(), &r.path, None, r.body.as_ref())
            .await?;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{what} without a token"
        );
        assert!(
            www_authenticate(&resp).starts_with("Bearer"),
            "{what}: {:?}",
            resp.headers()
        );
        let resp = admin
            .send(r.method.clone(), &r.path, Some(WRONG), r.body.as_ref())
            .await?;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{what} with a wrong token"
        );
        assert!(www_authenticate(&resp).contains("invalid_token"), "{what}");
        for (token, role) in [
            (VIEWER, Role::Viewer),
            (OPERATOR, Role::Operator),
            (ADMIN, Role::Admin),
        ] {
            let resp = admin
                .send(r.method.clone(), &r.path, Some(token), r.body.as_ref())
                .await?;
            let status = resp.status();
            if role < r.needs {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what} as {role}");
                let body: Value = resp.json().await?;
                let message = body["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains(r.needs.as_str()),
                    "{what} as {role}: {body}"
                );
            } else {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what} as {role}: {status}"
                );
            }
        }
    }
    // The admin's purge went through to the store (it matched nothing).
    let resp = admin
        .send(
            Method::POST,
            "/dead-letters/purge",
            Some(ADMIN),
            Some(&json!({"ids": [999999], "confirm": true})),
        )
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await?, json!({"purged": 0}));
    // Health, readiness and (without a metrics token) metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = admin.send(Method::GET, path, None, None).await?;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    admin.stop().await?;
    env.finish().await
}

#[tokio::test]
async fn tokens_rotate_and_a_metrics_token_guards_metrics() -> anyhow::Result<()> {
    const OLD: &str = "olga-old-token-0123456789";
    const NEW: &str = "olga-new-token-0123456789";
    const METRICS: &str = "metrics-token-0123456789";
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let auth = Auth::from_spec(&format!("olga:operator:{OLD},olga:operator:{NEW}"))?
        .with_metrics_token(METRICS)?;
    let admin = Admin::serve(&env, auth).await?;
    for token in [OLD, NEW] {
        let resp = admin
            .send(Method::GET, "/paused", Some(token), None)
            .await?;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "both tokens are valid while rotating"
        );
    }
    let resp = admin
        .send(Method::GET, "/paused", Some(WRONG), None)
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = admin
        .send(Method::GET, "/paused", Some(&OLD[..OLD.len() - 1]), None)
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a prefix is not the token"
    );

    let resp = admin.send(Method::GET, "/metrics", None, None).await?;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "metrics needs its token"
    );
    assert!(www_authenticate(&resp).starts_with("Bearer"));
    let resp = admin.send(Method::GET, "/metrics", Some(NEW), None).await?;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "an admin token is not the metrics token"
    );
    let resp = admin
        .send(Method::GET, "/metrics", Some(METRICS), None)
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await?.contains("recordsync_"));
    let resp = admin
        .send(Method::GET, "/paused", Some(METRICS), None)
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the metrics token opens nothing else"
    );
    let resp = admin.send(Method::GET, "/healthz", None, None).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    admin.stop().await?;
    env.finish().await
}

#[tokio::test]
async fn an_unknown_host_is_refused_even_with_a_valid_token() -> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let with_tokens = Admin::serve(&env, roles()?.with_hosts(["admin.example.test"])).await?;
    // Without tokens too: the open loopback API is what DNS rebinding goes after.
    let open = Admin::serve(&env, Auth::default()).await?;
    for (admin, token) in [(&with_tokens, Some(VIEWER)), (&open, None)] {
        let port = admin.url.rsplit(':').next().unwrap_or_default().to_owned();
        let get = |host: String| {
            let mut req = admin
                .http
                .get(format!("{}/conflicts", admin.url))
                .header("host", host);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send()
        };
        for evil in [
            format!("evil.example:{port}"),
            "evil.example".to_owned(),
            format!("localhost.evil.example:{port}"),
        ] {
            let resp = get(evil.clone()).await?;
            assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST, "{evil}");
            let body: Value = resp.json().await?;
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("RECORDSYNC_ADMIN_HOSTS"), "{body}");
        }
        for good in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ] {
            let resp = get(good.clone()).await?;
            assert_eq!(resp.status(), StatusCode::OK, "{good}");
        }
        // Health checks answer whatever the Host.
        let resp = admin
            .http
            .get(format!("{}/healthz", admin.url))
            .header("host", "evil.example")
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = with_tokens
        .http
        .get(format!("{}/conflicts", with_tokens.url))
        .header("host", "Admin.Example.Test:443")
        .bearer_auth(VIEWER)
        .send()
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a configured name is accepted"
    );
    let resp = open
        .http
        .get(format!("{}/conflicts", open.url))
        .header("host", "admin.example.test")
        .send()
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::MISDIRECTED_REQUEST,
        "names are configured per API"
    );
    with_tokens.stop().await?;
    open.stop().await?;
    env.finish().await
}

#[tokio::test]
async fn a_resolution_names_a_candidate_or_an_override_with_a_reason_credited_to_the_token()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    // A work order synced the normal way: its ticket is linked to it.
    let linked = env
        .kintone_create(json!({"work_order_no": "WO-700", "件名": "Already linked"}))
        .await?;
    env.settle("write-back", || env.written_back(&linked))
        .await?;
    let taken = env
        .store
        .links(RULE)
        .await?
        .into_iter()
        .find(|l| l.source_record_id == linked)
        .and_then(|l| l.target_id)
        .context("the first work order's link")?;
    // Two candidates for the next one, and an unrelated third ticket.
    let a = env
        .helpdesk_seed(json!({"subject": "A", "external_id": "555"}))
        .await?;
    let b = env
        .helpdesk_seed(json!({"subject": "B", "external_id": "555"}))
        .await?;
    let third = env
        .helpdesk_seed(json!({"subject": "Unrelated", "external_id": "556"}))
        .await?;
    let id = env
        .kintone_create(json!({"work_order_no": "WO-555", "件名": "Which one?"}))
        .await?;
    let conflict = env.open_conflict(&id).await?;
    assert_eq!(conflict.kind, "several_matches");
    let candidates: Vec<String> = conflict.detail["candidates"]
        .as_array()
        .context("candidates")?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let mut sorted = candidates.clone();
    sorted.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(sorted, expected);

    let admin = Admin::serve(&env, roles()?).await?;
    let path = format!("/conflicts/{}/resolve", conflict.id);
    let resolve = |body: Value| {
        let admin = &admin;
        let path = path.clone();
        async move {
            let resp = admin
                .send(Method::POST, &path, Some(OPERATOR), Some(&body))
                .await?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };

    // A record that is not a candidate: refused, naming the candidates.
    let (status, body) = resolve(json!({"target_id": third})).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "not_a_candidate");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&a) && message.contains(&b), "{body}");
    // An override needs a reason.
    for reason in [json!(null), json!(""), json!("   ")] {
        let (status, body) =
            resolve(json!({"target_id": third, "override": true, "reason": reason})).await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "invalid");
    }
    // A record another work order is linked to: refused, naming that work order, even
    // with an override.
    let (status, body) =
        resolve(json!({"target_id": taken, "override": true, "reason": "it is the same order"}))
            .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "already_linked");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("source record {linked}")),
        "{body}"
    );
    assert!(
        env.store
            .conflicts("open")
            .await?
            .iter()
            .any(|c| c.id == conflict.id),
        "refused resolutions leave the conflict open"
    );

    // An override with a reason is accepted; the actor is the token's name, not `by`.
    let reason = "the customer merged both orders into the third ticket";
    let (status, body) = resolve(json!({
        "target_id": third,
        "override": true,
        "reason": reason,
        "by": "someone-else",
    }))
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    env.settle("the resolution", || async {
        Ok(env
            .store
            .links(RULE)
            .await?
            .iter()
            .any(|l| l.source_record_id == id && l.target_id.as_deref() == Some(third.as_str())))
    })
    .await?;
    env.settle("the conflict closes", || async {
        Ok(!env
            .store
            .conflicts("open")
            .await?
            .iter()
            .any(|c| c.id == conflict.id))
    })
    .await?;
    let history = env.history(&id).await?;
    let overridden = format!(
        "override_chosen: olga chose helpdesk record {third}, which is not among the candidates ({}), by override: {reason}",
        candidates.join(", ")
    );
    assert!(history.contains(&overridden), "{history:#?}");
    assert!(
        history
            .iter()
            .any(|h| h.starts_with("resolved: olga resolved the link")),
        "{history:#?}"
    );
    assert!(
        history.iter().all(|h| !h.contains("someone-else")),
        "{history:#?}"
    );
    let rows = env.store.history(RULE, &id).await?;
    assert!(
        rows.iter()
            .any(|r| r.detail["reason"] == reason && r.detail["by"] == "olga"),
        "the reason is in the entry's facts too"
    );
    admin.stop().await?;
    env.finish().await
}

#[tokio::test]
async fn a_worker_refuses_an_open_admin_api_on_a_network_address() -> anyhow::Result<()> {
    // The check itself.
    let e = Access::new(Auth::default(), "0.0.0.0:8081".parse()?)
        .expect_err("no tokens on all interfaces")
        .to_string();
    assert!(e.contains("RECORDSYNC_ADMIN_TOKENS"), "{e}");
    assert!(Access::new(Auth::default(), "127.0.0.1:8081".parse()?).is_ok());
    assert!(Access::new(roles()?, "0.0.0.0:8081".parse()?).is_ok());

    // And the worker: given a listener on all interfaces and no tokens in its
    // environment, it stops with that error instead of serving.
    let env = Env::start_with(EnvOptions {
        workers: 0,
        ..EnvOptions::default()
    })
    .await?;
    let listener = TcpListener::bind("0.0.0.0:0").await?;
    let stop = CancellationToken::new();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        worker_for(&env)?.run(Some(listener), stop.clone()),
    )
    .await
    .context("the worker did not refuse at once")?;
    stop.cancel();
    let e = outcome
        .expect_err("an open admin API on 0.0.0.0")
        .to_string();
    assert!(e.contains("RECORDSYNC_ADMIN_TOKENS"), "{e}");
    assert!(e.contains("0.0.0.0:"), "{e}");
    env.finish().await
}
