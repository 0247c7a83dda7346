//! Every HTTP route once, against the real stack: a redis-server seeded like
//! the MetaMesh writers do, the service, and `metafuse_api::serve`.

mod support;

use std::net::SocketAddr;

use metafuse_service::{Service, ServiceConfig};
use metafuse_testkit::RedisServer;
use serde_json::{Value, json};
use support::{Api, http, set};

fn seed_movie(connection: &mut redis::Connection, hash_id: &str, title: &str, year: &str) {
    let _ = set(connection, hash_id, "title", title);
    let _ = set(connection, hash_id, "movieYear", year);
    let _ = set(connection, hash_id, "fileType", "video");
    let _ = set(connection, hash_id, "extension", "mkv");
    let _ = set(connection, hash_id, "size", "1000");
    let _ = set(
        connection,
        hash_id,
        "filePath",
        &format!("watch/{title}.{year}.mkv"),
    );
}

fn seed_episode(connection: &mut redis::Connection, hash_id: &str, episode: &str) {
    let _ = set(connection, hash_id, "title", "Dark");
    let _ = set(connection, hash_id, "season", "1");
    let _ = set(connection, hash_id, "episode", episode);
    let _ = set(connection, hash_id, "fileType", "video");
    let _ = set(connection, hash_id, "extension", "mkv");
    let _ = set(connection, hash_id, "size", "2000");
    let _ = set(
        connection,
        hash_id,
        "filePath",
        &format!("watch/Dark.S01E{episode}.mkv"),
    );
}

/// A request that must answer 200 with a JSON body.
async fn ok_json(address: SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, reply) = http(address, method, path, &body).await;
    assert_eq!(status, 200, "{method} {path}: {reply}");
    serde_json::from_str(&reply).unwrap_or_else(|error| panic!("{path}: {error}: {reply}"))
}

