//! The live tail: `XREAD BLOCK` on a connection of its own, values fetched
//! on another, reconnecting with backoff after a connection loss. Every
//! reconnect and every idle read verifies that the peer answers and that the
//! stream still leads on from our position (`liveness`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use metafuse_rules::RelevantProperties;
use metafuse_state::{EventCounts, FetchedValue};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use crate::entries::{EntryBatch, RelevanceCache, StreamId, last_entry_id};
use crate::error::StreamError;
use crate::fetch::{FetchedValues, fetch_values};
use crate::info::{EVENTS_STREAM, StreamInfo, stream_info};
use crate::liveness::timed_out;
use crate::liveness::{
    CONNECT_TIMEOUT, Continuity, RESPONSE_MARGIN, ServerIdentity, holds_entry, observe,
    stream_continuity, with_keepalive,
};

/// Entries per `XREAD`.
const ENTRIES_PER_READ: usize = 10_000;
/// How long one `XREAD` blocks before it is reissued.
const DEFAULT_BLOCK: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Fetch replies are small; a stalled server must not hang the tail.
const FETCH_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// One batch of the tail: the current values of the relevant keys that
/// changed, fetched outside any lock of the caller.
#[derive(Clone, Debug, Default)]
pub struct TailBatch {
    /// The fetched values.
    pub values: FetchedValues,
    /// The id of the last entry read (the tail's new position).
    pub last_event_id: String,
    /// Entries read, skipped and malformed in this batch.
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
    /// New entries: apply the values, then record the counts and id.
    Batch(TailBatch),
    /// The stream no longer holds every entry after our position (trimmed,
    /// or Redis came back without it): rebuild by snapshot into a fresh
    /// projection, then [`Tail::resume_from`] its last id.
    Resync {
        /// Our position when the gap was detected.
        last_event_id: String,
    },
}

/// What a [`Tail`] reports about itself, readable from any thread without
/// touching the tail: a cheap clone of shared atomics.
///
/// Obtained with [`Tail::status`]; a later tail (after a leader switch) can
/// report into the same handle with [`Tail::set_status`], so its readers keep
/// one handle and the counters continue.
#[derive(Clone, Debug, Default)]
pub struct TailStatus {
    shared: Arc<SharedTailStatus>,
}

#[derive(Debug)]
struct SharedTailStatus {
    connected: AtomicBool,
    /// Connections opened by the tails reporting here (the first is no reconnect).
    connections: AtomicU64,
    /// Unix milliseconds of the last entry read; 0 until one was.
    last_entry_at_ms: AtomicU64,
    /// [`UNKNOWN_LAG`] until the tail has seen where the stream ends.
    lag_entries: AtomicU64,
    /// Why the tail is not verified live, `None` while it is: set on every
    /// connection loss, timeout and broken stream, cleared by a read or an
    /// idle verification that succeeded.
    not_live_reason: Mutex<Option<String>>,
    /// Bumped on every change of `connected` or `not_live_reason`, so
    /// waiters ([`TailStatus::wait_for`]) need not poll.
    changes: tokio::sync::watch::Sender<u64>,
}

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

const NOT_CONNECTED_YET: &str = "the tail has not reached redis yet";

impl TailStatus {
    /// Whether the tail holds a working connection to Redis (false before
    /// its first read and while it retries after a loss).
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

