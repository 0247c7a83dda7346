//! Discovery and watching against fake meta-core HTTP servers and a real
//! temporary `META_CORE_PATH`.

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metafuse_leader::{
    BeaconConfig, BeaconMessage, BeaconNode, BeaconResource, CORE_CAPABILITY, DiscoveryConfig,
    Leader, LeaderError, LeaderSource, SERVICE_CAPABILITY, SourceMode, advertise, discover,
    service_resource, watch,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch as watch_channel};

/// Failure guard only: every awaited event normally arrives in milliseconds.
const GUARD: Duration = Duration::from_secs(30);

/// A meta-core stand-in serving a settable `/urls` reply and counting requests.
struct FakeMetaCore {
    url: String,
    reply: Arc<Mutex<(StatusCode, String)>>,
    requests_served: watch_channel::Receiver<usize>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeMetaCore {
    async fn start(body: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let reply = Arc::new(Mutex::new((StatusCode::OK, body.to_owned())));
        let (counter, requests_served) = watch_channel::channel(0usize);
        let counter = Arc::new(counter);
        let server_reply = reply.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let reply = server_reply.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (status, body) = if request.uri().path() == "/urls" {
                            reply.lock().expect("reply lock").clone()
                        } else {
                            (StatusCode::NOT_FOUND, "{}".to_owned())
                        };
                        counter.send_modify(|served| *served += 1);
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            reply,
            requests_served,
            server,
        }
    }

    fn set_reply(&self, status: StatusCode, body: &str) {
        *self.reply.lock().expect("reply lock") = (status, body.to_owned());
    }

    async fn wait_for_requests(&mut self, count: usize) {
        tokio::time::timeout(
            GUARD,
            self.requests_served.wait_for(|served| *served >= count),
        )
        .await
        .expect("meta-core was asked in time")
        .expect("fake meta-core alive");
    }
}

impl Drop for FakeMetaCore {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn urls_json(hostname: &str, redis_url: &str) -> String {
    serde_json::json!({
        "hostname": hostname,
        "baseUrl": format!("http://{hostname}:8180"),
        "apiUrl": format!("http://{hostname}:9000"),
        "redisUrl": redis_url,
        "webdavUrl": format!("http://{hostname}:8180/webdav"),
        "webdavUrlInternal": format!("http://{hostname}-internal/webdav"),
        "isLeader": true,
    })
    .to_string()
}

fn fast_config(meta_core_path: &Path) -> DiscoveryConfig {
    DiscoveryConfig {
        meta_core_path: meta_core_path.to_owned(),
        request_timeout: Duration::from_secs(5),
        retry_initial_delay: Duration::from_millis(5),
        retry_max_delay: Duration::from_millis(20),
        poll_interval: Duration::from_millis(10),
        // Tests never multicast on the real network; beacon tests opt in
        // with a private port on loopback.
        beacon: None,
        ..DiscoveryConfig::default()
    }
}

fn write_info_file(config: &DiscoveryConfig, content: &str) {
    let path = config.info_file_path();
    std::fs::create_dir_all(path.parent().expect("locks dir")).expect("mkdir locks");
    // Write then rename, as a leader would, so a poll never sees half a line.
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, content).expect("write info");
    std::fs::rename(&temporary, &path).expect("rename info");
}

/// Log lines of the current thread (tests run on a current-thread runtime,
/// so spawned tasks log here too), delivered as events.
struct LogCapture {
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct LineSender(mpsc::UnboundedSender<String>);

struct LineWriter {
    sender: mpsc::UnboundedSender<String>,
    buffer: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let _ = self
            .sender
            .send(String::from_utf8_lossy(&self.buffer).trim_end().to_owned());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineSender {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            sender: self.0.clone(),
            buffer: Vec::new(),
        }
    }
}

