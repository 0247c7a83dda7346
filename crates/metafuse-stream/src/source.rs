//! Bootstrap: replay the stream or take a snapshot, whichever is possible
//! and cheaper, then catch up with the stream.

use std::time::{Duration, Instant};

use hashbrown::HashSet;
use metafuse_rules::RelevantProperties;
use metafuse_source::{
    BootstrapMethod, BootstrapReport, FetchedValues, Phase, Progress, SourceTopology, Timings,
    TopologyReader,
};
use metafuse_state::{
    EVENTS_STREAM, EventCounts, FILE_KEY_PREFIX, FetchPlan, Projection, escape_glob, index_key,
};
use redis::Value;
use redis::aio::ConnectionLike;
use tokio::sync::mpsc;

use crate::cluster::StateConnection;
use crate::connect::{BulkConnection, Connector};
use crate::entries::{EntryBatch, RelevanceCache, RelevantKey, decode_entry, last_entry_id};
use crate::error::StreamError;
use crate::fetch::fetch_values;
use crate::info::{StreamInfo, stream_info};
use crate::reconcile::Reconciler;
use crate::resp::{Frame, Short, server_error};
use crate::tail::Tail;

/// Entries per `XRANGE` page. Redis itself bounds a replay (its `XRANGE`
/// and `MGET` work is most of the time); pages of a few thousand entries
/// interleave the two best and start fetching soonest (measured: 2.1 s with
/// 4k against 2.3 s with 1k, 10k or 25k).
const ENTRIES_PER_PAGE: usize = 4_000;
/// Files per snapshot batch (× relevant names = keys per `MGET` pipeline).
/// Also in a cluster, where an `MGET` holds the keys of one slot only, so a
/// batch's keys spread over 16384 slots make one-key `MGET`s: batches of
/// 8k or 32k files (7 or 29 keys per `MGET`) measured no faster there
/// (docs/BENCHMARKS.md, Cluster).
const FILES_PER_SNAPSHOT_BATCH: usize = 1_000;
/// How a cursor walk goes: keys per `SCAN`/`SSCAN` step, and the pause
/// after each step (a background walk leaves Redis time for everyone else).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    pub(crate) count: usize,
    pub(crate) pause: std::time::Duration,
}

impl Pace {
    /// A bootstrap's walk: large steps, no pause.
    pub(crate) const BULK: Pace = Pace {
        count: 10_000,
        pause: Duration::ZERO,
    };
}
/// Cost model of the automatic choice, in tenths of microseconds measured
/// on a 2-core machine (100k files, 2.4M entries): a replay pays per stream
/// entry (decode, then fetch about half of them), a snapshot per key. Both
/// are now bound by Redis itself (`XRANGE` and `MGET` time).
const REPLAY_COST_PER_ENTRY: u64 = 9;
const SNAPSHOT_COST_PER_KEY: u64 = 9;
/// Bootstrap replies can be large; the 500 ms default is too short for them.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How to rebuild the projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Snapshot when the stream was trimmed or a snapshot is cheaper,
    /// replay otherwise.
    Auto,
    /// Replay `meta:events` from `0`.
    Replay,
    /// Read `file:__index__` and fetch every relevant property, then catch
    /// up with the stream from the id recorded before.
    Snapshot,
}

impl Strategy {
    /// `auto`, `replay` or `snapshot`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Replay => "replay",
            Strategy::Snapshot => "snapshot",
        }
    }
}

impl From<Strategy> for BootstrapMethod {
    /// `Auto` is a request, never a method used; it stands for a replay.
    fn from(strategy: Strategy) -> Self {
        match strategy {
            Strategy::Snapshot => BootstrapMethod::SNAPSHOT,
            Strategy::Replay | Strategy::Auto => BootstrapMethod::REPLAY,
        }
    }
}

// So a report's method compares with the strategy asked for.
impl PartialEq<Strategy> for BootstrapMethod {
    fn eq(&self, strategy: &Strategy) -> bool {
        *strategy != Strategy::Auto && *self == BootstrapMethod::from(*strategy)
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Strategy::Auto),
            "replay" => Ok(Strategy::Replay),
            "snapshot" => Ok(Strategy::Snapshot),
            other => Err(format!(
                "unknown strategy {other:?} (expected auto, replay or snapshot)"
            )),
        }
    }
}

