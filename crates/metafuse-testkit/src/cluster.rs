//! A private Redis Cluster on loopback (masters, each with replicas), and a
//! writer that writes a synthetic library through a cluster client.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::Duration;

use metafuse_state::{EVENTS_STREAM, FILE_KEY_PREFIX, escape_glob, file_key, index_key};

use crate::redis_server::{
    credentials, free_port, loopback_url, poll_until, server_command, wait_until_accepting,
    wait_until_ready,
};
use crate::{Files, Library, RedisServerError};

/// How long the cluster may take to agree after a change (creation,
/// failover). A bounded poll of its own state, not a sleep.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How long one server may take to start.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A private Redis Cluster: `n_masters` masters with `replicas_per_master`
/// replicas each, on free loopback ports; every server is killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: BTreeMap<u16, Child>,
    dir: tempfile::TempDir,
    password: Option<String>,
}

impl RedisCluster {
    /// Starts the servers, creates the cluster (`redis-cli --cluster
    /// create`) and waits until every node reports `cluster_state:ok`.
    pub fn start(
        n_masters: usize,
        replicas_per_master: usize,
        password: Option<&str>,
    ) -> Result<Self, RedisServerError> {
        let dir = tempfile::Builder::new()
            .prefix("metafuse-cluster-")
            .tempdir()
            .map_err(RedisServerError::Prepare)?;
        let mut cluster = Self {
            nodes: BTreeMap::new(),
            dir,
            password: password.map(str::to_owned),
        };
        for _ in 0..n_masters * (1 + replicas_per_master) {
            let port = free_port().map_err(RedisServerError::Prepare)?;
            cluster.spawn(port)?;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in cluster.nodes.keys() {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create
            .arg("--cluster-replicas")
            .arg(replicas_per_master.to_string())
            .arg("--cluster-yes");
        if let Some(password) = &cluster.password {
            create.arg("-a").arg(password).arg("--no-auth-warning");
        }
        let output = create.output().map_err(RedisServerError::Spawn)?;
        if !output.status.success() {
            return Err(RedisServerError::Prepare(std::io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            ))));
        }
        cluster.wait_until_settled()?;
        Ok(cluster)
    }

    fn spawn(&mut self, port: u16) -> Result<(), RedisServerError> {
        let mut command = server_command(port, self.dir.path(), self.password.as_deref());
        command
            .arg("--cluster-enabled")
            .arg("yes")
            .arg("--cluster-config-file")
            .arg(format!("nodes-{port}.conf"))
            .arg("--cluster-node-timeout")
            .arg("1000");
        let child = command.spawn().map_err(RedisServerError::Spawn)?;
        self.nodes.insert(port, child);
        if self.password.is_none() {
            wait_until_ready(port, START_LIMIT)
        } else {
            wait_until_accepting(port, START_LIMIT)
        }
    }

