//! `worker`: consumes the work queue with manual acks and a bounded prefetch, decides
//! and writes each command ([`step`]), and maps every failure to one of: give back
//! (PostgreSQL down), retry through a delay queue, dead-letter, or data-quality
//! conflict (stored, acknowledged).
//!
//! - [`step`]: the decide-and-write step for one command under its rules.
//! - [`runner`]: the consume loop around it ([`Worker::run`]), with retries, dead
//!   letters and the schedules; in-flight work finishes before the process exits.
//! - [`admin`]: the admin HTTP API and the console.

pub mod admin;
pub use admin::auth;
pub mod budget;
pub mod classify;
pub mod dlq;
pub mod import;
pub mod jobs;
pub mod limiter;
pub mod metrics;
pub mod ops;
pub mod preview;
pub mod reconcile;
pub mod resync;
pub mod runner;
pub mod schema;
pub mod step;

use config::ConfigError;
use domain::rules::SyncRules;

pub use runner::{Disposition, Worker};

/// Checks a rules file and every secret it names: for `worker check-config`.
pub fn check_config(path: &str) -> Result<SyncRules, ConfigError> {
    let rules = config::load_rules(path)?;
    for (at, var) in config::secret_vars(&rules) {
        config::secret(&at, &var)?;
    }
    Ok(rules)
}
