//! Every failure is classified once, here, into what the runner does about it.

use std::time::Duration;

use connectors::ConnectorError;
use store::{StoreError, StoreErrorKind};

/// Why processing did not end: the runner decides between giving the message back,
/// a retry and the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// PostgreSQL is unavailable: give the message back without counting an attempt.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An external system failed in a way that retrying may cure.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// PostgreSQL refused values the plan would record (`(field, reason)`): nothing
    /// was sent; the record becomes a data-quality conflict.
    #[error("PostgreSQL cannot store the record's values: {0:?}")]
    Unstorable(Vec<(String, String)>),
    /// An earlier create of the record is in doubt and left no trace yet (the
    /// target's search may lag): try again after `retry_after`, create nothing now.
    #[error(
        "an earlier create ({key}) is in doubt and not yet visible in the target; retrying before creating anything"
    )]
    InDoubt {
        /// The in-doubt create's idempotency key.
        key: String,
        /// When to look again.
        retry_after: std::time::Duration,
    },
}

impl Failure {
    /// A short class name for metrics, headers and the dead letter's reason.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Connector(e) => e.class(),
            Failure::Store(_) => "store",
            Failure::Unstorable(_) => "unstorable",
            Failure::InDoubt { .. } => "in_doubt",
        }
    }
}

/// What the runner does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Infrastructure (PostgreSQL) failed: give the message back without counting an
    /// attempt, and stop taking messages until it is back.
    Requeue,
    /// Not now, but nothing is down (the pool is busy, the record's lease was lost to
    /// another worker): give the message back without counting an attempt and go on
    /// consuming.
    GiveBack,
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
        ConnectorError::Rejected { .. } | ConnectorError::NoApi { .. } => Action::Conflict,
        ConnectorError::Unknown(_) => Action::DeadLetter,
    }
}

/// How many times a 429 is waited out in place before the event is retried later.
pub const RATE_LIMITED_TRIES: u32 = 3;
/// The pause after a 429 that names no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);

/// What a call does about its failure, in place (the limiter's retry layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    /// Not a 429: the failure goes to the step as it is.
    No,
    /// A 429: pause the system for the fleet, then try again in place.
    WaitInPlace(Duration),
    /// A 429 after [`RATE_LIMITED_TRIES`] tries: pause the system for the fleet, and
    /// give the event to the delay queues.
    GiveUp(Duration),
}

/// The limiter's retry classifier: only a 429 is retried in place (every other
/// failure is retried, if at all, through the delay queues).
pub fn rate_limited(e: &ConnectorError, tries: u32) -> RateLimited {
    match e {
        ConnectorError::RateLimited { retry_after, .. } => {
            let pause = retry_after.unwrap_or(DEFAULT_RATE_LIMIT_PAUSE);
            if tries >= RATE_LIMITED_TRIES {
                RateLimited::GiveUp(pause)
            } else {
                RateLimited::WaitInPlace(pause)
            }
        }
        _ => RateLimited::No,
    }
}

/// Classifies a store failure: only unavailability stops the consumer; a data error
/// is the same on every attempt, so it is not retried.
pub fn store(e: &StoreError) -> Action {
    match e.kind() {
        StoreErrorKind::Unavailable => Action::Requeue,
        StoreErrorKind::Busy | StoreErrorKind::LeaseLost => Action::GiveBack,
        StoreErrorKind::Data | StoreErrorKind::Other => Action::DeadLetter,
    }
}