    /// `redis+cluster://[:password@]127.0.0.1:p1,127.0.0.1:p2,…/` naming
    /// every live node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .keys()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!(
            "redis+cluster://{}{}/",
            credentials(self.password.as_deref()),
            nodes.join(",")
        )
    }

    /// The single-node URL of the node on `port`.
    pub fn node_url(&self, port: u16) -> String {
        loopback_url(self.password.as_deref(), port)
    }

    /// A synchronous connection to one node.
    pub fn node_connection(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.node_url(port))?.get_connection()
    }

    /// A synchronous cluster connection (follows redirections).
    pub fn connection(&self) -> redis::RedisResult<redis::cluster::ClusterConnection> {
        let urls: Vec<String> = self.nodes.keys().map(|port| self.node_url(*port)).collect();
        redis::cluster::ClusterClient::new(urls)?.get_connection()
    }

    /// The ports of the live masters, from `CLUSTER SLOTS` of a live node.
    pub fn master_ports(&self) -> redis::RedisResult<Vec<u16>> {
        let mut ports: Vec<u16> = self
            .slot_table()?
            .into_iter()
            .map(|(_, _, port)| port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }

    /// `(first, last, master port)` per slot range, as the
    /// first live node that knows any slot says.
    fn slot_table(&self) -> redis::RedisResult<Vec<SlotRange>> {
        let mut last_error = None;
        for port in self.nodes.keys() {
            match self.slot_table_of(*port) {
                Ok(ranges) if !ranges.is_empty() => return Ok(ranges),
                Ok(_) => {}
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no node knows any slot"))
        }))
    }

    /// `CLUSTER SLOTS` of the node on `port`, masters only, sorted.
    fn slot_table_of(&self, port: u16) -> redis::RedisResult<Vec<SlotRange>> {
        let ranges = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<Vec<redis::Value>>>(&mut self.node_connection(port)?)?;
        let mut table: Vec<SlotRange> = ranges
            .iter()
            .filter_map(|range| parse_range(range))
            .collect();
        table.sort_unstable();
        Ok(table)
    }

    /// `CLUSTER KEYSLOT key`, asked of a live node.
    pub fn key_slot(&self, key: &str) -> redis::RedisResult<u16> {
        let port = *self.nodes.keys().next().unwrap_or(&0);
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.node_connection(port)?)
    }

    /// The port of the master serving `key`.
    pub fn master_of(&self, key: &str) -> redis::RedisResult<u16> {
        let slot = self.key_slot(key)?;
        self.slot_table()?
            .into_iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, port)| port)
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "slot unserved")))
    }

    /// Fails the master serving `key` over to one of its replicas
    /// (`CLUSTER FAILOVER` on the replica), waits until the replica serves
    /// the slot, then kills the old master. Returns the new master's port.
    pub fn fail_over_master_of(&mut self, key: &str) -> redis::RedisResult<u16> {
        let old_master = self.master_of(key)?;
        let mut replica = None;
        for port in self.nodes.keys() {
            let role: Vec<redis::Value> =
                redis::cmd("ROLE").query(&mut self.node_connection(*port)?)?;
            let is_replica_of_old = matches!(
                (role.first(), role.get(2)),
                (Some(redis::Value::BulkString(kind)), Some(redis::Value::Int(master_port)))
                    if kind == b"slave" && *master_port == i64::from(old_master)
            );
            if is_replica_of_old {
                replica = Some(*port);
                break;
            }
        }
        let replica = replica
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "no replica")))?;
        let _: () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut self.node_connection(replica)?)?;
        poll_until(SETTLE_LIMIT, replica, || {
            self.master_of(key).ok() == Some(replica)
        })
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Client, "the replica did not take over"))
        })?;
        self.kill(old_master);
        self.wait_until_settled()
            .map_err(|error| redis::RedisError::from(std::io::Error::other(error.to_string())))?;
        Ok(replica)
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(mut child) = self.nodes.remove(&port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls every live node until each says `cluster_state:ok` and all
    /// name the same master for every slot (a failover reaches the nodes
    /// one by one; until they agree, a node may redirect what another
    /// routes to it).
    fn wait_until_settled(&self) -> Result<(), RedisServerError> {
        let first_port = self.nodes.keys().next().copied().unwrap_or(0);
        poll_until(SETTLE_LIMIT, first_port, || {
            let all_ok = self.nodes.keys().all(|port| {
                self.node_connection(*port)
                    .and_then(|mut connection| {
                        redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query::<String>(&mut connection)
                    })
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            let mut tables = self.nodes.keys().map(|port| self.slot_table_of(*port).ok());
            let first = tables.next().flatten();
            all_ok
                && first.as_ref().is_some_and(|table| !table.is_empty())
                && tables.all(|table| table == first)
        })
    }

    /// What the cluster holds under `prefix`, read independently of the
    /// code under test: `SCAN` on every master, `GET` of every key found
    /// (see [`crate::read_truth`] for what counts).
    pub fn read_truth(&self, prefix: &str) -> redis::RedisResult<Files> {
        let file_prefix = format!("{prefix}{FILE_KEY_PREFIX}");
        let pattern = format!("{}*", escape_glob(&file_prefix));
        let mut files = Files::new();
        // Values are read through a cluster connection, which follows
        // MOVED: right after a failover a node may still list a master
        // that has handed its slots over.
        let mut reader = self.connection()?;
        for port in self.master_ports()? {
            let mut connection = self.node_connection(port)?;
            let keys: Vec<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter(&mut connection)?
                .collect::<Result<_, _>>()?;
            for key in keys {
                let Some((hash_id, property)) = key
                    .strip_prefix(&file_prefix)
                    .and_then(|rest| rest.split_once('/'))
                else {
                    continue;
                };
                let value: Option<String> = redis::cmd("GET").arg(&key).query(&mut reader)?;
                if let Some(value) = value.filter(|value| !value.is_empty()) {
                    files
                        .entry(hash_id.to_owned())
                        .or_default()
                        .insert(property.to_owned(), value);
                }
            }
        }
        Ok(files)
    }
}

/// First slot, last slot, master port.
type SlotRange = (u16, u16, u16);

/// One `CLUSTER SLOTS` range: `[first, last, [host, port, …], replicas…]`.
fn parse_range(range: &[redis::Value]) -> Option<SlotRange> {
    let number = |value: &redis::Value| match value {
        redis::Value::Int(number) => u16::try_from(*number).ok(),
        _ => None,
    };
    let first = number(range.first()?)?;
    let last = number(range.get(1)?)?;
    let master = match range.get(2)? {
        redis::Value::Array(node) => node.get(1).and_then(number)?,
        _ => return None,
    };
    Some((first, last, master))
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.nodes) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes `library.writes[range]` through a cluster connection the way the
/// writers do: values and index first, then the stream entries, so an entry
/// is never visible before the value it announces (keys and the stream live
/// on different nodes). Returns the id of the last stream entry written, to
/// await it.
pub fn write_library_to_cluster(
    connection: &mut redis::cluster::ClusterConnection,
    library: &Library,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> redis::RedisResult<Option<String>> {
    let index = index_key(prefix);
    let mut last_id = None;
    for chunk in library.writes[range].chunks(2000) {
        let mut values = redis::cluster::cluster_pipe();
        let mut events = redis::cluster::cluster_pipe();
        for write in chunk {
            let hash_id = &library.hash_ids[write.file as usize];
            let key = file_key(prefix, hash_id, write.property);
            let kind = match &write.value {
                Some(value) => {
                    values.cmd("SET").arg(&key).arg(value).ignore();
                    values.cmd("SADD").arg(&index).arg(hash_id).ignore();
                    "set"
                }
                None => {
                    values.cmd("DEL").arg(&key).ignore();
                    "del"
                }
            };
            if write.leaves_index {
                values.cmd("SREM").arg(&index).arg(hash_id).ignore();
            }
            events
                .cmd("XADD")
                .arg(EVENTS_STREAM)
                .arg("*")
                .arg("type")
                .arg(kind)
                .arg("key")
                .arg(&key)
                .arg("ts")
                .arg(1_700_000_000_000u64);
        }
        values.query::<()>(connection)?;
        let ids: Vec<String> = events.query(connection)?;
        last_id = ids.into_iter().last().or(last_id);
    }
    Ok(last_id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::LibrarySpec;

    #[test]
    fn a_cluster_holds_what_was_written_through_it() {
        let cluster = RedisCluster::start(3, 0, None).unwrap();
        assert_eq!(cluster.master_ports().unwrap().len(), 3);
        let library = Library::generate(&LibrarySpec {
            churn: true,
            ..LibrarySpec::new(200)
        });
        let mut connection = cluster.connection().unwrap();
        write_library_to_cluster(&mut connection, &library, "p:", 0..library.writes.len()).unwrap();
        assert_eq!(cluster.read_truth("p:").unwrap(), library.truth());
    }
}