/// A Redis holding a MetaMesh library.
#[derive(Clone)]
pub struct Source {
    connector: Connector,
    connection: StateConnection,
    prefix: String,
    scan_nested: bool,
    /// Files per snapshot batch; `None`: `FILES_PER_SNAPSHOT_BATCH`.
    files_per_snapshot_batch: Option<usize>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Source")
            .field("url", &self.connector.redacted_url())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Source {
    /// Connects to `url` (`redis://` or `rediss://`, password in the URL).
    /// `prefix` (`REDIS_PREFIX`) is put before every `file:` key; the stream
    /// key is always `meta:events`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StreamError> {
        let connector = Connector::new(url)?;
        let connection = connector.state(Some(RESPONSE_TIMEOUT)).await?;
        Ok(Self {
            connector,
            connection,
            prefix: prefix.to_owned(),
            scan_nested: false,
            files_per_snapshot_batch: None,
        })
    }

    /// A multiplexed connection does not come back after the server went
    /// away; a bootstrap (often a resync after an outage) starts with a
    /// fresh one if the old one is dead.
    async fn ensure_connected(&mut self) -> Result<(), StreamError> {
        // A frozen peer must not hold a refresh for the whole response
        // timeout: a PING answers at once or the connection is dead.
        let ping = tokio::time::timeout(
            crate::liveness::CHECK_TIMEOUT,
            redis::cmd("PING").query_async::<()>(&mut self.connection),
        )
        .await;
        if let Err(error) = ping
            .map_err(|_| "no answer to PING".to_owned())
            .and_then(|ping| ping.map_err(|error| error.to_string()))
        {
            tracing::debug!(%error, "redis connection is dead; reconnecting");
            self.connection = self.connector.state(Some(RESPONSE_TIMEOUT)).await?;
        }
        Ok(())
    }

    /// Whether a snapshot also `SCAN`s for nested children of relevant
    /// names (`titles/fra` when `titles` is tracked). Off by default: rules
    /// reach properties by exact name, so such children never change a
    /// path, and the scan walks the whole keyspace (seconds for 100k
    /// files). A replay stores them either way, as their events arrive.
    pub fn set_scan_nested(&mut self, scan_nested: bool) {
        self.scan_nested = scan_nested;
    }

    /// Files fetched per snapshot batch (default 1000), for benchmarks.
    pub fn set_files_per_snapshot_batch(&mut self, n_files: usize) {
        self.files_per_snapshot_batch = Some(n_files.max(1));
    }

    fn files_per_snapshot_batch(&self) -> usize {
        self.files_per_snapshot_batch
            .unwrap_or(FILES_PER_SNAPSHOT_BATCH)
    }

    /// The state connection, checked alive (reconnected if Redis restarted).
    pub(crate) async fn connection(&mut self) -> Result<StateConnection, StreamError> {
        self.ensure_connected().await?;
        Ok(self.connection.clone())
    }

    /// A connection to the node serving `meta:events` (the only node unless
    /// a cluster).
    pub(crate) async fn stream_node_connection(
        &self,
    ) -> Result<redis::aio::MultiplexedConnection, StreamError> {
        self.connector
            .for_key(EVENTS_STREAM)
            .await?
            .multiplexed(Some(RESPONSE_TIMEOUT))
            .await
    }

    /// Keys fetched per cluster master (`host:port`) since the start; empty
    /// unless a cluster. For per-node fetch metrics.
    pub fn fetched_keys_per_node(&self) -> Vec<(String, u64)> {
        self.connector
            .topology()
            .map(|topology| topology.fetched_keys())
            .unwrap_or_default()
    }

    /// How this Redis is deployed (`single`, `cluster`, `sentinel`) and
    /// what each node served so far.
    pub fn topology(&self) -> SourceTopology {
        self.connector.topology_report()
    }

    /// A reader of [`Source::topology`] that any thread may call.
    pub(crate) fn topology_reader(&self) -> TopologyReader {
        let connector = self.connector.clone();
        std::sync::Arc::new(move || connector.topology_report())
    }

    /// The key prefix of `file:` keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL, password redacted.
    pub fn url(&self) -> &str {
        self.connector.redacted_url()
    }

    /// Finds files the index does not list (see [`Reconciler`]), on its
    /// own connections.
    pub fn reconciler(&self) -> Reconciler {
        Reconciler::new(self.connector.clone(), &self.prefix)
    }

