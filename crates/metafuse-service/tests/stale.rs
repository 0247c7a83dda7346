//! Nothing goes stale silently: a frozen connection, a flushed Redis, a
//! stream trimmed or cut while idle. Health says so while it lasts, and the
//! tree converges to exactly what Redis holds without a new event.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use metafuse_api::HealthStatus;
use metafuse_service::{Service, ServiceConfig};
use metafuse_testkit::{Files, RedisServer, read_truth};
use support::set;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A loopback TCP proxy in front of Redis that the test can freeze: frozen,
/// it stops forwarding in both directions but keeps every socket open (and
/// accepts new ones), like a hung proxy or a half-dead NAT.
struct FreezableProxy {
    address: std::net::SocketAddr,
    frozen: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start(upstream: std::net::SocketAddr) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let frozen = watch::Sender::new(false);
        let frozen_for_task = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let frozen = frozen_for_task.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(client_read, server_write, frozen.clone()));
                    tokio::spawn(pump(server_read, client_write, frozen));
                });
            }
        });
        FreezableProxy {
            address,
            frozen,
            task,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.address)
    }

    fn set_frozen(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, holding every byte while frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        let n_read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n_read) => n_read,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n_read]).await.is_err() {
            return;
        }
    }
}

fn config(redis_url: String) -> (tempfile::TempDir, ServiceConfig) {
    let directory = tempfile::tempdir().expect("tempdir");
    let files_root = directory.path().join("files");
    std::fs::create_dir_all(&files_root).expect("mkdir files");
    let rules_file = directory.path().join("renaming-rules.json");
    let mut config = ServiceConfig::new(rules_file, files_root);
    config.discovery.redis_url = Some(redis_url);
    (directory, config)
}

/// A complete movie: writer-style writes; returns the last event id.
fn add_movie(connection: &mut redis::Connection, hash_id: &str, title: &str) -> String {
    set(connection, hash_id, "title", title);
    set(connection, hash_id, "fileType", "video");
    set(connection, hash_id, "extension", "mkv");
    set(connection, hash_id, "movieYear", "2001");
    set(
        connection,
        hash_id,
        "filePath",
        &format!("downloads/{hash_id}.mkv"),
    )
}

/// hashId → filePath of every complete file in the service's tree.
fn visible(service: &Service) -> BTreeMap<String, String> {
    let library = service.library();
    let library = library.read();
    library
        .projection()
        .files()
        .filter_map(|(hash_id, file)| {
            let path = file
                .properties()
                .find(|(name, _)| *name == "filePath")
                .map(|(_, value)| value.to_owned())?;
            (!path.is_empty()).then(|| (hash_id.to_owned(), path))
        })
        .collect()
}

