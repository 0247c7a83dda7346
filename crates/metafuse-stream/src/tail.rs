//! The live tail: `XREAD BLOCK` on a connection of its own (outside a
//! cluster, raw RESP: the values' `MGET`s too, with the next `XREAD` sent
//! ahead in their write while a backlog lasts), reconnecting with backoff
//! after a connection loss. Every
//! reconnect and every idle read verifies that the peer answers and that the
//! stream still leads on from our position (`liveness`).

use std::time::Duration;

use metafuse_rules::RelevantProperties;
use metafuse_source::{NOT_CONNECTED_YET, TailBatch, TailEvent, TailStatus};
use metafuse_state::{EVENTS_STREAM, EventCounts};
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::cluster::StateConnection;
use crate::connect::{BulkConnection, Connector};
use crate::entries::{EntryBatch, RelevanceCache, StreamId, decode_entry, last_entry_id};
use crate::error::StreamError;
use crate::fetch::{fetch_values, fetch_values_then};
use crate::info::{StreamInfo, stream_info};
use crate::liveness::{
    Continuity, RESPONSE_MARGIN, ServerIdentity, holds_entry, observe, stream_continuity, timed_out,
};
use crate::resp::{Frame, Reader, RespConnection, Short, server_error};

/// Entries per `XREAD`.
const ENTRIES_PER_READ: usize = 10_000;
/// How long one `XREAD` blocks before it is reissued.
const DEFAULT_BLOCK: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Fetch replies are small; a stalled server must not hang the tail.
const FETCH_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The blocking connection: a raw RESP one where possible (`XREAD` replies
/// and, outside a cluster, the values' `MGET`s decoded straight from the
/// socket buffer, without a `redis::Value` per field), the redis crate's
/// for TLS.
enum ReadConnection {
    Raw {
        connection: RespConnection,
        /// What was sent and not yet read back: a read cancelled while
        /// waiting (the state task pre-empts reads with commands) leaves
        /// its reply on the socket.
        pending: Pending,
    },
    Multiplexed(MultiplexedConnection),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    Nothing,
    /// An `XREAD` after this id: the next read waits for its reply rather
    /// than sending another.
    Read {
        after: String,
    },
    /// Anything else (`MGET`s cut short): the connection is replaced.
    Unknown,
}

/// Follows `meta:events` after a position (see `Source::tail`).
pub struct Tail {
    connector: Connector,
    prefix: String,
    last_event_id: String,
    block: Duration,
    read_connection: Option<ReadConnection>,
    fetch_connection: Option<StateConnection>,
    /// Whether the open connections were verified and counted. A read
    /// cancelled between connecting and verifying (the state task pre-empts
    /// reads with commands) leaves connections open but unverified: the
    /// next read must verify them, or the status never says connected.
    connection_verified: bool,
    /// Raw RESP reads where the connection allows (see [`ReadConnection`]).
    raw_reads: bool,
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
            raw_reads: true,
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

    /// Whether reads are decoded from raw RESP where the connection allows
    /// (the default), or with the redis crate's parser; from the next
    /// connection on.
    pub fn set_raw_reads(&mut self, raw: bool) {
        self.raw_reads = raw;
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
        let read = open_read_connection(
            &self.connector,
            self.read_response_timeout(),
            self.raw_reads,
        )
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
        // A raw connection whose last read was cut short after another
        // command, or whose position moved since: replaced, not drained (a
        // stale `XREAD` may block for the whole block time).
        if let Some(ReadConnection::Raw { pending, .. }) = &self.read_connection
            && *pending != Pending::Nothing
            && *pending
                != (Pending::Read {
                    after: self.last_event_id.clone(),
                })
        {
            self.read_connection = Some(
                open_read_connection(
                    &self.connector,
                    self.read_response_timeout(),
                    self.raw_reads,
                )
                .await?,
            );
        }
        let response_timeout = self.read_response_timeout();
        let (Some(read), Some(fetch), Some(relevance)) = (
            &mut self.read_connection,
            &mut self.fetch_connection,
            &mut self.relevance,
        ) else {
            return Ok(None);
        };
        let mut batch = EntryBatch::default();
        let last_event_id = &self.last_event_id;
        let block = self.block;
        let prefix = &self.prefix;
        let reading = async {
            match read {
                ReadConnection::Raw {
                    connection,
                    pending,
                } => {
                    read_raw(
                        connection,
                        pending,
                        last_event_id,
                        block,
                        prefix,
                        relevance,
                        &mut batch,
                    )
                    .await
                }
                ReadConnection::Multiplexed(connection) => {
                    read_multiplexed(
                        connection,
                        last_event_id,
                        block,
                        prefix,
                        relevance,
                        &mut batch,
                    )
                    .await
                }
            }
        };
        // A switch announced by the sentinels ends the read at once: the old
        // master may never answer again. The connection is dropped (its
        // reply, if any, is unusable), so the next read reconnects.
        let switched = tokio::select! {
            outcome = reading => Some(outcome),
            () = master_switched(&mut self.master_switches) => None,
        };
        let Some(read_outcome) = switched else {
            self.read_connection = None;
            return Err(StreamError::Command {
                operation: "XREAD meta:events",
                cause: redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the sentinels switched master",
                )),
            });
        };
        let n_entries = match read_outcome {
            Ok(n_entries) => n_entries,
            Err(cause) => {
                // Whatever the connection holds now cannot be trusted.
                self.read_connection = None;
                return Err(if cause.is_timeout() {
                    timed_out("XREAD meta:events", response_timeout)
                } else {
                    StreamError::Command {
                        operation: "XREAD meta:events",
                        cause,
                    }
                });
            }
        };
        let Some(last_id) = batch.last_id.clone().filter(|_| n_entries > 0) else {
            // Timed out: nothing after us when it was issued. Nothing wakes
            // us for losses without a new entry (a flush, a trim to empty,
            // an `XDEL` of entries we have not read, a restart), so look now;
            // this also pings the fetch connection and keeps the lag current.
            return self.verify().await;
        };
        let n_entries = n_entries as u64;
        self.status.record_entries_read();
        let mut keys = std::mem::take(&mut batch.keys);
        // A full batch means a backlog: the next `XREAD` (after this batch)
        // is sent before this batch's values are read back, so that Redis
        // works on it while the values are decoded and the batch is
        // applied, and the next call finds its reply waiting
        // (`Pending::Read` after the position this batch moves us to). The
        // values are still read after the reply that named them. Caught up,
        // the next read is sent when asked for, as it would block.
        let read_ahead = n_entries == ENTRIES_PER_READ as u64;
        let single_node = self.connector.topology().is_none();
        let (info, values) = match read {
            // Outside a cluster the values are on the node we read from:
            // fetched on the raw connection, decoded from its buffer, in the
            // same write as the `XREAD` that follows them. Meanwhile the
            // stream's state is asked for on the other connection.
            ReadConnection::Raw {
                connection,
                pending,
            } if single_node => {
                *pending = Pending::Unknown;
                let (info, values) = tokio::join!(
                    stream_info(fetch),
                    fetch_values_then(connection, std::mem::take(&mut keys), |connection| {
                        if read_ahead {
                            push_xread(connection, &last_id, block);
                        }
                    })
                );
                let values = values?;
                *pending = if read_ahead {
                    Pending::Read {
                        after: last_id.clone(),
                    }
                } else {
                    Pending::Nothing
                };
                (info?, Some(values))
            }
            ReadConnection::Raw {
                connection,
                pending,
            } if read_ahead => {
                *pending = Pending::Unknown;
                push_xread(connection, &last_id, block);
                connection
                    .send_request()
                    .await
                    .map_err(StreamError::command("XREAD meta:events"))?;
                *pending = Pending::Read {
                    after: last_id.clone(),
                };
                (stream_info(fetch).await?, None)
            }
            _ => (stream_info(fetch).await?, None),
        };
        // Entries after our old position were deleted before we read them
        // (the stream was trimmed past us): they are lost to us.
        if let Continuity::Broken(reason) = stream_continuity(
            info.as_ref(),
            &self.last_event_id,
            self.entries_added_at_position,
        ) {
            // An `XREAD` sent after the batch dropped here is of no use:
            // the connection is replaced rather than drained.
            if let Some(ReadConnection::Raw { pending, .. }) = &mut self.read_connection
                && *pending != Pending::Nothing
            {
                *pending = Pending::Unknown;
            }
            self.status
                .set_not_live(Some(format!("resynchronising: {reason}")));
            return Ok(Some(TailEvent::Resync {
                last_event_id: self.last_event_id.clone(),
            }));
        }
        let values = match values {
            Some(values) => values,
            None => fetch_values(fetch, keys).await?,
        };
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

/// The blocking connection to the node serving `meta:events`.
async fn open_read_connection(
    connector: &Connector,
    response_timeout: Duration,
    raw: bool,
) -> Result<ReadConnection, StreamError> {
    let node = connector.for_key(EVENTS_STREAM).await?;
    if !raw {
        return Ok(ReadConnection::Multiplexed(
            node.multiplexed(Some(response_timeout)).await?,
        ));
    }
    Ok(match node.bulk(response_timeout).await? {
        BulkConnection::Raw(connection) => ReadConnection::Raw {
            connection,
            pending: Pending::Nothing,
        },
        BulkConnection::Multiplexed(connection) => ReadConnection::Multiplexed(connection),
        BulkConnection::Cluster(_) => {
            ReadConnection::Multiplexed(node.multiplexed(Some(response_timeout)).await?)
        }
    })
}

/// The `XREAD BLOCK` command after `after`.
fn xread_arguments<'a>(after: &'a str, count: &'a str, block: &'a str) -> [&'a [u8]; 8] {
    [
        b"XREAD",
        b"COUNT",
        count.as_bytes(),
        b"BLOCK",
        block.as_bytes(),
        b"STREAMS",
        EVENTS_STREAM.as_bytes(),
        after.as_bytes(),
    ]
}

