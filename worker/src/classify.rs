//! Every failure is classified once, here, into what the runner does about it.

use std::time::Duration;

use connectors::ConnectorError;

use crate::process::Failure;

/// What the runner does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Infrastructure (PostgreSQL) failed: give the message back without counting an
    /// attempt, and stop taking messages until it is back.
    Requeue,
    /// Retry through the delay queues, no sooner than `after` when the system said so.
    Retry {
        /// The system's `Retry-After`.
        after: Option<Duration>,
    },
    /// The data is wrong: open a conflict for a person, do not retry.
    Conflict,
    /// Retrying cannot help and no person can fix the data: dead-letter now.
    DeadLetter,
}

/// Classifies a connector failure.
pub fn connector(e: &ConnectorError) -> Action {
    match e {
        ConnectorError::RateLimited { retry_after, .. } => Action::Retry {
            after: *retry_after,
        },
        ConnectorError::Transport { .. }
        | ConnectorError::Server { .. }
        | ConnectorError::Unauthorized { .. }
        | ConnectorError::RevisionConflict { .. }
        | ConnectorError::BadResponse { .. } => Action::Retry { after: None },
        ConnectorError::Rejected { .. } => Action::Conflict,
        ConnectorError::Unknown(_) => Action::DeadLetter,
    }
}

/// Classifies any processing failure.
pub fn failure(f: &Failure) -> Action {
    match f {
        Failure::Store(_) => Action::Requeue,
        Failure::Connector(e) => connector(e),
    }
}

/// The delay before a retry: the tier's delay minus up to a fifth, at random, so that
/// a burst of failures does not come back as a burst. Never below `at_least`.
pub fn jittered(tier_delay_ms: u64, at_least: Option<Duration>, random: u64) -> u64 {
    let cut = if tier_delay_ms >= 5 {
        random % (tier_delay_ms / 5)
    } else {
        0
    };
    let floor = at_least.map(|d| d.as_millis() as u64).unwrap_or(0);
    (tier_delay_ms - cut).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let sys = || "h".to_owned();
        assert_eq!(
            connector(&ConnectorError::RateLimited {
                system: sys(),
                retry_after: Some(Duration::from_secs(2))
            }),
            Action::Retry {
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            connector(&ConnectorError::Server {
                system: sys(),
                status: 503,
                message: String::new()
            }),
            Action::Retry { after: None }
        );
        assert_eq!(
            connector(&ConnectorError::RevisionConflict { system: sys() }),
            Action::Retry { after: None }
        );
        assert_eq!(
            connector(&ConnectorError::Rejected {
                system: sys(),
                status: 422,
                message: String::new()
            }),
            Action::Conflict
        );
        assert_eq!(
            connector(&ConnectorError::Unknown("x".into())),
            Action::DeadLetter
        );
    }

    #[test]
    fn jitter_stays_within_a_fifth_and_above_retry_after() {
        for r in [0, 1, 7, 199, u64::MAX] {
            let d = jittered(1000, None, r);
            assert!((800..=1000).contains(&d), "{d}");
        }
        assert_eq!(jittered(1000, Some(Duration::from_millis(990)), 150), 990);
        assert_eq!(jittered(3, None, 99), 3);
    }
}
