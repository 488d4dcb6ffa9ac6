//! A system's daily API budget: how much of it is used, what the day will come to at
//! the recent pace, and whether background work (resync, reconcile) must wait so that
//! live sync keeps what is left.

use serde::Serialize;

/// What is known of a system's usage today (UTC days).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Usage {
    /// Requests made since the day began.
    pub used_today: u64,
    /// Requests made in the recent window.
    pub recent_requests: u64,
    /// How long the recent window is, in seconds.
    pub recent_seconds: f64,
    /// Seconds left in the day.
    pub seconds_left: f64,
}

/// The day's forecast: what is used plus the recent pace for the rest of the day.
pub fn forecast(u: &Usage) -> u64 {
    let rate = if u.recent_seconds > 0.0 {
        u.recent_requests as f64 / u.recent_seconds
    } else {
        0.0
    };
    u.used_today + (rate * u.seconds_left.max(0.0)).ceil() as u64
}

/// Whether background work may go on, and if not, why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Verdict {
    /// The forecast fits the budget.
    Go,
    /// Background work waits: the budget is used up, or the day's forecast exceeds it.
    Hold {
        /// Why, in plain words.
        reason: String,
    },
}

/// Background work goes on while the day's forecast fits `budget`; live sync is never
/// held by this (only the system itself can refuse it).
pub fn verdict(system: &str, budget: u64, u: &Usage) -> Verdict {
    let f = forecast(u);
    if u.used_today >= budget {
        Verdict::Hold {
            reason: format!(
                "{system}'s API budget is used up: {} of {budget} requests today; resync and reconcile wait for tomorrow, live sync goes on",
                u.used_today
            ),
        }
    } else if f > budget {
        Verdict::Hold {
            reason: format!(
                "{system}'s API budget would run out: {} of {budget} requests used today, {f} forecast at the recent pace; resync and reconcile wait until the forecast fits, live sync goes on",
                u.used_today
            ),
        }
    } else {
        Verdict::Go
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(used: u64, recent: u64, recent_s: f64, left: f64) -> Usage {
        Usage {
            used_today: used,
            recent_requests: recent,
            recent_seconds: recent_s,
            seconds_left: left,
        }
    }

    #[test]
    fn the_forecast_adds_the_recent_pace_for_the_rest_of_the_day() {
        // 3,600 requests in the last hour: one a second, for 10,000 s more.
        assert_eq!(forecast(&usage(5_000, 3_600, 3_600.0, 10_000.0)), 15_000);
        // Nothing recent: the day ends where it is.
        assert_eq!(forecast(&usage(42, 0, 3_600.0, 80_000.0)), 42);
        // No window (the first request of a fresh database) and no time left.
        assert_eq!(forecast(&usage(7, 7, 0.0, 100.0)), 7);
        assert_eq!(forecast(&usage(7, 7, 10.0, -5.0)), 7);
        // A part of a request counts as one.
        assert_eq!(forecast(&usage(0, 1, 3.0, 1.0)), 1);
    }

    #[test]
    fn background_work_holds_when_the_budget_is_used_up_or_forecast_to_run_out() {
        assert_eq!(
            verdict("k", 10_000, &usage(5_000, 360, 3_600.0, 10_000.0)),
            Verdict::Go
        );
        let Verdict::Hold { reason } =
            verdict("k", 10_000, &usage(5_000, 3_600, 3_600.0, 10_000.0))
        else {
            panic!("over the forecast");
        };
        assert_eq!(
            reason,
            "k's API budget would run out: 5000 of 10000 requests used today, 15000 forecast at the recent pace; resync and reconcile wait until the forecast fits, live sync goes on"
        );
        let Verdict::Hold { reason } = verdict("k", 100, &usage(100, 0, 3_600.0, 10.0)) else {
            panic!("used up");
        };
        assert!(reason.contains("is used up: 100 of 100"), "{reason}");
        // Exactly at the budget by the forecast: it fits.
        assert_eq!(
            verdict("k", 15_000, &usage(5_000, 3_600, 3_600.0, 10_000.0)),
            Verdict::Go
        );
    }
}
