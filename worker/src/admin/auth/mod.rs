//! Who may use the admin API: bearer tokens with roles ([`tokens`]), the console's
//! sealed session ([`session`]), and the Host check and the role extractors in front
//! of each route ([`guard`]).
//!
//! The roles are ordered: `viewer` reads, `operator` also pauses, resumes,
//! rehydrates, replays, resolves and dismisses, `admin` also purges. Which route needs
//! which role is stated once, in [`crate::admin::ROUTES`], from which the router is
//! built: a route cannot be served without a stated [`Requirement`]. `/healthz` and
//! `/readyz` are open; `/metrics` is open unless `RECORDSYNC_METRICS_TOKEN` is set.

pub mod guard;
pub mod session;
pub mod tokens;

pub use guard::{Access, Caller, MetricsToken, Require};
pub use session::SESSION_SECONDS;
pub(crate) use session::hex;
pub use tokens::{
    Auth, AuthError, HOSTS_VAR, METRICS_TOKEN_VAR, MIN_TOKEN_LEN, Principal, Role, TOKENS_FILE_VAR,
    TOKENS_VAR,
};

/// What a route asks of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: `/healthz` and `/readyz`.
    Open,
    /// The metrics token, when one is configured: `/metrics`.
    Metrics,
    /// A token with at least this role.
    Role(Role),
}
