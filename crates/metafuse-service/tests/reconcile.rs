//! Files whose keys exist but which `file:__index__` does not list: with
//! the snapshot strategy they are found by the reconciliation and shown,
//! exactly as a replay shows them — at start, after a resynchronisation
//! (without leaving the tree on the way) and after a warm restart from a
//! checkpoint that lacks them.

mod api_mode_support;
mod support;

use std::collections::BTreeSet;

use api_mode_support::{GUARD, difference, dirs, redis_mode_config};
use metafuse_service::{ChangeCause, PathChangeKind, Service, ServiceConfig};
use metafuse_stream::Strategy;
use metafuse_testkit::{Library, LibrarySpec, RedisServer, Writer};
use support::{Api, http};

const N_UNINDEXED: usize = 64;

/// A generated library (indexed, written like the writers do) and
/// `N_UNINDEXED` files whose keys and events exist but which the index
/// does not list.
fn write_library(connection: &mut redis::Connection) {
    Library::generate(&LibrarySpec::new(200))
        .write_all(connection, "", None)
        .expect("write library");
    let mut writer = Writer::new(connection, "");
    for index in 0..N_UNINDEXED {
        let hash_id = format!("unindexed{index:03}");
        writer
            .set_file(
                &hash_id,
                &[
                    ("filePath", format!("lib/unindexed-{index}.mkv")),
                    ("title", format!("Unindexed {index}")),
                    ("fileType", "video".to_owned()),
                ],
            )
            .remove_from_index(&hash_id);
    }
    writer.flush().expect("write");
    let index_size: usize = redis::cmd("SCARD")
        .arg("file:__index__")
        .query(connection)
        .expect("scard");
    assert!(index_size > 0, "the rest is indexed");
}

fn config(dirs: &api_mode_support::Dirs, url: &str, strategy: Strategy) -> ServiceConfig {
    let mut config = redis_mode_config(dirs, url);
    config.strategy = strategy;
    config
}

fn paths(service: &Service) -> BTreeSet<String> {
    service.library().read().file_paths().into_iter().collect()
}

fn unindexed_paths(service: &Service) -> BTreeSet<String> {
    paths(service)
        .into_iter()
        .filter(|path| path.contains("Unindexed"))
        .collect()
}

async fn reconciliation(service: &Service, seen: u64) {
    tokio::time::timeout(GUARD, service.wait_for_reconciliation(seen))
        .await
        .expect("the reconciliation completes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_less_files_survive_a_restart_with_the_snapshot_strategy() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    write_library(&mut connection);

    let replay_dirs = dirs();
    let replayed = Service::start(config(&replay_dirs, &redis.url(), Strategy::Replay))
        .await
        .expect("replay start");
    assert_eq!(replayed.bootstrap_method().as_deref(), Some("replay"));
    let replay_paths = paths(&replayed);
    assert_eq!(unindexed_paths(&replayed).len(), N_UNINDEXED);
    assert_eq!(difference(&replayed, &mut connection), None);
    replayed.shutdown().await;

    let dirs = dirs();
    let service = Service::start(config(&dirs, &redis.url(), Strategy::Snapshot))
        .await
        .expect("snapshot start");
    assert_eq!(service.bootstrap_method().as_deref(), Some("snapshot"));
    reconciliation(&service, 0).await;
    assert_eq!(service.unindexed_files(), Some(N_UNINDEXED as u64));
    assert_eq!(difference(&service, &mut connection), None);
    assert_eq!(
        paths(&service),
        replay_paths,
        "snapshot + reconciliation = replay"
    );
    let api = Api::start(&service).await;
    let (_, body) = http(api.address, "GET", "/api/fuse/stats", "").await;
    let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(stats["unindexedFiles"], N_UNINDEXED, "{body}");

    // A resynchronisation (a snapshot) is reconciled before its swap: the
    // files never leave the tree.
    let mut changes = service.subscribe_changes();
    let (status, body) = http(api.address, "POST", "/api/fuse/refresh", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(service.reconciliations(), 2, "reconciled with the refresh");
    let mut removed = Vec::new();
    while let Ok(batch) = changes.try_recv() {
        assert_ne!(batch.cause, ChangeCause::Event, "nothing to apply later");
        removed.extend(
            batch
                .changes
                .iter()
                .filter(|change| change.kind == PathChangeKind::Removed)
                .map(|change| change.path.clone()),
        );
    }
    assert_eq!(removed, Vec::<String>::new(), "no file left the tree");
    assert_eq!(paths(&service), replay_paths);
    api.stop().await;
    service.shutdown().await;
}

// One thread: the reconciliation `Service::start` spawns cannot run before
// the test subscribes to the change feed (nothing yields in between), so
// the feed must show what it adds.
#[tokio::test(flavor = "current_thread")]
async fn a_warm_restart_reconciles_a_checkpoint_that_lacks_them() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    write_library(&mut connection);
    let dirs = dirs();
    let service = Service::start(config(&dirs, &redis.url(), Strategy::Snapshot))
        .await
        .expect("start");
    reconciliation(&service, 0).await;
    assert_eq!(unindexed_paths(&service).len(), N_UNINDEXED);
    service.shutdown().await;

    // While stopped, a file appears with keys only: no index entry, no
    // event. The checkpoint lacks it, as it lacks the files of a snapshot
    // whose reconciliation had not ended when it was written, and the
    // catch-up after it cannot see it.
    for (property, value) in [
        ("filePath", "lib/quiet.mkv"),
        ("title", "Unindexed Quiet"),
        ("fileType", "video"),
    ] {
        let _: () = redis::cmd("SET")
            .arg(format!("file:quiet/{property}"))
            .arg(value)
            .query(&mut connection)
            .expect("set");
    }
    let service = Service::start(config(&dirs, &redis.url(), Strategy::Snapshot))
        .await
        .expect("warm start");
    assert_eq!(service.bootstrap_method().as_deref(), Some("checkpoint"));
    let mut changes = service.subscribe_changes();
    reconciliation(&service, 0).await;
    assert_eq!(service.unindexed_files(), Some(N_UNINDEXED as u64 + 1));
    assert_eq!(difference(&service, &mut connection), None);
    assert_eq!(unindexed_paths(&service).len(), N_UNINDEXED + 1);
    // Applied like any change: on the change feed.
    let mut added = Vec::new();
    while let Ok(batch) = changes.try_recv() {
        assert_eq!(batch.cause, ChangeCause::Event);
        added.extend(
            batch
                .changes
                .iter()
                .filter(|change| change.kind == PathChangeKind::Added)
                .map(|change| change.path.clone()),
        );
    }
    assert!(
        added.iter().any(|path| path.contains("Unindexed Quiet")),
        "{added:?}"
    );
    service.shutdown().await;
}