/// hashId → filePath of every file Redis holds (keys found by SCAN).
fn truth(connection: &mut redis::Connection) -> BTreeMap<String, String> {
    let files: Files = read_truth(connection, "").expect("read truth");
    files
        .into_iter()
        .filter_map(|(hash_id, properties)| Some((hash_id, properties.get("filePath")?.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_connection_is_noticed_reported_and_recovered() {
    let redis = RedisServer::start().expect("redis");
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", redis.port())
        .parse()
        .expect("address");
    let proxy = FreezableProxy::start(upstream).await;
    let mut connection = redis.client().get_connection().expect("connect");
    add_movie(&mut connection, "aaaa0001", "Before");
    let (_directory, config) = config(proxy.url());
    let service = Service::start(config).await.expect("service starts");
    let backend = service.backend();
    service.wait_for_liveness(|reason| reason.is_none()).await;
    assert_eq!(backend.health().status, HealthStatus::Ok);

    proxy.set_frozen(true);
    // No event, no closed socket: only the response timeout can tell.
    service.wait_for_liveness(|reason| reason.is_some()).await;
    let reason = service.not_live_reason().expect("a reason");
    assert!(reason.contains("redis"), "{reason}");
    assert_eq!(backend.health().status, HealthStatus::Degraded);
    // A refresh against the frozen peer fails instead of hanging.
    let started = std::time::Instant::now();
    let refreshed = backend.refresh().await;
    eprintln!(
        "refresh while frozen: {:?} after {:?}",
        refreshed.as_ref().err(),
        started.elapsed()
    );
    assert!(refreshed.is_err());

    proxy.set_frozen(false);
    service.wait_for_liveness(|reason| reason.is_none()).await;
    assert_eq!(backend.health().status, HealthStatus::Ok);
    let event_id = add_movie(&mut connection, "aaaa0002", "After");
    service.wait_until_applied(&event_id).await;
    assert_eq!(visible(&service), truth(&mut connection));
    assert!(visible(&service).contains_key("aaaa0002"));
    service.shutdown().await;
}

/// Starts a service on `redis` with a few files, lets it go idle and
/// verified, runs `damage`, and expects a rebuild that leaves the tree
/// equal to what Redis holds — with no new event to wake it.
async fn converges_after(damage: impl FnOnce(&mut redis::Connection, &str)) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    for index in 0..20 {
        add_movie(&mut connection, &format!("old{index:04}"), "Old");
    }
    let (_directory, config) = config(redis.url());
    let service = Arc::new(Service::start(config).await.expect("service starts"));
    service.wait_for_liveness(|reason| reason.is_none()).await;
    let rebuilds = service.rebuilds();

    damage(&mut connection, "old0003");

    service.wait_for_rebuild(rebuilds).await;
    service.wait_for_liveness(|reason| reason.is_none()).await;
    assert_eq!(visible(&service), truth(&mut connection));
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_and_a_new_library_with_lower_ids_converges() {
    converges_after(|connection, _| {
        let mut pipeline = redis::pipe();
        pipeline.atomic().cmd("FLUSHALL").ignore();
        for index in 0..5_u64 {
            let hash_id = format!("new{index:04}");
            for (sequence, (property, value)) in [
                ("title", format!("New {index}")),
                ("fileType", "video".to_owned()),
                ("extension", "mkv".to_owned()),
                ("filePath", format!("new/{index}.mkv")),
            ]
            .into_iter()
            .enumerate()
            {
                let key = format!("file:{hash_id}/{property}");
                pipeline.cmd("SET").arg(&key).arg(value).ignore();
                pipeline
                    .cmd("SADD")
                    .arg("file:__index__")
                    .arg(&hash_id)
                    .ignore();
                pipeline
                    .cmd("XADD")
                    .arg("meta:events")
                    .arg(format!("{}-{sequence}", index + 1))
                    .arg("type")
                    .arg("set")
                    .arg("key")
                    .arg(&key)
                    .ignore();
            }
        }
        let _: () = pipeline.query(connection).expect("flush and rewrite");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_to_empty_while_idle_converges() {
    converges_after(|connection, hash_id| {
        let key = format!("file:{hash_id}/filePath");
        let _: () = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("XADD")
            .arg("meta:events")
            .arg("*")
            .arg("type")
            .arg("del")
            .arg("key")
            .arg(&key)
            .ignore()
            .cmd("XTRIM")
            .arg("meta:events")
            .arg("MAXLEN")
            .arg(0)
            .ignore()
            .query(connection)
            .expect("delete and trim");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xdel_of_an_unread_entry_while_idle_converges() {
    converges_after(|connection, hash_id| {
        let key = format!("file:{hash_id}/filePath");
        let last: String = {
            let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
                .arg("meta:events")
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query(connection)
                .expect("last entry");
            reply.into_iter().next().expect("an entry").0
        };
        let milliseconds: u64 = last
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .expect("id");
        let id = format!("{}-0", milliseconds + 1);
        let _: () = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("XADD")
            .arg("meta:events")
            .arg(&id)
            .arg("type")
            .arg("del")
            .arg("key")
            .arg(&key)
            .ignore()
            .cmd("XDEL")
            .arg("meta:events")
            .arg(&id)
            .ignore()
            .query(connection)
            .expect("delete and cut");
    })
    .await;
}

/// Sets a raw byte value like a writer (SET, SADD, XADD).
fn set_bytes(connection: &mut redis::Connection, hash_id: &str, property: &str, value: &[u8]) {
    let key = format!("file:{hash_id}/{property}");
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(value)
        .ignore()
        .cmd("SADD")
        .arg("file:__index__")
        .arg(hash_id)
        .ignore()
        .cmd("XADD")
        .arg("meta:events")
        .arg("*")
        .arg("type")
        .arg("set")
        .arg("key")
        .arg(&key)
        .ignore()
        .query(connection)
        .expect("write bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_values_are_shown_never_dropped() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    // A Latin-1 title: decoded lossily, still filed by the rules.
    add_movie(&mut connection, "latin1", "placeholder");
    set_bytes(&mut connection, "latin1", "title", b"Am\xe9lie");
    // A Latin-1 file path: listed, and its exact bytes recoverable.
    add_movie(&mut connection, "rawpath", "Raw Path");
    set_bytes(
        &mut connection,
        "rawpath",
        "filePath",
        b"downloads/caf\xe9\\x.mkv",
    );
    let (_directory, config) = config(redis.url());
    let service = Service::start(config).await.expect("service starts");
    let library = service.library();
    let library = library.read();
    let paths = library.file_paths();
    let latin1 = paths
        .iter()
        .find(|path| path.contains("Am\u{fffd}lie"))
        .unwrap_or_else(|| panic!("no lossy title among {paths:?}"));
    assert!(!latin1.starts_with("Unsorted"), "{latin1}");
    let raw = paths
        .iter()
        .find(|path| path.contains("Raw Path"))
        .unwrap_or_else(|| panic!("the raw-path file is hidden: {paths:?}"));
    let stored = library
        .file_metadata(raw)
        .and_then(|file| {
            file.properties()
                .find(|(name, _)| *name == "filePath")
                .map(|(_, value)| value.to_owned())
        })
        .expect("filePath");
    assert_eq!(
        &*metafuse_state::file_path_bytes(&stored),
        b"downloads/caf\xe9\\x.mkv"
    );
    drop(library);
    service.shutdown().await;
}
