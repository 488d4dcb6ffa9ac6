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
use axum::extract::{Form, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AdminState;
use crate::auth::{Access, Principal, Role, SESSION_SECONDS, hex};

mod pages;

/// The cookie that holds the sealed session.
const COOKIE: &str = "recordsync_console";
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
        .route("/console/records", get(pages::records))
        .route("/console/records/{rule}/{record_id}", get(pages::record))
        .route("/console/conflicts", get(pages::conflicts))
        .route("/console/conflicts/{id}/resolve", post(pages::resolve))
        .route("/console/conflicts/{id}/dismiss", post(pages::dismiss))
        .route("/console/dead-letters", get(pages::dead_letters))
        .route("/console/dead-letters/{id}", get(pages::dead_letter))
        .route("/console/dead-letters/{id}/replay", post(pages::replay))
        .route("/console/rules", get(pages::rules))
        .route("/console/pause", post(pages::pause))
        .route("/console/resume", post(pages::resume))
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

/// Who is signed in, and the form token their forms carry.
#[derive(Clone, Debug)]
pub(super) struct Session {
    /// The token's name and role; `None` on an open API (no tokens, loopback only).
    principal: Option<Principal>,
    /// What each form's hidden `csrf` field must hold.
    csrf: String,
}

impl Session {
    /// Who is recorded as acting.
    fn actor(&self) -> String {
        self.principal
            .as_ref()
            .map_or_else(|| "an operator (console)".to_owned(), |p| p.name.clone())
    }

    /// Whether a posted form token is this session's (compared in constant time).
    fn form_ok(&self, posted: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(posted.as_bytes()))
    }

    /// What every page shows of the session: who, and the form token.
    fn context(&self) -> Value {
        json!({
            "who": self.principal.as_ref().map(|p| json!({"name": p.name, "role": p.role.as_str()})),
            "can_act": self.principal.as_ref().is_none_or(|p| p.role >= Role::Operator),
            "csrf": self.csrf,
        })
    }
}

/// The form token of a sign-in (the sealed session, or a bearer token): derived from
/// it, so that it holds on every worker behind a load balancer and no other site can
/// compute it.
fn form_token(secret: &str) -> String {
    let d = Sha256::digest(format!("recordsync console form\n{secret}").as_bytes());
    hex(&d[..16])
}

/// What a request signs in with.
#[derive(Debug, PartialEq, Eq)]
enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// The console's cookie: a sealed session.
    Session(String),
}

impl Credential {
    /// Who it belongs to, now, and the form token of its forms.
    fn open(&self, access: &Access) -> Option<(Principal, String)> {
        let auth = access.auth();
        let (principal, secret) = match self {
            Credential::Bearer(t) => (auth.authenticate(t)?, t),
            Credential::Session(s) => (auth.open_session(s, chrono::Utc::now().timestamp())?, s),
        };
        Some((principal.clone(), form_token(secret)))
    }
}

/// What a request presents: `Authorization: Bearer`, else the console's cookie.
fn presented(headers: &HeaderMap) -> Option<Credential> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned())
    {
        return Some(Credential::Bearer(t));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find(|v| !v.is_empty())
        .map(|v| Credential::Session(v.to_owned()))
}

/// Whether a post comes from the console's own pages: a browser says where a request
/// comes from in `Sec-Fetch-Site` and `Origin`, and neither may name another site. A
/// client that sends neither (curl, a test) is not a browser tricked by another site.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match (text("origin"), text("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
    }
}

/// The console's middleware: the API's Host check; a post only from the console
/// itself; then the signed-in token (or a bearer token) with a role strong enough —
/// a viewer to read, an operator to act. Without a sign-in, a page redirects to the
/// sign-in page.
async fn guard(State(access): State<Access>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    if let Err(refused) = access.check_host(req.headers(), req.uri(), &route) {
        return refused.into_response();
    }
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reading && !same_origin(req.headers()) {
        tracing::warn!(route, "console post refused: from another site");
        return message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This action was sent from another site, not from the console's own page, so it was not carried out.",
        );
    }
    // Signing in and out needs no sign-in (a viewer, or an ended session, signs out).
    if matches!(
        route.as_str(),
        "/console/login" | "/console/logout" | "/console/console.css"
    ) {
        return next.run(req).await;
    }
    let auth = access.auth();
    let session = if auth.is_open() {
        Session {
            principal: None,
            csrf: form_token(""),
        }
    } else {
        let credential = presented(req.headers());
        match credential.as_ref().and_then(|c| c.open(&access)) {
            Some((p, csrf)) => Session {
                principal: Some(p),
                csrf,
            },
            None => {
                if credential.is_some() {
                    tracing::warn!(route, "console request refused: unknown token");
                }
                if reading {
                    return Redirect::to("/console/login").into_response();
                }
                return message_page(
                    StatusCode::UNAUTHORIZED,
                    "Sign in first",
                    "Your sign-in has ended or the token is no longer valid. Sign in again, then repeat the action.",
                );
            }
        }
    };
    let needed = if reading {
        Role::Viewer
    } else {
        Role::Operator
    };
    if let Some(p) = &session.principal
        && p.role < needed
    {
        tracing::warn!(token = %p.name, role = %p.role, route, "console request refused: role too weak");
        return message_page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!(
                "You are signed in as \"{}\", a {}. This action needs an {}: ask someone who has an operator's token.",
                p.name, p.role, needed
            ),
        );
    }
    req.extensions_mut().insert(session);
    next.run(req).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_read_among_others_and_a_bearer_token_comes_first() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "other=1; recordsync_consolex=zz; recordsync_console=6f6c6761.99.ab; last=2",
            ),
        );
        assert_eq!(
            presented(&h),
            Some(Credential::Session("6f6c6761.99.ab".into()))
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer bearer-wins-0123456789"),
        );
        assert_eq!(
            presented(&h),
            Some(Credential::Bearer("bearer-wins-0123456789".into()))
        );
        let mut cleared = HeaderMap::new();
        cleared.insert(
            header::COOKIE,
            HeaderValue::from_static("recordsync_console="),
        );
        assert_eq!(presented(&cleared), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }

    #[test]
    fn a_post_from_another_site_is_not_the_consoles() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&h(&[("host", "127.0.0.1:8081")])));
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:8081"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(same_origin(&h(&[
            ("host", "ops.example"),
            ("origin", "https://ops.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://evil.example"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8081"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8081"),
            ("sec-fetch-site", "same-site"),
        ])));
    }

    #[test]
    fn the_form_token_is_the_sign_ins_own() {
        let a = form_token("token-a-0123456789");
        assert_eq!(a, form_token("token-a-0123456789"));
        assert_ne!(a, form_token("token-b-0123456789"));
        assert_eq!(a.len(), 32);
        let s = Session {
            principal: None,
            csrf: a.clone(),
        };
        assert!(s.form_ok(&a));
        assert!(!s.form_ok(""));
        assert!(!s.form_ok(&form_token("token-b-0123456789")));
    }
}
