//! Rules files that must never be applied as "no rules", and a `PUT` on a
//! full disk that must change nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use metafuse_service::{Service, ServiceConfig, backup_path};
use metafuse_testkit::RedisServer;
use serde_json::{Value, json};
use support::{Api, http, set};

fn seed_movie(connection: &mut redis::Connection, hash_id: &str, title: &str) {
    for (property, value) in [
        ("title", title),
        ("movieYear", "1995"),
        ("fileType", "video"),
        ("extension", "mkv"),
        ("filePath", &format!("watch/{title}.mkv")),
    ] {
        let _ = set(connection, hash_id, property, value);
    }
}

async fn get_json(address: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = http(address, "GET", path, "").await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

fn rules_document(template: &str) -> Value {
    json!({"version": 1, "rules": [{"id": "flat", "name": "Flat", "enabled": true, "priority": 1,
        "conditions": {"operator": "AND", "conditions": []}, "template": template,
        "fallbackToUnsorted": true}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_blank_and_bare_object_rules_files_are_rejected_not_applied() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    seed_movie(&mut connection, "aaaa0001", "Heat");
    let directory = tempfile::tempdir().expect("tempdir");
    let rules_file = directory.path().join("renaming-rules.json");
    std::fs::write(&rules_file, "").expect("empty rules file");
    let mut config = ServiceConfig::new(&rules_file, directory.path().join("files"));
    config.discovery.redis_url = Some(redis.url());
    config.rules_poll_interval = std::time::Duration::from_millis(50);
    let service = Service::start(config).await.expect("service starts");
    let api = Api::start(&service).await;

    // At start: reported, the default preset serves, the file is kept.
    let health = get_json(api.address, "/api/fuse/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["rulesError"]
            .as_str()
            .is_some_and(|error| error.contains("rules")),
        "{health}"
    );
    let files = get_json(api.address, "/api/fuse/files").await;
    assert_eq!(
        files["files"],
        json!(["/Movies/Heat (1995)/Heat (1995).mkv"])
    );
    assert_eq!(std::fs::read_to_string(&rules_file).expect("kept"), "");

    // Valid rules, then each bad form in turn: rejected, rules kept.
    let checks = service.rules_file_checks();
    std::fs::write(
        &rules_file,
        rules_document("All/{title}.{extension}").to_string(),
    )
    .expect("valid");
    service.wait_for_rules_file_check(checks).await;
    assert_eq!(service.rules_file_error(), None);
    for bad in [
        "   \n\t",
        "{}",
        "{\"version\": 1}",
        "{\"version\": 1, \"rules\": []}",
    ] {
        let checks = service.rules_file_checks();
        std::fs::write(&rules_file, bad).expect("bad rules file");
        service.wait_for_rules_file_check(checks).await;
        let error = service.rules_file_error();
        assert!(error.is_some(), "{bad:?} was accepted");
        let health = get_json(api.address, "/api/fuse/health").await;
        assert_eq!(health["status"], "degraded", "{bad:?}: {health}");
        let files = get_json(api.address, "/api/fuse/files").await;
        assert_eq!(files["files"], json!(["/All/Heat.mkv"]), "{bad:?}");
    }
    api.stop().await;
    service.shutdown().await;
}

/// A small tmpfs mounted by the test; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if output.status.success() {
            Ok(Tmpfs {
                path: path.to_path_buf(),
            })
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes into `path` until the file system says it is full.
fn fill_disk(path: &Path) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 4096];
    loop {
        match file.write_all(&block) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
            Err(error) => panic!("filling the disk: {error}"),
        }
    }
    // Whatever is still buffered must not land later.
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_a_full_disk_changes_nothing() {
    let directory = tempfile::tempdir().expect("tempdir");
    let config_dir = directory.path().join("config");
    let tmpfs = match Tmpfs::mount(&config_dir, "256k") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!(
                "SKIPPED a_put_on_a_full_disk_changes_nothing: cannot mount a tmpfs here ({reason})"
            );
            return;
        }
    };
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    seed_movie(&mut connection, "aaaa0001", "Heat");
    let rules_file = config_dir.join("renaming-rules.json");
    let mut config = ServiceConfig::new(&rules_file, directory.path().join("files"));
    config.discovery.redis_url = Some(redis.url());
    let service = Service::start(config).await.expect("service starts");
    let api = Api::start(&service).await;

    // Three saves: the file and two backups.
    for template in [
        "One/{title}.{extension}",
        "Two/{title}.{extension}",
        "Three/{title}.{extension}",
    ] {
        let body = json!({"config": rules_document(template)}).to_string();
        let (status, reply) = http(api.address, "PUT", "/api/fuse/rules", &body).await;
        assert_eq!(status, 200, "{reply}");
    }
    let read = |path: &Path| std::fs::read(path).expect("read");
    let file_before = read(&rules_file);
    let backups_before: Vec<Vec<u8>> = (1..=2)
        .map(|generation| read(&backup_path(&rules_file, generation)))
        .collect();
    let rules_before = get_json(api.address, "/api/fuse/rules").await["config"].clone();
    let files_before = get_json(api.address, "/api/fuse/files").await;
    assert_eq!(files_before["files"], json!(["/Three/Heat.mkv"]));

    fill_disk(&tmpfs.path.join("filler"));
    let body = json!({"config": rules_document("Four/{title}.{extension}")}).to_string();
    let (status, reply) = http(api.address, "PUT", "/api/fuse/rules", &body).await;
    assert_eq!(status, 500, "{reply}");
    assert!(reply.contains("No space left on device"), "{reply}");
    assert!(reply.contains("nothing changed"), "{reply}");

    assert_eq!(read(&rules_file), file_before, "the rules file changed");
    for (generation, before) in (1..=2).zip(&backups_before) {
        assert_eq!(
            &read(&backup_path(&rules_file, generation)),
            before,
            "backup {generation} changed"
        );
    }
    assert!(!backup_path(&rules_file, 3).exists(), "a backup was added");
    let leftovers: Vec<String> = std::fs::read_dir(&config_dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp.") || name.contains(".previous."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        get_json(api.address, "/api/fuse/rules").await["config"],
        rules_before
    );
    assert_eq!(get_json(api.address, "/api/fuse/files").await, files_before);

    // Space again: the same PUT goes through.
    std::fs::remove_file(tmpfs.path.join("filler")).expect("free space");
    let (status, reply) = http(api.address, "PUT", "/api/fuse/rules", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        get_json(api.address, "/api/fuse/files").await["files"],
        json!(["/Four/Heat.mkv"])
    );

    api.stop().await;
    service.shutdown().await;
    drop(tmpfs);
}
