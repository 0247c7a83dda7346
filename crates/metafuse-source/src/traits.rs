//! The trait every metadata source implements, and what its tail yields.

use std::cmp::Ordering;
use std::future::Future;
use std::pin::Pin;

use metafuse_rules::RelevantProperties;
use metafuse_state::{EventCounts, FetchPlan, FetchedValue, Projection};

use crate::{BootstrapReport, FetchedValues, Progress, SourceError, TailStatus, TopologyReader};

/// A boxed future that can move between threads: what the trait's async
/// methods return, so it stays object-safe without an async runtime here.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Called with the progress of a bootstrap, after every batch.
pub type ProgressFn = dyn Fn(Progress) + Send + Sync;

/// How two event ids of one source order: `None` when the source cannot
/// tell (its ids are opaque, and only equal ones compare).
pub type EventIdOrder = fn(&str, &str) -> Option<Ordering>;

/// The order of a source whose event ids carry no order: equal ids are the
/// same position, any others are not comparable.
pub fn opaque_event_id_order(left: &str, right: &str) -> Option<Ordering> {
    (left == right).then_some(Ordering::Equal)
}

/// Which kind of source feeds the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A MetaMesh Redis: `meta:events` and `file:` keys.
    Redis,
    /// The meta-core HTTP API and its server-sent events.
    MetaCore,
}

impl SourceKind {
    /// `redis` or `metacore`.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Redis => "redis",
            SourceKind::MetaCore => "metacore",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One batch of the tail: the current values of the relevant keys that
/// changed, fetched outside any lock of the caller.
#[derive(Clone, Debug, Default)]
pub struct TailBatch {
    /// The fetched values.
    pub values: FetchedValues,
    /// The id of the last event read (the tail's new position).
    pub last_event_id: String,
    /// Events read, skipped and malformed in this batch.
    pub counts: EventCounts,
}

impl TailBatch {
    /// The values, ready for `Projection::apply_batch`.
    pub fn fetched(&self) -> impl Iterator<Item = FetchedValue<'_>> {
        self.values.iter()
    }
}

/// What the tail saw next.
#[derive(Clone, Debug)]
pub enum TailEvent {
    /// New events: apply the values, then record the counts and id.
    Batch(TailBatch),
    /// The source no longer holds every event after our position (trimmed,
    /// or it came back without them): rebuild with
    /// [`MetadataSource::bootstrap`] into a fresh projection and swap it in.
    Resync {
        /// Our position when the gap was detected.
        last_event_id: String,
    },
}

/// A source of library metadata: a complete state to start from, then every
/// change after it, in order.
///
/// One task owns the source and calls it; readers of the state never wait
/// for it. Connection losses are retried inside (the tail reconnects with
/// backoff and resumes from its position); errors returned are worth
/// reporting, and [`SourceError::is_connection_error`] says whether trying
/// again later can help.
pub trait MetadataSource: Send + std::fmt::Debug {
    /// What kind of source this is.
    fn kind(&self) -> SourceKind;

    /// Where it is, credentials redacted (`redis://:***@host:6379/`), for
    /// logs, health and messages.
    fn describe(&self) -> String;

    /// Rebuilds `projection` (normally empty) completely and returns where
    /// the source stands. The tail then continues strictly after the
    /// report's `last_event_id`. `progress` is called after every batch.
    fn bootstrap<'a>(
        &'a mut self,
        projection: &'a mut Projection,
        progress: &'a ProgressFn,
    ) -> BoxFuture<'a, Result<BootstrapReport, SourceError>>;

    /// Makes the tail continue strictly after `event_id`, an id this source
    /// gave (a report's `last_event_id`, or a checkpoint's).
    fn resume_from(&mut self, event_id: &str);

    /// Waits for the next events and returns the current values of their
    /// relevant keys, or that a resynchronisation is needed.
    ///
    /// Cancel-safe: dropping the future loses nothing; the position only
    /// advances when a batch is returned.
    fn next_batch<'a>(
        &'a mut self,
        relevant: &'a RelevantProperties,
    ) -> BoxFuture<'a, Result<TailEvent, SourceError>>;

    /// The current values of the keys a rules change made relevant.
    fn fetch_plan<'a>(
        &'a mut self,
        plan: &'a FetchPlan,
    ) -> BoxFuture<'a, Result<FetchedValues, SourceError>>;

    /// What identifies the data behind this source, for a checkpoint: a
    /// position is only meaningful against the same identity (a Redis's
    /// run id and replication id, a meta-core base URL).
    fn identity<'a>(&'a mut self) -> BoxFuture<'a, Result<String, SourceError>>;

    /// Whether the tail can resume strictly after `event_id` without losing
    /// an event (a warm restart from a checkpoint).
    fn position_reachable<'a>(
        &'a mut self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SourceError>>;

    /// A handle on the tail's connection state, reconnects, last read and lag.
    fn tail_status(&self) -> TailStatus;

    /// Reports into `status` from now on, so a source taking over from
    /// another (a leader switch) continues the counters health reads.
    fn set_tail_status(&mut self, status: TailStatus);

    /// How this source's event ids order, so a caller can wait until an id
    /// (or a later one) has been applied without knowing what ids mean.
    fn event_id_order(&self) -> EventIdOrder {
        opaque_event_id_order
    }

    /// Reads how the source is deployed and what each node served, for
    /// health and metrics; `None` when the source has no nodes to tell of.
    fn topology(&self) -> Option<TopologyReader> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(SourceKind::Redis.to_string(), "redis");
        assert_eq!(SourceKind::MetaCore.to_string(), "metacore");
    }

    #[test]
    fn opaque_ids_only_compare_when_equal() {
        assert_eq!(opaque_event_id_order("a", "a"), Some(Ordering::Equal));
        assert_eq!(opaque_event_id_order("2", "10"), None);
    }
}
