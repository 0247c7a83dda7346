//! Registration on beacon v2 (spec §9): a `metafuse serve` that found its
//! meta-core on the beacon advertises `metamesh.service/meta-fuse` there,
//! says `bye` on SIGTERM, and with `--no-register` stays silent. Everything
//! on loopback multicast with a private port: a meta-core double advertised
//! by the test, a real Redis behind it, the real binary.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use metafuse_leader::{
    BeaconAdvertiser, BeaconConfig, BeaconMessage, BeaconNode, BeaconResource, CORE_CAPABILITY,
    SERVICE_CAPABILITY, advertise,
};
use metafuse_testkit::{MetaCoreDouble, MetaCoreDoubleConfig, RedisServer, Writer};
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::process::{Child, Command};

/// Failure guard only: every awaited event normally arrives in seconds.
const GUARD: Duration = Duration::from_secs(120);

async fn guarded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen"))
}

/// Beacon on loopback multicast with a private port.
fn loopback_beacon() -> BeaconConfig {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("free port")
        .port();
    BeaconConfig {
        port,
        interface: Ipv4Addr::LOCALHOST,
        interval: Duration::from_millis(500),
        ..BeaconConfig::default()
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// A socket on the beacon group, as every neighbour has one.
fn group_listener(beacon: &BeaconConfig) -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    socket.set_reuse_address(true).expect("reuse address");
    socket.set_reuse_port(true).expect("reuse port");
    socket.set_nonblocking(true).expect("nonblocking");
    socket
        .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, beacon.port).into())
        .expect("bind the beacon port");
    socket
        .join_multicast_v4(&beacon.group, &beacon.interface)
        .expect("join the group");
    UdpSocket::from_std(socket.into()).expect("tokio socket")
}

async fn next_message(listener: &UdpSocket) -> BeaconMessage {
    let mut buffer = vec![0u8; 8192];
    loop {
        let (length, _) = listener.recv_from(&mut buffer).await.expect("receive");
        if let Some(message) = BeaconMessage::parse(&buffer[..length]) {
            return message;
        }
    }
}

fn is_from_meta_fuse(message: &BeaconMessage, kind: &str) -> bool {
    message.kind == kind
        && message
            .node
            .as_ref()
            .is_some_and(|node| node.name == "meta-fuse")
}

/// A meta-core double over a real Redis holding one file, advertised on
/// the beacon as the newest meta-cores do.
struct BeaconCore {
    double: MetaCoreDouble,
    _advertiser: BeaconAdvertiser,
    _redis: RedisServer,
}

async fn beacon_core(beacon: &BeaconConfig) -> BeaconCore {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    Writer::new(&mut connection, "")
        .set_file(
            "aaaa0001",
            &[
                ("title", "Heat"),
                ("extension", "mkv"),
                ("filePath", "heat.mkv"),
            ],
        )
        .flush()
        .expect("write");
    let double = MetaCoreDouble::start(MetaCoreDoubleConfig::new(redis.url()))
        .await
        .expect("meta-core double");
    let mut endpoints = std::collections::BTreeMap::new();
    endpoints.insert("http".to_owned(), double.url());
    let advertiser = advertise(
        beacon,
        BeaconNode {
            name: "meta-core".into(),
            instance: "core-under-test".into(),
            version: Some("test".into()),
            status: Some("running".into()),
        },
        vec![BeaconResource {
            id: "core".into(),
            caps: vec![CORE_CAPABILITY.into()],
            endpoints,
            data: Some(serde_json::json!({ "urls": double.urls_json() })),
        }],
    )
    .expect("advertise the core");
    BeaconCore {
        double,
        _advertiser: advertiser,
        _redis: redis,
    }
}

/// `metafuse serve` with nothing but the beacon to find its meta-core
/// (an empty META_CORE_PATH: no `kv-leader.info`), readiness reported to
/// `notify_socket`, logs to `log`.
fn serve(
    beacon: &BeaconConfig,
    api_port: u16,
    directory: &Path,
    notify_socket: &Path,
    extra: &[&str],
) -> Child {
    let meta_core_path = directory.join("meta-core");
    std::fs::create_dir_all(meta_core_path.join("services")).expect("services dir");
    let log = std::fs::File::create(directory.join("metafuse.log")).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_metafuse"))
        .args(["serve", "--preset", "default", "--api-listen"])
        .arg(format!("127.0.0.1:{api_port}"))
        .args(extra)
        .env_remove("REDIS_URL")
        .env_remove("META_CORE_URL")
        .env("META_CORE_PATH", &meta_core_path)
        .env("CONFIG_DIR", directory.join("config"))
        .env("METAFUSE_BEACON_INTERFACE", "127.0.0.1")
        .env("METAFUSE_BEACON_PORT", beacon.port.to_string())
        .env("NOTIFY_SOCKET", notify_socket)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("run metafuse serve")
}

