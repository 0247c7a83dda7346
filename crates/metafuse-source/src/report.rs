//! What a bootstrap reports while it runs and when it is done.

use std::time::Duration;

/// How a bootstrap rebuilt the state, by name, so any source can say what
/// it did (`replay`, `snapshot`, `metacore-bootstrap`, `checkpoint`, ...)
/// and health, stats and logs show it alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BootstrapMethod(&'static str);

impl BootstrapMethod {
    /// Replayed an event log from its start (Redis `meta:events`).
    pub const REPLAY: BootstrapMethod = BootstrapMethod("replay");
    /// Read every file's current values, then caught up with the events
    /// appended meanwhile.
    pub const SNAPSHOT: BootstrapMethod = BootstrapMethod("snapshot");
    /// The meta-core API's bootstrap endpoint.
    pub const METACORE_BOOTSTRAP: BootstrapMethod = BootstrapMethod("metacore-bootstrap");
    /// A checkpoint saved by an earlier run, then the events after it.
    pub const CHECKPOINT: BootstrapMethod = BootstrapMethod("checkpoint");

    /// A method not listed above; `name` is short, lowercase, `-`-separated.
    pub const fn named(name: &'static str) -> BootstrapMethod {
        BootstrapMethod(name)
    }

    /// The name shown in health, stats and logs.
    pub fn name(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for BootstrapMethod {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.0)
    }
}

/// Which part of a bootstrap is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Replaying an event log (`done`/`total` = entries).
    Replay,
    /// Fetching every relevant property (`done`/`total` = files).
    Snapshot,
    /// Reading the events appended since the snapshot began.
    CatchUp,
}

/// Bootstrap progress, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// What is running.
    pub phase: Phase,
    /// Units done so far.
    pub done: u64,
    /// Units expected (an estimate: writers keep writing).
    pub total: u64,
}

/// Where the time of a bootstrap went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Inspecting the source and choosing a method.
    pub decide: Duration,
    /// The replay or the snapshot proper.
    pub load: Duration,
    /// Catching up with events appended meanwhile.
    pub catch_up: Duration,
}

/// What a bootstrap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapReport {
    /// How the state was rebuilt.
    pub strategy_used: BootstrapMethod,
    /// Why that method was used.
    pub reason: String,
    /// The last event reflected (an opaque id of the source): tail from here.
    pub last_event_id: String,
    /// Events read.
    pub n_events: u64,
    /// Values fetched.
    pub n_fetched: u64,
    /// Events skipped as not relevant.
    pub n_skipped: u64,
    /// Malformed events and values skipped.
    pub n_malformed: u64,
    /// Where the time went.
    pub timings: Timings,
    /// Total time to ready.
    pub elapsed: Duration,
}
