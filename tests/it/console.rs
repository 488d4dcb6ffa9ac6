//! The web console: signing in with the admin tokens, every page rendered from the
//! store with every value escaped, posts refused from another site or with a stale
//! form, and a person's walk through every page in a real browser (Debian's Chromium
//! driven by playwright-core, `tests/console/walk.mjs`) that resolves a conflict,
//! replays a dead letter, and pauses and resumes a rule.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Env, EnvOptions, RULE};

use crate::security::{ADMIN, Admin, OPERATOR, VIEWER, roles};

/// What the console is shown: a linked record, a conflict with two candidates, a
/// dead letter and a reconcile run.
struct Scene {
    /// The linked work order, and its ticket.
    record: String,
    target: String,
    /// The work order whose subject is markup.
    markup: String,
    /// The conflict, and the candidate the walk links.
    conflict: i64,
    candidate: String,
    /// The conflict's record.
    undecided: String,
    /// The stored dead letter, and its record.
    dead_letter: i64,
    doomed: String,
}

async fn scene(env: &Env) -> anyhow::Result<Scene> {
    // Older tickets first, so that no ticket id is also a work order's record id and a
    // search by either finds one record.
    for n in 0..10 {
        env.helpdesk_seed(
            json!({"subject": format!("Older {n}"), "external_id": format!("OLD-{n}")}),
        )
        .await?;
    }
    let record = env
        .kintone_create(json!({"work_order_no": "WO-900", "件名": "Boiler check"}))
        .await?;
    let markup = env
        .kintone_create(
            json!({"work_order_no": "WO-901", "件名": "<img src=x onerror=alert(1)> & co"}),
        )
        .await?;
    env.settle("both written back", || async {
        Ok(env.written_back(&record).await? && env.written_back(&markup).await?)
    })
    .await?;
    let target = env
        .store
        .link(RULE, &record)
        .await?
        .and_then(|l| l.target_id)
        .context("the link")?;

    let a = env
        .helpdesk_seed(json!({"subject": "A", "external_id": "950"}))
        .await?;
    env.helpdesk_seed(json!({"subject": "B", "external_id": "950"}))
        .await?;
    let undecided = env
        .kintone_create(json!({"work_order_no": "WO-950", "件名": "Which one?"}))
        .await?;
    let conflict = env.open_conflict(&undecided).await?.id;

    // Three refusals in a row: the record's every attempt fails, then the cause clears.
    env.admin_post("/_admin/faults", json!({"system": "helpdesk", "method": "POST", "path_prefix": "/api/tickets", "status": 500, "count": 3})).await?;
    let doomed = env
        .kintone_create(json!({"work_order_no": "WO-960", "件名": "Doomed, then fixed"}))
        .await?;
    env.settle("the stored dead letter", || async {
        Ok(env
            .store
            .dead_letters(&store::DeadFilter::default(), 10)
            .await?
            .iter()
            .any(|d| d.record_id.as_deref() == Some(doomed.as_str())))
    })
    .await?;
    let dead_letter = env
        .store
        .dead_letters(&store::DeadFilter::default(), 10)
        .await?
        .into_iter()
        .find(|d| d.record_id.as_deref() == Some(doomed.as_str()))
        .context("the dead letter")?
        .id;

    let resp = env
        .http
        .post(format!("{}/reconcile", env.admin_urls[0]))
        .json(&json!({"rule": RULE, "dry_run": true, "settle_seconds": 0}))
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().as_u16() == 202,
        "reconcile: {}",
        resp.status()
    );
    tests::wait_for("the run to be stored", Duration::from_secs(30), || async {
        Ok(!env.store.reconcile_runs(Some(RULE), 1).await?.is_empty())
    })
    .await?;
    Ok(Scene {
        record,
        target,
        markup,
        conflict,
        candidate: a,
        undecided,
        dead_letter,
        doomed,
    })
}

/// Waits until the conflict's record is linked to the candidate the resolution chose.
async fn resolution_applied(env: &Env, scene: &Scene) -> anyhow::Result<()> {
    env.settle("the resolution applied", || async {
        Ok(env
            .store
            .link(RULE, &scene.undecided)
            .await?
            .and_then(|l| l.target_id)
            == Some(scene.candidate.clone()))
    })
    .await
}

/// A client that shows redirects instead of following them, and keeps no cookies.
fn client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// An HTML form's body.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The form token a page carries (the value of its first hidden `csrf` field).
fn form_token(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].split('"').next()?.to_owned())
}