    /// A live tail of the stream after `last_event_id`, on its own
    /// connections.
    pub fn tail(&self, last_event_id: &str) -> Tail {
        Tail::new(self.connector.clone(), &self.prefix, last_event_id)
    }

    /// Rebuilds `projection` (normally empty) from Redis and returns where
    /// the stream stands. `progress` is called after every batch.
    pub async fn bootstrap(
        &mut self,
        projection: &mut Projection,
        strategy: Strategy,
        mut progress: impl FnMut(Progress),
    ) -> Result<BootstrapReport, StreamError> {
        let started = Instant::now();
        self.ensure_connected().await?;
        let info = stream_info(&mut self.connection).await?;
        let (strategy_used, reason) = match strategy {
            Strategy::Replay => (Strategy::Replay, "requested".to_owned()),
            Strategy::Snapshot => (Strategy::Snapshot, "requested".to_owned()),
            Strategy::Auto => self.choose(info.as_ref(), projection.relevant()).await?,
        };
        let decide = started.elapsed();
        tracing::info!(strategy = strategy_used.name(), reason, "bootstrapping");
        let before = projection.stats();
        let mut timings = Timings {
            decide,
            ..Timings::default()
        };
        let mut totals = Totals::default();
        let last_event_id = match strategy_used {
            Strategy::Snapshot => {
                let recorded = info
                    .as_ref()
                    .map_or_else(|| "0-0".to_owned(), |info| info.last_generated_id.clone());
                let load_started = Instant::now();
                totals += self.snapshot(projection, &mut progress).await?;
                projection.record_events(EventCounts::default(), &recorded);
                timings.load = load_started.elapsed();
                let catch_up_started = Instant::now();
                let (caught_up, last) = self
                    .replay_after(projection, &recorded, Phase::CatchUp, 0, &mut progress)
                    .await?;
                totals += caught_up;
                timings.catch_up = catch_up_started.elapsed();
                last
            }
            Strategy::Replay | Strategy::Auto => {
                let load_started = Instant::now();
                let total = info.as_ref().map_or(0, |info| info.length);
                let (replayed, last) = self
                    .replay_after(projection, "0-0", Phase::Replay, total, &mut progress)
                    .await?;
                totals += replayed;
                timings.load = load_started.elapsed();
                last
            }
        };
        let elapsed = started.elapsed();
        projection.record_bootstrap(strategy_used.name(), elapsed);
        let after = projection.stats();
        Ok(BootstrapReport {
            strategy_used: strategy_used.into(),
            reason,
            last_event_id,
            n_events: totals.counts.n_events,
            n_fetched: after.properties_fetched - before.properties_fetched,
            n_skipped: totals.counts.n_skipped,
            n_malformed: totals.counts.n_malformed,
            timings,
            elapsed,
        })
    }

    /// The automatic choice: a snapshot when the stream lost entries or is
    /// much longer than what a snapshot fetches.
    async fn choose(
        &mut self,
        info: Option<&StreamInfo>,
        relevant: &RelevantProperties,
    ) -> Result<(Strategy, String), StreamError> {
        let Some(info) = info else {
            return Ok((Strategy::Snapshot, "no event stream".to_owned()));
        };
        if info.was_trimmed() {
            return Ok((
                Strategy::Snapshot,
                "the event stream was trimmed".to_owned(),
            ));
        }
        if info.entries_added.is_none() {
            tracing::warn!("redis < 7 cannot tell whether meta:events was trimmed; replaying it");
        }
        let n_indexed: u64 = redis::cmd("SCARD")
            .arg(index_key(&self.prefix))
            .query_async(&mut self.connection)
            .await
            .map_err(StreamError::command("SCARD file:__index__"))?;
        let n_snapshot_keys = n_indexed * snapshot_names(relevant).len() as u64;
        let comparison = format!(
            "{} stream entries against {n_snapshot_keys} snapshot keys",
            info.length
        );
        if n_indexed > 0
            && info.length * REPLAY_COST_PER_ENTRY > n_snapshot_keys * SNAPSHOT_COST_PER_KEY
        {
            return Ok((Strategy::Snapshot, format!("cheaper: {comparison}")));
        }
        Ok((
            Strategy::Replay,
            format!("cheaper: {comparison}, none trimmed"),
        ))
    }