    /// When the tail last read stream entries, if it has.
    pub fn last_entry_at(&self) -> Option<SystemTime> {
        match self.shared.last_entry_at_ms.load(Ordering::Relaxed) {
            0 => None,
            milliseconds => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(milliseconds)),
        }
    }

    /// Stream entries after the tail's position when it last looked at the
    /// stream (`XINFO STREAM` after every read). Counted from the stream's
    /// `entries-added` (Redis >= 7), so it is `None` until the tail has once
    /// caught up with the stream's end; 0 whenever it is caught up.
    pub fn lag_entries(&self) -> Option<u64> {
        match self.shared.lag_entries.load(Ordering::Relaxed) {
            UNKNOWN_LAG => None,
            lag => Some(lag),
        }
    }

    /// Why the tail is not verified live (disconnected, the peer stopped
    /// answering, the stream lost entries after our position and a
    /// resynchronisation is due), or `None` while it is: connected, and the
    /// last read or idle verification (at least once per block time)
    /// succeeded.
    pub fn not_live_reason(&self) -> Option<String> {
        self.shared
            .not_live_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until `condition` holds for this status (checked now and after
    /// every change of the connection or liveness).
    pub async fn wait_for(&self, mut condition: impl FnMut(&TailStatus) -> bool) {
        let mut changes = self.shared.changes.subscribe();
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

    fn set_connected(&self, connected: bool) {
        self.shared.connected.store(connected, Ordering::Relaxed);
        self.shared.changes.send_modify(|changes| *changes += 1);
    }

    /// Verified live (`None`) or not (`Some(reason)`); notifies waiters on a
    /// change only.
    fn set_not_live(&self, reason: Option<String>) {
        let mut current = self
            .shared
            .not_live_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != reason {
            *current = reason;
            drop(current);
            self.shared.changes.send_modify(|changes| *changes += 1);
        }
    }

    fn record_connection(&self) {
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        self.set_connected(true);
    }

    fn record_entries_read(&self) {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |since_epoch| since_epoch.as_millis().max(1) as u64);
        self.shared
            .last_entry_at_ms
            .store(now_ms, Ordering::Relaxed);
    }

    fn set_lag_entries(&self, lag: Option<u64>) {
        self.shared
            .lag_entries
            .store(lag.unwrap_or(UNKNOWN_LAG), Ordering::Relaxed);
    }
}

/// Follows `meta:events` after a position (see `Source::tail`).
pub struct Tail {
    client: redis::Client,
    prefix: String,
    last_event_id: String,
    block: Duration,
    read_connection: Option<MultiplexedConnection>,
    fetch_connection: Option<MultiplexedConnection>,
    relevance: Option<RelevanceCache>,
    /// Set while Redis is unreachable, so an outage is logged once.
    outage_attempts: Option<u32>,
    status: TailStatus,
    /// The stream's `entries-added` count at our position, once seen: an
    /// `XINFO` finding the stream ends at our position gives it, every entry
    /// read advances it, and the lag is the stream's count minus it.
    entries_added_at_position: Option<u64>,
    /// The server last verified to hold our position.
    identity: Option<ServerIdentity>,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Tail")
            .field("prefix", &self.prefix)
            .field("last_event_id", &self.last_event_id)
            .field("connected", &self.read_connection.is_some())
            .finish()
    }
}

impl Tail {
    pub(crate) fn new(client: redis::Client, prefix: &str, last_event_id: &str) -> Self {
        Self {
            client: with_keepalive(&client),
            prefix: prefix.to_owned(),
            last_event_id: last_event_id.to_owned(),
            block: DEFAULT_BLOCK,
            read_connection: None,
            fetch_connection: None,
            relevance: None,
            outage_attempts: None,
            status: TailStatus::default(),
            entries_added_at_position: None,
            identity: None,
        }
    }

    /// A handle on this tail's connection state, reconnects, last read and lag.
    pub fn status(&self) -> TailStatus {
        self.status.clone()
    }

    /// Reports into `status` from now on (e.g. the handle of the tail this
    /// one replaces after a leader switch), so readers keep one handle.
    pub fn set_status(&mut self, status: TailStatus) {
        if self.read_connection.is_some() {
            status.record_connection();
        } else {
            status.set_not_live(Some(NOT_CONNECTED_YET.to_owned()));
        }
        self.status = status;
    }

    /// How long one `XREAD BLOCK` waits before it is reissued (default 5 s).
    pub fn set_block(&mut self, block: Duration) {
        self.block = block.max(Duration::from_millis(1));
    }

    /// The id of the last entry read.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Continues after `last_event_id` (after a resynchronisation).
    ///
    /// The bootstrap that produced `last_event_id` has just read this
    /// Redis, so the tail counts as live again if it is connected; the next
    /// read or idle verification confirms it.
    pub fn resume_from(&mut self, last_event_id: &str) {
        self.last_event_id = last_event_id.to_owned();
        self.entries_added_at_position = None;
        self.status.set_lag_entries(None);
        // The snapshot came from whatever server answers now.
        self.identity = None;
        if self.read_connection.is_some() {
            self.status.set_not_live(None);
        }
    }

