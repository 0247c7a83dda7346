//! Change notifications from the running binary (issue #14): the library
//! bootstrapped at start-up is announced with one library-level refresh,
//! and a media server answering 500 is retried and counted while the mount
//! keeps serving live changes.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use metafuse_testkit::{MountingChild, RedisServer, Writer, is_mounted};

mod support;
use support::{
    ChildGuard, Recorder, counter, exit_code_within_a_minute, free_port, get, get_until, wait_until,
};

fn write_movie(connection: &mut redis::Connection, hash: &str, title: &str, file: &str) {
    Writer::new(connection, "")
        .set_file(
            hash,
            &[
                ("title", title),
                ("extension", "mkv"),
                ("fileType", "video"),
                ("filePath", file),
            ],
        )
        .flush()
        .expect("write");
}

fn terminate(pid: u32) {
    let terminated = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(terminated.success());
}

/// One library refresh after the bootstrap, to a webhook and to a program;
/// then a live change is sent on its own, directory by directory — and
/// nothing else came before it.
#[test]
fn the_bootstrap_is_announced_with_one_library_refresh() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    write_movie(&mut connection, "aaaa0001", "Heat", "heat.mkv");
    let webhook = Recorder::start(200);
    let directory = tempfile::tempdir().expect("tempdir");
    let calls = directory.path().join("calls.txt");
    let program = directory.path().join("on-change.sh");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\necho \"$METAFUSE_NOTIFY_SCOPE $*\" >> '{}'\n",
            calls.display()
        ),
    )
    .expect("write program");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let api_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_metafuse"))
        .args(["serve", "--preset", "default", "--redis-url"])
        .arg(redis.url())
        .arg("--api-listen")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--notify")
        .arg(format!("webhook={}/hook", webhook.url()))
        .arg("--notify")
        .arg(format!("exec={}", program.display()))
        .args(["--media-path-prefix", "/media"])
        .env("CONFIG_DIR", directory.path())
        .env("META_CORE_PATH", directory.path().join("no-meta-core"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run metafuse serve");
    let mut child = ChildGuard(child);

    let refresh = webhook.next();
    assert_eq!(
        (refresh.method.as_str(), refresh.target.as_str()),
        ("POST", "/hook")
    );
    let body: serde_json::Value = serde_json::from_str(&refresh.body).expect("json body");
    assert_eq!(
        body,
        serde_json::json!({"scope": "all", "mediaPathPrefix": "/media", "directories": []})
    );
    let read_calls = || std::fs::read_to_string(&calls).unwrap_or_default();
    wait_until("the program's run", || !read_calls().is_empty());
    assert_eq!(read_calls(), "all /media\n");

    // A live change after the refresh went out is sent by directory; the
    // target's requests go in order, so nothing else came in between.
    write_movie(&mut connection, "aaaa0002", "Alien", "alien.mkv");
    let live = webhook.next();
    let body: serde_json::Value = serde_json::from_str(&live.body).expect("json body");
    assert_eq!(body["scope"], "directories", "{body}");
    let paths: Vec<&str> = body["directories"]
        .as_array()
        .expect("directories")
        .iter()
        .filter_map(|directory| directory["mediaPath"].as_str())
        .collect();
    assert_eq!(paths, ["/media/Movies/Alien"], "{body}");
    wait_until("the program's second run", || {
        read_calls().lines().count() == 2
    });
    assert_eq!(
        read_calls(),
        "all /media\ndirectories /media/Movies/Alien\n"
    );
    // Counted once each request has completed: awaited, not raced.
    let (_, metrics) = get_until(api_port, "/metrics", |_, metrics| {
        counter(metrics, "metafuse_notifications_sent_total") == Some(4)
    });
    assert_eq!(
        counter(&metrics, "metafuse_notifications_failed_total"),
        Some(0)
    );

    terminate(child.0.id());
    assert_eq!(exit_code_within_a_minute(&mut child.0), Some(0));
}

/// A Jellyfin answering 500 to everything: the notifications are retried
/// and counted as failed, while the mount serves live changes, reads
/// correctly and stays healthy, and SIGTERM still unmounts at once.
#[test]
fn a_media_server_answering_500_leaves_the_mount_serving() {
    metafuse_testkit::require_fuse!();
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let directory = tempfile::tempdir().expect("tempdir");
    let files_root = directory.path().join("files");
    let mountpoint = directory.path().join("mnt");
    std::fs::create_dir_all(&files_root).expect("mkdir");
    std::fs::create_dir_all(&mountpoint).expect("mkdir");
    let contents = [
        ("heat.mkv", b"heat: the real bytes".repeat(1000)),
        ("alien.mkv", b"alien: other real bytes".repeat(3000)),
        ("brazil.mkv", b"brazil".to_vec()),
    ];
    for (name, bytes) in &contents {
        std::fs::write(files_root.join(name), bytes).expect("write file");
    }
    write_movie(&mut connection, "aaaa0001", "Heat", "heat.mkv");
    let jellyfin = Recorder::start(500);

    let api_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_metafuse"))
        .arg("mount")
        .arg(&mountpoint)
        .arg("--redis-url")
        .arg(redis.url())
        .arg("--files-root")
        .arg(&files_root)
        .arg("--rules")
        .arg(directory.path().join("renaming-rules.json"))
        .arg("--api-listen")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--notify")
        .arg(format!("jellyfin={},key=SECRET", jellyfin.url()))
        .env("CONFIG_DIR", directory.path())
        .env("META_CORE_PATH", directory.path().join("no-meta-core"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn metafuse");
    let mut guard = MountingChild::new(child, &mountpoint);
    get_until(api_port, "/readyz", |status, _| status == 200);
    assert!(is_mounted(&mountpoint));

    // A live change while the notifications fail.
    write_movie(&mut connection, "aaaa0002", "Alien", "alien.mkv");
    let alien = mountpoint.join("Movies/Alien/Alien.mkv");
    wait_until("Alien on the mount", || alien.exists());
    assert_eq!(std::fs::read(&alien).expect("read Alien"), contents[1].1);

    // Jellyfin is asked, answers 500, and is asked again.
    let first = jellyfin.next();
    assert_eq!(first.method, "POST");
    assert_eq!(
        first.header("authorization"),
        Some(r#"MediaBrowser Token="SECRET""#)
    );
    let retry = jellyfin.next();
    assert_eq!(retry.target, first.target, "the same request, retried");
    let (_, metrics) = get_until(api_port, "/metrics", |_, metrics| {
        counter(metrics, "metafuse_notifications_failed_total").is_some_and(|failed| failed >= 2)
    });
    assert_eq!(
        counter(&metrics, "metafuse_notifications_sent_total"),
        Some(0),
        "{metrics}"
    );

    // The tail is not held up by the failing deliveries (still retrying).
    write_movie(&mut connection, "aaaa0003", "Brazil", "brazil.mkv");
    let brazil = mountpoint.join("Movies/Brazil/Brazil.mkv");
    wait_until("Brazil on the mount", || brazil.exists());
    assert_eq!(std::fs::read(&brazil).expect("read Brazil"), contents[2].1);
    assert_eq!(
        std::fs::read(mountpoint.join("Movies/Heat/Heat.mkv")).expect("read Heat"),
        contents[0].1
    );
    let (status, health) = get(api_port, "/health").expect("health");
    assert_eq!(status, 200, "{health}");
    assert!(health.contains(r#""status":"ok""#), "{health}");
    let (status, stats) = get(api_port, "/api/fuse/stats").expect("stats");
    assert_eq!(status, 200, "{stats}");
    assert!(stats.contains(r#""fileCount":3"#), "{stats}");

    terminate(guard.child.id());
    assert_eq!(exit_code_within_a_minute(&mut guard.child), Some(0));
    assert!(!is_mounted(&mountpoint), "still mounted after SIGTERM");
}
