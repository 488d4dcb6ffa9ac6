//! The worker's admin HTTP API: health, metrics, a record's story, open conflicts,
//! dead letters, pauses, the ledger and the background jobs; and the console beside it.
//! Timelines are rendered from the append-only history, never from logs.
//!
//! This file holds the state the handlers read and [`ROUTES`], the one table of every
//! API route with the [`Requirement`] it asks of a request; [`router`] is built from
//! it, putting each route behind its role extractor ([`auth::guard`]), and a test holds
//! it to `worker/openapi.json`. The handlers live in one module per resource and
//! answer `Result<_, ApiError>` ([`error`]).

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};
use queue::Broker;
use store::Store;

use crate::metrics::Metrics;

pub mod auth;
mod conflicts;
mod console;
mod dead_letters;
pub mod error;
mod health;
mod jobs;
mod ledger;
mod pauses;
mod records;

use auth::{Access, Requirement, Role};
pub use error::ApiError;
pub(crate) use records::record_view;
pub use records::render_timeline;

/// What the admin API reads.
#[derive(Clone)]
pub struct AdminState {
    /// The processor (rules and connectors, for rehydration).
    pub processor: Arc<crate::step::Processor>,
    /// The store.
    pub store: Store,
    /// The broker.
    pub broker: Arc<Broker>,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// How long an event with no outcome is in flight before the ledger calls it
    /// unaccounted.
    pub ledger_settle: std::time::Duration,
    /// The time zone timelines are rendered in unless a request names another.
    pub time_zone: chrono_tz::Tz,
}

/// One API route: its method, its template, what it asks of a request, and its
/// handler (given the method filter to serve it under).
pub struct Route {
    /// The method (`GET` serves `HEAD` too).
    pub method: Method,
    /// The route template, as `worker/openapi.json` writes it.
    pub path: &'static str,
    /// What a request must bring: nothing, the metrics token, or a role.
    pub needs: Requirement,
    handler: fn(MethodFilter) -> MethodRouter<AdminState>,
}

const OPEN: Requirement = Requirement::Open;
const VIEWER: Requirement = Requirement::Role(Role::Viewer);
const OPERATOR: Requirement = Requirement::Role(Role::Operator);
const ADMIN: Requirement = Requirement::Role(Role::Admin);

const fn route(
    method: Method,
    path: &'static str,
    needs: Requirement,
    handler: fn(MethodFilter) -> MethodRouter<AdminState>,
) -> Route {
    Route {
        method,
        path,
        needs,
        handler,
    }
}

/// Every API route, once: the router is built from this table and `worker/openapi.json`
/// is checked against it (method, path and `x-role`). A new route is a line here, a
/// handler in its resource's module, and an operation in the document.
pub const ROUTES: &[Route] = &[
    route(Method::GET, "/healthz", OPEN, |m| on(m, health::healthz)),
    route(Method::GET, "/readyz", OPEN, |m| on(m, health::readyz)),
    route(Method::GET, "/metrics", Requirement::Metrics, |m| {
        on(m, health::metrics)
    }),
    // Records.
    route(Method::GET, "/records/{rule}/{record_id}", VIEWER, |m| {
        on(m, records::record)
    }),
    route(
        Method::GET,
        "/records/{rule}/{record_id}/timeline",
        VIEWER,
        |m| on(m, records::timeline),
    ),
    route(Method::GET, "/issues", VIEWER, |m| on(m, records::issues)),
    route(Method::GET, "/rules/{rule}/history", VIEWER, |m| {
        on(m, records::rule_history)
    }),
    route(Method::POST, "/rehydrate", OPERATOR, |m| {
        on(m, records::rehydrate)
    }),
    // Conflicts.
    route(Method::GET, "/conflicts", VIEWER, |m| {
        on(m, conflicts::conflicts)
    }),
    route(Method::POST, "/conflicts/{id}/resolve", OPERATOR, |m| {
        on(m, conflicts::resolve)
    }),
    route(Method::POST, "/conflicts/{id}/dismiss", OPERATOR, |m| {
        on(m, conflicts::dismiss)
    }),
    // Dead letters.
    route(Method::GET, "/dead-letters", VIEWER, |m| {
        on(m, dead_letters::dead_letters)
    }),
    route(Method::GET, "/dead-letters/{id}", VIEWER, |m| {
        on(m, dead_letters::dead_letter)
    }),
    route(Method::POST, "/dead-letters/replay", OPERATOR, |m| {
        on(m, dead_letters::replay)
    }),
    route(Method::POST, "/dead-letters/purge", ADMIN, |m| {
        on(m, dead_letters::purge)
    }),
    // Pauses.
    route(Method::POST, "/pause", OPERATOR, |m| on(m, pauses::pause)),
    route(Method::POST, "/resume", OPERATOR, |m| on(m, pauses::resume)),
    route(Method::GET, "/paused", VIEWER, |m| on(m, pauses::paused)),
    // The ledger.
    route(Method::GET, "/ledger", VIEWER, |m| on(m, ledger::ledger)),
    // Jobs and checks.
    route(Method::GET, "/resync", VIEWER, |m| {
        on(m, jobs::resync_cursors)
    }),
    route(Method::POST, "/resync", OPERATOR, |m| on(m, jobs::resync)),
    route(Method::GET, "/reconcile", VIEWER, |m| {
        on(m, jobs::reconcile_runs)
    }),
    route(Method::POST, "/reconcile", OPERATOR, |m| {
        on(m, jobs::reconcile)
    }),
    route(Method::POST, "/preview", OPERATOR, |m| on(m, jobs::preview)),
    route(Method::GET, "/schema-check", VIEWER, |m| {
        on(m, jobs::schema_checks)
    }),
    route(Method::POST, "/schema-check", OPERATOR, |m| {
        on(m, jobs::schema_check)
    }),
    route(Method::GET, "/budget", VIEWER, |m| on(m, jobs::budgets)),
    route(Method::GET, "/import", VIEWER, |m| on(m, jobs::imports)),
    route(Method::POST, "/import", OPERATOR, |m| {
        on(m, jobs::import).layer(axum::extract::DefaultBodyLimit::max(
            crate::import::MAX_FILE_BYTES,
        ))
    }),
];