    /// Replays every entry after `after` (exclusive) up to the current end:
    /// a reader task decodes pages, a fetcher task runs the `MGET`s, and this
    /// task applies, so reading, fetching and applying overlap.
    async fn replay_after(
        &mut self,
        projection: &mut Projection,
        after: &str,
        phase: Phase,
        total: u64,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(Totals, String), StreamError> {
        let (batch_sender, batch_receiver) = mpsc::channel(4);
        // A connection of its own, so that decoding stream pages and decoding
        // MGET replies run on different threads.
        let reader_connection = self
            .connector
            .for_key(EVENTS_STREAM)
            .await?
            .bulk(RESPONSE_TIMEOUT)
            .await?;
        let fetch_connection = self.connector.bulk(RESPONSE_TIMEOUT).await?;
        let reader = tokio::spawn(read_stream(
            reader_connection,
            self.prefix.clone(),
            RelevanceCache::new(projection.relevant().clone()),
            after.to_owned(),
            batch_sender,
        ));
        let mut last_event_id = after.to_owned();
        let totals = fetch_and_apply(
            vec![fetch_connection],
            batch_receiver,
            projection,
            |projection, done| {
                progress(Progress {
                    phase,
                    done,
                    total: total.max(done),
                });
                if let Some(last) = projection.last_event_id() {
                    last_event_id = last.to_owned();
                }
            },
        )
        .await;
        reader.abort();
        let totals = totals?;
        if last_event_id == "0-0" || totals.counts.n_events == 0 {
            // Nothing read: the projection still reflects `after`.
            projection.record_events(EventCounts::default(), after);
        }
        Ok((totals, last_event_id))
    }

    /// Fetches every relevant property of every indexed file.
    async fn snapshot(
        &mut self,
        projection: &mut Projection,
        progress: &mut impl FnMut(Progress),
    ) -> Result<Totals, StreamError> {
        let mut hash_ids = self.indexed_hash_ids().await?;
        if hash_ids.is_empty() {
            tracing::info!("file:__index__ is empty or missing; scanning file keys instead");
            hash_ids = self.scanned_hash_ids().await?;
        }
        let names = snapshot_names(projection.relevant());
        let total = hash_ids.len() as u64;
        let (batch_sender, batch_receiver) = mpsc::channel(4);
        let prefix = self.prefix.clone();
        let exact_names = names.clone();
        let files_per_batch = self.files_per_snapshot_batch();
        let producer = tokio::spawn(async move {
            let mut buffer = String::new();
            for files in hash_ids.chunks(files_per_batch) {
                let mut keys = Vec::with_capacity(files.len() * exact_names.len());
                for hash_id in files {
                    for name in &exact_names {
                        if let Ok(key) = RelevantKey::build(&mut buffer, &prefix, hash_id, name) {
                            keys.push(key);
                        }
                    }
                }
                if batch_sender
                    .send(Ok(EntryBatch::from_keys(keys)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let nested = self.scan_nested.then(|| {
            tokio::spawn(scan_nested_keys(
                self.connection.clone(),
                self.prefix.clone(),
                RelevanceCache::new(projection.relevant().clone()),
                names.into_iter().collect(),
            ))
        });
        let mut done_files = 0u64;
        let connections = vec![
            self.connector.bulk(RESPONSE_TIMEOUT).await?,
            self.connector.bulk(RESPONSE_TIMEOUT).await?,
        ];
        let mut totals = fetch_and_apply(connections, batch_receiver, projection, |_, _| {
            done_files = (done_files + files_per_batch as u64).min(total);
            progress(Progress {
                phase: Phase::Snapshot,
                done: done_files,
                total,
            });
        })
        .await?;
        producer.abort();
        let Some(nested) = nested else {
            return Ok(totals);
        };
        let nested_keys = nested
            .await
            .map_err(|error| StreamError::UnexpectedReply {
                operation: "SCAN",
                reply: format!("scan task failed: {error}"),
            })??;
        let nested_values = fetch_values(&mut self.connection, nested_keys).await?;
        totals.counts.n_malformed += nested_values.n_malformed();
        projection.apply_batch(nested_values.iter());
        Ok(totals)
    }

    async fn indexed_hash_ids(&mut self) -> Result<Vec<String>, StreamError> {
        let index_key = index_key(&self.prefix);
        let mut hash_ids = scan(
            &mut self.connection,
            Scan::SetMembers(&index_key),
            Pace::BULK,
        )
        .await?;
        hash_ids.retain(|hash_id| !hash_id.contains('/') && !hash_id.is_empty());
        Ok(hash_ids)
    }

    async fn scanned_hash_ids(&mut self) -> Result<Vec<String>, StreamError> {
        let pattern = format!("{}{FILE_KEY_PREFIX}*", escape_glob(&self.prefix));
        let keys = scan(&mut self.connection, Scan::Keys(&pattern), Pace::BULK).await?;
        let mut seen = HashSet::new();
        Ok(keys
            .into_iter()
            .filter_map(|key| RelevantKey::parse(key, &self.prefix).ok())
            .map(|key| key.hash_id().to_owned())
            .filter(|hash_id| seen.insert(hash_id.clone()))
            .collect())
    }

    /// Fetches what a rules change made relevant (see
    /// `Projection::set_relevant`): the exact keys for every known file, and
    /// nested keys under the newly relevant names (by `SCAN`).
    pub async fn fetch_plan(&mut self, plan: &FetchPlan) -> Result<FetchedValues, StreamError> {
        self.ensure_connected().await?;
        let mut fetched = FetchedValues::default();
        // Keys built chunk by chunk into one reused buffer: neither every
        // key of the plan at once nor a copy of each chunk.
        let chunk_size = FILES_PER_SNAPSHOT_BATCH * 16;
        let n_properties = plan.properties.len();
        let n_pairs = plan.hash_ids.len() * n_properties;
        let mut buffer = String::new();
        // A bulk connection: values decoded straight from the socket buffer
        // (a rules change at 100k files fetches hundreds of thousands).
        let mut bulk = if n_pairs > 0 {
            Some(self.connector.bulk(RESPONSE_TIMEOUT).await?)
        } else {
            None
        };
        for start in (0..n_pairs).step_by(chunk_size) {
            let mut chunk = Vec::with_capacity(chunk_size.min(n_pairs - start));
            for index in start..n_pairs.min(start + chunk_size) {
                let hash_id = &plan.hash_ids[index / n_properties];
                let property = &plan.properties[index % n_properties];
                if let Ok(key) = RelevantKey::build(&mut buffer, &self.prefix, hash_id, property) {
                    chunk.push(key);
                }
            }
            match &mut bulk {
                Some(bulk) => fetched.extend(fetch_values(&mut *bulk, chunk).await?),
                None => fetched.extend(fetch_values(&mut self.connection, chunk).await?),
            }
        }
        for name in &plan.nested_prefixes {
            let pattern = format!(
                "{}{FILE_KEY_PREFIX}*/{}/*",
                escape_glob(&self.prefix),
                escape_glob(name)
            );
            let keys: Vec<RelevantKey> =
                scan(&mut self.connection, Scan::Keys(&pattern), Pace::BULK)
                    .await?
                    .into_iter()
                    .filter_map(|key| RelevantKey::parse(key, &self.prefix).ok())
                    .filter(|key| key.property().starts_with(name.as_str()))
                    .collect();
            fetched.extend(fetch_values(&mut self.connection, keys).await?);
        }
        Ok(fetched)
    }
}

impl BulkConnection {
    async fn fetch(&mut self, keys: Vec<RelevantKey>) -> Result<FetchedValues, StreamError> {
        fetch_values(self, keys).await
    }

    /// Reads the page of `XRANGE meta:events (after + COUNT n` into `batch`
    /// and returns how many entries it held.
    async fn read_page(
        &mut self,
        after: &str,
        prefix: &str,
        relevance: &mut RelevanceCache,
        batch: &mut EntryBatch,
    ) -> Result<usize, redis::RedisError> {
        let start = format!("({after}");
        let count = ENTRIES_PER_PAGE.to_string();
        let arguments = ["XRANGE", EVENTS_STREAM, &start, "+", "COUNT", &count];
        let connection = match self {
            BulkConnection::Raw(connection) => connection,
            BulkConnection::Cluster(_) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "XRANGE is read on the node owning meta:events, not across a cluster",
                )));
            }
            BulkConnection::Multiplexed(connection) => {
                let (name, rest) = (arguments[0], &arguments[1..]);
                let mut command = redis::cmd(name);
                command.arg(rest);
                // The raw reply, without `query_async`'s walk over every
                // value looking for nested errors (an XRANGE reply holds none).
                let reply = match connection.req_packed_command(&command).await? {
                    Value::ServerError(error) => return Err(error.into()),
                    reply => reply,
                };
                let Some(last_id) = last_entry_id(&reply) else {
                    return Ok(0);
                };
                let n_entries = batch.add_entries(reply, prefix, relevance);
                batch.last_id = Some(last_id);
                return Ok(n_entries);
            }
        };
        connection.push_command(arguments.len(), arguments.map(str::as_bytes));
        connection.send_request().await?;
        let n_entries = connection
            .read_reply(|reader| match reader.frame()? {
                Frame::Array(n_entries) => Ok(Ok(n_entries)),
                Frame::Nil => Ok(Ok(0)),
                Frame::Error(line) => Ok(Err(server_error(line))),
                _ => Err(Short::Protocol("an XRANGE reply is not an array")),
            })
            .await??;
        // Entry by entry as the bytes arrive, so decoding overlaps Redis
        // sending the rest of the page.
        for _ in 0..n_entries {
            connection
                .read_reply(|reader| {
                    let entry = decode_entry(reader)?;
                    batch.add(entry, prefix, relevance);
                    Ok(())
                })
                .await?;
        }
        Ok(n_entries)
    }
}

/// Counters of one replay or snapshot.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    counts: EventCounts,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, other: Totals) {
        self.counts.n_events += other.counts.n_events;
        self.counts.n_skipped += other.counts.n_skipped;
        self.counts.n_malformed += other.counts.n_malformed;
    }
}