/// Pushes an `XREAD BLOCK` after `after` into the request being built.
fn push_xread(connection: &mut RespConnection, after: &str, block: Duration) {
    let block = (block.as_millis() as u64).to_string();
    let count = ENTRIES_PER_READ.to_string();
    connection.push_command(8, xread_arguments(after, &count, &block));
}

/// One `XREAD` on a raw connection, its entries added to `batch`; returns
/// how many there were (0 after a timeout). Entries are decoded as their
/// bytes arrive (decoding overlaps Redis writing the rest), and nothing is
/// consumed until the reply is whole. Cancel safe: a wait cut short drops
/// the entries decoded so far with `batch`, `pending` says which read to
/// wait for again, and that read decodes again from the reply's start.
async fn read_raw(
    connection: &mut RespConnection,
    pending: &mut Pending,
    after: &str,
    block: Duration,
    prefix: &str,
    relevance: &mut RelevanceCache,
    batch: &mut EntryBatch,
) -> Result<usize, redis::RedisError> {
    if *pending == Pending::Nothing {
        push_xread(connection, after, block);
        *pending = Pending::Unknown;
        connection.send_request().await?;
        *pending = Pending::Read {
            after: after.to_owned(),
        };
    }
    let mut progress = XreadProgress::default();
    let decoded = loop {
        let mut reader = Reader::new(connection.unconsumed());
        reader.position = progress.position;
        match progress.decode(&mut reader, prefix, relevance, batch) {
            Ok(decoded) => break decoded,
            Err(Short::Incomplete) => connection.fill().await?,
            Err(Short::Protocol(what)) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Parse,
                    "invalid reply",
                    what.to_owned(),
                )));
            }
        }
    };
    connection.consume(progress.position);
    *pending = Pending::Nothing;
    decoded
}

