//! The service in meta-core API mode (`/urls` names no `redisUrl`) against
//! the meta-core double over a real redis-server: it reaches serving with
//! exactly the library Redis holds, keeps up with live changes, writes made
//! during its bootstrap, a trimmed cursor, an outage and a hung connection.

mod api_mode_support;
mod support;

use std::path::Path;
use std::time::Duration;

use api_mode_support::{GUARD, api_mode_config, converge, difference, dirs, start_double};
use metafuse_service::Service;
use metafuse_testkit::{DoubleMode, Library, LibrarySpec, RedisServer, Writer};
use support::{Api, http, list_files};

fn write_generated(connection: &mut redis::Connection, n_files: usize, seed: u64) {
    let library = Library::generate(&LibrarySpec {
        n_files,
        seed,
        churn: true,
    });
    library
        .write_all(connection, "", None)
        .expect("write library");
}

/// A movie whose bytes are a real file under `files_root`; returns the
/// last event id.
fn add_movie(
    connection: &mut redis::Connection,
    files_root: &Path,
    hash_id: &str,
    title: &str,
    contents: &str,
) -> String {
    let relative = format!("downloads/{hash_id}.mkv");
    let source = files_root.join(&relative);
    std::fs::create_dir_all(source.parent().expect("parent")).expect("mkdir");
    std::fs::write(&source, contents).expect("write source");
    Writer::new(connection, "")
        .set_file(
            hash_id,
            &[
                ("title", title),
                ("movieYear", "1995"),
                ("fileType", "video"),
                ("extension", "mkv"),
                ("size", contents.len().to_string().as_str()),
                ("filePath", relative.as_str()),
            ],
        )
        .flush()
        .expect("write")
        .expect("event id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_mode_serves_exactly_what_redis_holds_and_follows_live_changes() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let dirs = dirs();
    write_generated(&mut connection, 300, 7);
    for n in 0..5 {
        add_movie(
            &mut connection,
            &dirs.files_root,
            &format!("movie{n}"),
            &format!("Heat {n}"),
            &format!("bytes of movie {n}"),
        );
    }
    let double = start_double(&redis.url(), &dirs.files_root).await;
    let service = Service::start(api_mode_config(&dirs, &double.url()))
        .await
        .expect("service starts in API mode");
    assert_eq!(service.leader().redis_url, "", "no Redis is named");
    assert_eq!(difference(&service, &mut connection), None);
    assert_eq!(
        service.bootstrap_method().as_deref(),
        Some("metacore-bootstrap")
    );

    // Health, stats and metrics say which source is in use (once the
    // event stream, opened after the bootstrap, is connected).
    service.wait_for_liveness(|reason| reason.is_none()).await;
    let api = Api::start(&service).await;
    let (status, body) = http(api.address, "GET", "/api/fuse/stats", "").await;
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("stats json");
    assert_eq!(stats["redisConnected"], true, "{body}");
    assert_eq!(stats["source"]["mode"], "metacore", "{body}");
    assert_eq!(stats["source"]["url"], double.url(), "{body}");
    let (_, body) = http(api.address, "GET", "/health", "").await;
    let health: serde_json::Value = serde_json::from_str(&body).expect("health json");
    assert_eq!(health["source"]["mode"], "metacore", "{body}");
    let (_, metrics) = http(api.address, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("metafuse_source{source=\"metacore\"} 1"),
        "{metrics}"
    );
    api.stop().await;

    // The real mount shows every path and reads the bytes of files on the
    // files root back.
    let mount = support::mount(&service, &dirs.mountpoint, &dirs.files_root);
    let mut expected_paths: Vec<String> = service
        .library()
        .read()
        .file_paths()
        .into_iter()
        .map(|path| path.trim_start_matches('/').to_owned())
        .collect();
    expected_paths.sort();
    assert_eq!(list_files(&dirs.mountpoint), expected_paths);
    for n in 0..5 {
        let path = format!("Movies/Heat {n} (1995)/Heat {n} (1995).mkv");
        assert_eq!(
            std::fs::read_to_string(mount.path(&path)).expect("read through the mount"),
            format!("bytes of movie {n}")
        );
    }

    // Live: an add, a move (a new title), a delete.
    add_movie(
        &mut connection,
        &dirs.files_root,
        "movie9",
        "Ronin",
        "ronin bytes",
    );
    Writer::new(&mut connection, "")
        .set("movie1", "title", "Collateral")
        .del("movie2", "filePath")
        .flush()
        .expect("write");
    converge(&service, &mut connection).await;
    let listed = list_files(&dirs.mountpoint);
    assert!(listed.contains(&"Movies/Ronin (1995)/Ronin (1995).mkv".to_owned()));
    assert!(listed.contains(&"Movies/Collateral (1995)/Collateral (1995).mkv".to_owned()));
    assert!(!listed.contains(&"Movies/Heat 1 (1995)/Heat 1 (1995).mkv".to_owned()));
    assert!(!listed.contains(&"Movies/Heat 2 (1995)/Heat 2 (1995).mkv".to_owned()));
    assert_eq!(
        std::fs::read_to_string(mount.path("Movies/Ronin (1995)/Ronin (1995).mkv")).expect("read"),
        "ronin bytes"
    );
    support::stop(service, mount).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_during_the_bootstrap_are_not_lost() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let dirs = dirs();
    write_generated(&mut connection, 500, 3);
    let double = start_double(&redis.url(), &dirs.files_root).await;
    // A second library written while the service bootstraps.
    let writer_client = redis.client();
    let writer = std::thread::spawn(move || {
        let mut connection = writer_client.get_connection().expect("connect");
        write_generated(&mut connection, 500, 11);
    });
    let service = Service::start(api_mode_config(&dirs, &double.url()))
        .await
        .expect("service starts");
    writer.join().expect("writer");
    converge(&service, &mut connection).await;
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_cursor_resynchronises_and_an_outage_converges() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let dirs = dirs();
    write_generated(&mut connection, 200, 5);
    let mut double = start_double(&redis.url(), &dirs.files_root).await;
    let service = Service::start(api_mode_config(&dirs, &double.url()))
        .await
        .expect("service starts");

    // meta-core away while writers go on and the stream is trimmed past
    // our position: the resumed stream starts with a gap.
    double.stop();
    Writer::new(&mut connection, "")
        .set_file(
            "fresh",
            &[
                ("filePath", "lib/fresh.mkv"),
                ("title", "Fresh"),
                ("fileType", "video"),
            ],
        )
        .flush()
        .expect("write");
    write_generated(&mut connection, 50, 9);
    let _: u64 = redis::cmd("XTRIM")
        .arg("meta:events")
        .arg("MAXLEN")
        .arg(1)
        .query(&mut connection)
        .expect("trim");
    double.restart().await.expect("restart double");
    converge(&service, &mut connection).await;

    // Storage down (503 + Retry-After everywhere), a write, back up.
    let requests_before = double.requests().len();
    double.set_mode(DoubleMode::Unavailable);
    let streams_requested = double
        .requests()
        .iter()
        .filter(|request| request.ends_with("/api/events/meta"))
        .count() as u64;
    tokio::time::timeout(
        GUARD,
        double.wait_for_event_stream_requests(streams_requested + 1),
    )
    .await
    .expect("the service asks again while meta-core answers 503");
    assert!(double.requests().len() > requests_before);
    Writer::new(&mut connection, "")
        .set("fresh", "title", "During the outage")
        .flush()
        .expect("write");
    double.set_mode(DoubleMode::Normal);
    converge(&service, &mut connection).await;
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_connection_is_detected_by_the_watchdog() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let dirs = dirs();
    write_generated(&mut connection, 50, 2);
    let double = start_double(&redis.url(), &dirs.files_root).await;
    let mut config = api_mode_config(&dirs, &double.url());
    // Kept short so the test is quick; meta-core's own is 60 s.
    config.metacore_watchdog = Duration::from_millis(500);
    let service = Service::start(config).await.expect("service starts");
    double.set_mode(DoubleMode::Hang);
    double.wait_for_hung_streams(1).await;
    // The hung stream never speaks again: only a reconnect brings this.
    double.set_mode(DoubleMode::Normal);
    Writer::new(&mut connection, "")
        .set_file(
            "after-hang",
            &[
                ("filePath", "lib/after.mkv"),
                ("title", "After The Hang"),
                ("fileType", "video"),
            ],
        )
        .flush()
        .expect("write");
    converge(&service, &mut connection).await;
    assert!(double.event_streams_opened() >= 2);
    service.shutdown().await;
}