/// The names a snapshot fetches for every file: the relevant names and
/// their parents (tracking `titles/eng` makes `titles` relevant too).
pub(crate) fn snapshot_names(relevant: &RelevantProperties) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in relevant.names() {
        let parents = name
            .char_indices()
            .filter(|(_, c)| *c == '/')
            .map(|(index, _)| &name[..index]);
        for candidate in parents.chain([name]) {
            if !names.iter().any(|known| known == candidate) {
                names.push(candidate.to_owned());
            }
        }
    }
    names
}

/// What to walk with a cursor.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scan<'a> {
    /// `SCAN MATCH pattern`: the keys matching a glob pattern.
    Keys(&'a str),
    /// `SSCAN key`: the members of a set.
    SetMembers(&'a str),
}

/// Every key or member the walk finds, once each (a walk may return one
/// twice); names that are not UTF-8 are no file keys and are left out. In a
/// cluster, `SCAN` walks every master (each holds its own keys).
pub(crate) async fn scan(
    connection: &mut StateConnection,
    what: Scan<'_>,
    pace: Pace,
) -> Result<Vec<String>, StreamError> {
    let mut found = match (what, &*connection) {
        (Scan::Keys(_), StateConnection::Cluster { topology, .. }) => {
            let topology = topology.clone();
            if topology.masters().is_empty() {
                topology.refresh().await?;
            }
            let mut found = Vec::new();
            for address in topology.masters() {
                let mut node = topology
                    .node(&address)?
                    .multiplexed(Some(RESPONSE_TIMEOUT))
                    .await?;
                found.extend(walk(&mut node, what, pace).await?);
            }
            found
        }
        _ => walk(connection, what, pace).await?,
    };
    let mut seen = HashSet::with_capacity(found.len());
    found.retain(|name| seen.insert(name.clone()));
    Ok(found)
}

/// One cursor walk on one connection.
async fn walk(
    connection: &mut impl ConnectionLike,
    what: Scan<'_>,
    pace: Pace,
) -> Result<Vec<String>, StreamError> {
    let operation = match what {
        Scan::Keys(_) => "SCAN",
        Scan::SetMembers(_) => "SSCAN file:__index__",
    };
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let mut command = match what {
            Scan::Keys(pattern) => {
                let mut command = redis::cmd("SCAN");
                command.arg(cursor).arg("MATCH").arg(pattern);
                command
            }
            Scan::SetMembers(key) => {
                let mut command = redis::cmd("SSCAN");
                command.arg(key).arg(cursor);
                command
            }
        };
        let (next, batch): (u64, Vec<Vec<u8>>) = command
            .arg("COUNT")
            .arg(pace.count)
            .query_async(connection)
            .await
            .map_err(StreamError::command(operation))?;
        found.extend(
            batch
                .into_iter()
                .filter_map(|name| String::from_utf8(name).ok()),
        );
        if next == 0 {
            break;
        }
        cursor = next;
        if !pace.pause.is_zero() {
            tokio::time::sleep(pace.pause).await;
        }
    }
    Ok(found)
}