#[tokio::test]
async fn the_console_signs_in_with_a_token_escapes_every_value_and_refuses_forged_posts()
-> anyhow::Result<()> {
    let env = Env::start_with(EnvOptions {
        max_attempts: 3,
        ..EnvOptions::default()
    })
    .await?;
    let scene = scene(&env).await?;
    let admin = Admin::serve(&env, roles()?).await?;
    let http = client()?;
    let url = |path: &str| format!("{}{path}", admin.url);

    // Without a sign-in a page sends the person to sign in; the API answers 401 still.
    let resp = http.get(url("/console")).send().await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&resp, "location"), "/console/login");
    let resp = http.get(url("/console/login")).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, "content-security-policy").starts_with("default-src 'none'"));
    assert_eq!(header(&resp, "x-frame-options"), "DENY");
    let login = resp.text().await?;
    assert!(
        login.contains("<label for=\"token\">Token</label>"),
        "{login}"
    );

    // A wrong token is refused in words; a right one signs in with a cookie no script
    // can read, limited to the console.
    let resp = http
        .post(url("/console/login"))
        .header("content-type", FORM)
        .body(form(&[("token", "not-a-token-of-ours-0123456789")]))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&resp, "set-cookie").is_empty());
    assert!(resp.text().await?.contains("That token is not known"));
    let sign_in = |token: &'static str| {
        let http = http.clone();
        let to = url("/console/login");
        async move {
            let resp = http
                .post(to)
                .header("content-type", FORM)
                .body(form(&[("token", token)]))
                .send()
                .await?;
            anyhow::ensure!(resp.status() == StatusCode::SEE_OTHER, "{}", resp.status());
            let cookie = header(&resp, "set-cookie");
            anyhow::ensure!(
                cookie.contains("HttpOnly")
                    && cookie.contains("SameSite=Strict")
                    && cookie.contains("Path=/console"),
                "{cookie}"
            );
            anyhow::ensure!(
                !cookie.contains(token),
                "the cookie shows the token as it is"
            );
            Ok::<_, anyhow::Error>(cookie.split(';').next().unwrap_or_default().to_owned())
        }
    };
    let olga = sign_in(OPERATOR).await?;
    let vera = sign_in(VIEWER).await?;
    // The cookie is a sealed session, not a token: the API does not take it.
    let sealed = olga.split_once('=').map(|(_, v)| v).unwrap_or_default();
    let resp = http
        .get(url("/conflicts"))
        .bearer_auth(sealed)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http
        .get(url("/conflicts"))
        .header("cookie", &olga)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let get = |path: String, cookie: String| {
        let http = http.clone();
        let to = url(&path);
        async move {
            let resp = http.get(to).header("cookie", cookie).send().await?;
            let status = resp.status();
            Ok::<_, anyhow::Error>((status, resp.text().await?))
        }
    };

    // Every page renders for a viewer, from the store.
    let record_page = format!("/console/records/{RULE}/{}", scene.record);
    let dead_page = format!("/console/dead-letters/{}", scene.dead_letter);
    for (path, shows) in [
        ("/console".to_owned(), format!(">{RULE}</th>")),
        ("/console/records".to_owned(), "Record id".to_owned()),
        (record_page.clone(), format!("record {}", scene.target)),
        (
            "/console/conflicts".to_owned(),
            format!("Conflict {}: several matches", scene.conflict),
        ),
        (
            "/console/dead-letters".to_owned(),
            format!("/console/dead-letters/{}", scene.dead_letter),
        ),
        (dead_page.clone(), "helpdesk answered 500".to_owned()),
        ("/console/rules".to_owned(), format!("Pause {RULE}")),
        ("/console/reconcile".to_owned(), "report only".to_owned()),
    ] {
        let (status, html) = get(path.clone(), vera.clone()).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert!(
            html.contains("Signed in as <strong>vera</strong> (viewer)"),
            "{path}"
        );
        if path != "/console/rules" {
            assert!(html.contains(&shows), "{path} shows {shows}: {html}");
        }
    }
    // A viewer is not offered an action; an operator is.
    let (_, conflicts) = get("/console/conflicts".into(), vera.clone()).await?;
    assert!(!conflicts.contains("Link to"), "{conflicts}");
    assert!(conflicts.contains("Your token reads only"));
    let (_, conflicts) = get("/console/conflicts".into(), olga.clone()).await?;
    assert!(
        conflicts.contains(&format!("Link to {}", scene.candidate)),
        "{conflicts}"
    );

    // Searching by the ticket's id finds the work order.
    let resp = http
        .get(url(&format!("/console/records?id={}", scene.target)))
        .header("cookie", &vera)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&resp, "location"), record_page);
    let (status, html) = get("/console/records?id=no-such-record".into(), vera.clone()).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No record no-such-record is known"), "{html}");
    let (status, _) = get(
        format!("/console/records/{RULE}/no-such-record"),
        vera.clone(),
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Markup in the data is shown as text.
    let (_, html) = get(
        format!("/console/records/{RULE}/{}", scene.markup),
        vera.clone(),
    )
    .await?;
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt; &amp; co"),
        "{html}"
    );
    assert!(!html.contains("<img"), "{html}");

    // Posts: a viewer may not act; a post from another site or with another sign-in's
    // form token is refused; nothing of it happens.
    let resolve = url(&format!("/console/conflicts/{}/resolve", scene.conflict));
    let ada = sign_in(ADMIN).await?;
    let ada_form = form_token(&get("/console/rules".into(), ada.clone()).await?.1)
        .context("the admin's form token")?;
    let olga_form = form_token(&conflicts).context("the operator's form token")?;
    assert_ne!(ada_form, olga_form);
    let post = |cookie: &str, csrf: &str, origin: Option<&str>| {
        let mut req = http
            .post(resolve.clone())
            .header("cookie", cookie)
            .header("content-type", FORM)
            .body(form(&[
                ("csrf", csrf),
                ("target_id", scene.candidate.as_str()),
            ]));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let resp = post(&vera, &olga_form, None).await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await?.contains("needs an operator"));
    let resp = post(&olga, &olga_form, Some("http://evil.example")).await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await?.contains("from another site"));
    let resp = post(&olga, &ada_form, None).await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await?.contains("out of date"));
    let resp = http
        .post(resolve.clone())
        .header("content-type", FORM)
        .body(form(&[("csrf", olga_form.as_str())]))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "no sign-in");
    let open = env.store.conflicts("open").await?;
    assert!(
        open.iter().any(|c| c.id == scene.conflict),
        "a refused post resolved it"
    );
    // An unknown Host is refused before anything else (DNS rebinding).
    let resp = http
        .get(url("/console"))
        .header("host", "evil.example")
        .header("cookie", &olga)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);

    // The operator's resolution, from their own page: credited to their token's name.
    let resp = post(&olga, &olga_form, Some(&admin.url)).await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header(&resp, "location"),
        "/console/conflicts?done=resolved"
    );
    resolution_applied(&env, &scene).await?;
    let history = env.history(&scene.undecided).await?;
    assert!(history.iter().any(|h| h.contains("olga")), "{history:#?}");

    // Signing out clears the cookie, a viewer's too.
    for cookie in [&olga, &vera] {
        let resp = http
            .post(url("/console/logout"))
            .header("cookie", cookie)
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert!(header(&resp, "set-cookie").contains("Max-Age=0"));
    }
    admin.stop().await?;
    env.finish().await
}

