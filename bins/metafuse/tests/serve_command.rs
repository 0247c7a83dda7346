//! `metafuse serve` answers from the start: while its Redis is unreachable
//! health says `starting` and the other routes 503, then it serves for real.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};

use metafuse_testkit::{RedisServer, Writer};

mod support;
use support::{ChildGuard, exit_code_within_a_minute, free_port, get, get_until};

#[test]
fn the_api_answers_starting_until_redis_is_back_then_serves() {
    let mut redis = RedisServer::start_persistent().expect("redis");
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
    drop(connection);
    redis.kill();

    let config_dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_metafuse"))
        .args(["serve", "--preset", "default", "--redis-url"])
        .arg(redis.url())
        .arg("--api-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("CONFIG_DIR", config_dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run metafuse serve");
    let mut child = ChildGuard(child);

    let (_, health) = get_until(port, "/health", |status, _| status == 200);
    assert!(health.contains(r#""status":"starting""#), "{health}");
    let (status, body) = get(port, "/api/fuse/stats").expect("stats answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("starting"), "{body}");
    let (status, _) = get(port, "/no/such/route").expect("answers");
    assert_eq!(status, 404);

    redis.restart().expect("redis again");
    get_until(port, "/health", |_, body| body.contains(r#""status":"ok""#));
    let (status, stats) = get(port, "/api/fuse/stats").expect("stats answers");
    assert_eq!(status, 200, "{stats}");
    assert!(stats.contains(r#""fileCount":1"#), "{stats}");

    let terminated = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(terminated.success());
    let exit = child.0.wait().expect("wait");
    assert_eq!(exit.code(), Some(0));
}

/// With notifications, WebDAV and registration all on, SIGTERM still stops
/// the process at once (the notifier must not wait for a change feed that
/// never closes), and the heartbeat file is removed.
#[test]
fn sigterm_stops_a_service_with_notifications_webdav_and_registration() {
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

    let config_dir = tempfile::tempdir().expect("tempdir");
    let meta_core = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(meta_core.path().join("services")).expect("services dir");
    let (api_port, webdav_port, nobody_port) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_metafuse"))
        .args(["serve", "--preset", "default", "--redis-url"])
        .arg(redis.url())
        .arg("--api-listen")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--webdav-listen")
        .arg(format!("127.0.0.1:{webdav_port}"))
        .arg("--notify")
        .arg(format!("webhook=http://127.0.0.1:{nobody_port}/hook"))
        .env("CONFIG_DIR", config_dir.path())
        .env("META_CORE_PATH", meta_core.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run metafuse serve");
    let mut child = ChildGuard(child);

    get_until(api_port, "/readyz", |status, _| status == 200);
    let heartbeats = || {
        std::fs::read_dir(meta_core.path().join("services"))
            .expect("services dir")
            .count()
    };
    assert_eq!(heartbeats(), 1, "the heartbeat file is written once ready");
    let (status, _) = get(webdav_port, "/").expect("webdav answers");
    assert_eq!(status, 401, "webdav asks for a token");
    let (_, metrics) = get(api_port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("metafuse_notifications_sent_total 0"),
        "{metrics}"
    );

    let terminated = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(terminated.success());
    assert_eq!(exit_code_within_a_minute(&mut child.0), Some(0));
    assert_eq!(heartbeats(), 0, "the heartbeat file is removed on SIGTERM");
}
