//! The live tail: `XREAD BLOCK` on a connection of its own, values fetched
//! on another, reconnecting with backoff after a connection loss. Every
//! reconnect and every idle read verifies that the peer answers and that the
//! stream still leads on from our position (`liveness`).

use std::time::Duration;

use metafuse_rules::RelevantProperties;
use metafuse_source::{NOT_CONNECTED_YET, TailBatch, TailEvent, TailStatus};
use metafuse_state::{EVENTS_STREAM, EventCounts};
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::cluster::StateConnection;
use crate::connect::Connector;
use crate::entries::{EntryBatch, RelevanceCache, StreamId, last_entry_id};
use crate::error::StreamError;
use crate::fetch::fetch_values;
use crate::info::{StreamInfo, stream_info};
use crate::liveness::{
    Continuity, RESPONSE_MARGIN, ServerIdentity, holds_entry, observe, stream_continuity, timed_out,
};

/// Entries per `XREAD`.
const ENTRIES_PER_READ: usize = 10_000;
/// How long one `XREAD` blocks before it is reissued.
const DEFAULT_BLOCK: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Fetch replies are small; a stalled server must not hang the tail.
const FETCH_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Follows `meta:events` after a position (see `Source::tail`).
pub struct Tail {
    connector: Connector,
    prefix: String,
    last_event_id: String,
    block: Duration,
    read_connection: Option<MultiplexedConnection>,
    fetch_connection: Option<StateConnection>,
    /// Whether the open connections were verified and counted. A read
    /// cancelled between connecting and verifying (the state task pre-empts
    /// reads with commands) leaves connections open but unverified: the
    /// next read must verify them, or the status never says connected.
    connection_verified: bool,
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
    /// Sentinel: changes when the sentinels switch master, so a blocked
    /// read on the old one is abandoned at once.
    master_switches: Option<tokio::sync::watch::Receiver<u64>>,
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
    pub(crate) fn new(connector: Connector, prefix: &str, last_event_id: &str) -> Self {
        Self {
            connector,
            prefix: prefix.to_owned(),
            last_event_id: last_event_id.to_owned(),
            block: DEFAULT_BLOCK,
            read_connection: None,
            fetch_connection: None,
            connection_verified: false,
            relevance: None,
            outage_attempts: None,
            status: TailStatus::default(),
            entries_added_at_position: None,
            identity: None,
            master_switches: None,
        }
    }

    /// A handle on this tail's connection state, reconnects, last read and lag.
    pub fn status(&self) -> TailStatus {
        self.status.clone()
    }

    /// Reports into `status` from now on (e.g. the handle of the tail this
    /// one replaces after a leader switch), so readers keep one handle.
    pub fn set_status(&mut self, status: TailStatus) {
        if self.connection_verified {
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
        if self.connection_verified {
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
                    self.connection_verified = false;
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

    /// Opens both connections: the blocking one times out a little after
    /// the block time, the fetch one after [`FETCH_RESPONSE_TIMEOUT`].
    async fn connect(&mut self) -> Result<(), StreamError> {
        // In a cluster: the node serving `meta:events` now.
        let read = self
            .connector
            .for_key(EVENTS_STREAM)
            .await?
            .multiplexed(Some(self.read_response_timeout()))
            .await?;
        let fetch = self.connector.stream_state(FETCH_RESPONSE_TIMEOUT).await?;
        self.connection_verified = false;
        self.read_connection = Some(read);
        self.fetch_connection = Some(fetch);
        // Subscribed after connecting: a switch announced from now on
        // concerns the master we are connected to.
        self.master_switches = self.connector.master_switches();
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
        if !self.connection_verified
            || self.read_connection.is_none()
            || self.fetch_connection.is_none()
        {
            self.connect().await?;
            // After (re)connecting, the stream must still lead on from our
            // position: a Redis that came back empty, or trimmed past us,
            // means changes were lost. Only a connection that answered this
            // counts as one (a Redis still loading its data does not).
            let verdict = self.verify().await?;
            self.status.record_connection();
            self.connection_verified = true;
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
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(ENTRIES_PER_READ)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(EVENTS_STREAM)
            .arg(&self.last_event_id);
        let read_result = tokio::select! {
            result = xread.query_async::<Value>(read) => result,
            () = master_switched(&mut self.master_switches) => {
                return Err(StreamError::Command {
                    operation: "XREAD meta:events",
                    cause: redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the sentinels switched master",
                    )),
                });
            }
        };
        let reply: Value = read_result.map_err(|cause| {
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

/// Resolves when the sentinels announce a new master (never without
/// Sentinel, nor once the announcements stopped).
async fn master_switched(switches: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    let announced = match switches {
        Some(receiver) => receiver.changed().await.is_ok(),
        None => false,
    };
    if !announced {
        std::future::pending::<()>().await;
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
