use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What went wrong starting or restarting a private redis-server.
#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    /// The `redis-server` binary could not be started.
    #[error("cannot start redis-server (is it installed? `apt-get install redis-server`): {0}")]
    Spawn(std::io::Error),
    /// No free loopback port or temporary directory could be had.
    #[error("cannot prepare a private redis-server: {0}")]
    Prepare(std::io::Error),
    /// The server did not accept connections in time.
    #[error("redis-server on port {port} did not come up within {seconds} s")]
    NotReady {
        /// The port it was started on.
        port: u16,
        /// How long we waited.
        seconds: u64,
    },
}

/// A private `redis-server` on a free loopback port, stopped when dropped.
///
/// Persistence is off, so a [`RedisServer::restart`] starts empty unless
/// `with_persistence` was used.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
    /// The TLS port, when started with [`RedisServer::start_tls`].
    tls_port: Option<u16>,
}

impl RedisServer {
    /// Starts a server with persistence off.
    pub fn start() -> Result<Self, RedisServerError> {
        Self::start_inner(false)
    }

    /// Starts a server that keeps its data across [`RedisServer::restart`]
    /// (append-only file in its private directory).
    pub fn start_persistent() -> Result<Self, RedisServerError> {
        Self::start_inner(true)
    }

    /// Starts a server that also listens with TLS on [`RedisServer::tls_url`],
    /// with a certificate for `127.0.0.1` signed by a throwaway CA made here
    /// (`openssl`), which no client trusts unless told to
    /// ([`RedisServer::ca_certificate`]).
    pub fn start_tls() -> Result<Self, RedisServerError> {
        let dir = tempfile::Builder::new()
            .prefix("metafuse-redis-")
            .tempdir()
            .map_err(RedisServerError::Prepare)?;
        make_certificates(dir.path())?;
        let mut server = Self {
            child: None,
            port: free_port().map_err(RedisServerError::Prepare)?,
            dir,
            persistent: false,
            tls_port: Some(free_port().map_err(RedisServerError::Prepare)?),
        };
        server.spawn()?;
        Ok(server)
    }

    fn start_inner(persistent: bool) -> Result<Self, RedisServerError> {
        let dir = tempfile::Builder::new()
            .prefix("metafuse-redis-")
            .tempdir()
            .map_err(RedisServerError::Prepare)?;
        let port = free_port().map_err(RedisServerError::Prepare)?;
        let mut server = Self {
            child: None,
            port,
            dir,
            persistent,
            tls_port: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `rediss://127.0.0.1:{tls port}/`, when started with
    /// [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("rediss://127.0.0.1:{port}/"))
    }

    /// The PEM file of the CA that signed the TLS certificate, when started
    /// with [`RedisServer::start_tls`].
    pub fn ca_certificate(&self) -> Option<PathBuf> {
        self.tls_port.map(|_| self.dir.path().join("ca.crt"))
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's private working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL) without restarting it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`RedisServer::kill`],
    /// or kills it first).
    pub fn restart(&mut self) -> Result<(), RedisServerError> {
        self.kill();
        self.spawn()
    }

    /// A synchronous connection, for seeding data in tests.
    pub fn client(&self) -> redis::Client {
        // The URL is ours and well formed.
        redis::Client::open(self.url()).expect("own redis url is valid")
    }

    fn spawn(&mut self) -> Result<(), RedisServerError> {
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--protected-mode")
            .arg("no")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(tls_port) = self.tls_port {
            let file = |name: &str| self.dir.path().join(name);
            command
                .arg("--tls-port")
                .arg(tls_port.to_string())
                .arg("--tls-cert-file")
                .arg(file("server.crt"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.crt"))
                .arg("--tls-auth-clients")
                .arg("no");
        }
        if self.persistent {
            command
                .arg("--appendonly")
                .arg("yes")
                .arg("--appendfsync")
                .arg("always");
        } else {
            command.arg("--appendonly").arg("no");
        }
        let child = command.spawn().map_err(RedisServerError::Spawn)?;
        self.child = Some(child);
        wait_until_ready(self.port, Duration::from_secs(10))
    }

    /// Path of the `redis-server` log, if any (none: logs go to /dev/null).
    pub fn working_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throwaway CA (`ca.crt`) and a certificate for `127.0.0.1` it signed
/// (`server.crt`, `server.key`) in `dir`, made with `openssl`.
fn make_certificates(dir: &Path) -> Result<(), RedisServerError> {
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n")
        .map_err(RedisServerError::Prepare)?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=metafuse test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    ];
    for arguments in steps {
        let output = Command::new("openssl")
            .args(arguments)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                RedisServerError::Prepare(std::io::Error::other(format!(
                    "cannot run openssl: {error}"
                )))
            })?;
        if !output.status.success() {
            return Err(RedisServerError::Prepare(std::io::Error::other(format!(
                "openssl {} failed: {}",
                arguments[0],
                String::from_utf8_lossy(&output.stderr)
            ))));
        }
    }
    Ok(())
}

/// `redis-server` on `port` of 127.0.0.1, working in `dir`, persistence
/// off, output discarded, with `password` required of clients and given to
/// its master (replication) when set.
pub(crate) fn server_command(port: u16, dir: &Path, password: Option<&str>) -> Command {
    let mut command = Command::new("redis-server");
    command
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--protected-mode")
        .arg("no")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(password) = password {
        command
            .arg("--requirepass")
            .arg(password)
            .arg("--masterauth")
            .arg(password);
    }
    command
}

/// `:password@` for a URL, or nothing without a password.
pub(crate) fn credentials(password: Option<&str>) -> String {
    password.map_or_else(String::new, |password| format!(":{password}@"))
}

/// `redis://[:password@]127.0.0.1:{port}/`.
pub(crate) fn loopback_url(password: Option<&str>, port: u16) -> String {
    format!("redis://{}127.0.0.1:{port}/", credentials(password))
}

/// Polls the port until it accepts connections (a server with a password
/// answers `PING` with `NOAUTH`, so accepting is all that can be asked);
/// a bounded poll, redis-server offers no readiness event.
pub(crate) fn wait_until_accepting(port: u16, limit: Duration) -> Result<(), RedisServerError> {
    poll_until(limit, port, || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
    })
}

/// Polls `done` until it holds, at most `limit`: for servers and clusters
/// that offer no event to await (start-up, a cluster agreeing, sentinels
/// seeing each other). `port` names the server in the error.
pub(crate) fn poll_until(
    limit: Duration,
    port: u16,
    mut done: impl FnMut() -> bool,
) -> Result<(), RedisServerError> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return Err(RedisServerError::NotReady {
                port,
                seconds: limit.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

pub(crate) fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Polls the port until it answers `PING`; redis-server offers no readiness
/// event we could await instead, so this is a bounded poll, not a sleep.
pub(crate) fn wait_until_ready(port: u16, limit: Duration) -> Result<(), RedisServerError> {
    use std::io::{Read, Write};
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            if stream.write_all(b"PING\r\n").is_ok() {
                let mut reply = [0u8; 7];
                if stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n" {
                    return Ok(());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(RedisServerError::NotReady {
        port,
        seconds: limit.as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_restarts_with_data() {
        let mut server = RedisServer::start_persistent().unwrap();
        let mut connection = server.client().get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query(&mut connection)
            .unwrap();
        server.restart().unwrap();
        let mut connection = server.client().get_connection().unwrap();
        let value: String = redis::cmd("GET").arg("k").query(&mut connection).unwrap();
        assert_eq!(value, "v");
    }
}
