//! Bootstrap strategies against a real redis-server.
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{bootstrap, contents, expected, relevant};
use metafuse_stream::{Source, Strategy};
use metafuse_testkit::{Library, LibrarySpec, RedisServer, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_snapshot_and_auto_agree_with_what_redis_holds() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    let library = Library::generate(&LibrarySpec {
        n_files: 400,
        seed: 3,
        churn: true,
    });
    library.write_all(&mut connection, "mm:", None).unwrap();
    // Foreign keys under another prefix must not leak in.
    let other = Library::generate(&LibrarySpec {
        n_files: 20,
        seed: 4,
        churn: false,
    });
    other.write_all(&mut connection, "other:", None).unwrap();
    let want = expected(&library.truth(), &relevant());

    let (replayed, replay_report) = bootstrap(&server.url(), "mm:", Strategy::Replay).await;
    let (snapshotted, snapshot_report) = bootstrap(&server.url(), "mm:", Strategy::Snapshot).await;
    let (automatic, auto_report) = bootstrap(&server.url(), "mm:", Strategy::Auto).await;

    assert_eq!(contents(&replayed), want);
    assert_eq!(contents(&snapshotted), want);
    assert_eq!(contents(&automatic), want);
    assert_eq!(replay_report.strategy_used, Strategy::Replay);
    assert_eq!(snapshot_report.strategy_used, Strategy::Snapshot);
    // ~24 entries per file against 19 keys per file: the snapshot is cheaper.
    assert_eq!(
        auto_report.strategy_used,
        Strategy::Snapshot,
        "{}",
        auto_report.reason
    );
    assert!(
        auto_report.reason.contains("cheaper"),
        "{}",
        auto_report.reason
    );
    let n_entries = (library.writes.len() + other.writes.len()) as u64;
    assert_eq!(replay_report.n_events, n_entries);
    assert_eq!(
        replay_report.n_malformed,
        other.writes.len() as u64,
        "foreign-prefix keys are not file keys"
    );
    assert!(replay_report.n_skipped > 0);
    assert_eq!(replay_report.last_event_id, snapshot_report.last_event_id);
    assert_eq!(
        replayed.stats().last_event_id.as_deref(),
        Some(replay_report.last_event_id.as_str())
    );
    assert_eq!(
        replayed.complete_count(),
        want.values()
            .filter(|file| file.contains_key("filePath"))
            .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_stream_makes_auto_take_a_snapshot() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    let library = Library::generate(&LibrarySpec {
        n_files: 300,
        seed: 5,
        churn: true,
    });
    library.write_all(&mut connection, "", Some(500)).unwrap();
    let length: usize = redis::cmd("XLEN")
        .arg("meta:events")
        .query(&mut connection)
        .unwrap();
    assert!(length < library.writes.len());

    let (automatic, report) = bootstrap(&server.url(), "", Strategy::Auto).await;
    assert_eq!(
        report.strategy_used,
        Strategy::Snapshot,
        "{}",
        report.reason
    );
    assert!(report.reason.contains("trimmed"), "{}", report.reason);
    assert_eq!(
        contents(&automatic),
        expected(&library.truth(), &relevant())
    );
    // A replay of what is left cannot know the trimmed files.
    let (replayed, _) = bootstrap(&server.url(), "", Strategy::Replay).await;
    assert!(replayed.file_count() < automatic.file_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_index_the_snapshot_scans_and_without_anything_the_projection_is_empty() {
    let server = RedisServer::start().unwrap();
    let (empty, report) = bootstrap(&server.url(), "", Strategy::Auto).await;
    assert_eq!(empty.file_count(), 0);
    assert_eq!(report.strategy_used, Strategy::Snapshot);
    assert_eq!(report.last_event_id, "0-0");

    let mut connection = server.client().get_connection().unwrap();
    let library = Library::generate(&LibrarySpec::new(50));
    library.write_all(&mut connection, "", None).unwrap();
    let _: () = redis::cmd("DEL")
        .arg("file:__index__")
        .query(&mut connection)
        .unwrap();
    let (snapshotted, _) = bootstrap(&server.url(), "", Strategy::Snapshot).await;
    assert_eq!(
        contents(&snapshotted),
        expected(&library.truth(), &relevant())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_children_of_a_tracked_name_are_found_by_every_strategy() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    Writer::new(&mut connection, "")
        .set_file(
            "a",
            &[
                ("filePath", "watch/a.mkv"),
                ("titles/fra", "Le"),
                ("audio/0/codec", "aac"),
            ],
        )
        .flush()
        .unwrap();
    let relevant = metafuse_stream::RelevantProperties::from_names(["titles"]);
    for strategy in [Strategy::Replay, Strategy::Snapshot] {
        let mut source = Source::connect(&server.url(), "").await.unwrap();
        source.set_scan_nested(true);
        let mut projection = metafuse_stream::Projection::new(relevant.clone());
        source
            .bootstrap(&mut projection, strategy, |_| {})
            .await
            .unwrap();
        let file = projection.file("a").unwrap();
        assert_eq!(file.get("titles/fra"), Some("Le"), "{strategy:?}");
        assert_eq!(file.get("audio/0/codec"), None, "{strategy:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_are_counted_and_skipped_while_the_rest_applies() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    let huge = "x".repeat(metafuse_stream::MAX_VALUE_BYTES + 1);
    let _: () = redis::cmd("SET")
        .arg("file:a/filePath")
        .arg("watch/a.mkv")
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("file:b/filePath")
        .arg(&huge)
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("file:c/filePath")
        .arg(b"\xff\xfe".as_slice())
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("file:d/filePath")
        .arg("watch/d.mkv")
        .query(&mut connection)
        .unwrap();
    let entries: Vec<Vec<&[u8]>> = vec![
        vec![b"type", b"set", b"key", b"file:a/filePath"],
        vec![b"key", b"file:a/title"],
        vec![b"type", b"set"],
        vec![b"type", b"rename", b"key", b"file:a/filePath"],
        vec![b"type", b"set", b"key", b"not-a-file-key"],
        vec![b"type", b"set", b"key", b"file:\xff/filePath"],
        vec![b"type", b"set", b"key", b"file:b/filePath"],
        vec![b"type", b"set", b"key", b"file:c/filePath"],
        vec![b"type", b"set", b"key", b"file:__index__"],
        vec![b"type", b"set", b"key", b"file:d/filePath"],
    ];
    for fields in &entries {
        let mut command = redis::cmd("XADD");
        command.arg("meta:events").arg("*");
        for field in fields {
            command.arg(*field);
        }
        let _: () = command.query(&mut connection).unwrap();
    }
    let (projection, report) = bootstrap(&server.url(), "", Strategy::Replay).await;
    assert_eq!(report.n_events, entries.len() as u64);
    assert_eq!(
        report.n_malformed, 6,
        "5 bad entries and a value too large (not UTF-8 is kept)"
    );
    assert_eq!(report.n_skipped, 1, "the index event is ignored");
    let visible: Vec<&str> = {
        let mut hash_ids: Vec<&str> = projection
            .complete_files()
            .map(|(hash_id, _)| hash_id)
            .collect();
        hash_ids.sort();
        hash_ids
    };
    assert_eq!(
        visible,
        vec!["a", "c", "d"],
        "entries after the bad ones still apply; a non-UTF-8 path is kept"
    );
    assert_eq!(projection.stats().malformed_entries, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_and_bad_urls_are_clear_errors() {
    let mut server = RedisServer::start().unwrap();
    let url = server.url();
    server.kill();
    let error = Source::connect(&url, "").await.unwrap_err();
    assert!(
        error.to_string().contains("cannot connect to redis"),
        "{error}"
    );
    let error = Source::connect("http://:hunter2@nowhere/", "")
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}
