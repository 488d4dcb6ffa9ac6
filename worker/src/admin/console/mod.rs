//! The web console: server-rendered HTML pages for operators and support people, on
//! the admin listener beside the API. The pages are templates (`worker/console/
//! templates/`, rendered with `minijinja`, every value escaped); the actions are plain
//! HTML forms that post and redirect, so the console needs no script at all.
//!
//! Access is the API's own: the same tokens and roles (`crate::auth`). A person signs
//! in once with a token; the console's cookie then holds a session sealed under that
//! token (`Auth::seal_session`: the token's name and an expiry 8 hours on, never the
//! token itself), `HttpOnly`, `SameSite=Strict` and limited to `/console` (a script on
//! the page could not read it, and there is no script). The API does not take the
//! cookie. A client may send `Authorization: Bearer` instead. Reading a page needs
//! a viewer, every action an operator. A post must come from the console itself: the
//! browser's `Origin` / `Sec-Fetch-Site` say so, and the form carries a token derived
//! from the signed-in token, which another site cannot know. Without tokens (an open
//! API, loopback only) there is no sign-in and every action is allowed, as in the API.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use super::AdminState;
use crate::auth::{Access, SESSION_SECONDS};
use guard::{COOKIE, Session, guard};

mod conflicts;
mod dead_letters;
mod guard;
mod pages;
mod records;
mod rules;

/// What the pages may load: their own style sheet, nothing else; forms post only to
/// the console.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The console's pages and actions, behind [`guard`].
pub(super) fn router(state: AdminState, access: Access) -> Router {
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/console.css", get(css))
        .route("/console/records", get(records::records))
        .route("/console/records/{rule}/{record_id}", get(records::record))
        .route("/console/conflicts", get(conflicts::conflicts))
        .route("/console/conflicts/{id}/resolve", post(conflicts::resolve))
        .route("/console/conflicts/{id}/dismiss", post(conflicts::dismiss))
        .route("/console/dead-letters", get(dead_letters::dead_letters))
        .route("/console/dead-letters/{id}", get(dead_letters::dead_letter))
        .route(
            "/console/dead-letters/{id}/replay",
            post(dead_letters::replay),
        )
        .route("/console/rules", get(rules::rules))
        .route("/console/pause", post(rules::pause))
        .route("/console/resume", post(rules::resume))
        .route("/console/reconcile", get(pages::reconcile))
        .route_layer(middleware::from_fn_with_state(access.clone(), guard))
        .with_state(ConsoleState {
            admin: state,
            access,
        })
}

/// What the console's handlers read: the admin state, and the access rules (for the
/// sign-in).
#[derive(Clone)]
pub(super) struct ConsoleState {
    admin: AdminState,
    access: Access,
}

/// The templates, loaded once; an undefined value is an error, not an empty string, so
/// that a misspelt name fails the tests that render every page.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in [
            (
                "base.html",
                include_str!("../../../console/templates/base.html"),
            ),
            (
                "login.html",
                include_str!("../../../console/templates/login.html"),
            ),
            (
                "message.html",
                include_str!("../../../console/templates/message.html"),
            ),
            (
                "overview.html",
                include_str!("../../../console/templates/overview.html"),
            ),
            (
                "records.html",
                include_str!("../../../console/templates/records.html"),
            ),
            (
                "record.html",
                include_str!("../../../console/templates/record.html"),
            ),
            (
                "conflicts.html",
                include_str!("../../../console/templates/conflicts.html"),
            ),
            (
                "dead_letters.html",
                include_str!("../../../console/templates/dead_letters.html"),
            ),
            (
                "dead_letter.html",
                include_str!("../../../console/templates/dead_letter.html"),
            ),
            (
                "rules.html",
                include_str!("../../../console/templates/rules.html"),
            ),
            (
                "reconcile.html",
                include_str!("../../../console/templates/reconcile.html"),
            ),
        ] {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("the console template {name} does not parse: {e}"));
        }
        env
    })
}

/// A page: the template rendered with `context`, under the console's headers.
fn render(status: StatusCode, template: &str, context: &Value) -> Response {
    let html = templates()
        .get_template(template)
        .and_then(|t| t.render(minijinja::value::Serde(context)));
    match html {
        Ok(html) => {
            let mut resp = (status, html).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            secure_headers(h);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            tracing::error!(template, error = %e, "a console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the console page {template} failed to render: {e}\n"),
            )
                .into_response()
        }
    }
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it a browser sends `Origin: null` with the console's own
    // posts, which `same_origin` must refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// A page that only says something: a refusal, an error, a missing record.
fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    render(
        status,
        "message.html",
        &json!({"title": title, "message": message, "who": null, "nav": ""}),
    )
}

async fn css() -> Response {
    let mut resp = include_str!("../../../console/console.css").into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure_headers(h);
    resp
}

async fn login_page(State(s): State<ConsoleState>) -> Response {
    if s.access.auth().is_open() {
        return Redirect::to("/console").into_response();
    }
    render(
        StatusCode::OK,
        "login.html",
        &json!({"title": "Sign in", "who": null, "nav": "", "error": null}),
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim();
    let Some(p) = s.access.auth().authenticate(token) else {
        tracing::warn!("console sign-in refused: unknown token");
        return render(
            StatusCode::UNAUTHORIZED,
            "login.html",
            &json!({"title": "Sign in", "who": null, "nav": "", "error": "That token is not known. Check it and try again, or ask for a new one."}),
        );
    };
    tracing::info!(token = %p.name, role = %p.role, "console sign-in");
    let expires_at = chrono::Utc::now().timestamp() + SESSION_SECONDS;
    let Some(sealed) = s.access.auth().seal_session(token, expires_at) else {
        return message_page(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            "That token is not known.",
        );
    };
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{COOKIE}={sealed}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to("/console").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "recordsync_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    resp
}
