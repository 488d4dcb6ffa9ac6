//! `ingest`: validates webhooks and publishes them to RabbitMQ. It needs the broker and
//! nothing else: it never touches PostgreSQL, so it keeps accepting while the database
//! is down.
//!
//! `POST /webhooks/{system}`: authenticate (Standard Webhooks or URL token), bound the
//! body, parse, check what routing needs, route to at least one sync rule, wrap in the
//! versioned envelope, publish persistent + mandatory with a confirm, and only then
//! answer 202.
//!
//! Intake is bounded ([`IntakeLimits`]): hyper's header-read timeout (which also
//! closes idle keep-alive connections), tower-http's body-read timeout between chunks
//! and a whole-request deadline, a cap on open connections, and a budget of body bytes
//! buffered at once across all requests (503 with `Retry-After` when it is spent).
#[cfg(test)]
mod fuzz;
mod handler;
mod limits;
pub mod metrics;
mod prepare;
mod publish;
mod refusal;
mod server;
pub mod signature;

pub use limits::IntakeLimits;
pub use prepare::{MAX_PAYLOAD_DEPTH, MAX_ROUTING_FIELD_BYTES};
pub use server::Ingest;
