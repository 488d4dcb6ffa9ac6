//! The in-memory state shared by every handler, and small helpers used across modules.

use std::sync::{Mutex, MutexGuard};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::SandboxConfig;
use crate::faults::{Faults, Limits};
use crate::helpdesk::HelpdeskState;
use crate::kintone::store::KintoneState;
use crate::log::RequestLog;
use crate::webhooks::{Deliveries, Hooks};

/// One of the two external systems that the sandbox simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum System {
    Kintone,
    Helpdesk,
}

impl System {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            System::Kintone => "kintone",
            System::Helpdesk => "helpdesk",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<System> {
        match text {
            "kintone" => Some(System::Kintone),
            "helpdesk" => Some(System::Helpdesk),
            _ => None,
        }
    }
}

/// Everything that the handlers share: the configuration, the webhook queues and the state.
pub(crate) struct Shared {
    pub(crate) config: SandboxConfig,
    pub(crate) webhook_key: Vec<u8>,
    pub(crate) hooks: Hooks,
    seed: u64,
    state: Mutex<SandboxState>,
}

impl Shared {
    pub(crate) fn new(config: SandboxConfig, webhook_key: Vec<u8>, hooks: Hooks) -> Shared {
        let seed = seed_from(&config);
        Shared {
            config,
            webhook_key,
            hooks,
            seed,
            state: Mutex::new(SandboxState::new(seed)),
        }
    }

    /// Locks the state; a poisoned lock is recovered because every mutation is self-contained.
    pub(crate) fn lock(&self) -> MutexGuard<'_, SandboxState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces all state with a fresh, empty one (webhooks already queued are still delivered).
    pub(crate) fn reset(&self) {
        *self.lock() = SandboxState::new(self.seed);
    }
}

/// All mutable state of the sandbox, guarded by a single mutex that is never held across an
/// `.await`.
pub(crate) struct SandboxState {
    pub(crate) kintone: KintoneState,
    pub(crate) helpdesk: HelpdeskState,
    pub(crate) faults: Faults,
    pub(crate) limits: Limits,
    pub(crate) log: RequestLog,
    pub(crate) deliveries: Deliveries,
}

impl SandboxState {
    fn new(seed: u64) -> SandboxState {
        SandboxState {
            kintone: KintoneState::default(),
            helpdesk: HelpdeskState::default(),
            faults: Faults::new(seed),
            limits: Limits::default(),
            log: RequestLog::default(),
            deliveries: Deliveries::default(),
        }
    }
}

/// Derives the fault PRNG seed from the configuration with FNV-1a, so runs are reproducible.
fn seed_from(config: &SandboxConfig) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        &config.kintone_api_token,
        &config.helpdesk_token,
        &config.helpdesk_webhook_secret,
    ] {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The current time as RFC 3339 with milliseconds, for example `2026-11-22T10:08:00.123Z`.
pub(crate) fn now_millis() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time as kintone stores record timestamps: UTC with minute precision, for example
/// `2026-11-22T10:08:00Z`.
pub(crate) fn kintone_now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:00Z").to_string()
}
