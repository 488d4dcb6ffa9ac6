//! Daily API budgets (`budget` on a system): every request the limiter lets through
//! is counted in PostgreSQL (`api_usage`, per hour), and background work asks here
//! before it spends requests. When a system's budget is used up, or the day's forecast
//! at the recent pace exceeds it, resync and reconcile wait (their cursors kept) so
//! that live sync keeps what is left; live sync itself is never held here.

use domain::budget::{Usage, Verdict, forecast, verdict};
use serde::Serialize;
use store::StoreError;

use crate::step::Processor;

/// One system's budget now.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The system.
    pub system: String,
    /// Its requests per day.
    pub budget: u64,
    /// What is known of today's use.
    #[serde(flatten)]
    pub usage: Usage,
    /// The day's forecast at the recent pace.
    pub forecast: u64,
    /// Whether background work goes on.
    pub background: Verdict,
}

/// Every budgeted system's status, by name.
pub async fn status(processor: &Processor) -> Result<Vec<Status>, StoreError> {
    let mut out = vec![];
    for (system, spec) in &processor.rules.systems {
        let Some(b) = &spec.budget else { continue };
        let usage = processor.store.api_usage(system).await?;
        out.push(Status {
            system: system.clone(),
            budget: b.requests_per_day,
            forecast: forecast(&usage),
            background: verdict(system, b.requests_per_day, &usage),
            usage,
        });
    }
    Ok(out)
}

/// Why background work must wait before spending requests on these systems, if it
/// must: the first of them whose budget says so.
pub async fn hold(processor: &Processor, systems: &[&str]) -> Result<Option<String>, StoreError> {
    for system in systems {
        let Some(b) = processor
            .rules
            .systems
            .get(*system)
            .and_then(|s| s.budget.as_ref())
        else {
            continue;
        };
        let usage = processor.store.api_usage(system).await?;
        if let Verdict::Hold { reason } = verdict(system, b.requests_per_day, &usage) {
            return Ok(Some(reason));
        }
    }
    Ok(None)
}