impl LogCapture {
    fn start() -> Self {
        let (sender, lines) = mpsc::unbounded_channel();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(LineSender(sender))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        Self {
            lines,
            seen: Vec::new(),
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    async fn wait_for_line(&mut self, needle: &str) -> String {
        tokio::time::timeout(GUARD, async {
            loop {
                let line = self.lines.recv().await.expect("log channel open");
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line containing {needle:?}; saw {:#?}", self.seen))
    }

    fn all_lines(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    fn count_containing(&mut self, needle: &str) -> usize {
        self.all_lines()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }
}

async fn guarded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .expect("finished before the guard timeout")
}

#[tokio::test]
async fn explicit_redis_url_wins_without_asking_meta_core() {
    let meta_core = FakeMetaCore::start(&urls_json("core", "redis://core:6379")).await;
    let root = tempfile::tempdir().expect("tempdir");
    let config = DiscoveryConfig {
        redis_url: Some("redis://explicit:6379".into()),
        meta_core_url: Some(meta_core.url.clone()),
        ..fast_config(root.path())
    };
    let leader = guarded(discover(&config)).await.expect("leader");
    assert_eq!(leader.redis_url, "redis://explicit:6379");
    assert_eq!(leader.source, LeaderSource::ExplicitRedisUrl);
    assert_eq!(leader.webdav_url, None);
    assert_eq!(*meta_core.requests_served.borrow(), 0);
}

#[tokio::test]
async fn pinned_meta_core_url_is_asked_for_urls() {
    let meta_core = FakeMetaCore::start(&urls_json("core-a", "redis://core-a:6379")).await;
    let root = tempfile::tempdir().expect("tempdir");
    // An info file naming somewhere else proves the pin takes precedence.
    let config = DiscoveryConfig {
        meta_core_url: Some(format!("{}/", meta_core.url)),
        ..fast_config(root.path())
    };
    write_info_file(&config, "http://127.0.0.1:1\n");
    let leader = guarded(discover(&config)).await.expect("leader");
    assert_eq!(
        leader,
        Leader {
            mode: SourceMode::Redis,
            redis_url: "redis://core-a:6379".into(),
            webdav_url: Some("http://core-a-internal/webdav".into()),
            api_url: Some(meta_core.url.clone()),
            hostname: Some("core-a".into()),
            source: LeaderSource::PinnedMetaCore,
        }
    );
}

#[tokio::test]
async fn a_pin_that_is_not_an_http_url_is_an_error_not_a_wait() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = DiscoveryConfig {
        meta_core_url: Some("https://core:9000".into()),
        ..fast_config(root.path())
    };
    let error = guarded(discover(&config)).await.unwrap_err();
    assert!(matches!(error, LeaderError::InvalidMetaCoreUrl { .. }));
    assert!(error.to_string().contains("https://core:9000"), "{error}");
}

#[tokio::test]
async fn waits_while_the_info_file_is_missing_then_resolves_when_written() {
    let mut logs = LogCapture::start();
    let meta_core = FakeMetaCore::start(&urls_json("core-b", "redis://core-b:6379")).await;
    let root = tempfile::tempdir().expect("tempdir");
    let config = fast_config(root.path());
    let search = tokio::spawn({
        let config = config.clone();
        async move { discover(&config).await }
    });

    logs.wait_for_line("does not exist (is the meta-core volume mounted?)")
        .await;
    std::fs::create_dir_all(root.path().join("locks")).expect("mkdir locks");
    logs.wait_for_line("does not exist yet").await;
    assert!(!search.is_finished(), "no leader without an info file");

    write_info_file(&config, &format!("{}\n", meta_core.url));
    let leader = guarded(search).await.expect("task").expect("leader");
    assert_eq!(leader.redis_url, "redis://core-b:6379");
    assert_eq!(leader.source, LeaderSource::LeaderInfoFile);
    logs.wait_for_line("leader found: core-b at redis://core-b:6379")
        .await;
    // One line per state (directory missing, file missing), not per poll.
    assert_eq!(
        logs.count_containing("waiting for a leader"),
        2,
        "{:#?}",
        logs.all_lines()
    );
}

#[tokio::test]
async fn bad_json_keeps_waiting_with_one_logged_reason_until_fixed() {
    let mut logs = LogCapture::start();
    let mut meta_core = FakeMetaCore::start("this is not json").await;
    let root = tempfile::tempdir().expect("tempdir");
    let config = fast_config(root.path());
    write_info_file(&config, &meta_core.url);
    let search = tokio::spawn({
        let config = config.clone();
        async move { discover(&config).await }
    });

    meta_core.wait_for_requests(4).await;
    assert!(!search.is_finished(), "bad json is no leader");
    let reason = logs.wait_for_line("sent a bad body").await;
    assert!(reason.contains(&meta_core.url), "{reason}");
    assert_eq!(
        logs.count_containing("waiting for a leader"),
        1,
        "{:#?}",
        logs.all_lines()
    );

    meta_core.set_reply(StatusCode::OK, &urls_json("core-c", "redis://core-c:6379"));
    let leader = guarded(search).await.expect("task").expect("leader");
    assert_eq!(leader.redis_url, "redis://core-c:6379");
}

#[tokio::test]
async fn an_unreachable_meta_core_is_retried_until_it_answers() {
    let mut logs = LogCapture::start();
    let mut meta_core = FakeMetaCore::start("").await;
    meta_core.set_reply(StatusCode::SERVICE_UNAVAILABLE, "starting");
    let root = tempfile::tempdir().expect("tempdir");
    let config = fast_config(root.path());
    write_info_file(&config, &meta_core.url);
    let search = tokio::spawn({
        let config = config.clone();
        async move { discover(&config).await }
    });
    meta_core.wait_for_requests(3).await;
    logs.wait_for_line("answered http 503").await;
    meta_core.set_reply(StatusCode::OK, &urls_json("core-d", "redis://core-d:6379"));
    let leader = guarded(search).await.expect("task").expect("leader");
    assert_eq!(leader.hostname.as_deref(), Some("core-d"));
}

#[tokio::test]
async fn watch_reports_the_leader_named_by_a_rewritten_info_file() {
    let first = FakeMetaCore::start(&urls_json("core-1", "redis://core-1:6379")).await;
    let second = FakeMetaCore::start(&urls_json("core-2", "redis://core-2:6379")).await;
    let root = tempfile::tempdir().expect("tempdir");
    let config = fast_config(root.path());
    write_info_file(&config, &first.url);
    let leader = guarded(discover(&config)).await.expect("first leader");
    assert_eq!(leader.redis_url, "redis://core-1:6379");

    let mut watcher = watch(config.clone(), leader);
    write_info_file(&config, &format!("{}\n", second.url));
    let changed = guarded(watcher.changed()).await.expect("a change");
    assert_eq!(changed.redis_url, "redis://core-2:6379");
    assert_eq!(changed.hostname.as_deref(), Some("core-2"));
    assert_eq!(changed.api_url.as_deref(), Some(second.url.as_str()));
}

#[tokio::test]
async fn watch_ignores_a_new_meta_core_serving_the_same_redis() {
    let first = FakeMetaCore::start(&urls_json("core-1", "redis://shared:6379")).await;
    let mut second = FakeMetaCore::start(&urls_json("core-1", "redis://shared:6379")).await;
    let third = FakeMetaCore::start(&urls_json("core-3", "redis://core-3:6379")).await;
    let root = tempfile::tempdir().expect("tempdir");
    let config = fast_config(root.path());
    write_info_file(&config, &first.url);
    let leader = guarded(discover(&config)).await.expect("first leader");
    let mut watcher = watch(config.clone(), leader);

    write_info_file(&config, &second.url);
    second.wait_for_requests(1).await;
    write_info_file(&config, &third.url);
    // The first change reported is the third meta-core: the second served
    // the same Redis and WebDAV and was no change.
    let changed = guarded(watcher.changed()).await.expect("a change");
    assert_eq!(changed.redis_url, "redis://core-3:6379");
}

#[tokio::test]
async fn watch_has_nothing_to_follow_for_an_explicit_redis_url() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = DiscoveryConfig {
        redis_url: Some("redis://explicit:6379".into()),
        ..fast_config(root.path())
    };
    let leader = guarded(discover(&config)).await.expect("leader");
    let mut watcher = watch(config, leader);
    assert_eq!(guarded(watcher.changed()).await, None);
}

#[tokio::test]
async fn a_meta_core_without_redis_url_gives_the_api_mode() {
    // Every test that reaches the "waiting" log call site captures logs:
    // tracing caches a call site's interest, and a first hit on a thread
    // without subscriber would hide the line from the tests that look for it.
    let _logs = LogCapture::start();
    let meta_core = FakeMetaCore::start(&urls_json("core-api", "")).await;
    let root = tempfile::tempdir().expect("tempdir");
    let config = fast_config(root.path());
    write_info_file(&config, &meta_core.url);
    let leader = guarded(discover(&config)).await.expect("leader");
    assert_eq!(leader.mode, SourceMode::MetaCore);
    assert_eq!(leader.redis_url, "");
    assert_eq!(leader.api_url.as_deref(), Some(meta_core.url.as_str()));

    // --source redis: a meta-core without redisUrl is no leader yet.
    let forced = DiscoveryConfig {
        forced_mode: Some(SourceMode::Redis),
        ..config.clone()
    };
    let search = tokio::spawn(async move { discover(&forced).await });
    let mut meta_core = meta_core;
    meta_core.wait_for_requests(3).await;
    assert!(!search.is_finished());
    search.abort();

    // --source metacore: an explicit REDIS_URL does not stop API mode.
    let forced = DiscoveryConfig {
        forced_mode: Some(SourceMode::MetaCore),
        redis_url: Some("redis://explicit:6379".into()),
        ..config
    };
    let leader = guarded(discover(&forced)).await.expect("leader");
    assert_eq!(leader.mode, SourceMode::MetaCore);
    assert_eq!(leader.source, LeaderSource::LeaderInfoFile);
}

/// Beacon on loopback multicast with a private port per test.
fn loopback_beacon() -> BeaconConfig {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    BeaconConfig {
        port,
        interface: std::net::Ipv4Addr::LOCALHOST,
        interval: Duration::from_millis(200),
        ..BeaconConfig::default()
    }
}

fn core_node(instance: &str) -> BeaconNode {
    BeaconNode {
        name: "meta-core".into(),
        instance: instance.into(),
        version: Some("test".into()),
        status: Some("running".into()),
    }
}

fn core_resource(api_url: &str, hostname: &str) -> BeaconResource {
    let mut endpoints = std::collections::BTreeMap::new();
    endpoints.insert("http".to_owned(), api_url.to_owned());
    BeaconResource {
        id: "core".into(),
        caps: vec![CORE_CAPABILITY.into()],
        endpoints,
        data: Some(serde_json::json!({"urls": {
            "hostname": hostname,
            "apiUrl": api_url,
            "webdavUrlInternal": format!("http://{hostname}-internal/webdav"),
        }})),
    }
}

#[tokio::test]
async fn without_pin_or_info_file_the_first_core_on_the_beacon_wins() {
    let mut logs = LogCapture::start();
    let beacon = loopback_beacon();
    let root = tempfile::tempdir().expect("tempdir");
    let config = DiscoveryConfig {
        beacon: Some(beacon.clone()),
        ..fast_config(root.path())
    };
    let first = advertise(
        &beacon,
        core_node("core-one"),
        vec![core_resource("http://127.0.0.1:9001", "one")],
    )
    .expect("advertise first core");
    let leader = guarded(discover(&config)).await.expect("leader");
    assert_eq!(leader.mode, SourceMode::MetaCore);
    assert_eq!(leader.source, LeaderSource::Beacon);
    assert_eq!(leader.api_url.as_deref(), Some("http://127.0.0.1:9001"));
    assert_eq!(
        leader.webdav_url.as_deref(),
        Some("http://one-internal/webdav")
    );

    let mut watcher = watch(config.clone(), leader);
    let _second = advertise(
        &beacon,
        core_node("core-two"),
        vec![core_resource("http://127.0.0.1:9002", "two")],
    )
    .expect("advertise second core");
    logs.wait_for_line("ignoring meta-core core-two").await;
    // The first core says bye: the second takes over, like a leader switch.
    drop(first);
    let changed = guarded(watcher.changed()).await.expect("a change");
    assert_eq!(changed.api_url.as_deref(), Some("http://127.0.0.1:9002"));
    assert_eq!(changed.source, LeaderSource::Beacon);
}

#[tokio::test]
async fn our_advertisement_answers_a_probe_by_unicast() {
    let beacon = loopback_beacon();
    let _advertiser = advertise(
        &beacon,
        BeaconNode {
            name: "meta-fuse".into(),
            instance: "fuse-1".into(),
            version: None,
            status: None,
        },
        vec![service_resource("http://127.0.0.1:3000/")],
    )
    .expect("advertise");
    // Bound to 127.0.0.1, the probe leaves by loopback.
    let prober = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let probe = serde_json::to_vec(&BeaconMessage::probe("tester", &["metamesh.service/*"]))
        .expect("probe json");
    let mut buffer = vec![0u8; 8192];
    let reply = guarded(async {
        loop {
            prober
                .send_to(&probe, (beacon.group, beacon.port))
                .await
                .expect("send probe");
            // A probe is answered at once; the periodic advertise goes to
            // the group, never to the prober's own port.
            if let Ok(Ok((length, _))) =
                tokio::time::timeout(Duration::from_secs(1), prober.recv_from(&mut buffer)).await
            {
                return BeaconMessage::parse(&buffer[..length]).expect("a v2 message");
            }
        }
    })
    .await;
    assert_eq!(reply.kind, "advertise");
    assert_eq!(reply.node.expect("node").instance, "fuse-1");
    assert_eq!(reply.resources[0].caps, [SERVICE_CAPABILITY]);
    assert_eq!(
        reply.resources[0].endpoints.get("http").map(String::as_str),
        Some("http://127.0.0.1:3000")
    );
}

/// A socket on the beacon group of `beacon`, as any neighbour has one.
fn group_listener(beacon: &BeaconConfig) -> tokio::net::UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    socket.set_reuse_address(true).expect("reuse address");
    socket.set_reuse_port(true).expect("reuse port");
    socket.set_nonblocking(true).expect("nonblocking");
    socket
        .bind(&std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, beacon.port).into())
        .expect("bind the beacon port");
    socket
        .join_multicast_v4(&beacon.group, &beacon.interface)
        .expect("join the group");
    tokio::net::UdpSocket::from_std(socket.into()).expect("tokio socket")
}

/// The next message of `kind` from node `instance` heard on the group.
async fn next_from(socket: &tokio::net::UdpSocket, instance: &str, kind: &str) -> BeaconMessage {
    let mut buffer = vec![0u8; 8192];
    guarded(async {
        loop {
            let (length, _) = socket.recv_from(&mut buffer).await.expect("receive");
            if let Some(message) = BeaconMessage::parse(&buffer[..length])
                && message.kind == kind
                && message
                    .node
                    .as_ref()
                    .is_some_and(|node| node.instance == instance)
            {
                return message;
            }
        }
    })
    .await
}

#[tokio::test]
async fn our_advertisement_repeats_on_the_group_and_ends_with_bye() {
    let beacon = loopback_beacon();
    let listener = group_listener(&beacon);
    let advertiser = advertise(
        &beacon,
        BeaconNode {
            name: "meta-fuse".into(),
            instance: "fuse-2".into(),
            version: Some("1.0".into()),
            status: Some("running".into()),
        },
        vec![service_resource("http://127.0.0.1:3000")],
    )
    .expect("advertise");
    // The first is sent before advertise returns; the next ones each interval.
    for _ in 0..3 {
        let message = next_from(&listener, "fuse-2", "advertise").await;
        assert_eq!(message.resources[0].caps, [SERVICE_CAPABILITY]);
    }
    drop(advertiser);
    let bye = next_from(&listener, "fuse-2", "bye").await;
    assert_eq!(bye.node.expect("node").name, "meta-fuse");
    assert!(bye.resources.is_empty());
}