    /// Waits for the next entries and returns the current values of their
    /// relevant keys. Connection loss is retried with backoff and resumes
    /// from the last id; only errors that retrying cannot fix are returned.
    /// While no entries come, every block time the tail verifies that Redis
    /// answers and that the stream still leads on from our position, and
    /// asks for a [`TailEvent::Resync`] when it does not.
    ///
    /// Cancel-safe: dropping the future loses nothing, the position only
    /// advances when a batch is returned.
    pub async fn next_batch(
        &mut self,
        relevant: &RelevantProperties,
    ) -> Result<TailEvent, StreamError> {
        match &mut self.relevance {
            Some(relevance) => relevance.set(relevant),
            None => self.relevance = Some(RelevanceCache::new(relevant.clone())),
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.try_next_batch().await {
                Ok(Some(event)) => {
                    self.recovered();
                    return Ok(event);
                }
                Ok(None) => self.recovered(),
                Err(error) if is_transient(&error) => {
                    self.read_connection = None;
                    self.fetch_connection = None;
                    self.status
                        .set_not_live(Some(format!("lost redis, reconnecting: {error}")));
                    self.status.set_connected(false);
                    let attempts = self.outage_attempts.get_or_insert(0);
                    if *attempts == 0 {
                        tracing::warn!(%error, last_event_id = self.last_event_id, "lost redis; retrying with backoff");
                    }
                    *attempts += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    self.status
                        .set_not_live(Some(format!("reading the stream failed: {error}")));
                    return Err(error);
                }
            }
        }
    }

    fn recovered(&mut self) {
        if let Some(attempts) = self.outage_attempts.take() {
            tracing::info!(
                attempts,
                last_event_id = self.last_event_id,
                "redis is back; resuming the tail"
            );
        }
    }

    /// The blocking connection's response timeout: a healthy Redis answers
    /// an `XREAD BLOCK` after the block time, never much later.
    fn read_response_timeout(&self) -> Duration {
        self.block + RESPONSE_MARGIN
    }

    /// Opens both connections.
    async fn connect(&mut self) -> Result<(), StreamError> {
        let blocking = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.read_response_timeout()));
        let fetching = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(FETCH_RESPONSE_TIMEOUT));
        let connect = |cause| StreamError::Connect {
            url: "the tail's redis".to_owned(),
            cause,
        };
        let read = self
            .client
            .get_multiplexed_async_connection_with_config(&blocking)
            .await
            .map_err(connect)?;
        let fetch = self
            .client
            .get_multiplexed_async_connection_with_config(&fetching)
            .await
            .map_err(connect)?;
        self.read_connection = Some(read);
        self.fetch_connection = Some(fetch);
        Ok(())
    }

    /// Whether the stream still leads on from our position: the stream's
    /// end, start and deletions, and — when the server is not the process
    /// (or replication history) we last verified — the entry at our
    /// position. Marks the tail live when it does; a `Resync` when not.
    async fn verify(&mut self) -> Result<Option<TailEvent>, StreamError> {
        let Some(fetch) = &mut self.fetch_connection else {
            return Ok(None);
        };
        let (info, identity) = observe(fetch).await?;
        let mut continuity = stream_continuity(
            info.as_ref(),
            &self.last_event_id,
            self.entries_added_at_position,
        );
        if continuity == Continuity::Continuous
            && self
                .identity
                .as_ref()
                .is_some_and(|known| *known != identity)
            && !holds_entry(fetch, &self.last_event_id).await?
        {
            continuity = Continuity::Broken(format!(
                "redis restarted or failed over (run_id {}, replication id {}) without the entry at our position {}",
                identity.run_id, identity.replication_id, self.last_event_id
            ));
        }
        self.identity = Some(identity);
        self.observe_stream_end(info.as_ref());
        match continuity {
            Continuity::Continuous => {
                // A fresh connection is marked live once it is counted.
                if self.status.is_connected() {
                    self.status.set_not_live(None);
                }
                Ok(None)
            }
            Continuity::Broken(reason) => {
                tracing::warn!(
                    reason,
                    last_event_id = self.last_event_id,
                    "the stream no longer leads on from our position"
                );
                self.status
                    .set_not_live(Some(format!("resynchronising: {reason}")));
                Ok(Some(TailEvent::Resync {
                    last_event_id: self.last_event_id.clone(),
                }))
            }
        }
    }

    /// One `XREAD`; `None` when it timed out without entries.
    async fn try_next_batch(&mut self) -> Result<Option<TailEvent>, StreamError> {
        if self.read_connection.is_none() || self.fetch_connection.is_none() {
            self.connect().await?;
            // After (re)connecting, the stream must still lead on from our
            // position: a Redis that came back empty, or trimmed past us,
            // means changes were lost. Only a connection that answered this
            // counts as one (a Redis still loading its data does not).
            let verdict = self.verify().await?;
            self.status.record_connection();
            match verdict {
                Some(resync) => return Ok(Some(resync)),
                None => self.status.set_not_live(None),
            }
        }
        let response_timeout = self.read_response_timeout();
        let (Some(read), Some(fetch), Some(relevance)) = (
            &mut self.read_connection,
            &mut self.fetch_connection,
            &mut self.relevance,
        ) else {
            return Ok(None);
        };
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(ENTRIES_PER_READ)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(EVENTS_STREAM)
            .arg(&self.last_event_id)
            .query_async(read)
            .await
            .map_err(|cause| {
                if cause.is_timeout() {
                    timed_out("XREAD meta:events", response_timeout)
                } else {
                    StreamError::Command {
                        operation: "XREAD meta:events",
                        cause,
                    }
                }
            })?;
        let entries_and_last_id = stream_entries(reply)
            .and_then(|entries| last_entry_id(&entries).map(|last_id| (entries, last_id)));
        let Some((entries, last_id)) = entries_and_last_id else {
            // Timed out: nothing after us when it was issued. Nothing wakes
            // us for losses without a new entry (a flush, a trim to empty,
            // an `XDEL` of entries we have not read, a restart), so look now;
            // this also pings the fetch connection and keeps the lag current.
            return self.verify().await;
        };
        let n_entries = match &entries {
            Value::Array(items) => items.len() as u64,
            _ => 0,
        };
        self.status.record_entries_read();
        let mut batch = EntryBatch::default();
        batch.add_entries(entries, &self.prefix, relevance);
        // Entries after our old position were deleted before we read them
        // (the stream was trimmed past us): they are lost to us.
        let info = stream_info(fetch).await?;
        if let Continuity::Broken(reason) = stream_continuity(
            info.as_ref(),
            &self.last_event_id,
            self.entries_added_at_position,
        ) {
            self.status
                .set_not_live(Some(format!("resynchronising: {reason}")));
            return Ok(Some(TailEvent::Resync {
                last_event_id: self.last_event_id.clone(),
            }));
        }
        let values = fetch_values(fetch, std::mem::take(&mut batch.keys)).await?;
        let counts = EventCounts {
            n_malformed: batch.counts.n_malformed + values.n_malformed(),
            ..batch.counts
        };
        self.last_event_id = last_id.clone();
        self.entries_added_at_position = self
            .entries_added_at_position
            .map(|entries_added| entries_added + n_entries);
        self.observe_stream_end(info.as_ref());
        self.status.set_not_live(None);
        Ok(Some(TailEvent::Batch(TailBatch {
            values,
            last_event_id: last_id,
            counts,
        })))
    }
}

