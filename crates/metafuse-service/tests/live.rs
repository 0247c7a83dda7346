//! The service with a real redis-server and a real FUSE mount: bootstrap,
//! live changes, collisions, Redis outages and live rules.

mod support;

use std::path::{Path, PathBuf};

use metafuse_service::{Service, ServiceConfig};
use metafuse_testkit::RedisServer;
use support::{Api, MountGuard, delete, http, list_files, set, stop};

/// A movie whose bytes are a real file under `files_root`.
fn add_movie(
    connection: &mut redis::Connection,
    files_root: &Path,
    hash_id: &str,
    title: &str,
    year: &str,
    contents: &str,
) -> String {
    let relative = format!("downloads/{hash_id}.mkv");
    let source = files_root.join(&relative);
    std::fs::create_dir_all(source.parent().expect("parent")).expect("mkdir");
    std::fs::write(&source, contents).expect("write source");
    set(connection, hash_id, "title", title);
    set(connection, hash_id, "movieYear", year);
    set(connection, hash_id, "fileType", "video");
    set(connection, hash_id, "extension", "mkv");
    set(connection, hash_id, "size", &contents.len().to_string());
    set(connection, hash_id, "filePath", &relative)
}

struct Setup {
    _directory: tempfile::TempDir,
    files_root: PathBuf,
    rules_file: PathBuf,
    mountpoint: PathBuf,
}

fn setup() -> Setup {
    let directory = tempfile::tempdir().expect("tempdir");
    let files_root = directory.path().join("files");
    let mountpoint = directory.path().join("mnt");
    std::fs::create_dir_all(&files_root).expect("mkdir files");
    std::fs::create_dir_all(&mountpoint).expect("mkdir mnt");
    let rules_file = directory.path().join("config").join("renaming-rules.json");
    Setup {
        files_root,
        rules_file,
        mountpoint,
        _directory: directory,
    }
}

