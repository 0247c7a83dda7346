//! Counters and state the state task updates and the API reads, without
//! touching the library lock.

use std::time::SystemTime;

use metafuse_stream::{BootstrapReport, TailStatus};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::Service;

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
    /// Rebuilds swapped in (resynchronisations, refreshes, leader
    /// switches), so a caller can await one instead of polling.
    rebuilds: watch::Sender<u64>,
    /// Bumped on every phase change, for [`Service::wait_for_liveness`].
    phase_changes: watch::Sender<u64>,
    /// Reconciliations with the index completed, for
    /// [`Service::wait_for_reconciliation`].
    reconciliations: watch::Sender<u64>,
}

#[derive(Debug)]
pub(crate) struct Moments {
    pub(crate) phase: Phase,
    pub(crate) last_refresh: Option<SystemTime>,
    pub(crate) bootstrap_seconds: Option<f64>,
    pub(crate) strategy: Option<String>,
    /// Why the rules file on disk is not in force, while it is not.
    pub(crate) rules_error: Option<String>,
    /// Files the last completed reconciliation found missing from the
    /// index (and added).
    pub(crate) unindexed_files: Option<u64>,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            phase: Phase::Tailing,
            last_refresh: None,
            bootstrap_seconds: None,
            strategy: None,
            rules_error: None,
            unindexed_files: None,
        }
    }
}

impl Status {
    pub(crate) fn set_phase(&self, phase: Phase) {
        self.moments.lock().phase = phase;
        self.phase_changes.send_modify(|changes| *changes += 1);
    }

    /// A bootstrap (at start) or rebuild (resynchronisation, leader switch)
    /// that has just been swapped in.
    pub(crate) fn record_bootstrap(&self, report: &BootstrapReport) {
        {
            let mut moments = self.moments.lock();
            moments.last_refresh = Some(SystemTime::now());
            moments.bootstrap_seconds = Some(report.elapsed.as_secs_f64());
            moments.strategy = Some(report.strategy_used.name().to_owned());
        }
        self.rebuilds.send_modify(|rebuilds| *rebuilds += 1);
    }

    /// A reconciliation with the index has completed, its files applied.
    pub(crate) fn record_reconciliation(&self, n_unindexed: u64) {
        self.moments.lock().unindexed_files = Some(n_unindexed);
        self.reconciliations
            .send_modify(|completed| *completed += 1);
    }

    /// Why the tree is not known to follow the source live, or `None`
    /// while it is: the tail connected, its last read or idle verification
    /// (at least once per block time) succeeded, and no rebuild is running.
    /// `/health` is `degraded` with this reason whenever it is `Some`.
    pub(crate) fn not_live_reason(&self, tail: &TailStatus) -> Option<String> {
        match self.moments.lock().phase {
            Phase::Resynchronising => Some(
                "resynchronising: rebuilding from a snapshot, the tree may be stale meanwhile"
                    .to_owned(),
            ),
            Phase::SwitchingLeader => Some(
                "switching to a new leader: the tree follows the old one until the switch completes"
                    .to_owned(),
            ),
            Phase::Stopped => Some("stopped: the tree no longer follows the source".to_owned()),
            Phase::Tailing if !tail.is_connected() => Some(
                tail.not_live_reason()
                    .unwrap_or_else(|| "disconnected from the source".to_owned()),
            ),
            Phase::Tailing => tail.not_live_reason(),
        }
    }
}

/// Liveness as the API reads it, for embedders and tests.
impl Service {
    /// Why the tree is not verified to follow the source live (disconnected,
    /// the peer stopped answering, the stream lost entries and a
    /// resynchronisation is running, a leader switch), or `None` while it
    /// is. Health reports `degraded` with this reason.
    pub fn not_live_reason(&self) -> Option<String> {
        self.inner.status.not_live_reason(&self.inner.tail_status)
    }

    /// Waits until `condition` holds for [`Service::not_live_reason`]
    /// (checked now and after every change of the tail's connection or
    /// liveness).
    pub async fn wait_for_liveness(&self, mut condition: impl FnMut(Option<&str>) -> bool) {
        // Subscribed before the first check, so no change is missed.
        let mut phase_changes = self.inner.status.phase_changes.subscribe();
        let mut tail_changes = self.inner.tail_status.changes();
        loop {
            if condition(self.not_live_reason().as_deref()) {
                return;
            }
            // Both senders live in `inner`, which we hold: no error.
            tokio::select! {
                _ = tail_changes.changed() => {}
                _ = phase_changes.changed() => {}
            }
        }
    }

    /// Rebuilds swapped in so far (resynchronisations, refreshes, leader
    /// switches; not the start-up bootstrap).
    pub fn rebuilds(&self) -> u64 {
        self.inner.status.rebuilds.borrow().saturating_sub(1)
    }

    /// Waits until more than `seen` rebuilds (see [`Service::rebuilds`])
    /// have been swapped in.
    pub async fn wait_for_rebuild(&self, seen: u64) {
        let mut receiver = self.inner.status.rebuilds.subscribe();
        // The sender lives in `inner`, which we hold: this cannot fail.
        let _ = receiver
            .wait_for(|rebuilds| rebuilds.saturating_sub(1) > seen)
            .await;
    }

    /// Reconciliations with the index completed so far. A tree built from a
    /// snapshot or a checkpoint (at start, by a resynchronisation, after a
    /// leader switch) is reconciled in the background: files whose keys
    /// exist in Redis but which `file:__index__` does not list are found
    /// and applied like any change.
    pub fn reconciliations(&self) -> u64 {
        *self.inner.status.reconciliations.borrow()
    }

    /// Waits until more than `seen` reconciliations (see
    /// [`Service::reconciliations`]) have completed, their files applied.
    pub async fn wait_for_reconciliation(&self, seen: u64) {
        let mut receiver = self.inner.status.reconciliations.subscribe();
        // The sender lives in `inner`, which we hold: this cannot fail.
        let _ = receiver.wait_for(|completed| *completed > seen).await;
    }

    /// How many files the last completed reconciliation found missing
    /// from the index; `None` before one completed.
    pub fn unindexed_files(&self) -> Option<u64> {
        self.inner.status.moments.lock().unindexed_files
    }
}
