//! Redis Cluster: hash slots, the slot table, and fetches fanned out to
//! every master in parallel.
//!
//! Keyed single commands (`XINFO`, `XRANGE`, `SSCAN`, `SCARD`) go through
//! the redis crate's cluster connection, which follows `MOVED`/`ASK` and
//! refreshes its slot map itself. Bulk `MGET`s do not: the crate sends a
//! pipeline to one node only (it rejects one whose keys live on several)
//! and splits a cross-slot `MGET` into one command per slot, a round trip
//! each. So bulk fetches are grouped here by slot and owner, one pipeline
//! per master on our raw RESP decoder, all masters at once; a redirection
//! or a lost node refreshes the table (`CLUSTER SLOTS`) and retries the
//! whole fetch (reads are idempotent).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metafuse_source::{FetchedValues, SourceNode};
use redis::Value;
use redis::aio::{ConnectionLike, MultiplexedConnection};

use crate::connect::{BulkConnection, Connector};
use crate::entries::RelevantKey;
use crate::error::StreamError;
use crate::fetch::{MgetConnection, fetch_values_in_slots};

/// `#insecure` when `url` ends so (TLS without certificate verification,
/// as single-node `rediss://` URLs say it), so every node's URL says it too.
pub(crate) fn insecure_fragment(url: &str) -> &'static str {
    if url.ends_with("#insecure") {
        "#insecure"
    } else {
        ""
    }
}

/// Slots of a Redis Cluster.
pub(crate) const N_SLOTS: u16 = 16_384;
/// Refreshes and retries of one fetch before its error is returned.
const MAX_ATTEMPTS: u32 = 6;
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(100);
/// `CLUSTER SLOTS` is small: a node that does not answer soon is down.
const TOPOLOGY_TIMEOUT: Duration = Duration::from_secs(2);

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag
/// (the text between the first `{` and the next `}`, if not empty).
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&byte| byte == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&byte| byte == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % N_SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A `redis+cluster://` or `rediss+cluster://` URL taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterUrl {
    /// `redis` or `rediss`: how every node is reached.
    scheme: &'static str,
    /// `user:password@` or empty: every node takes the same credentials.
    credentials: String,
    /// The seed nodes, `host:port`.
    seeds: Vec<String>,
    /// `#insecure` (TLS without certificate verification) or empty.
    fragment: &'static str,
}

impl ClusterUrl {
    /// `Ok(None)` when `url` is not a cluster URL at all.
    pub(crate) fn parse(url: &str) -> Result<Option<Self>, String> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            ("rediss", rest)
        } else {
            return Ok(None);
        };
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.split(['/', '?', '#']).next().unwrap_or("");
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .map(|seed| {
                if seed
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
                {
                    seed.to_owned()
                } else {
                    format!("{seed}:6379")
                }
            })
            .collect();
        if seeds.is_empty() {
            return Err("a cluster URL names at least one host:port".to_owned());
        }
        Ok(Some(Self {
            scheme,
            credentials,
            seeds,
            fragment: insecure_fragment(url),
        }))
    }

    /// The single-node URL of the node at `address` (`host:port`).
    pub(crate) fn node_url(&self, address: &str) -> String {
        format!(
            "{}://{}{address}/{}",
            self.scheme, self.credentials, self.fragment
        )
    }

    /// Every seed's single-node URL.
    pub(crate) fn seed_urls(&self) -> Vec<String> {
        self.seeds.iter().map(|seed| self.node_url(seed)).collect()
    }
}

/// Which master serves which slots; refreshed from `CLUSTER SLOTS`.
#[derive(Debug)]
pub(crate) struct Topology {
    url: ClusterUrl,
    /// First slot of a range → (last slot, master `host:port`).
    table: Mutex<BTreeMap<u16, (u16, String)>>,
    /// Per-node fetch counts (keys fetched), for metrics.
    fetched_keys: Mutex<BTreeMap<String, u64>>,
}

