//! The checks in front of every admin route: the `Host` check against DNS rebinding,
//! then the bearer token, as extractors — [`Require`] for a role, [`MetricsToken`]
//! for `/metrics` — which the router installs on each route from its entry in
//! [`crate::admin::ROUTES`].

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri, header};
use axum::middleware::from_extractor_with_state;
use axum::routing::MethodRouter;

use super::{Auth, Principal, Requirement, Role};
use super::{AuthError, HOSTS_VAR, METRICS_TOKEN_VAR, TOKENS_VAR};
use crate::admin::ApiError;

/// The access rules of one admin listener: its credentials and its own address.
#[derive(Debug, Clone)]
pub struct Access {
    auth: Arc<Auth>,
    local: SocketAddr,
}

impl Access {
    /// The access rules for a listener on `local`. Refuses an open API (no tokens) on
    /// anything but a loopback address.
    pub fn new(auth: Auth, local: SocketAddr) -> Result<Access, AuthError> {
        auth.check_listener(local)?;
        Ok(Access {
            auth: Arc::new(auth),
            local,
        })
    }

    /// [`Access::new`] with the settings from the process environment.
    pub fn from_env(local: SocketAddr) -> Result<Access, AuthError> {
        Access::new(Auth::from_env()?, local)
    }

    /// The credentials.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Whether the listener answers to the request's `Host` (against DNS rebinding):
    /// a 421 `unknown_host` when it does not.
    pub fn check_host(&self, headers: &HeaderMap, uri: &Uri, route: &str) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.as_str().to_owned()));
        match host {
            Some(host) if self.auth.host_allowed(&host, self.local) => Ok(()),
            Some(host) => {
                let shown: String = host.chars().take(100).collect();
                tracing::warn!(host = %shown, route, "admin request refused: unknown Host");
                Err(ApiError::UnknownHost(format!(
                    "this admin API does not answer to Host \"{shown}\": use a loopback name or address, the listener's own address, or a name listed in {HOSTS_VAR}"
                )))
            }
            None => Err(ApiError::UnknownHost(
                "the request has no Host header".into(),
            )),
        }
    }

    /// Who the request's bearer token belongs to, when its role is at least `needed`.
    /// `None` on an open API (no tokens: allowed only on a loopback listener, checked
    /// at start).
    fn principal(
        &self,
        parts: &Parts,
        needed: Role,
        route: &str,
    ) -> Result<Option<Principal>, ApiError> {
        if self.auth.is_open() {
            return Ok(None);
        }
        let principal = match bearer(&parts.headers) {
            None => {
                return Err(ApiError::Unauthorized {
                    invalid_token: false,
                    message: format!(
                        "send Authorization: Bearer <token>, a token from {TOKENS_VAR}"
                    ),
                });
            }
            Some(t) => match t.and_then(|t| self.auth.authenticate(t)) {
                Some(p) => p.clone(),
                None => {
                    tracing::warn!(route, "admin request refused: unknown token");
                    return Err(ApiError::Unauthorized {
                        invalid_token: true,
                        message: "the token is not valid".into(),
                    });
                }
            },
        };
        if principal.role < needed {
            tracing::warn!(token = %principal.name, role = %principal.role, route, "admin request refused: role too weak");
            return Err(ApiError::Forbidden(format!(
                "the token \"{}\" has the role {}; {} {route} needs {needed}",
                principal.name, principal.role, parts.method
            )));
        }
        Ok(Some(principal))
    }
}

/// The route template a request matched (its path when it matched none).
pub(crate) fn route_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned())
}

/// The bearer token of a request: `None` without an `Authorization` header,
/// `Some(None)` with one that is not a readable bearer token.
fn bearer(headers: &HeaderMap) -> Option<Option<&str>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    });
    Some(token)
}

/// A role as a type, for [`Require`].
pub trait Needs: Send + Sync + 'static {
    /// The weakest role let through.
    const ROLE: Role;
}

/// [`Role::Viewer`], as a type.
pub struct Viewer;
/// [`Role::Operator`], as a type.
pub struct Operator;
/// [`Role::Admin`], as a type.
pub struct Admin;

impl Needs for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl Needs for Operator {
    const ROLE: Role = Role::Operator;
}
impl Needs for Admin {
    const ROLE: Role = Role::Admin;
}

/// The role extractor: the request passed the Host check and carries a bearer token
/// whose role is at least `R` (any request, on an open API). Its [`Principal`] is
/// also left in the request's extensions, for [`Caller`].
pub struct Require<R: Needs> {
    /// Who; `None` on an open API.
    pub principal: Option<Principal>,
    role: PhantomData<R>,
}

impl<R: Needs> FromRequestParts<Access> for Require<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, access: &Access) -> Result<Self, ApiError> {
        let route = route_of(parts);
        access.check_host(&parts.headers, &parts.uri, &route)?;
        let principal = access.principal(parts, R::ROLE, &route)?;
        if let Some(p) = &principal {
            parts.extensions.insert(p.clone());
        }
        Ok(Require {
            principal,
            role: PhantomData,
        })
    }
}

/// The extractor in front of `/metrics`: the Host check, then the metrics token when
/// one is configured (the route is open otherwise).
pub struct MetricsToken;

impl FromRequestParts<Access> for MetricsToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, access: &Access) -> Result<Self, ApiError> {
        let route = route_of(parts);
        access.check_host(&parts.headers, &parts.uri, &route)?;
        if access.auth.metrics.is_none() {
            return Ok(MetricsToken);
        }
        match bearer(&parts.headers) {
            Some(Some(t)) if access.auth.is_metrics_token(t) => Ok(MetricsToken),
            Some(_) => Err(ApiError::Unauthorized {
                invalid_token: true,
                message: format!("the token is not {METRICS_TOKEN_VAR}"),
            }),
            None => Err(ApiError::Unauthorized {
                invalid_token: false,
                message: format!("/metrics needs Authorization: Bearer <{METRICS_TOKEN_VAR}>"),
            }),
        }
    }
}

/// Who is calling, for a handler that records an actor: the [`Principal`] that
/// [`Require`] let through, `None` on an open API.
pub struct Caller(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller(parts.extensions.get::<Principal>().cloned()))
    }
}

/// `route` behind what `needs` asks: [`Require`] for a role, [`MetricsToken`] for the
/// metrics, nothing for an open route. The router calls this for each entry of
/// [`crate::admin::ROUTES`], so a route's role is stated there and only there.
pub(crate) fn guarded<S>(
    route: MethodRouter<S>,
    needs: Requirement,
    access: &Access,
) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let access = access.clone();
    match needs {
        Requirement::Open => route,
        Requirement::Metrics => {
            route.route_layer(from_extractor_with_state::<MetricsToken, _>(access))
        }
        Requirement::Role(Role::Viewer) => {
            route.route_layer(from_extractor_with_state::<Require<Viewer>, _>(access))
        }
        Requirement::Role(Role::Operator) => {
            route.route_layer(from_extractor_with_state::<Require<Operator>, _>(access))
        }
        Requirement::Role(Role::Admin) => {
            route.route_layer(from_extractor_with_state::<Require<Admin>, _>(access))
        }
    }
}
