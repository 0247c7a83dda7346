//! The `metafuse mount` binary: mounts, and on SIGTERM unmounts and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use metafuse_testkit::{MountingChild, RedisServer, Writer, is_mounted};

#[test]
fn sigterm_unmounts_and_exits_zero() {
    metafuse_testkit::require_fuse!();
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let directory = tempfile::tempdir().expect("tempdir");
    let files_root = directory.path().join("files");
    let mountpoint = directory.path().join("mnt");
    std::fs::create_dir_all(&files_root).expect("mkdir");
    std::fs::create_dir_all(&mountpoint).expect("mkdir");
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

    let child = Command::new(env!("CARGO_BIN_EXE_metafuse"))
        .arg("mount")
        .arg(&mountpoint)
        .arg("--redis-url")
        .arg(redis.url())
        .arg("--files-root")
        .arg(&files_root)
        .arg("--rules")
        .arg(directory.path().join("renaming-rules.json"))
        .arg("--no-api")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn metafuse");
    let mut guard = MountingChild::new(child, &mountpoint);

    // The "mounted" log line is the event that says the mount is up.
    let stderr = guard.child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("metafuse exited before mounting: {seen:#?}"))
            .expect("line");
        let mounted = line.contains("mounted");
        seen.push(line);
        if mounted {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    assert!(is_mounted(&mountpoint));
    assert!(mountpoint.join("Movies/Heat/Heat.mkv").exists());

    let pid = guard.child.id().to_string();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(&pid)
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = guard.child.wait().expect("wait");
    let rest = drain.join().expect("drain");
    assert_eq!(exit.code(), Some(0), "log: {rest:#?}");
    assert!(!is_mounted(&mountpoint), "still mounted after SIGTERM");
}

#[test]
fn a_missing_mountpoint_exits_2_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_metafuse"))
        .args([
            "mount",
            "/nonexistent/metafuse-mountpoint",
            "--redis-url",
            "redis://127.0.0.1:1/",
            "--no-api",
        ])
        .output()
        .expect("run metafuse");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/metafuse-mountpoint"),
        "{stderr}"
    );
}
