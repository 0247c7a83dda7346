//! The heartbeat file other MetaMesh services list us by: it appears, is
//! refreshed, and disappears on shutdown; nothing is written where no
//! registry exists.

use std::time::Duration;

use metafuse_service::{Registration, RegistrationConfig};
use serde_json::Value;

/// Failure guard only.
const GUARD: Duration = Duration::from_secs(30);

fn read_heartbeat(path: &std::path::Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).expect("a heartbeat is always whole json"))
}

#[tokio::test]
async fn the_heartbeat_appears_is_refreshed_and_is_removed_on_stop() {
    let meta_core = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(meta_core.path().join("services")).expect("registry");
    let mut config = RegistrationConfig::new(meta_core.path(), "http://nas:3000");
    config.hostname = "nas".to_owned();
    config.interval = Duration::from_millis(20);
    let path = config.heartbeat_path();
    assert_eq!(path, meta_core.path().join("services/meta-fuse-nas.json"));

    let registration = Registration::start(config).expect("registry exists");
    let first = read_heartbeat(&path).expect("written at start");
    assert_eq!(first["name"], "meta-fuse");
    assert_eq!(first["hostname"], "nas");
    assert_eq!(first["baseUrl"], "http://nas:3000");
    assert_eq!(first["status"], "running");
    let first_beat = first["lastHeartbeat"]
        .as_str()
        .expect("lastHeartbeat")
        .to_owned();

    // Refreshed: a later heartbeat replaces the first (polled; every read
    // must be whole json, never a half-written file).
    tokio::time::timeout(GUARD, async {
        loop {
            let beat = read_heartbeat(&path).expect("never missing while registered");
            if beat["lastHeartbeat"].as_str() != Some(first_beat.as_str()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the heartbeat was refreshed");

    registration.stop().await;
    assert!(!path.exists(), "removed on stop");
    let leftovers: Vec<_> = std::fs::read_dir(meta_core.path().join("services"))
        .expect("list")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn dropping_the_registration_removes_the_file_too() {
    let meta_core = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(meta_core.path().join("services")).expect("registry");
    let config = RegistrationConfig::new(meta_core.path(), "http://nas:3000");
    let registration = Registration::start(config).expect("registry exists");
    let path = registration.path().to_path_buf();
    assert!(path.exists());
    drop(registration);
    assert!(!path.exists());
}

#[tokio::test]
async fn nothing_is_written_without_a_registry() {
    let meta_core = tempfile::tempdir().expect("tempdir");
    let config = RegistrationConfig::new(meta_core.path(), "http://nas:3000");
    assert!(Registration::start(config).is_none());
    assert_eq!(
        std::fs::read_dir(meta_core.path()).expect("list").count(),
        0
    );
}