impl Tail {
    /// Updates the lag from where the stream ends (`XINFO STREAM`, `None`
    /// when there is no stream).
    fn observe_stream_end(&mut self, info: Option<&StreamInfo>) {
        let Some(info) = info else {
            self.status.set_lag_entries(Some(0));
            return;
        };
        let position = StreamId::parse(&self.last_event_id).unwrap_or_default();
        let stream_end = StreamId::parse(&info.last_generated_id).unwrap_or_default();
        let lag = if stream_end <= position {
            // Caught up: this is where the count of entries added stands at
            // our position.
            if info.entries_added.is_some() {
                self.entries_added_at_position = info.entries_added;
            }
            Some(0)
        } else {
            self.entries_added_at_position
                .zip(info.entries_added)
                .map(|(at_position, added)| added.saturating_sub(at_position))
        };
        self.status.set_lag_entries(lag);
    }
}

/// Worth retrying after reconnecting: a connection problem, or a Redis that
/// is up but not ready (loading its data set after a restart, a replica
/// whose master is down).
fn is_transient(error: &StreamError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    error.is_connection_error()
        || matches!(error, StreamError::Command { cause, .. } if matches!(
            cause.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::MasterDown
            )
        ))
}

/// `XREAD` answers `[[stream, entries]]` (RESP2) or `{stream: entries}`
/// (RESP3), or nil after a timeout.
fn stream_entries(reply: Value) -> Option<Value> {
    match reply {
        Value::Array(streams) => match streams.into_iter().next()? {
            Value::Array(mut stream) if stream.len() == 2 => stream.pop(),
            _ => None,
        },
        Value::Map(streams) => streams.into_iter().next().map(|(_, entries)| entries),
        _ => None,
    }
}