impl Topology {
    pub(crate) fn new(url: ClusterUrl) -> Self {
        Self {
            url,
            table: Mutex::new(BTreeMap::new()),
            fetched_keys: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn url(&self) -> &ClusterUrl {
        &self.url
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, (u16, String)>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The master serving `slot`, if the table knows one.
    pub(crate) fn owner(&self, slot: u16) -> Option<String> {
        let table = self.table();
        let (_, (last, address)) = table.range(..=slot).next_back()?;
        (slot <= *last).then(|| address.clone())
    }

    /// Every master, once each, in address order.
    pub(crate) fn masters(&self) -> Vec<String> {
        let mut masters: Vec<String> = self.table().values().map(|(_, a)| a.clone()).collect();
        masters.sort();
        masters.dedup();
        masters
    }

    /// Keys fetched per master since the start.
    pub(crate) fn fetched_keys(&self) -> Vec<(String, u64)> {
        let counts = self
            .fetched_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.iter().map(|(a, n)| (a.clone(), *n)).collect()
    }

    /// Every master serving now, and every node fetched from earlier that
    /// serves no more, with the keys fetched from each.
    pub(crate) fn node_report(&self) -> Vec<SourceNode> {
        let counts: BTreeMap<String, u64> = self.fetched_keys().into_iter().collect();
        let masters = self.masters();
        let mut nodes: Vec<SourceNode> = masters
            .iter()
            .map(|address| SourceNode {
                address: address.clone(),
                role: "master",
                fetched_keys: Some(counts.get(address).copied().unwrap_or(0)),
            })
            .collect();
        nodes.extend(
            counts
                .iter()
                .filter(|(address, _)| !masters.contains(address))
                .map(|(address, n_keys)| SourceNode {
                    address: address.clone(),
                    role: "gone",
                    fetched_keys: Some(*n_keys),
                }),
        );
        nodes
    }

    fn count_fetched(&self, address: &str, n_keys: usize) {
        let mut counts = self
            .fetched_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(address.to_owned()).or_default() += n_keys as u64;
    }

    /// A connector for the node at `address`.
    pub(crate) fn node(&self, address: &str) -> Result<Connector, StreamError> {
        Connector::new(&self.url.node_url(address))
    }

    /// The connector of the master serving `key`, refreshing the table when
    /// it has no owner for it.
    pub(crate) async fn node_for_key(&self, key: &str) -> Result<Connector, StreamError> {
        let slot = key_slot(key.as_bytes());
        if self.owner(slot).is_none() {
            self.refresh().await?;
        }
        let address = self
            .owner(slot)
            .ok_or_else(|| StreamError::UnexpectedReply {
                operation: "CLUSTER SLOTS",
                reply: format!("no master serves slot {slot}"),
            })?;
        self.node(&address)
    }

    /// Reads `CLUSTER SLOTS` from the first node that answers, known masters
    /// first, then the seeds.
    pub(crate) async fn refresh(&self) -> Result<(), StreamError> {
        let mut candidates = self.masters();
        candidates.extend(self.url.seeds.iter().cloned());
        candidates.dedup();
        let mut last_error = None;
        for address in candidates {
            match self.read_slots(&address).await {
                Ok(table) if !table.is_empty() => {
                    *self.table() = table;
                    return Ok(());
                }
                Ok(_) => {}
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| StreamError::UnexpectedReply {
            operation: "CLUSTER SLOTS",
            reply: "no node knows any slot".to_owned(),
        }))
    }

    async fn read_slots(&self, address: &str) -> Result<BTreeMap<u16, (u16, String)>, StreamError> {
        let mut connection = self
            .node(address)?
            .multiplexed(Some(TOPOLOGY_TIMEOUT))
            .await?;
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await
            .map_err(StreamError::command("CLUSTER SLOTS"))?;
        let queried_host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        Ok(parse_slots(reply, queried_host))
    }
}

/// `CLUSTER SLOTS`: `[[first, last, [host, port, id, …], replicas…], …]`;
/// an empty host means the node we asked.
fn parse_slots(reply: Value, queried_host: &str) -> BTreeMap<u16, (u16, String)> {
    let mut table = BTreeMap::new();
    let Value::Array(ranges) = reply else {
        return table;
    };
    for range in ranges {
        let Value::Array(items) = range else { continue };
        let mut items = items.into_iter();
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
            (items.next(), items.next(), items.next())
        else {
            continue;
        };
        let mut master = master.into_iter();
        let host = match master.next() {
            Some(Value::BulkString(host)) => String::from_utf8_lossy(&host).into_owned(),
            Some(Value::SimpleString(host)) => host,
            _ => continue,
        };
        let Some(Value::Int(port)) = master.next() else {
            continue;
        };
        let host = if host.is_empty() || host == "?" {
            queried_host.to_owned()
        } else {
            host
        };
        let (Ok(first), Ok(last)) = (u16::try_from(first), u16::try_from(last)) else {
            continue;
        };
        table.insert(first, (last, format!("{host}:{port}")));
    }
    table
}

/// True when a fetch failed because the table is stale or a node is away:
/// worth a refresh and another attempt.
fn is_topology_error(error: &StreamError) -> bool {
    if error.is_connection_error() {
        return true;
    }
    match error {
        StreamError::Command { cause, .. } => {
            cause.is_cluster_error()
                || matches!(
                    cause.kind(),
                    redis::ErrorKind::Server(redis::ServerErrorKind::Ask)
                        | redis::ErrorKind::Server(redis::ServerErrorKind::Moved)
                )
                || cause.to_string().contains("MOVED")
                || cause.to_string().contains("ASK")
        }
        _ => false,
    }
}

/// Bulk fetches across the masters of a cluster: one connection per master,
/// opened as needed.
pub(crate) struct ClusterFetcher {
    topology: Arc<Topology>,
    response_timeout: Duration,
    nodes: BTreeMap<String, BulkConnection>,
}

impl ClusterFetcher {
    pub(crate) fn new(topology: Arc<Topology>, response_timeout: Duration) -> Self {
        Self {
            topology,
            response_timeout,
            nodes: BTreeMap::new(),
        }
    }

    /// The current value of every key: grouped by owner, each group sorted
    /// by slot so every `MGET` stays within one slot, all owners at once.
    /// Refreshes the table and retries after a redirection or a lost node.
    pub(crate) async fn fetch(
        &mut self,
        keys: Vec<RelevantKey>,
    ) -> Result<FetchedValues, StreamError> {
        if keys.is_empty() {
            return Ok(FetchedValues::default());
        }
        let mut wait = FIRST_RETRY_WAIT;
        let mut attempt = 1;
        loop {
            match self.try_fetch(&keys).await {
                Ok(values) => return Ok(values),
                Err(error) if attempt < MAX_ATTEMPTS && is_topology_error(&error) => {
                    tracing::debug!(%error, attempt, "cluster fetch failed; refreshing slots");
                    self.nodes.clear();
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                    // A refresh that fails now may succeed next time.
                    let _ = self.topology.refresh().await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn try_fetch(&mut self, keys: &[RelevantKey]) -> Result<FetchedValues, StreamError> {
        if self.topology.masters().is_empty() {
            self.topology.refresh().await?;
        }
        let mut groups: BTreeMap<String, Vec<(u16, RelevantKey)>> = BTreeMap::new();
        for key in keys {
            let slot = key_slot(key.key.as_bytes());
            let owner = match self.topology.owner(slot) {
                Some(owner) => owner,
                None => {
                    self.topology.refresh().await?;
                    self.topology
                        .owner(slot)
                        .ok_or_else(|| StreamError::UnexpectedReply {
                            operation: "CLUSTER SLOTS",
                            reply: format!("no master serves slot {slot}"),
                        })?
                }
            };
            groups.entry(owner).or_default().push((slot, key.clone()));
        }
        let mut tasks = Vec::with_capacity(groups.len());
        for (address, mut group) in groups {
            group.sort_by_key(|(slot, _)| *slot);
            let mut slots = Vec::with_capacity(group.len());
            let keys: Vec<RelevantKey> = group
                .into_iter()
                .map(|(slot, key)| {
                    slots.push(slot);
                    key
                })
                .collect();
            let connection = match self.nodes.remove(&address) {
                Some(connection) => connection,
                None => {
                    self.topology
                        .node(&address)?
                        .bulk(self.response_timeout)
                        .await?
                }
            };
            self.topology.count_fetched(&address, keys.len());
            tasks.push(tokio::spawn(async move {
                let mut connection = connection;
                let result = fetch_values_in_slots(
                    MgetConnection::from(&mut connection),
                    keys,
                    Some(&slots),
                )
                .await;
                (address, connection, result)
            }));
        }
        let mut fetched = FetchedValues::default();
        let mut first_error = None;
        for task in tasks {
            let (address, connection, result) =
                task.await.map_err(|error| StreamError::UnexpectedReply {
                    operation: "MGET",
                    reply: format!("fetch task failed: {error}"),
                })?;
            match result {
                Ok(values) => {
                    self.nodes.insert(address, connection);
                    fetched.extend(values);
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(fetched),
        }
    }
}

/// A connection for keyed commands and small fetches: to one Redis, or to
/// a cluster (the redis crate's connection for keyed commands, ours for
/// fetches).
#[derive(Clone)]
pub(crate) enum StateConnection {
    Single(MultiplexedConnection),
    Cluster {
        connection: redis::cluster_async::ClusterConnection,
        topology: Arc<Topology>,
        fetcher: Arc<tokio::sync::Mutex<ClusterFetcher>>,
    },
    /// The tail's: everything it asks about (`XINFO`, `INFO`, `XRANGE` of
    /// `meta:events`) goes to the master serving the stream, fetches fan out.
    StreamNode {
        connection: MultiplexedConnection,
        fetcher: Arc<tokio::sync::Mutex<ClusterFetcher>>,
    },
}

impl StateConnection {
    /// Opens the crate's cluster connection to the nodes of `topology`.
    pub(crate) async fn cluster(
        topology: Arc<Topology>,
        response_timeout: Option<Duration>,
    ) -> Result<Self, StreamError> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(topology.url().seed_urls());
        if let Some(timeout) = response_timeout {
            builder = builder.response_timeout(timeout);
        }
        let connect_error = |cause| StreamError::Connect {
            url: metafuse_source::redact_url(&topology.url().seed_urls().join(",")),
            cause,
        };
        let client = builder.build().map_err(connect_error)?;
        let connection = client.get_async_connection().await.map_err(connect_error)?;
        if topology.masters().is_empty() {
            topology.refresh().await?;
        }
        let fetcher = ClusterFetcher::new(
            topology.clone(),
            response_timeout.unwrap_or(Duration::from_secs(60)),
        );
        Ok(Self::Cluster {
            connection,
            topology,
            fetcher: Arc::new(tokio::sync::Mutex::new(fetcher)),
        })
    }
}

impl ConnectionLike for StateConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            StateConnection::Single(connection) => connection.req_packed_command(cmd),
            StateConnection::Cluster { connection, .. } => connection.req_packed_command(cmd),
            StateConnection::StreamNode { connection, .. } => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            StateConnection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            StateConnection::Cluster { connection, .. } => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            StateConnection::StreamNode { connection, .. } => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            StateConnection::Single(connection) => connection.get_db(),
            StateConnection::Cluster { connection, .. } => connection.get_db(),
            StateConnection::StreamNode { connection, .. } => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_redis_cluster_specification() {
        // Reference values from the Redis Cluster specification and
        // `CLUSTER KEYSLOT` (checked against a real node in the cluster tests).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn slots_match_cluster_keyslot_of_a_real_node() {
        let cluster = metafuse_testkit::RedisCluster::start(3, 0, None).unwrap();
        let mut keys: Vec<String> = ["", "foo", "{user1000}.following", "a{}b", "x{{y}}z", "é{ü}"]
            .map(str::to_owned)
            .to_vec();
        keys.extend((0..300).map(|index| format!("mm:file:{index:032x}/title")));
        keys.push(metafuse_state::EVENTS_STREAM.to_owned());
        for key in keys {
            assert_eq!(
                key_slot(key.as_bytes()),
                cluster.key_slot(&key).unwrap(),
                "{key}"
            );
        }
    }

    #[test]
    fn cluster_urls_name_their_seeds_and_credentials() {
        assert_eq!(ClusterUrl::parse("redis://a:1/"), Ok(None));
        let url = ClusterUrl::parse("redis+cluster://:secret@a:7000,b:7001,c/")
            .unwrap()
            .unwrap();
        assert_eq!(url.seeds, ["a:7000", "b:7001", "c:6379"]);
        assert_eq!(url.node_url("d:7002"), "redis://:secret@d:7002/");
        let tls = ClusterUrl::parse("rediss+cluster://x:1").unwrap().unwrap();
        assert_eq!(tls.node_url("x:1"), "rediss://x:1/");
        let insecure = ClusterUrl::parse("rediss+cluster://x:1/#insecure")
            .unwrap()
            .unwrap();
        assert_eq!(insecure.node_url("y:2"), "rediss://y:2/#insecure");
        assert!(ClusterUrl::parse("redis+cluster:///").is_err());
    }

    #[test]
    fn slot_tables_resolve_owners() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(100),
                Value::Array(vec![Value::BulkString(b"10.0.0.1".to_vec()), Value::Int(1)]),
            ]),
            Value::Array(vec![
                Value::Int(101),
                Value::Int(16383),
                Value::Array(vec![Value::BulkString(Vec::new()), Value::Int(2)]),
            ]),
        ]);
        let topology = Topology::new(ClusterUrl::parse("redis+cluster://h:1").unwrap().unwrap());
        *topology.table() = parse_slots(reply, "h");
        assert_eq!(topology.owner(0).as_deref(), Some("10.0.0.1:1"));
        assert_eq!(topology.owner(100).as_deref(), Some("10.0.0.1:1"));
        assert_eq!(topology.owner(101).as_deref(), Some("h:2"));
        assert_eq!(topology.masters(), ["10.0.0.1:1", "h:2"]);
    }
}