async fn start(redis: &RedisServer, setup: &Setup) -> (Service, MountGuard) {
    let mut config = ServiceConfig::new(&setup.rules_file, &setup.files_root);
    config.discovery.redis_url = Some(redis.url());
    let service = Service::start(config).await.expect("service starts");
    let guard = support::mount(&service, &setup.mountpoint, &setup.files_root);
    (service, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_reach_the_mount_at_once() {
    metafuse_testkit::require_fuse!();
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let setup = setup();
    add_movie(
        &mut connection,
        &setup.files_root,
        "aaaa0001",
        "Heat",
        "1995",
        "heat bytes",
    );
    add_movie(
        &mut connection,
        &setup.files_root,
        "bbbb0002",
        "Ronin",
        "1998",
        "ronin bytes",
    );
    let (service, mount) = start(&redis, &setup).await;

    assert_eq!(
        list_files(&setup.mountpoint),
        vec![
            "Movies/Heat (1995)/Heat (1995).mkv",
            "Movies/Ronin (1998)/Ronin (1998).mkv"
        ]
    );
    let heat = mount.path("Movies/Heat (1995)/Heat (1995).mkv");
    assert_eq!(
        std::fs::read(&heat).expect("read"),
        std::fs::read(setup.files_root.join("downloads/aaaa0001.mkv")).expect("source")
    );

    // Added.
    let id = add_movie(
        &mut connection,
        &setup.files_root,
        "cccc0003",
        "Alien",
        "1979",
        "alien bytes",
    );
    service.wait_until_applied(&id).await;
    assert_eq!(
        std::fs::read_to_string(mount.path("Movies/Alien (1979)/Alien (1979).mkv")).expect("read"),
        "alien bytes"
    );

    // Retitled: the path changes.
    let id = set(&mut connection, "cccc0003", "title", "Aliens");
    service.wait_until_applied(&id).await;
    assert!(!mount.path("Movies/Alien (1979)").exists());
    assert!(
        mount
            .path("Movies/Aliens (1979)/Aliens (1979).mkv")
            .exists()
    );

    // Moved: the bytes come from the new filePath.
    std::fs::write(setup.files_root.join("moved.mkv"), "moved bytes!").expect("write");
    set(&mut connection, "cccc0003", "size", "12");
    let id = set(&mut connection, "cccc0003", "filePath", "moved.mkv");
    service.wait_until_applied(&id).await;
    assert_eq!(
        std::fs::read_to_string(mount.path("Movies/Aliens (1979)/Aliens (1979).mkv"))
            .expect("read"),
        "moved bytes!"
    );

    // A deleted property that is part of the path.
    let id = delete(&mut connection, "cccc0003", "movieYear");
    service.wait_until_applied(&id).await;
    assert!(!mount.path("Movies/Aliens (1979)").exists());
    assert!(mount.path("Movies/Aliens/Aliens.mkv").exists());

    // Deleted.
    let id = delete(&mut connection, "bbbb0002", "filePath");
    service.wait_until_applied(&id).await;
    assert_eq!(
        list_files(&setup.mountpoint),
        vec![
            "Movies/Aliens/Aliens.mkv",
            "Movies/Heat (1995)/Heat (1995).mkv"
        ]
    );

    stop(service, mount).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collisions_keep_every_file_and_survive_a_restart() {
    metafuse_testkit::require_fuse!();
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let setup = setup();
    add_movie(
        &mut connection,
        &setup.files_root,
        "hash00000001",
        "Heat",
        "1995",
        "one",
    );
    let (service, mount) = start(&redis, &setup).await;

    let id = add_movie(
        &mut connection,
        &setup.files_root,
        "hash00000002",
        "Heat",
        "1995",
        "two",
    );
    service.wait_until_applied(&id).await;
    let directory = "Movies/Heat (1995)";
    let expected_two = vec![
        format!("{directory}/Heat (1995) [00000002].mkv"),
        format!("{directory}/Heat (1995).mkv"),
    ];
    assert_eq!(list_files(&setup.mountpoint), expected_two);

    let id = add_movie(
        &mut connection,
        &setup.files_root,
        "hash00000003",
        "Heat",
        "1995",
        "three",
    );
    service.wait_until_applied(&id).await;
    let expected_three = vec![
        format!("{directory}/Heat (1995) [00000002].mkv"),
        format!("{directory}/Heat (1995) [00000003].mkv"),
        format!("{directory}/Heat (1995).mkv"),
    ];
    assert_eq!(list_files(&setup.mountpoint), expected_three);
    assert_eq!(
        std::fs::read_to_string(mount.path(&expected_three[1])).expect("read"),
        "three"
    );
    stop(service, mount).await;

    // A restart computes the same names from the state alone.
    let (service, mount) = start(&redis, &setup).await;
    assert_eq!(list_files(&setup.mountpoint), expected_three);

    // The winner leaves: the smallest remaining hashId takes the plain name.
    let id = delete(&mut connection, "hash00000001", "filePath");
    service.wait_until_applied(&id).await;
    assert_eq!(
        list_files(&setup.mountpoint),
        vec![
            format!("{directory}/Heat (1995) [00000003].mkv"),
            format!("{directory}/Heat (1995).mkv")
        ]
    );
    assert_eq!(
        std::fs::read_to_string(mount.path(&format!("{directory}/Heat (1995).mkv"))).expect("read"),
        "two"
    );
    stop(service, mount).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mount_survives_redis_going_away_and_converges_after() {
    metafuse_testkit::require_fuse!();
    let mut redis = RedisServer::start_persistent().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let setup = setup();
    add_movie(
        &mut connection,
        &setup.files_root,
        "aaaa0001",
        "Heat",
        "1995",
        "heat bytes",
    );
    let (service, mount) = start(&redis, &setup).await;

    redis.kill();
    assert_eq!(
        list_files(&setup.mountpoint),
        vec!["Movies/Heat (1995)/Heat (1995).mkv"]
    );
    assert_eq!(
        std::fs::read_to_string(mount.path("Movies/Heat (1995)/Heat (1995).mkv")).expect("read"),
        "heat bytes"
    );

    redis.restart().expect("restart");
    let mut connection = redis.client().get_connection().expect("reconnect");
    let id = add_movie(
        &mut connection,
        &setup.files_root,
        "bbbb0002",
        "Ronin",
        "1998",
        "ronin bytes",
    );
    service.wait_until_applied(&id).await;
    assert_eq!(
        list_files(&setup.mountpoint),
        vec![
            "Movies/Heat (1995)/Heat (1995).mkv",
            "Movies/Ronin (1998)/Ronin (1998).mkv"
        ]
    );
    stop(service, mount).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_change_over_http_and_a_corrupt_file_is_reported_and_kept() {
    metafuse_testkit::require_fuse!();
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let setup = setup();
    add_movie(
        &mut connection,
        &setup.files_root,
        "aaaa0001",
        "Heat",
        "1995",
        "heat bytes",
    );
    set(&mut connection, "aaaa0001", "genre", "Crime");
    let (service, mount) = start(&redis, &setup).await;
    assert!(
        !setup.rules_file.exists(),
        "the default preset is not written until a PUT"
    );

    let api = Api::start(&service).await;
    let address = api.address;

    // `genre` was not relevant before: it must be fetched for the new rules.
    let document = r#"{"config": {"version": 1, "rules": [{"id": "by-genre", "name": "By genre", "enabled": true,
        "priority": 10, "conditions": {"operator": "AND", "conditions": []},
        "template": "Genres/{genre}/{title}.{extension}", "fallbackToUnsorted": true}]}}"#;
    let (status, body) = http(address, "PUT", "/api/fuse/rules", document).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(list_files(&setup.mountpoint), vec!["Genres/Crime/Heat.mkv"]);
    assert_eq!(
        std::fs::read_to_string(mount.path("Genres/Crime/Heat.mkv")).expect("read"),
        "heat bytes"
    );
    let saved = std::fs::read_to_string(&setup.rules_file).expect("saved");
    assert!(saved.contains("by-genre"), "{saved}");

    // An invalid PUT changes nothing.
    let invalid = r#"{"config": {"version": 1, "rules": [{"id": "broken", "name": "Broken", "enabled": true,
        "conditions": {"operator": "MATCHESISH", "conditions": []}, "template": "X/{title"}]}}"#;
    let (status, _) = http(address, "PUT", "/api/fuse/rules", invalid).await;
    assert_eq!(status, 400);
    assert_eq!(
        std::fs::read_to_string(&setup.rules_file).expect("kept"),
        saved
    );

    // A corrupt file on disk is reported and left alone; the rules stay.
    let checks = service.rules_file_checks();
    std::fs::write(&setup.rules_file, "{ this is not json").expect("corrupt");
    service.wait_for_rules_file_check(checks).await;
    let error = service.rules_file_error().expect("reported");
    assert!(error.contains("invalid json rules document"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&setup.rules_file).expect("kept"),
        "{ this is not json"
    );
    assert_eq!(list_files(&setup.mountpoint), vec!["Genres/Crime/Heat.mkv"]);
    let (status, health) = http(address, "GET", "/api/fuse/health", "").await;
    assert_eq!(status, 200);
    assert!(health.contains("\"degraded\""), "{health}");
    let (_, stats) = http(address, "GET", "/api/fuse/stats", "").await;
    assert!(stats.contains("invalid json rules document"), "{stats}");

    // Fixing the file applies it.
    let checks = service.rules_file_checks();
    std::fs::write(
        &setup.rules_file,
        r#"{"version": 1, "rules": [{"id": "flat", "name": "Flat", "enabled": true, "priority": 1,
            "conditions": {"operator": "AND", "conditions": []}, "template": "All/{title}.{extension}"}]}"#,
    )
    .expect("fix");
    service.wait_for_rules_file_check(checks).await;
    assert_eq!(service.rules_file_error(), None);
    assert_eq!(list_files(&setup.mountpoint), vec!["All/Heat.mkv"]);

    api.stop().await;
    stop(service, mount).await;
}