const HEAT: &str = "/Movies/Heat (1995)/Heat (1995).mkv";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_from_the_live_state() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    seed_movie(&mut connection, "aaaa0001", "Heat", "1995");
    seed_movie(&mut connection, "aaaa0002", "Ronin", "1998");
    seed_episode(&mut connection, "bbbb0001", "01");
    seed_episode(&mut connection, "bbbb0002", "02");
    // A property no shipped rule uses: only a draft rule below asks for it.
    let _ = set(&mut connection, "aaaa0001", "genre", "Crime");
    const N_SEEDED_FILES: u64 = 4;

    let directory = tempfile::tempdir().expect("tempdir");
    let files_root = directory.path().join("files");
    let rules_file = directory.path().join("config").join("renaming-rules.json");
    let mut config = ServiceConfig::new(&rules_file, &files_root);
    config.discovery.redis_url = Some(redis.url());
    let service = Service::start(config).await.expect("service starts");

    let api = Api::start(&service).await;
    let address = api.address;

    // A live change: once applied, the tail has connected and read it.
    let last_id = set(&mut connection, "aaaa0002", "size", "1001");
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        service.wait_until_applied(&last_id),
    )
    .await
    .expect("the change was applied");

    let health = ok_json(address, "GET", "/api/fuse/health", Value::Null).await;
    assert_eq!(health["service"], "meta-fuse");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["redis"]["connected"], true);
    assert_eq!(health["stream"]["phase"], "tailing");
    assert_eq!(health["stream"]["lagEntries"], 0);
    assert!(
        health["stream"]["secondsSinceLastEvent"].is_number(),
        "{health}"
    );
    assert_eq!(
        health["stream"]["lastEventId"],
        json!(service.last_applied_event_id())
    );
    assert!(health.get("rulesError").is_none(), "{health}");
    assert!(health.get("reason").is_none(), "{health}");

    let stats = ok_json(address, "GET", "/api/fuse/stats", Value::Null).await;
    assert_eq!(stats["fileCount"], N_SEEDED_FILES);
    assert_eq!(stats["stateBuilder"]["filesComplete"], N_SEEDED_FILES);
    // One event per write: 6 per movie, 7 per episode, the genre, and the
    // live change.
    assert_eq!(
        stats["stateBuilder"]["eventsProcessed"],
        2 * 6 + 2 * 7 + 1 + 1
    );
    assert_eq!(
        stats["stateBuilder"]["lastEventId"],
        json!(service.last_applied_event_id())
    );

    let root = ok_json(address, "POST", "/api/fuse/readdir", json!({"path": "/"})).await;
    let mut top: Vec<String> = serde_json::from_value(root["entries"].clone()).expect("names");
    top.sort();
    assert_eq!(top, ["Movies", "TV Shows"]);

    let attr = ok_json(address, "POST", "/api/fuse/getattr", json!({"path": HEAT})).await;
    assert_eq!(attr["size"], 1000);
    assert_eq!(attr["mode"], 0o100_644);
    let exists = ok_json(address, "POST", "/api/fuse/exists", json!({"path": HEAT})).await;
    assert_eq!(exists["exists"], true);
    let missing = ok_json(
        address,
        "POST",
        "/api/fuse/exists",
        json!({"path": "/Movies/Nope"}),
    )
    .await;
    assert_eq!(missing["exists"], false);
    let read = ok_json(address, "POST", "/api/fuse/read", json!({"path": HEAT})).await;
    assert_eq!(
        read["sourcePath"],
        json!(files_root.join("watch/Heat.1995.mkv").display().to_string())
    );
    assert_eq!(read["size"], 1000);
    let metadata = ok_json(address, "POST", "/api/fuse/metadata", json!({"path": HEAT})).await;
    assert_eq!(metadata["hashId"], "aaaa0001");
    assert_eq!(metadata["title"], "Heat");
    assert_eq!(metadata["filePath"], "watch/Heat.1995.mkv");

    let files = ok_json(address, "GET", "/api/fuse/files", Value::Null).await;
    let files = files["files"].as_array().expect("files");
    assert_eq!(files.len() as u64, N_SEEDED_FILES);
    assert!(files.contains(&json!(HEAT)));
    let directories = ok_json(address, "GET", "/api/fuse/directories", Value::Null).await;
    let directories = directories["directories"].as_array().expect("directories");
    assert_eq!(
        directories.first(),
        Some(&json!("/")),
        "the root is listed first"
    );
    for expected in ["/Movies", "/Movies/Heat (1995)", "/TV Shows/Dark/S01"] {
        assert!(directories.contains(&json!(expected)), "{expected}");
    }

    let rules = ok_json(address, "GET", "/api/fuse/rules", Value::Null).await;
    assert!(
        rules["config"]["rules"]
            .as_array()
            .is_some_and(|rules| !rules.is_empty())
    );
    assert!(rules.get("lastModified").is_some(), "{rules}");

    let preview = ok_json(address, "POST", "/api/fuse/rules/preview", json!({})).await;
    assert_eq!(preview["total"], N_SEEDED_FILES);
    let new_paths: Vec<&str> = preview["previews"]
        .as_array()
        .expect("previews")
        .iter()
        .filter_map(|entry| entry["newPath"].as_str())
        .collect();
    assert!(new_paths.contains(&HEAT), "{preview}");

    // A draft using an untracked property previews with its value from Redis.
    let draft = ok_json(
        address,
        "POST",
        "/api/fuse/rules/preview",
        json!({"rules": [{"id": "by-genre", "name": "By genre", "enabled": true, "priority": 1,
            "conditions": {"operator": "AND", "conditions": [{"type": "EXISTS", "field": "genre"}]},
            "template": "Genres/{genre}/{title}.{extension}", "fallbackToUnsorted": false}]}),
    )
    .await;
    let draft_paths: Vec<&str> = draft["previews"]
        .as_array()
        .expect("previews")
        .iter()
        .filter_map(|entry| entry["newPath"].as_str())
        .collect();
    assert!(draft_paths.contains(&"/Genres/Crime/Heat.mkv"), "{draft}");

    let validation = ok_json(
        address,
        "POST",
        "/api/fuse/rules/validate",
        json!({"rule": {"id": "bad", "name": "Bad", "enabled": true,
            "conditions": {"operator": "MATCHESISH", "conditions": []}, "template": "X/{title}"}}),
    )
    .await;
    assert_eq!(validation["valid"], false);
    assert!(
        validation["errors"]
            .as_array()
            .is_some_and(|errors| !errors.is_empty()),
        "{validation}"
    );

    // The documented example: a draft rule without an id validates and renders.
    let validation = ok_json(
        address,
        "POST",
        "/api/fuse/rules/validate",
        json!({"rule": {"name": "Test", "template": "Movies/{title|originalTitle}/{fileName}",
                "conditions": {"operator": "AND", "conditions": []}},
            "sampleMetadata": {"title": "Inception", "fileName": "Inception.mkv"}}),
    )
    .await;
    assert_eq!(validation["valid"], true, "{validation}");
    assert_eq!(
        validation["sampleOutput"], "Movies/Inception/Inception.mkv",
        "{validation}"
    );

    let variables = ok_json(address, "GET", "/api/fuse/rules/variables", Value::Null).await;
    assert!(
        variables
            .as_array()
            .or_else(|| variables["variables"].as_array())
            .is_some_and(|variables| !variables.is_empty()),
        "{variables}"
    );
    let services = ok_json(address, "GET", "/api/services", Value::Null).await;
    assert!(services["leader"].is_object(), "{services}");
    // The reference's fields, which its dashboard reads.
    assert_eq!(services["current"], "meta-fuse", "{services}");
    assert_eq!(services["isLeader"], false, "{services}");
    assert_eq!(services["leader"]["redisUrl"], redis.url(), "{services}");

    let (status, metrics) = http(address, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    for line in [
        format!("metafuse_files {N_SEEDED_FILES}"),
        "metafuse_tail_lag_entries 0".to_owned(),
        "metafuse_redis_reconnects_total 0".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // Last: a rebuild restarts the lag estimate.
    let refresh = ok_json(address, "POST", "/api/fuse/refresh", Value::Null).await;
    assert_eq!(refresh["status"], "ok");

    let (status, body) = http(address, "POST", "/api/fuse/getattr", "{not json").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        address,
        "POST",
        "/api/fuse/getattr",
        r#"{"path": "/Movies/Nope"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");

    api.stop().await;
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_why_it_is_degraded_and_nothing_while_ok() {
    const GUARD: std::time::Duration = std::time::Duration::from_secs(90);
    let mut redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    seed_movie(&mut connection, "aaaa0001", "Heat", "1995");
    let directory = tempfile::tempdir().expect("tempdir");
    let mut config = ServiceConfig::new(
        directory.path().join("renaming-rules.json"),
        directory.path().join("files"),
    );
    config.discovery.redis_url = Some(redis.url());
    let service = Service::start(config).await.expect("service starts");
    let api = Api::start(&service).await;

    tokio::time::timeout(GUARD, service.wait_for_liveness(|reason| reason.is_none()))
        .await
        .expect("live");
    let health = ok_json(api.address, "GET", "/health", Value::Null).await;
    assert_eq!(health["status"], "ok", "{health}");
    assert!(health.get("reason").is_none(), "{health}");

    redis.kill();
    tokio::time::timeout(GUARD, service.wait_for_liveness(|reason| reason.is_some()))
        .await
        .expect("not live without redis");
    let health = ok_json(api.address, "GET", "/health", Value::Null).await;
    assert_eq!(health["status"], "degraded", "{health}");
    let reason = health["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "{health}");
    api.stop().await;
    service.shutdown().await;
}
