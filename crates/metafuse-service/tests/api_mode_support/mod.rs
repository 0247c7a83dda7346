#![allow(dead_code)] // each test binary uses a different part
//! API mode and warm restarts: a meta-core double over a real redis-server,
//! the service pinned to it, and the exactness check the direct-Redis tests
//! use (the projection holds what Redis holds, the tree has every path a
//! fresh build of that truth has).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metafuse_rules::Rules;
use metafuse_service::{Service, ServiceConfig};
use metafuse_state::Projection;
use metafuse_testkit::{Files, MetaCoreDouble, MetaCoreDoubleConfig, read_truth};
use metafuse_vfs::Library;

/// Failure guard only: awaited changes normally arrive in milliseconds.
pub const GUARD: Duration = Duration::from_secs(90);

pub struct Dirs {
    _directory: tempfile::TempDir,
    pub files_root: PathBuf,
    pub rules_file: PathBuf,
    pub mountpoint: PathBuf,
    pub state_dir: PathBuf,
    pub meta_core_path: PathBuf,
}

pub fn dirs() -> Dirs {
    let directory = tempfile::tempdir().expect("tempdir");
    let root = directory.path();
    for name in ["files", "mnt", "state", "meta-core"] {
        std::fs::create_dir_all(root.join(name)).expect("mkdir");
    }
    Dirs {
        files_root: root.join("files"),
        rules_file: root.join("config").join("renaming-rules.json"),
        mountpoint: root.join("mnt"),
        state_dir: root.join("state"),
        meta_core_path: root.join("meta-core"),
        _directory: directory,
    }
}

/// A double over `redis_url` serving `files_root` over WebDAV, with a
/// quick poll so mode switches are noticed at once.
pub async fn start_double(redis_url: &str, files_root: &Path) -> MetaCoreDouble {
    MetaCoreDouble::start(MetaCoreDoubleConfig {
        files_dir: Some(files_root.to_path_buf()),
        read_block: Duration::from_millis(50),
        ..MetaCoreDoubleConfig::new(redis_url)
    })
    .await
    .expect("double")
}

/// The service pinned to the meta-core at `api_url` (`META_CORE_URL`), no
/// beacon, no leader file; checkpoints under `state_dir`.
pub fn api_mode_config(dirs: &Dirs, api_url: &str) -> ServiceConfig {
    let mut config = ServiceConfig::new(&dirs.rules_file, &dirs.files_root);
    config.discovery.meta_core_url = Some(api_url.to_owned());
    config.discovery.meta_core_path = dirs.meta_core_path.clone();
    config.discovery.beacon = None;
    config.state_dir = Some(dirs.state_dir.clone());
    config
}

/// The service reading Redis directly; checkpoints under `state_dir`.
pub fn redis_mode_config(dirs: &Dirs, redis_url: &str) -> ServiceConfig {
    let mut config = ServiceConfig::new(&dirs.rules_file, &dirs.files_root);
    config.discovery.redis_url = Some(redis_url.to_owned());
    config.discovery.beacon = None;
    config.state_dir = Some(dirs.state_dir.clone());
    config
}

/// Every file's properties in a projection (files without any left out).
pub fn held(projection: &Projection) -> Files {
    projection
        .files()
        .map(|(hash_id, file)| {
            let properties: BTreeMap<String, String> = file
                .properties()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect();
            (hash_id.to_owned(), properties)
        })
        .filter(|(_, properties)| !properties.is_empty())
        .collect()
}

/// Where the service's state differs from what Redis holds, or `None`.
pub fn difference(service: &Service, connection: &mut redis::Connection) -> Option<String> {
    let truth = read_truth(connection, "").expect("truth");
    let library = service.library();
    let library = library.read();
    let relevant = library.projection().relevant().clone();
    let mut fresh = Projection::new(relevant.clone());
    for (hash_id, properties) in &truth {
        for (name, value) in properties {
            fresh.apply(hash_id, name, Some(value));
        }
    }
    let expected = held(&fresh);
    let actual = held(library.projection());
    if expected != actual {
        let missing = expected
            .keys()
            .filter(|key| !actual.contains_key(*key))
            .count();
        let extra = actual
            .keys()
            .filter(|key| !expected.contains_key(*key))
            .count();
        let differing = expected
            .iter()
            .filter(|(key, value)| actual.get(*key).is_some_and(|held| held != *value))
            .count();
        return Some(format!(
            "projection: {missing} files missing, {extra} extra, {differing} differ"
        ));
    }
    let rules: Arc<Rules> = library.rules().clone();
    let expected_paths = Library::from_projection(fresh, rules).file_paths();
    let actual_paths = library.file_paths();
    if expected_paths != actual_paths {
        return Some(format!(
            "tree: {} paths expected, {} present",
            expected_paths.len(),
            actual_paths.len()
        ));
    }
    None
}

/// Waits (on the change feed, never by sleeping) until the service holds
/// exactly what Redis holds.
pub async fn converge(service: &Service, connection: &mut redis::Connection) {
    let mut changes = service.subscribe_changes();
    let mut applied = service.watch_applied();
    let outcome = tokio::time::timeout(GUARD, async {
        loop {
            applied.mark_unchanged();
            if difference(service, connection).is_none() {
                return;
            }
            // A visible change or a newly applied position (also one that
            // changed nothing visible); lagging only means more changed.
            tokio::select! {
                _ = changes.recv() => {}
                _ = applied.changed() => {}
            }
        }
    })
    .await;
    if outcome.is_err() {
        panic!(
            "did not converge: {}",
            difference(service, connection).unwrap_or_default()
        );
    }
}
