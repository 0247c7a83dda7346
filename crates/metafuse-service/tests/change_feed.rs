//! The change feed: subscribers see the virtual paths each change added,
//! removed or changed, and the kernel invalidation subscriber has been told
//! before an event counts as applied.

mod support;

use std::sync::Arc;

use metafuse_service::{
    ChangeBatch, ChangeCause, PathChange, PathChangeKind, Service, ServiceConfig,
};
use metafuse_testkit::RedisServer;
use parking_lot::Mutex;
use support::{delete, set};
use tokio::sync::broadcast;

fn add_movie(connection: &mut redis::Connection, hash_id: &str, title: &str) -> String {
    set(connection, hash_id, "title", title);
    set(connection, hash_id, "movieYear", "1995");
    set(connection, hash_id, "fileType", "video");
    set(connection, hash_id, "extension", "mkv");
    set(
        connection,
        hash_id,
        "filePath",
        &format!("downloads/{hash_id}.mkv"),
    )
}

/// Every batch published so far (the publisher has sent each before the
/// event it applied counts as applied).
fn drain(receiver: &mut broadcast::Receiver<Arc<ChangeBatch>>) -> Vec<Arc<ChangeBatch>> {
    let mut batches = Vec::new();
    while let Ok(batch) = receiver.try_recv() {
        batches.push(batch);
    }
    batches
}

fn has(batches: &[Arc<ChangeBatch>], kind: PathChangeKind, path: &str, is_directory: bool) -> bool {
    let wanted = PathChange {
        kind,
        path: path.to_owned(),
        is_directory,
    };
    batches.iter().any(|batch| batch.changes.contains(&wanted))
}

/// Checks every expected change and reports all that are missing at once.
fn assert_changes(
    batches: &[Arc<ChangeBatch>],
    cause: ChangeCause,
    expected: &[(PathChangeKind, &str, bool)],
) {
    assert!(!batches.is_empty(), "no batch published");
    assert!(
        batches.iter().all(|batch| batch.cause == cause),
        "{batches:?}"
    );
    let missing: Vec<_> = expected
        .iter()
        .filter(|(kind, path, is_directory)| !has(batches, *kind, path, *is_directory))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in {batches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_added_moved_deleted_and_rebuilt_paths() {
    use PathChangeKind::{Added, Changed, Removed};
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connection");
    add_movie(&mut connection, "a", "Heat");
    let directory = tempfile::tempdir().expect("tempdir");
    let rules_file = directory.path().join("renaming-rules.json");
    let mut config = ServiceConfig::new(&rules_file, directory.path());
    config.discovery.redis_url = Some(redis.url());
    config.rules_poll_interval = std::time::Duration::from_millis(50);
    let service = Service::start(config).await.expect("service starts");
    let told: Arc<Mutex<Vec<metafuse_vfs::Invalidation>>> = Arc::default();
    let sink_told = told.clone();
    service.attach_invalidation_sink(Box::new(move |invalidations| {
        sink_told.lock().extend_from_slice(invalidations);
    }));
    let mut receiver = service.subscribe_changes();
    let mut slow_receiver = service.subscribe_changes();

    // An addition: the file and its new directory.
    let id = add_movie(&mut connection, "b", "Ronin");
    service.wait_until_applied(&id).await;
    assert!(
        !told.lock().is_empty(),
        "the kernel is told before the event counts as applied"
    );
    assert_changes(
        &drain(&mut receiver),
        ChangeCause::Event,
        &[
            (Added, "Movies/Ronin (1995)", true),
            (Added, "Movies/Ronin (1995)/Ronin (1995).mkv", false),
            (Changed, "Movies", true),
        ],
    );

    // A move: old path and emptied directory removed, new ones added.
    let id = set(&mut connection, "b", "title", "Ronin II");
    service.wait_until_applied(&id).await;
    assert_changes(
        &drain(&mut receiver),
        ChangeCause::Event,
        &[
            (Removed, "Movies/Ronin (1995)/Ronin (1995).mkv", false),
            (Removed, "Movies/Ronin (1995)", true),
            (Added, "Movies/Ronin II (1995)", true),
            (Added, "Movies/Ronin II (1995)/Ronin II (1995).mkv", false),
        ],
    );

    // A deletion.
    let id = delete(&mut connection, "b", "filePath");
    service.wait_until_applied(&id).await;
    let batches = drain(&mut receiver);
    assert_changes(
        &batches,
        ChangeCause::Event,
        &[
            (Removed, "Movies/Ronin II (1995)/Ronin II (1995).mkv", false),
            (Removed, "Movies/Ronin II (1995)", true),
        ],
    );
    assert!(
        !has(&batches, Removed, "Movies", true),
        "Heat still lives there: {batches:?}"
    );

    // New rules: one bulk change with the difference of the trees.
    let checks = service.rules_file_checks();
    std::fs::write(
        &rules_file,
        r#"{"version": 1, "rules": [{"id": "flat", "name": "Flat", "enabled": true, "priority": 1,
            "conditions": {"operator": "AND", "conditions": []}, "template": "All/{title}.{extension}"}]}"#,
    )
    .expect("write rules");
    service.wait_for_rules_file_check(checks).await;
    assert_eq!(service.rules_file_error(), None);
    let batches = drain(&mut receiver);
    assert_changes(
        &batches,
        ChangeCause::Rules,
        &[
            (Added, "All", true),
            (Added, "All/Heat.mkv", false),
            (Removed, "Movies", true),
            (Removed, "Movies/Heat (1995)/Heat (1995).mkv", false),
        ],
    );
    assert!(batches.iter().all(|batch| batch.cause.is_bulk()));

    // A subscriber that did not read kept every batch, in sequence.
    let sequences: Vec<u64> = drain(&mut slow_receiver)
        .iter()
        .map(|batch| batch.sequence)
        .collect();
    assert!(sequences.len() >= 4, "{sequences:?}");
    assert!(
        sequences.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{sequences:?}"
    );
    service.shutdown().await;
}