/// Classifies any processing failure.
pub fn failure(f: &Failure) -> Action {
    match f {
        Failure::Store(e) => store(e),
        Failure::Connector(e) => connector(e),
        // Stored as conflicts by the step; should one reach the runner, no retry helps.
        Failure::Unstorable(_) => Action::DeadLetter,
        Failure::InDoubt { retry_after, .. } => Action::Retry {
            after: Some(*retry_after),
        },
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

/// The delay tier a retry waits in: the attempt's own tier, or a longer one when the
/// system asked for a wait (a 429's `Retry-After`, an in-doubt create's settle time):
/// the smallest tier at least as long as asked, else the longest. The wait itself is
/// the tier's delay, jittered ([`jittered`]) and never shorter than asked.
pub fn retry_tier(topology: &queue::Topology, next_attempt: u32, after: Option<Duration>) -> usize {
    let own = topology.tier_for(next_attempt);
    let Some(after) = after else {
        return own;
    };
    let delays = &topology.retry_delays_ms;
    delays
        .iter()
        .position(|d| u128::from(*d) >= after.as_millis())
        .unwrap_or(delays.len().saturating_sub(1))
        .max(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 429's wait picks the smallest tier at least as long as `Retry-After`, never
    /// a shorter tier than the attempt's own, and the longest when none is as long.
    #[test]
    fn a_wait_asked_for_picks_the_smallest_tier_that_covers_it() {
        let t = queue::Topology::new("p", vec![1_000, 5_000, 30_000]);
        assert_eq!(retry_tier(&t, 2, None), 0);
        assert_eq!(retry_tier(&t, 3, None), 1);
        assert_eq!(retry_tier(&t, 2, Some(Duration::from_millis(900))), 0);
        assert_eq!(retry_tier(&t, 2, Some(Duration::from_millis(1_000))), 0);
        assert_eq!(retry_tier(&t, 2, Some(Duration::from_millis(1_001))), 1);
        assert_eq!(retry_tier(&t, 2, Some(Duration::from_secs(6))), 2);
        assert_eq!(retry_tier(&t, 2, Some(Duration::from_secs(600))), 2);
        // The attempt's own tier is a floor: a short Retry-After never shortens it.
        assert_eq!(retry_tier(&t, 4, Some(Duration::from_millis(10))), 2);
        // The wait asked for is kept whatever the jitter draws.
        let asked = Duration::from_secs(4);
        let tier = retry_tier(&t, 2, Some(asked));
        for r in [0, 1, 999, u64::MAX] {
            assert!(jittered(t.retry_delays_ms[tier], Some(asked), r) >= 4_000);
        }
    }

    /// The class names metrics, headers and dead letters carry.
    #[test]
    fn each_failure_has_its_class_name() {
        let classes: Vec<&str> = [
            Failure::Unstorable(vec![("subject".into(), "too long".into())]),
            Failure::InDoubt {
                key: "k".into(),
                retry_after: Duration::from_secs(1),
            },
            Failure::Connector(ConnectorError::Server {
                system: "h".into(),
                status: 503,
                message: String::new(),
            }),
        ]
        .iter()
        .map(Failure::class)
        .collect();
        assert_eq!(classes, ["unstorable", "in_doubt", "server"]);
    }

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

    /// ARCHITECTURE.md: a 401 or 403 is retryable (an operator fixes the secret while
    /// the delay queues wait), not a conflict for a person nor a dead letter at once,
    /// and it is not a 429 to be waited out in place.
    #[test]
    fn a_401_or_403_is_retried_through_the_delay_queues() {
        for status in [401, 403] {
            let refused = || ConnectorError::Unauthorized {
                system: "helpdesk".into(),
                status,
                message: "bad token".into(),
            };
            assert_eq!(
                connector(&refused()),
                Action::Retry { after: None },
                "{status}"
            );
            let f = Failure::Connector(refused());
            assert_eq!(failure(&f), Action::Retry { after: None }, "{status}");
            assert_eq!(f.class(), "unauthorized", "{status}");
            assert_eq!(rate_limited(&refused(), 1), RateLimited::No, "{status}");
        }
    }

    #[test]
    fn only_a_429_is_waited_out_in_place_and_only_a_few_times() {
        let limited = |after| ConnectorError::RateLimited {
            system: "h".into(),
            retry_after: after,
        };
        let two = Duration::from_secs(2);
        assert_eq!(
            rate_limited(&limited(Some(two)), 1),
            RateLimited::WaitInPlace(two)
        );
        assert_eq!(
            rate_limited(&limited(None), RATE_LIMITED_TRIES - 1),
            RateLimited::WaitInPlace(DEFAULT_RATE_LIMIT_PAUSE)
        );
        assert_eq!(
            rate_limited(&limited(Some(two)), RATE_LIMITED_TRIES),
            RateLimited::GiveUp(two)
        );
        let server = ConnectorError::Server {
            system: "h".into(),
            status: 503,
            message: String::new(),
        };
        assert_eq!(rate_limited(&server, 1), RateLimited::No);
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
