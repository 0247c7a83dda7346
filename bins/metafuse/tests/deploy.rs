//! What deployments rely on: shell completions, the manual page, JSON log
//! lines and systemd's readiness protocol (`Type=notify`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use metafuse_testkit::{MountingChild, RedisServer, Writer, is_mounted};

fn metafuse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_metafuse"))
}

#[test]
fn bash_completion_sources_cleanly_and_registers_metafuse() {
    let script = metafuse()
        .args(["completions", "bash"])
        .output()
        .expect("run metafuse completions");
    assert!(script.status.success());
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("metafuse.bash");
    std::fs::write(&path, &script.stdout).expect("write script");
    let shell = Command::new("bash")
        .arg("-c")
        .arg(r#"set -e; source "$1"; complete -p metafuse"#)
        .arg("bash")
        .arg(&path)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&shell.stdout);
    assert!(
        shell.status.success(),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    assert!(stdout.contains("_metafuse metafuse"), "{stdout}");
}

#[test]
fn the_manual_page_renders_with_man() {
    let roff = metafuse().arg("man").output().expect("run metafuse man");
    assert!(roff.status.success());
    let directory = tempfile::tempdir().expect("tempdir");
    let page = directory.path().join("metafuse.1");
    std::fs::write(&page, &roff.stdout).expect("write page");
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("run man (apt-get install man-db groff-base)");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    for expected in ["metafuse(1)", "NAME", "mount", "serve", "completions"] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    let pages = tempfile::tempdir().expect("tempdir");
    let written = metafuse()
        .args(["man", "--out-dir"])
        .arg(pages.path())
        .status()
        .expect("run metafuse man --out-dir");
    assert!(written.success());
    assert!(pages.path().join("metafuse-mount.1").is_file());
}

/// Mounts with `NOTIFY_SOCKET` pointing at a socket this test listens on
/// and JSON logs: `READY=1` arrives when the file is already listable,
/// `STOPPING=1` on SIGTERM, and every log line is a JSON object.
#[test]
fn ready_is_sent_once_the_mount_serves_and_logs_are_json() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    Writer::new(&mut connection, "")
        .set_file(
            "aaaa0001",
            &[
                ("title", "Heat"),
                ("extension", "mkv"),
                ("fileType", "video"),
                ("filePath", "heat.mkv"),
            ],
        )
        .flush()
        .expect("write");
    let directory = tempfile::tempdir().expect("tempdir");
    let files_root = directory.path().join("files");
    let mountpoint = directory.path().join("mnt");
    std::fs::create_dir_all(&files_root).expect("mkdir");
    std::fs::create_dir_all(&mountpoint).expect("mkdir");
    let socket_path = directory.path().join("notify.sock");
    let notify_socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    // Only turns a hang into a failure; the datagram is awaited, not timed.
    notify_socket
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");

    let child = metafuse()
        .arg("mount")
        .arg(&mountpoint)
        .arg("--redis-url")
        .arg(redis.url())
        .arg("--files-root")
        .arg(&files_root)
        .arg("--rules")
        .arg(directory.path().join("renaming-rules.json"))
        .args(["--no-api", "--log-format", "json"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn metafuse");
    let mut guard = MountingChild::new(child, &mountpoint);
    let stderr = guard.child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let mut buffer = [0_u8; 512];
    let length = notify_socket.recv(&mut buffer).expect("a READY datagram");
    let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
    // At the moment READY arrives the tree must already be served.
    let listed: Vec<String> = std::fs::read_dir(mountpoint.join("Movies/Heat"))
        .expect("the mount serves when READY arrives")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(message.lines().any(|line| line == "READY=1"), "{message}");
    assert_eq!(listed, vec!["Heat.mkv"]);

    let terminated = Command::new("kill")
        .args(["-TERM", &guard.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(terminated.success());
    let length = notify_socket
        .recv(&mut buffer)
        .expect("a STOPPING datagram");
    let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
    assert!(
        message.lines().any(|line| line == "STOPPING=1"),
        "{message}"
    );
    let exit = guard.child.wait().expect("wait");
    let lines = log.join().expect("log reader");
    assert_eq!(exit.code(), Some(0), "{lines:#?}");
    assert!(!is_mounted(&mountpoint));

    assert!(!lines.is_empty());
    let mut saw_mounted = false;
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["target"].is_string(), "{line}");
        assert!(object["fields"]["message"].is_string(), "{line}");
        saw_mounted |= object["fields"]["message"] == "mounted";
    }
    assert!(saw_mounted, "{lines:#?}");
    // Written so the log is visible when an assertion above fails.
    let _ = std::io::stderr().flush();
}