/// Nested keys (`file:{id}/a/b`) whose property is relevant but is not one
/// of the exact names a snapshot already fetches (children of a tracked
/// name, such as `titles/fra` when `titles` is tracked).
async fn scan_nested_keys(
    mut connection: StateConnection,
    prefix: String,
    mut relevance: RelevanceCache,
    exact_names: HashSet<String>,
) -> Result<Vec<RelevantKey>, StreamError> {
    let pattern = format!("{}{FILE_KEY_PREFIX}*/*/*", escape_glob(&prefix));
    let keys = scan(&mut connection, Scan::Keys(&pattern), Pace::BULK).await?;
    Ok(keys
        .into_iter()
        .filter_map(|key| RelevantKey::parse(key, &prefix).ok())
        .filter(|key| {
            !exact_names.contains(key.property()) && relevance.is_relevant(key.property())
        })
        .collect())
}

/// Reads pages of `XRANGE meta:events (after +` until the end and sends
/// their relevant keys.
async fn read_stream(
    mut connection: BulkConnection,
    prefix: String,
    mut relevance: RelevanceCache,
    after: String,
    batches: mpsc::Sender<Result<EntryBatch, StreamError>>,
) {
    let mut position = after;
    loop {
        let mut batch = EntryBatch::default();
        let read = connection
            .read_page(&position, &prefix, &mut relevance, &mut batch)
            .await;
        let n_entries = match read {
            Ok(n_entries) => n_entries,
            Err(cause) => {
                let _ = batches
                    .send(Err(StreamError::Command {
                        operation: "XRANGE meta:events",
                        cause,
                    }))
                    .await;
                return;
            }
        };
        // The position advances past every entry, malformed ones included,
        // so one bad entry can never stall or end the replay.
        let Some(last_id) = batch.last_id.clone().filter(|_| n_entries > 0) else {
            return;
        };
        position = last_id;
        if batches.send(Ok(batch)).await.is_err() || n_entries < ENTRIES_PER_PAGE {
            return;
        }
    }
}

