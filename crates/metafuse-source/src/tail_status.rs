//! What a source's live tail reports about itself, for health.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// What a source's live tail reports about itself, readable from any thread
/// without touching the tail: a cheap clone of shared atomics.
///
/// A source writes into it with the `record_*`/`set_*` methods; a later
/// source (after a leader switch) can report into the same handle (see
/// `MetadataSource::set_tail_status`), so its readers keep one handle and
/// the counters continue. New facts are new fields of the shared part, so
/// readers and writers of the existing ones are unaffected.
#[derive(Clone, Debug, Default)]
pub struct TailStatus {
    shared: Arc<SharedTailStatus>,
}

#[derive(Debug)]
struct SharedTailStatus {
    connected: AtomicBool,
    /// Connections opened by the tails reporting here (the first is no reconnect).
    connections: AtomicU64,
    /// Unix milliseconds of the last event read; 0 until one was.
    last_entry_at_ms: AtomicU64,
    /// [`UNKNOWN_LAG`] until the tail has seen where the source ends.
    lag_entries: AtomicU64,
    /// Why the tail is not verified live, `None` while it is: set on every
    /// connection loss, timeout and broken stream, cleared by a read or an
    /// idle verification that succeeded.
    not_live_reason: Mutex<Option<String>>,
    /// Bumped on every change of `connected` or `not_live_reason`, so
    /// waiters ([`TailStatus::wait_for`]) need not poll.
    changes: tokio::sync::watch::Sender<u64>,
}

/// What [`TailStatus::not_live_reason`] says before a tail first connected.
pub const NOT_CONNECTED_YET: &str = "the tail has not reached its source yet";

/// Stands for "not known" in [`SharedTailStatus::lag_entries`].
const UNKNOWN_LAG: u64 = u64::MAX;

impl Default for SharedTailStatus {
    fn default() -> Self {
        SharedTailStatus {
            connected: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            last_entry_at_ms: AtomicU64::new(0),
            lag_entries: AtomicU64::new(UNKNOWN_LAG),
            not_live_reason: Mutex::new(Some(NOT_CONNECTED_YET.to_owned())),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl TailStatus {
    /// Whether the tail holds a working connection to its source (false
    /// before its first read and while it retries after a loss).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Connections re-established after the first one (connection losses
    /// recovered, plus tails that took over this handle).
    pub fn reconnects(&self) -> u64 {
        self.shared
            .connections
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// When the tail last read events, if it has.
    pub fn last_entry_at(&self) -> Option<SystemTime> {
        match self.shared.last_entry_at_ms.load(Ordering::Relaxed) {
            0 => None,
            milliseconds => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(milliseconds)),
        }
    }

    /// Events after the tail's position when it last looked at where the
    /// source ends; `None` while not known, 0 whenever it is caught up.
    pub fn lag_entries(&self) -> Option<u64> {
        match self.shared.lag_entries.load(Ordering::Relaxed) {
            UNKNOWN_LAG => None,
            lag => Some(lag),
        }
    }

    /// Why the tail is not verified live (disconnected, the peer stopped
    /// answering, the source lost events after our position and a
    /// resynchronisation is due), or `None` while it is: connected, and the
    /// last read or idle verification succeeded.
    pub fn not_live_reason(&self) -> Option<String> {
        self.shared
            .not_live_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `condition` holds for this status (checked now and after
    /// every change of the connection or liveness).
    pub async fn wait_for(&self, mut condition: impl FnMut(&TailStatus) -> bool) {
        let mut changes = self.changes();
        loop {
            if condition(self) {
                return;
            }
            // The sender lives in `shared`, which we hold: this cannot fail.
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// A receiver that sees every later change of the connection or
    /// liveness (for waiting on several things at once).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// For sources: whether the tail holds a working connection.
    pub fn set_connected(&self, connected: bool) {
        self.shared.connected.store(connected, Ordering::Relaxed);
        self.shared.changes.send_modify(|changes| *changes += 1);
    }

    /// For sources: verified live (`None`) or not (`Some(reason)`);
    /// notifies waiters on a change only.
    pub fn set_not_live(&self, reason: Option<String>) {
        let mut current = self
            .shared
            .not_live_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *current != reason {
            *current = reason;
            drop(current);
            self.shared.changes.send_modify(|changes| *changes += 1);
        }
    }

    /// For sources: a connection was (re)established.
    pub fn record_connection(&self) {
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        self.set_connected(true);
    }

    /// For sources: events were read just now.
    pub fn record_entries_read(&self) {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |since_epoch| since_epoch.as_millis().max(1) as u64);
        self.shared
            .last_entry_at_ms
            .store(now_ms, Ordering::Relaxed);
    }

    /// For sources: how many events the tail is behind, if known.
    pub fn set_lag_entries(&self, lag: Option<u64>) {
        self.shared
            .lag_entries
            .store(lag.unwrap_or(UNKNOWN_LAG), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_report() {
        let status = TailStatus::default();
        let reader = status.clone();
        assert!(!reader.is_connected());
        assert_eq!(reader.lag_entries(), None);
        assert_eq!(reader.last_entry_at(), None);
        status.record_connection();
        status.record_connection();
        status.record_entries_read();
        status.set_lag_entries(Some(3));
        assert!(reader.is_connected());
        assert_eq!(reader.reconnects(), 1);
        assert!(reader.last_entry_at().is_some());
        assert_eq!(reader.lag_entries(), Some(3));
        status.set_connected(false);
        assert!(!reader.is_connected());
    }
}