/// What a request to `route` (a route template such as `/conflicts/{id}/resolve`)
/// with `method` needs, by [`ROUTES`]. `HEAD` needs what `GET` needs; a route that is
/// not in the table needs [`Role::Admin`] (it is not served either).
pub fn requirement(method: &Method, route: &str) -> Requirement {
    let method = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == route)
        .map_or(ADMIN, |r| r.needs)
}

/// The admin routes, each behind what [`ROUTES`] says it needs (see [`auth`]), and the
/// console. Build `access` with [`Access::new`] or [`Access::from_env`] for the
/// listener the router is served on: either refuses an API without tokens on a
/// non-loopback address.
pub fn router(state: AdminState, access: Access) -> Router {
    api(&access)
        .with_state(state.clone())
        .merge(console::router(state, access))
}

/// The API's routes from [`ROUTES`], each behind its requirement.
fn api(access: &Access) -> Router<AdminState> {
    let mut api = Router::new();
    for r in ROUTES {
        let filter = MethodFilter::try_from(r.method.clone()).expect("a method axum routes");
        // Routes on one path (GET and POST /resync) are merged into one method router.
        api = api.route(
            r.path,
            auth::guard::guarded((r.handler)(filter), r.needs, access),
        );
    }
    api
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The OpenAPI document names every route of [`ROUTES`] with the role it needs
    /// (`x-role`), and no other: compared as data, both ways.
    #[test]
    fn the_openapi_document_matches_the_routes_and_their_roles() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).expect("openapi.json is JSON");
        let mut documented = BTreeSet::new();
        for (path, operations) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in operations.as_object().expect("operations") {
                let role = operation["x-role"].as_str().unwrap_or("(none stated)");
                documented.insert((method.to_uppercase(), path.clone(), role.to_owned()));
            }
        }
        let routed: BTreeSet<(String, String, String)> = ROUTES
            .iter()
            .map(|r| {
                let role = match r.needs {
                    Requirement::Open => "none",
                    Requirement::Metrics => "metrics",
                    Requirement::Role(role) => role.as_str(),
                };
                (r.method.to_string(), r.path.to_owned(), role.to_owned())
            })
            .collect();
        assert_eq!(routed.len(), ROUTES.len(), "no route is listed twice");
        let missing: Vec<_> = routed.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "routed but not documented (or with another role): {missing:?}; documented but not routed (or with another role): {extra:?}"
        );
    }

    /// The router takes every route of the table (axum panics on a bad template or a
    /// method routed twice on one path).
    #[test]
    fn the_router_is_built_from_the_table() {
        let access = Access::new(auth::Auth::default(), ([127, 0, 0, 1], 8081).into())
            .expect("an open API on loopback");
        let _ = api(&access);
    }

    #[test]
    fn every_route_has_a_role_and_unknown_ones_need_admin() {
        assert_eq!(requirement(&Method::GET, "/healthz"), Requirement::Open);
        assert_eq!(requirement(&Method::GET, "/metrics"), Requirement::Metrics);
        assert_eq!(
            requirement(&Method::HEAD, "/issues"),
            Requirement::Role(Role::Viewer)
        );
        assert_eq!(
            requirement(&Method::POST, "/pause"),
            Requirement::Role(Role::Operator)
        );
        assert_eq!(
            requirement(&Method::POST, "/dead-letters/purge"),
            Requirement::Role(Role::Admin)
        );
        assert_eq!(
            requirement(&Method::DELETE, "/issues"),
            Requirement::Role(Role::Admin)
        );
        assert_eq!(
            requirement(&Method::GET, "/something-new"),
            Requirement::Role(Role::Admin)
        );
    }
}
