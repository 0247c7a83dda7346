//! Counters and state the state task updates and the API reads, without
//! touching the library lock.

use std::time::SystemTime;

use metafuse_stream::BootstrapReport;
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
            Phase::Resynchronising => "resyncing",
            Phase::SwitchingLeader => "switching-leader",
            Phase::Stopped => "stopped",
        }
    }
}

/// Event counts and the last event id live in the projection, the tail's
/// connection state in its `TailStatus`; this holds the rest.
#[derive(Debug, Default)]
pub(crate) struct Status {
    pub(crate) moments: Mutex<Moments>,
}

#[derive(Debug)]
pub(crate) struct Moments {
    pub(crate) phase: Phase,
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
            last_refresh: None,
            bootstrap_seconds: None,
            strategy: None,
            rules_error: None,
        }
    }
}

impl Status {
    pub(crate) fn set_phase(&self, phase: Phase) {
        self.moments.lock().phase = phase;
    }

    /// A bootstrap (at start) or rebuild (resynchronisation, leader switch)
    /// that has just been swapped in.
    pub(crate) fn record_bootstrap(&self, report: &BootstrapReport) {
        let mut moments = self.moments.lock();
        moments.last_refresh = Some(SystemTime::now());
        moments.bootstrap_seconds = Some(report.elapsed.as_secs_f64());
        moments.strategy = Some(report.strategy_used.name().to_owned());
    }
}
