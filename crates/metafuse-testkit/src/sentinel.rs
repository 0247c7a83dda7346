//! A private Sentinel deployment on loopback: one master, one replica and
//! three sentinels watching them as `mymaster`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::RedisServerError;
use crate::redis_server::{
    credentials, free_port, loopback_url, poll_until, server_command, wait_until_accepting,
};

/// The name the sentinels know the master by.
pub const SENTINEL_MASTER_NAME: &str = "mymaster";
/// How long the sentinels may take to agree after a change. A bounded poll
/// of their state, not a sleep.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How long one server may take to start.
const START_LIMIT: Duration = Duration::from_secs(10);

/// One master, one replica, three sentinels; all killed on drop.
#[derive(Debug)]
pub struct RedisSentinels {
    data_ports: Vec<u16>,
    sentinel_ports: Vec<u16>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
    password: Option<String>,
}

impl RedisSentinels {
    /// Starts the servers and waits until every sentinel knows the master,
    /// its replica and the other sentinels.
    pub fn start(password: Option<&str>) -> Result<Self, RedisServerError> {
        let dir = tempfile::Builder::new()
            .prefix("metafuse-sentinel-")
            .tempdir()
            .map_err(RedisServerError::Prepare)?;
        let mut set = Self {
            data_ports: Vec::new(),
            sentinel_ports: Vec::new(),
            children: Vec::new(),
            dir,
            password: password.map(str::to_owned),
        };
        let master = free_port().map_err(RedisServerError::Prepare)?;
        set.spawn_data(master, None)?;
        let replica = free_port().map_err(RedisServerError::Prepare)?;
        set.spawn_data(replica, Some(master))?;
        for _ in 0..3 {
            let port = free_port().map_err(RedisServerError::Prepare)?;
            set.spawn_sentinel(port, master)?;
        }
        set.wait(|set| {
            set.sentinel_ports.iter().all(|port| {
                set.sentinel_state(*port)
                    .is_some_and(|(replicas, others)| replicas >= 1 && others >= 2)
            })
        })?;
        Ok(set)
    }

    fn spawn_data(&mut self, port: u16, replica_of: Option<u16>) -> Result<(), RedisServerError> {
        let mut command = server_command(port, self.dir.path(), self.password.as_deref());
        command.arg("--dbfilename").arg(format!("dump-{port}.rdb"));
        if let Some(master) = replica_of {
            command
                .arg("--replicaof")
                .arg("127.0.0.1")
                .arg(master.to_string());
        }
        self.spawn(command, port)?;
        self.data_ports.push(port);
        Ok(())
    }

    fn spawn_sentinel(&mut self, port: u16, master: u16) -> Result<(), RedisServerError> {
        let config = self.dir.path().join(format!("sentinel-{port}.conf"));
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 1000\n\
             sentinel failover-timeout {SENTINEL_MASTER_NAME} 5000\n",
            self.dir.path().display()
        );
        if let Some(password) = &self.password {
            text.push_str(&format!(
                "sentinel auth-pass {SENTINEL_MASTER_NAME} {password}\n"
            ));
        }
        std::fs::write(&config, text).map_err(RedisServerError::Prepare)?;
        let mut command = Command::new("redis-server");
        command.arg(&config).arg("--sentinel");
        self.spawn(command, port)?;
        self.sentinel_ports.push(port);
        Ok(())
    }

    fn spawn(&mut self, mut command: Command, port: u16) -> Result<(), RedisServerError> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(RedisServerError::Spawn)?;
        self.children.push(child);
        wait_until_accepting(port, START_LIMIT)
    }

    /// `(known replicas, other sentinels)` as the sentinel on `port` sees them.
    fn sentinel_state(&self, port: u16) -> Option<(i64, i64)> {
        let mut connection = self.sentinel_connection(port).ok()?;
        let fields: Vec<String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(SENTINEL_MASTER_NAME)
            .query(&mut connection)
            .ok()?;
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|pair| pair[0] == name)
                .and_then(|pair| pair.get(1)?.parse::<i64>().ok())
        };
        Some((field("num-slaves")?, field("num-other-sentinels")?))
    }

    fn wait(&self, done: impl Fn(&Self) -> bool) -> Result<(), RedisServerError> {
        let port = self.sentinel_ports.first().copied().unwrap_or(0);
        poll_until(SETTLE_LIMIT, port, || done(self))
    }

    fn sentinel_connection(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(loopback_url(None, port))?.get_connection()
    }

    /// `redis+sentinel://[:password@]127.0.0.1:s1,…/mymaster`.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!(
            "redis+sentinel://{}{}/{SENTINEL_MASTER_NAME}",
            credentials(self.password.as_deref()),
            sentinels.join(",")
        )
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> redis::RedisResult<u16> {
        let mut connection = self.sentinel_connection(self.sentinel_ports[0])?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(SENTINEL_MASTER_NAME)
            .query(&mut connection)?;
        Ok(port)
    }

    /// A synchronous connection to the current master.
    pub fn master_connection(&self) -> redis::RedisResult<redis::Connection> {
        let port = self.master_port()?;
        redis::Client::open(loopback_url(self.password.as_deref(), port))?.get_connection()
    }

    /// `SENTINEL FAILOVER`, then waits until the sentinels name the other
    /// server and it answers as a master. Returns its port.
    pub fn fail_over(&self) -> redis::RedisResult<u16> {
        let old = self.master_port()?;
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SENTINEL_MASTER_NAME)
            .query(&mut self.sentinel_connection(self.sentinel_ports[0])?)?;
        let is_master = |set: &Self| {
            set.master_port().is_ok_and(|port| port != old)
                && set.master_connection().is_ok_and(|mut connection| {
                    redis::cmd("ROLE")
                        .query::<Vec<redis::Value>>(&mut connection)
                        .is_ok_and(|role| {
                            matches!(role.first(), Some(redis::Value::BulkString(kind)) if kind == b"master")
                        })
                })
        };
        self.wait(is_master)
            .map_err(|error| redis::RedisError::from(std::io::Error::other(error.to_string())))?;
        self.master_port()
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
