//! The old dashboard's contract (spec §10) against the real stack: preview
//! equals what saving gives, file by file (collisions, `Unsorted/`, a rule
//! that errors), the shapes it reads, `/api/services` from meta-core
//! doubles of both generations, and readiness.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metafuse_service::{Service, ServiceConfig};
use metafuse_testkit::RedisServer;
use serde_json::{Value, json};
use support::{Api, http, set};

fn seed(connection: &mut redis::Connection, hash_id: &str, properties: &[(&str, &str)]) {
    for (property, value) in properties {
        let _ = set(connection, hash_id, property, value);
    }
}

async fn call(address: SocketAddr, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, reply) = http(address, method, path, &body).await;
    let json =
        serde_json::from_str(&reply).unwrap_or_else(|error| panic!("{path}: {error}: {reply}"));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_equals_the_tree_that_saving_the_same_rules_produces() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    // Two copies of the same film: they collide under any rule by title.
    for (hash_id, path) in [
        ("aaaa000011111111", "watch/heat-a.mkv"),
        ("bbbb000022222222", "watch/heat-b.mkv"),
    ] {
        seed(
            &mut connection,
            hash_id,
            &[
                ("title", "Heat"),
                ("movieYear", "1995"),
                ("genre", "Crime"),
                ("fileType", "video"),
                ("extension", "mkv"),
                ("size", "1000"),
                ("filePath", path),
            ],
        );
    }
    // A film without a genre: the draft's rule matches but cannot render.
    seed(
        &mut connection,
        "cccc000033333333",
        &[
            ("title", "Ronin"),
            ("movieYear", "1998"),
            ("fileType", "video"),
            ("extension", "mkv"),
            ("filePath", "watch/ronin.mkv"),
        ],
    );
    // No title at all: only the default rule places it, in Unsorted/.
    seed(
        &mut connection,
        "dddd000044444444",
        &[("fileType", "audio"), ("filePath", "watch/track01.flac")],
    );

    let directory = tempfile::tempdir().expect("tempdir");
    let rules_file = directory.path().join("config").join("renaming-rules.json");
    let files_root = directory.path().join("files");
    let mut config = ServiceConfig::new(&rules_file, &files_root);
    config.discovery.redis_url = Some(redis.url());
    let service = Service::start(config).await.expect("service starts");
    let api = Api::start(&service).await;
    let address = api.address;

    let (status, ready) = call(address, "GET", "/readyz", Value::Null).await;
    assert_eq!(status, 200, "{ready}");
    let (status, _) = call(address, "GET", "/livez", Value::Null).await;
    assert_eq!(status, 200);

    // The dashboard's flow: GET rules, edit `config.rules`, preview them,
    // then PUT the whole config.
    let (_, rules) = call(address, "GET", "/api/fuse/rules", Value::Null).await;
    let mut document = rules["config"].clone();
    let draft_rules = json!([{"id": "by-genre", "name": "By genre", "enabled": true, "priority": 10,
        "conditions": {"operator": "AND", "conditions": [{"type": "EXISTS", "field": "title"}]},
        "template": "Genres/{genre}/{title} ({movieYear}).{extension}", "fallbackToUnsorted": true}]);
    document["rules"] = draft_rules.clone();

    let (status, preview) = call(
        address,
        "POST",
        "/api/fuse/rules/preview",
        json!({"rules": draft_rules, "limit": 1000}),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["total"], 4);
    assert_eq!(preview["limited"], false);
    let entries = preview["previews"].as_array().expect("previews");
    assert_eq!(entries.len(), 4);
    let by_hash: BTreeMap<&str, &Value> = entries
        .iter()
        .map(|entry| (entry["hashId"].as_str().expect("hashId"), entry))
        .collect();
    for entry in entries {
        for field in ["sourcePath", "currentVirtualPath", "newVirtualPath"] {
            assert!(entry[field].is_string(), "{field} in {entry}");
        }
        assert!(entry.get("matchedRule").is_some(), "{entry}");
    }
    // The collision: the smaller hashId keeps the name, the other gets
    // its last 8 characters, exactly as the tree will name it.
    assert_eq!(
        by_hash["aaaa000011111111"]["newVirtualPath"],
        "/Genres/Crime/Heat (1995).mkv"
    );
    assert_eq!(
        by_hash["bbbb000022222222"]["newVirtualPath"],
        "/Genres/Crime/Heat (1995) [22222222].mkv"
    );
    assert_eq!(by_hash["aaaa000011111111"]["matchedRule"], "by-genre");
    assert_eq!(
        by_hash["aaaa000011111111"]["sourcePath"],
        json!(files_root.join("watch/heat-a.mkv").display().to_string())
    );
    // The rule that errors: reported, and placed where saving puts it.
    let ronin = by_hash["cccc000033333333"];
    assert_eq!(ronin["newVirtualPath"], "/Unsorted/ronin.mkv", "{ronin}");
    assert_eq!(ronin["matchedRule"], "by-genre", "{ronin}");
    assert!(
        ronin["error"]
            .as_str()
            .is_some_and(|error| error.contains("by-genre")),
        "{ronin}"
    );
    // Unsorted through the default rule, never a null path.
    let track = by_hash["dddd000044444444"];
    assert_eq!(track["newVirtualPath"], "/Unsorted/track01.flac", "{track}");
    assert_eq!(
        track["currentVirtualPath"], "/Unsorted/track01.flac",
        "{track}"
    );
    assert!(track.get("error").is_none(), "{track}");

    // A small limit says so.
    let (_, limited) = call(
        address,
        "POST",
        "/api/fuse/rules/preview",
        json!({"rules": document["rules"], "limit": 2}),
    )
    .await;
    assert_eq!(limited["previews"].as_array().map(Vec::len), Some(2));
    assert_eq!(limited["total"], 4);
    assert_eq!(limited["limited"], true);

    // Documents without rules are refused, not applied as "no rules".
    for empty in [
        json!({}),
        json!({"version": 1, "rules": []}),
        json!({"version": 1}),
    ] {
        let (status, reply) =
            call(address, "PUT", "/api/fuse/rules", json!({"config": empty})).await;
        assert_eq!(status, 400, "{empty}: {reply}");
        assert_eq!(reply["success"], false, "{reply}");
    }
    let (_, unchanged) = call(address, "GET", "/api/fuse/rules", Value::Null).await;
    assert_eq!(unchanged["config"], rules["config"]);

    // Saving gives exactly the previewed tree, file by file.
    let (status, saved) = call(
        address,
        "PUT",
        "/api/fuse/rules",
        json!({"config": document}),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    let (_, files) = call(address, "GET", "/api/fuse/files", Value::Null).await;
    let mut files: Vec<String> = serde_json::from_value(files["files"].clone()).expect("files");
    files.sort();
    let mut previewed: Vec<String> = entries
        .iter()
        .map(|entry| entry["newVirtualPath"].as_str().expect("path").to_owned())
        .collect();
    previewed.sort();
    assert_eq!(files, previewed);
    for (hash_id, entry) in &by_hash {
        let (status, metadata) = call(
            address,
            "POST",
            "/api/fuse/metadata",
            json!({"path": entry["newVirtualPath"]}),
        )
        .await;
        assert_eq!(status, 200, "{metadata}");
        assert_eq!(metadata["hashId"], *hash_id, "{entry}");
    }
    // Previewing the rules in force now changes nothing.
    let (_, again) = call(
        address,
        "POST",
        "/api/fuse/rules/preview",
        json!({"limit": 1000}),
    )
    .await;
    for entry in again["previews"].as_array().expect("previews") {
        assert_eq!(
            entry["currentVirtualPath"], entry["newVirtualPath"],
            "{entry}"
        );
    }

    // The other shapes the dashboard reads. The tail connects after the
    // bootstrap, so wait for it before reading `connected`.
    service.wait_for_liveness(|reason| reason.is_none()).await;
    let (_, stats) = call(address, "GET", "/api/fuse/stats", Value::Null).await;
    assert_eq!(stats["redisConnected"], true, "{stats}");
    assert_eq!(stats["source"]["mode"], "redis", "{stats}");
    let (_, health) = call(address, "GET", "/health", Value::Null).await;
    assert_eq!(health["source"]["connected"], true, "{health}");
    let (_, variables) = call(address, "GET", "/api/fuse/rules/variables", Value::Null).await;
    let variables = variables["variables"].as_array().expect("variables");
    let paths: Vec<&str> = variables
        .iter()
        .take(13)
        .map(|variable| variable["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths,
        [
            "titles.eng",
            "originalTitle",
            "title",
            "season",
            "episode",
            "extra",
            "movieYear",
            "year",
            "fileType",
            "extension",
            "version",
            "subtitleLanguage",
            "fileName"
        ]
    );
    for variable in variables {
        for field in ["name", "path", "type", "description", "example"] {
            assert!(variable[field].is_string(), "{field} in {variable}");
        }
        assert!(["string", "number", "boolean"].contains(&variable["type"].as_str().unwrap_or("")));
    }
    // Redis given directly: no meta-core to ask, an empty list that says why.
    let (status, services) = call(address, "GET", "/api/services", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(services["services"], json!([]));
    assert_eq!(services["count"], 0);
    assert!(services["warning"].is_string(), "{services}");

    api.stop().await;
    service.shutdown().await;
}

/// A meta-core double: `/urls` pointing at `redis_url`, and `routes`.
async fn meta_core_double(
    redis_url: String,
    routes: Vec<(&'static str, Value)>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let routes = Arc::new(routes);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (redis_url, routes) = (redis_url.clone(), routes.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (redis_url, routes) = (redis_url.clone(), routes.clone());
                    async move {
                        let path = request.uri().path().to_owned();
                        let body = if path == "/urls" {
                            Some(
                                json!({"hostname": "core", "baseUrl": "http://core", "apiUrl": "http://core/api",
                                "redisUrl": redis_url, "webdavUrl": "http://core/webdav", "webdavUrlInternal": ""}),
                            )
                        } else {
                            routes
                                .iter()
                                .find(|(route, _)| *route == path)
                                .map(|(_, body)| body.clone())
                        };
                        let mut response = match body {
                            Some(body) => Response::new(Full::new(Bytes::from(body.to_string()))),
                            None => {
                                let mut response = Response::new(Full::new(Bytes::from_static(
                                    b"{\"error\":\"not_found\"}",
                                )));
                                *response.status_mut() = StatusCode::NOT_FOUND;
                                response
                            }
                        };
                        response
                            .headers_mut()
                            .insert("content-type", "application/json".parse().expect("header"));
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, task)
}

async fn services_through(
    redis: &RedisServer,
    routes: Vec<(&'static str, Value)>,
    stop_core_first: bool,
) -> Value {
    let (core, core_task) = meta_core_double(redis.url(), routes).await;
    let directory = tempfile::tempdir().expect("tempdir");
    let mut config = ServiceConfig::new(
        directory.path().join("rules.json"),
        directory.path().join("files"),
    );
    config.discovery.meta_core_url = Some(format!("http://{core}"));
    config.discovery.meta_core_path = directory.path().join("meta-core");
    let service = Service::start(config).await.expect("service starts");
    let api = Api::start(&service).await;
    if stop_core_first {
        core_task.abort();
        let _ = core_task.await;
    }
    let (status, services) = call(api.address, "GET", "/api/services", Value::Null).await;
    assert_eq!(status, 200, "{services}");
    api.stop().await;
    service.shutdown().await;
    services
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_come_from_either_meta_core_generation_and_never_fail() {
    let redis = RedisServer::start().expect("redis");
    let old = services_through(
        &redis,
        vec![(
            "/api/services",
            json!({"services": [
        {"name": "meta-sort", "hostname": "nas", "baseUrl": "http://nas:8180", "status": "running",
         "lastHeartbeat": "2026-01-01T10:00:00.000Z"}], "count": 1}),
        )],
        false,
    )
    .await;
    assert_eq!(old["count"], 1, "{old}");
    assert_eq!(old["services"][0]["name"], "meta-sort");
    assert_eq!(old["services"][0]["baseUrl"], "http://nas:8180");
    assert_eq!(old["services"][0]["url"], "http://nas:8180");
    assert_eq!(
        old["services"][0]["lastHeartbeat"],
        "2026-01-01T10:00:00.000Z"
    );
    assert!(old.get("warning").is_none(), "{old}");

    let new = services_through(&redis, vec![("/api/neighbors", json!({"current": "meta-core", "enabled": true,
        "count": 1, "self": {"name": "meta-core"}, "neighbors": [
        {"name": "meta-orbit", "instance": "box", "version": "1.0", "status": "online", "resources": [],
         "caps": ["metamesh.orbit"], "addr": "10.0.0.6:9000", "lastSeen": "2026-01-01T10:00:05Z"}]}))], false).await;
    assert_eq!(new["count"], 1, "{new}");
    assert_eq!(
        new["services"][0],
        json!({"name": "meta-orbit", "hostname": "box", "baseUrl": "http://10.0.0.6:9000",
        "status": "online", "lastHeartbeat": "2026-01-01T10:00:05Z", "url": "http://10.0.0.6:9000",
        "api": "http://10.0.0.6:9000"})
    );

    let away = services_through(&redis, Vec::new(), true).await;
    assert_eq!(away["services"], json!([]), "{away}");
    assert_eq!(away["count"], 0);
    assert!(
        away["warning"]
            .as_str()
            .is_some_and(|warning| warning.contains("meta-core")),
        "{away}"
    );
}