fn log_of(directory: &Path) -> String {
    std::fs::read_to_string(directory.join("metafuse.log")).unwrap_or_default()
}

async fn await_datagram(socket: &UnixDatagram, line: &str) -> String {
    let mut buffer = [0_u8; 512];
    guarded(line, async {
        loop {
            let length = socket.recv(&mut buffer).await.expect("notify datagram");
            let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
            if message.lines().any(|candidate| candidate == line) {
                return message;
            }
        }
    })
    .await
}

async fn terminate(child: &mut Child, directory: &Path) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let exit = guarded("exit after SIGTERM", child.wait())
        .await
        .expect("wait");
    assert_eq!(exit.code(), Some(0), "{}", log_of(directory));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_found_on_the_beacon_advertises_itself_and_says_bye() {
    let beacon = loopback_beacon();
    let listener = group_listener(&beacon);
    let core = beacon_core(&beacon).await;
    let directory = tempfile::tempdir().expect("tempdir");
    let notify_path = directory.path().join("notify.sock");
    let notify_socket = UnixDatagram::bind(&notify_path).expect("notify socket");
    let api_port = free_tcp_port();
    let mut child = serve(&beacon, api_port, directory.path(), &notify_path, &[]);

    let advertisement = guarded("our advertisement", async {
        loop {
            let message = next_message(&listener).await;
            if is_from_meta_fuse(&message, "advertise") {
                return message;
            }
        }
    })
    .await;
    let node = advertisement.node.clone().expect("node");
    assert!(node.instance.starts_with("meta-fuse-"), "{node:?}");
    assert_eq!(node.status.as_deref(), Some("running"));
    assert!(node.version.is_some());
    assert_eq!(advertisement.resources.len(), 1, "{advertisement:?}");
    let resource = &advertisement.resources[0];
    assert_eq!(resource.caps, [SERVICE_CAPABILITY]);
    let base_url = format!("http://127.0.0.1:{api_port}");
    assert_eq!(resource.endpoints.get("http"), Some(&base_url));
    assert_eq!(resource.endpoints.get("ui"), Some(&base_url));
    // It found the core on the beacon and reads through it.
    await_datagram(&notify_socket, "READY=1").await;
    assert!(
        core.double.event_streams_opened() >= 1,
        "{}",
        log_of(directory.path())
    );

    let pid = child.id().expect("running").to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(kill.expect("kill").success());
    let bye = guarded("our bye", async {
        loop {
            let message = next_message(&listener).await;
            if is_from_meta_fuse(&message, "bye") {
                return message;
            }
        }
    })
    .await;
    assert_eq!(bye.node.expect("node").instance, node.instance);
    let exit = guarded("exit after SIGTERM", child.wait())
        .await
        .expect("wait");
    assert_eq!(exit.code(), Some(0), "{}", log_of(directory.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_register_sends_no_advertisement() {
    let beacon = loopback_beacon();
    let listener = group_listener(&beacon);
    let core = beacon_core(&beacon).await;
    let directory = tempfile::tempdir().expect("tempdir");
    let notify_path = directory.path().join("notify.sock");
    let notify_socket = UnixDatagram::bind(&notify_path).expect("notify socket");
    let api_port = free_tcp_port();
    let mut child = serve(
        &beacon,
        api_port,
        directory.path(),
        &notify_path,
        &["--no-register"],
    );

    // READY is sent after the first advertisement would have left (it is
    // sent before advertising starts returns), so a marker sent to the
    // group now arrives after it.
    await_datagram(&notify_socket, "READY=1").await;
    assert!(
        core.double.event_streams_opened() >= 1,
        "the service found the core on the beacon: {}",
        log_of(directory.path())
    );
    let marker = serde_json::to_vec(&BeaconMessage::probe(
        "end-of-test-marker",
        &["test.marker/none"],
    ))
    .expect("marker json");
    let sender = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sender
        .send_to(&marker, (beacon.group, beacon.port))
        .await
        .expect("send the marker");
    let heard = guarded("the marker", async {
        let mut heard = Vec::new();
        loop {
            let message = next_message(&listener).await;
            if message.from.as_deref() == Some("end-of-test-marker") {
                return heard;
            }
            heard.push(message);
        }
    })
    .await;
    assert!(
        !heard.iter().any(|message| message
            .node
            .as_ref()
            .is_some_and(|node| node.name == "meta-fuse")),
        "{heard:#?}"
    );
    // Something was heard meanwhile: the listener works (the core's own
    // advertisements, our discovery's probes).
    assert!(
        heard.iter().any(|message| message.kind == "advertise"),
        "{heard:#?}"
    );
    assert_eq!(
        std::fs::read_dir(directory.path().join("meta-core/services"))
            .expect("services dir")
            .count(),
        0,
        "no heartbeat file either"
    );
    terminate(&mut child, directory.path()).await;
}
