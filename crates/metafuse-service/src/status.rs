//! Counters and state the state task updates and the API reads, without
//! touching the library lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

/// What the state task is doing, for health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Tailing,
    Resynchronising,
    SwitchingLeader,
    Stopped,
}

impl Phase {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Tailing => "tailing",
            Phase::Resynchronising => "resynchronising",
            Phase::SwitchingLeader => "switching-leader",
            Phase::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Status {
    pub(crate) events_processed: AtomicU64,
    pub(crate) properties_fetched: AtomicU64,
    pub(crate) properties_skipped: AtomicU64,
    pub(crate) malformed_entries: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) moments: Mutex<Moments>,
}

#[derive(Debug)]
pub(crate) struct Moments {
    pub(crate) phase: Phase,
    pub(crate) last_event_id: Option<String>,
    pub(crate) last_event_at: Option<Instant>,
    pub(crate) last_refresh: Option<SystemTime>,
    pub(crate) bootstrap_seconds: Option<f64>,
    pub(crate) strategy: Option<String>,
    /// Why the rules file on disk is not in force, while it is not.
    pub(crate) rules_error: Option<String>,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            phase: Phase::Tailing,
            last_event_id: None,
            last_event_at: None,
            last_refresh: None,
            bootstrap_seconds: None,
            strategy: None,
            rules_error: None,
        }
    }
}

impl Status {
    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.moments.lock().phase = phase;
    }
}