/// How far an `XREAD` reply has been decoded: whole entries only, so that
/// decoding resumes at an entry's start once more bytes arrived.
#[derive(Debug, Default)]
struct XreadProgress {
    /// Entries in the reply, once its header was read.
    n_entries: Option<usize>,
    n_decoded: usize,
    /// Where the next entry starts, from the reply's start.
    position: usize,
}

impl XreadProgress {
    /// Decodes what the buffered bytes hold whole; [`Short::Incomplete`]
    /// when the reply goes on beyond them.
    fn decode(
        &mut self,
        reader: &mut Reader<'_>,
        prefix: &str,
        relevance: &mut RelevanceCache,
        batch: &mut EntryBatch,
    ) -> Result<Result<usize, redis::RedisError>, Short> {
        let n_entries = match self.n_entries {
            Some(n_entries) => n_entries,
            None => {
                let n_entries = match reader.frame()? {
                    // `[[stream, entries]]`
                    Frame::Array(1) => {
                        if reader.frame()? != Frame::Array(2) {
                            return Err(Short::Protocol("an XREAD stream is not [name, entries]"));
                        }
                        let name = reader.frame()?;
                        reader.skip_children(name)?;
                        match reader.frame()? {
                            Frame::Array(n_entries) => n_entries,
                            _ => return Err(Short::Protocol("XREAD entries are not an array")),
                        }
                    }
                    Frame::Nil | Frame::Array(0) => 0,
                    Frame::Error(line) => {
                        self.position = reader.position;
                        return Ok(Err(server_error(line)));
                    }
                    _ => return Err(Short::Protocol("an XREAD reply is not an array")),
                };
                self.position = reader.position;
                self.n_entries = Some(n_entries);
                n_entries
            }
        };
        while self.n_decoded < n_entries {
            let entry = decode_entry(reader)?;
            batch.add(entry, prefix, relevance);
            self.n_decoded += 1;
            self.position = reader.position;
        }
        Ok(Ok(n_entries))
    }
}