#[tokio::test]
async fn a_person_walks_every_console_page_in_chromium_and_resolves_a_conflict()
-> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console");
    tests::tools()?;
    let env = Env::start_with(EnvOptions {
        max_attempts: 3,
        ..EnvOptions::default()
    })
    .await?;
    let scene = scene(&env).await?;
    let admin = Admin::serve(&env, roles()?).await?;
    // RECORDSYNC_SCREENSHOTS=1 refreshes the pictures of the book's console chapter, docs/src/console/.
    let shots = if std::env::var("RECORDSYNC_SCREENSHOTS").is_ok_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/src/console")
    } else {
        std::env::temp_dir().join(format!("recordsync-console-{}", std::process::id()))
    };
    let walk = json!({
        "rule": RULE, "record": scene.record, "target": scene.target,
        "conflict": scene.conflict, "candidate": scene.candidate, "dead_letter": scene.dead_letter,
    });
    // The walk gives itself 20 s a step; node runs beside the test's runtime.
    let mut node = std::process::Command::new("node");
    node.arg(dir.join("walk.mjs"))
        .current_dir(&dir)
        .env("CONSOLE_URL", &admin.url)
        .env("CONSOLE_TOKEN", OPERATOR)
        .env("WALK", walk.to_string())
        .env("SCREENSHOTS", &shots);
    let out = tokio::task::spawn_blocking(move || node.output())
        .await?
        .context("run node")?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the walk failed: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(said.trim().lines().last().unwrap_or_default())
        .with_context(|| format!("the walk's report: {said}"))?;
    assert_eq!(
        report["done"],
        json!([
            "login",
            "overview",
            "records",
            "record",
            "conflicts",
            "dead-letters",
            "dead-letter",
            "rules",
            "reconcile",
            "signed out"
        ]),
        "{report}"
    );

    // What the clicks did, in the store and the systems.
    resolution_applied(&env, &scene).await?;
    let resolved = env.store.conflicts("resolved").await?;
    assert!(resolved.iter().any(|c| c.id == scene.conflict));
    env.settle("the replayed record written back", || {
        env.written_back(&scene.doomed)
    })
    .await?;
    assert_eq!(env.tickets_for("WO-960").await?.len(), 1);
    let dead = env
        .store
        .dead_letter(scene.dead_letter)
        .await?
        .context("kept")?;
    assert_eq!(dead.status, "replayed");
    assert!(env.store.paused().await?.is_empty(), "the rule was resumed");
    let history = env.history_of(RULE, &scene.undecided).await?;
    assert!(history.iter().any(|h| h.contains("olga")), "{history:#?}");
    if !shots.starts_with(std::env::temp_dir()) {
        eprintln!("screenshots written to {}", shots.display());
    } else {
        let _ = std::fs::remove_dir_all(&shots);
    }
    admin.stop().await?;
    env.finish().await
}