/// Fetches the keys of each batch (in a task of its own, so the next
/// fetch overlaps this apply) and applies the values in order.
async fn fetch_and_apply(
    connections: Vec<BulkConnection>,
    batches: mpsc::Receiver<Result<EntryBatch, StreamError>>,
    projection: &mut Projection,
    mut on_batch: impl FnMut(&Projection, u64),
) -> Result<Totals, StreamError> {
    // Several fetchers only where order does not matter (a snapshot fetches
    // every key once); a replay passes one connection, so a key fetched
    // again later is always applied later.
    let (fetched_sender, mut fetched_receiver) = mpsc::channel::<
        Result<(EntryBatch, FetchedValues), StreamError>,
    >(2 * connections.len().max(1));
    let batches = std::sync::Arc::new(tokio::sync::Mutex::new(batches));
    let fetchers: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let batches = batches.clone();
            let fetched_sender = fetched_sender.clone();
            tokio::spawn(async move {
                loop {
                    let Some(batch) = batches.lock().await.recv().await else {
                        return;
                    };
                    let result = match batch {
                        Ok(mut batch) => {
                            let keys = std::mem::take(&mut batch.keys);
                            connection.fetch(keys).await.map(|values| (batch, values))
                        }
                        Err(error) => Err(error),
                    };
                    let failed = result.is_err();
                    if fetched_sender.send(result).await.is_err() || failed {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(fetched_sender);
    let mut totals = Totals::default();
    let mut done = 0u64;
    let outcome = async {
        while let Some(fetched) = fetched_receiver.recv().await {
            let (batch, values) = fetched?;
            projection.apply_batch(values.iter());
            let counts = EventCounts {
                n_malformed: batch.counts.n_malformed + values.n_malformed(),
                ..batch.counts
            };
            totals += Totals { counts };
            done += if batch.is_empty() {
                0
            } else {
                batch.counts.n_events
            };
            match &batch.last_id {
                Some(last_id) => projection.record_events(counts, last_id),
                None => {
                    let last = projection.last_event_id().unwrap_or("0-0").to_owned();
                    projection.record_events(counts, &last);
                }
            }
            on_batch(projection, done);
        }
        Ok(())
    }
    .await;
    for fetcher in fetchers {
        fetcher.abort();
    }
    outcome.map(|()| totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::RespConnection;
    use metafuse_source::MAX_VALUE_BYTES;
    use metafuse_testkit::{RedisServer, Writer};

    /// What one page and its values come to, comparable across decoders.
    type PageOutcome = (
        Vec<String>,
        EventCounts,
        Option<String>,
        Vec<(String, Option<String>)>,
        u64,
    );

    async fn read_and_fetch(mut connection: BulkConnection, prefix: &str) -> PageOutcome {
        let mut relevance =
            RelevanceCache::new(RelevantProperties::from_names(["title", "filePath"]));
        let mut batch = EntryBatch::default();
        let kind = match &connection {
            BulkConnection::Raw(_) => "raw",
            BulkConnection::Multiplexed(_) => "multiplexed",
            BulkConnection::Cluster(_) => "cluster",
        };
        let n_entries = connection
            .read_page("0-0", prefix, &mut relevance, &mut batch)
            .await
            .unwrap_or_else(|error| panic!("{kind}: {error}"));
        assert_eq!(n_entries as u64, batch.counts.n_events);
        let keys: Vec<String> = batch.keys.iter().map(|key| key.key.clone()).collect();
        let values = connection
            .fetch(std::mem::take(&mut batch.keys))
            .await
            .unwrap();
        let fetched = values
            .iter()
            .map(|value| {
                (
                    format!("{}/{}", value.hash_id, value.property),
                    value.value.map(str::to_owned),
                )
            })
            .collect();
        (
            keys,
            batch.counts,
            batch.last_id,
            fetched,
            values.n_malformed(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raw_and_redis_crate_connections_read_the_same_pages_and_values() {
        let server = RedisServer::start().unwrap();
        let mut connection = server.client().get_connection().unwrap();
        let mut writer = Writer::new(&mut connection, "p:");
        writer
            .set("a", "title", "Dark")
            .set("a", "genre", "drama")
            .set("b", "filePath", "/media/b.mkv")
            .set("a", "title", "Dark (2017)")
            .del("b", "title")
            .event("rename", "p:file:a/title")
            .event("set", "p:file:__index__")
            .event("set", "elsewhere");
        writer.flush().unwrap();
        let _: () = redis::cmd("SET")
            .arg("p:file:c/title")
            .arg(vec![0xffu8, 0xfe])
            .query(&mut connection)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("p:file:d/title")
            .arg("x".repeat(MAX_VALUE_BYTES + 1))
            .query(&mut connection)
            .unwrap();
        for (hash_id, fields) in [
            ("c", &["type", "set", "key", "p:file:c/title"][..]),
            ("d", &["key", "p:file:d/title", "type", "del"]),
            ("e", &["type", "set", "ts", "1"]),
        ] {
            let mut append = redis::cmd("XADD");
            append.arg(EVENTS_STREAM).arg("*").arg(fields);
            let _: String = append
                .query(&mut connection)
                .unwrap_or_else(|error| panic!("{hash_id}: {error}"));
        }
        // A raw connection and the redis crate's must agree on everything.
        let client = server.client();
        let raw = RespConnection::open(&client, RESPONSE_TIMEOUT)
            .await
            .unwrap()
            .unwrap();
        let multiplexed = Connector::new(&server.url())
            .unwrap()
            .multiplexed(Some(RESPONSE_TIMEOUT))
            .await
            .unwrap();
        let from_raw = read_and_fetch(BulkConnection::Raw(raw), "p:").await;
        let from_multiplexed = read_and_fetch(BulkConnection::Multiplexed(multiplexed), "p:").await;
        assert_eq!(from_raw, from_multiplexed);
        let (keys, counts, _, fetched, n_malformed_values) = from_raw;
        assert_eq!(
            keys,
            [
                "p:file:a/title",
                "p:file:b/filePath",
                "p:file:b/title",
                "p:file:c/title",
                "p:file:d/title"
            ]
        );
        assert_eq!(fetched.len(), 4, "{fetched:?}");
        assert_eq!(n_malformed_values, 1, "too large (not utf-8 is decoded)");
        assert_eq!(
            counts.n_malformed, 3,
            "unknown type, not a file key, no key"
        );
    }
}