/// One `XREAD` with the redis crate (TLS), its entries added to `batch`.
async fn read_multiplexed(
    connection: &mut MultiplexedConnection,
    after: &str,
    block: Duration,
    prefix: &str,
    relevance: &mut RelevanceCache,
    batch: &mut EntryBatch,
) -> Result<usize, redis::RedisError> {
    let reply: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(ENTRIES_PER_READ)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(EVENTS_STREAM)
        .arg(after)
        .query_async(connection)
        .await?;
    let Some(entries) = stream_entries(reply) else {
        return Ok(0);
    };
    let Some(last_id) = last_entry_id(&entries) else {
        return Ok(0);
    };
    let n_entries = batch.add_entries(entries, prefix, relevance);
    batch.last_id = Some(last_id);
    Ok(n_entries)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> String {
        format!("${}\r\n{text}\r\n", text.len())
    }

    /// An `XREAD` reply of `n_entries` `set` events, every other one about
    /// a relevant property.
    fn xread_reply(n_entries: usize) -> Vec<u8> {
        let mut reply = format!("*1\r\n*2\r\n{}*{n_entries}\r\n", bulk(EVENTS_STREAM));
        for index in 0..n_entries {
            let property = if index % 2 == 0 { "title" } else { "ignored" };
            reply.push_str("*2\r\n");
            reply.push_str(&bulk(&format!("1-{index}")));
            reply.push_str("*4\r\n");
            reply.push_str(&bulk("type"));
            reply.push_str(&bulk("set"));
            reply.push_str(&bulk("key"));
            reply.push_str(&bulk(&format!("file:h{index}/{property}")));
        }
        reply.into_bytes()
    }

    /// Decoding as the bytes arrive, a few at a time, resumes at whole
    /// entries: every entry is added once, as when decoded in one go.
    #[test]
    fn xread_replies_decoded_in_pieces_add_every_entry_once() {
        let reply = xread_reply(7);
        let relevant = RelevantProperties::from_names(["title"]);
        let decode_whole = |reply: &[u8], arrived: &[usize]| {
            let mut relevance = RelevanceCache::new(relevant.clone());
            let mut batch = EntryBatch::default();
            let mut progress = XreadProgress::default();
            for &end in arrived {
                let mut reader = Reader::new(&reply[..end]);
                reader.position = progress.position;
                match progress.decode(&mut reader, "", &mut relevance, &mut batch) {
                    Ok(decoded) => {
                        assert_eq!(end, reply.len(), "whole only at the end");
                        assert_eq!(progress.position, reply.len());
                        return (decoded.unwrap(), batch);
                    }
                    Err(short) => assert_eq!(short, Short::Incomplete),
                }
            }
            panic!("never whole");
        };
        let (n_whole, whole) = decode_whole(&reply, &[reply.len()]);
        assert_eq!(n_whole, 7);
        assert_eq!(whole.keys.len(), 4);
        for step in [1, 3, 17, 64] {
            let arrived: Vec<usize> = (1..=reply.len())
                .filter(|end| end % step == 0 || *end == reply.len())
                .collect();
            let (n_entries, batch) = decode_whole(&reply, &arrived);
            assert_eq!(n_entries, 7, "step {step}");
            assert_eq!(batch.keys, whole.keys, "step {step}");
            assert_eq!(batch.counts, whole.counts, "step {step}");
            assert_eq!(batch.last_id.as_deref(), Some("1-6"), "step {step}");
        }
        let timed_out = b"*-1\r\n";
        assert_eq!(decode_whole(timed_out, &[2, timed_out.len()]).0, 0);
    }
}
