//! The console's access: who is signed in ([`Session`], from the sealed cookie or a
//! bearer token), the middleware in front of every page and action ([`guard`]: the
//! Host check, posts only from the console itself, a viewer to read and an operator
//! to act), and the form-token extractor every action takes ([`SignedForm`]).

use axum::extract::{Form, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::message_page;
use crate::auth::{Access, Principal, Role, hex};

/// The cookie that holds the sealed session.
pub(super) const COOKIE: &str = "recordsync_console";

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
    pub(super) fn actor(&self) -> String {
        self.principal
            .as_ref()
            .map_or_else(|| "an operator (console)".to_owned(), |p| p.name.clone())
    }

    /// Whether a posted form token is this session's (compared in constant time).
    fn form_ok(&self, posted: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(posted.as_bytes()))
    }

    /// What every page shows of the session: who, and the form token.
    pub(super) fn context(&self) -> Value {
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
pub(super) async fn guard(State(access): State<Access>, mut req: Request, next: Next) -> Response {
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

/// A console form: it carries the session's form token in a hidden `csrf` field.
pub(super) trait Signed {
    /// The posted form token.
    fn csrf(&self) -> &str;
}

/// The form-token extractor: a console action's form, with the session that posted
/// it, only when the form carries that session's form token. Otherwise the action is
/// not carried out: a 403 page says the form is out of date.
pub(super) struct SignedForm<T> {
    /// Who posted.
    pub(super) session: Session,
    /// What.
    pub(super) form: T,
}

impl<S, T> FromRequest<S> for SignedForm<T>
where
    S: Send + Sync,
    T: Signed + DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let Some(session) = req.extensions().get::<Session>().cloned() else {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "the console's guard did not run for this action\n",
            )
                .into_response());
        };
        let Form(form) = Form::<T>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !session.form_ok(form.csrf()) {
            return Err(stale_form());
        }
        Ok(SignedForm { session, form })
    }
}

/// A form whose token is not the session's: not carried out.
fn stale_form() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Not done",
        "This form is out of date or was not sent from your console page. Go back, reload the page and try again.",
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

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
