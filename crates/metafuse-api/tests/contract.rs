//! Contract tests over real HTTP: every route, its status codes and JSON
//! shapes, against a small fixed-tree backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metafuse_api::{ApiConfig, BackendSlot, serve_with};
use serde_json::{Value, json};
use tokio::sync::oneshot;

mod support;
use support::{FixedTree, MOVIE};

/// Failure guard only.
const GUARD: Duration = Duration::from_secs(30);

struct TestServer {
    base_url: String,
    backend: Arc<FixedTree>,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("body is not json ({error}): {}", self.body))
    }
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with(ApiConfig::default()).await
    }

    async fn start_with(config: ApiConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let backend = Arc::new(FixedTree::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(listener, backend.clone(), config, async {
            let _ = stopped.await;
        }));
        Self {
            base_url,
            backend,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop: Some(stop),
            server,
        }
    }

    async fn call(&self, method: Method, path: &str, body: &str) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let response = tokio::time::timeout(GUARD, self.client.request(request))
            .await
            .expect("answered in time")
            .expect("http exchange");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
        }
    }

    fn address(&self) -> std::net::SocketAddr {
        self.base_url
            .trim_start_matches("http://")
            .parse()
            .expect("address")
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let response = tokio::time::timeout(GUARD, self.client.request(request))
            .await
            .expect("answered in time")
            .expect("http exchange");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, "").await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, &body.to_string()).await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(GUARD, &mut self.server)
            .await
            .expect("server stopped in time")
            .expect("server task");
    }
}

fn assert_error(reply: &Reply, status: StatusCode, needle: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let message = reply.json()["error"].as_str().map(str::to_owned);
    let message = message.unwrap_or_else(|| panic!("no error message: {}", reply.body));
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn health_routes_report_the_reference_fields_and_the_real_state() {
    let server = TestServer::start().await;
    for path in ["/health", "/api/health", "/api/fuse/health"] {
        let reply = server.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let health = reply.json();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["service"], "meta-fuse");
        let timestamp = health["timestamp"].as_str().expect("timestamp");
        assert!(
            timestamp.len() == 24 && timestamp.ends_with('Z'),
            "{timestamp}"
        );
        assert_eq!(health["redis"]["connected"], true);
        assert_eq!(health["stream"]["phase"], "tailing");
        assert_eq!(health["stream"]["lastEventId"], "1703808000000-0");
        assert_eq!(health["stream"]["secondsSinceLastEvent"], 1.5);
        assert_eq!(health["stream"]["lagEntries"], 0);
        assert_eq!(health["redisConnected"], true);
        assert_eq!(
            health["source"],
            json!({"mode": "redis", "connected": true, "url": "redis://core:6379"})
        );
        assert!(
            health.get("rulesError").is_none(),
            "no rules error: the field is left out"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn stats_keep_the_reference_shape() {
    let server = TestServer::start().await;
    let reply = server.get("/api/fuse/stats").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({
            "fileCount": 1,
            "directoryCount": 4,
            "totalSize": 1_500_000_000u64,
            "lastRefresh": "2024-01-15T10:30:00.000Z",
            "redisConnected": true,
            "source": {"mode": "redis", "connected": true, "url": "redis://core:6379"},
            "stateBuilder": {
                "eventsProcessed": 15,
                "propertiesFetched": 9,
                "propertiesSkipped": 6,
                "filesComplete": 1,
                "lastEventId": "1703808000000-0",
                "stateSize": 2
            },
            "strategy": "replay"
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn readdir_lists_names_and_tells_missing_from_not_a_directory() {
    let server = TestServer::start().await;
    let reply = server.post("/api/fuse/readdir", json!({"path": "/"})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"entries": ["Movies", "TV Shows"]}));
    // Paths are normalised before reaching the backend.
    let reply = server
        .post("/api/fuse/readdir", json!({"path": "Movies/"}))
        .await;
    assert_eq!(reply.json(), json!({"entries": ["Heat (1995)"]}));
    let reply = server
        .post("/api/fuse/readdir", json!({"path": "/TV Shows"}))
        .await;
    assert_eq!(reply.json(), json!({"entries": []}));

    let reply = server
        .post("/api/fuse/readdir", json!({"path": "/Nope"}))
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "path not found: /Nope");
    let reply = server
        .post("/api/fuse/readdir", json!({"path": MOVIE}))
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not a directory");
    server.stop().await;
}

#[tokio::test]
async fn getattr_returns_stat_shaped_attributes() {
    let server = TestServer::start().await;
    let file = server
        .post("/api/fuse/getattr", json!({"path": MOVIE}))
        .await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(
        file.json(),
        json!({
            "size": 1_500_000_000u64,
            "mode": 0o100_644,
            "mtime": 1_705_314_600.5,
            "atime": 1_705_314_600.5,
            "ctime": 1_705_314_600.0,
            "nlink": 1,
            "uid": 1000,
            "gid": 1000
        })
    );
    let directory = server
        .post("/api/fuse/getattr", json!({"path": "/Movies"}))
        .await;
    assert_eq!(directory.json()["mode"], 0o040_755);
    assert_eq!(directory.json()["nlink"], 2);
    let missing = server
        .post("/api/fuse/getattr", json!({"path": "/x"}))
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "/x");
    server.stop().await;
}

#[tokio::test]
async fn exists_answers_true_and_false() {
    let server = TestServer::start().await;
    let reply = server
        .post("/api/fuse/exists", json!({"path": "/Movies/Heat (1995)"}))
        .await;
    assert_eq!(reply.json(), json!({"exists": true}));
    let reply = server
        .post("/api/fuse/exists", json!({"path": "/Movies/Ronin"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"exists": false}));
    server.stop().await;
}

#[tokio::test]
async fn read_gives_the_source_of_a_file_only() {
    let server = TestServer::start().await;
    let reply = server.post("/api/fuse/read", json!({"path": MOVIE})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({
            "sourcePath": "/files/watch/Heat.1995.mkv",
            "size": 1_500_000_000u64,
            "webdavUrl": "http://core/webdav/watch/Heat.1995.mkv"
        })
    );
    let reply = server
        .post("/api/fuse/read", json!({"path": "/Movies"}))
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not a file: /Movies");
    server.stop().await;
}

#[tokio::test]
async fn metadata_passes_properties_through() {
    let server = TestServer::start().await;
    let reply = server
        .post("/api/fuse/metadata", json!({"path": MOVIE}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["titles/eng"], "Heat");
    assert_eq!(reply.json()["hashId"], "bafkrei9f3a1c2e");
    let reply = server
        .post("/api/fuse/metadata", json!({"path": "/Movies"}))
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "/Movies");
    server.stop().await;
}

#[tokio::test]
async fn files_and_directories_list_every_path() {
    let server = TestServer::start().await;
    assert_eq!(
        server.get("/api/fuse/files").await.json(),
        json!({"files": [MOVIE]})
    );
    assert_eq!(
        server.get("/api/fuse/directories").await.json(),
        json!({"directories": ["/", "/Movies", "/Movies/Heat (1995)", "/TV Shows"]})
    );
    server.stop().await;
}

#[tokio::test]
async fn refresh_runs_the_backend_refresh() {
    let server = TestServer::start().await;
    let reply = server.call(Method::POST, "/api/fuse/refresh", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"status": "ok"}));
    assert_eq!(server.backend.refreshes.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn rules_can_be_read_replaced_and_invalid_documents_are_rejected() {
    let server = TestServer::start().await;
    let reply = server.get("/api/fuse/rules").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["config"]["version"], 1);
    assert_eq!(reply.json()["lastModified"], "2024-01-15T10:30:00Z");

    let document = json!({"version": 2, "rules": [{"id": "movies", "template": "Movies/{title}"}]});
    let reply = server
        .call(
            Method::PUT,
            "/api/fuse/rules",
            &json!({"config": document}).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json(), json!({"success": true, "refreshed": true}));
    assert_eq!(
        server.get("/api/fuse/rules").await.json()["config"],
        document
    );

    let invalid = json!({"config": {"version": 3, "rules": [{"id": "broken", "template": ""}]}});
    let reply = server
        .call(Method::PUT, "/api/fuse/rules", &invalid.to_string())
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["success"], false);
    assert_eq!(
        reply.json()["errors"],
        json!(["rule \"broken\": empty template"])
    );
    assert_eq!(
        server.get("/api/fuse/rules").await.json()["config"],
        document
    );

    let reply = server
        .call(Method::PUT, "/api/fuse/rules", r#"{"config": 5}"#)
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "\"config\"");
    server.stop().await;
}

#[tokio::test]
async fn preview_passes_rules_and_limit_and_returns_the_reference_shape() {
    let server = TestServer::start().await;
    let reply = server
        .call(Method::POST, "/api/fuse/rules/preview", "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({
            "previews": [{
                "sourcePath": "/files/watch/Heat.1995.mkv",
                "currentVirtualPath": MOVIE,
                "newVirtualPath": "/limit 100/Heat.mkv",
                "matchedRule": "movies",
                "hashId": "bafkrei9f3a1c2e",
                "ruleName": "in force",
                "currentPath": MOVIE,
                "newPath": "/limit 100/Heat.mkv"
            }],
            "total": 1,
            "limited": false,
            "sampled": 1
        })
    );
    let reply = server
        .post(
            "/api/fuse/rules/preview",
            json!({"rules": [{"name": "Draft"}], "limit": 5}),
        )
        .await;
    assert_eq!(reply.json()["previews"][0]["newPath"], "/limit 5/Heat.mkv");
    assert_eq!(reply.json()["previews"][0]["ruleName"], "Draft");
    let reply = server
        .post("/api/fuse/rules/preview", json!({"limit": "ten"}))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "\"limit\"");
    server.stop().await;
}

#[tokio::test]
async fn validate_checks_one_rule() {
    let server = TestServer::start().await;
    let reply = server
        .post(
            "/api/fuse/rules/validate",
            json!({"rule": {"template": "Movies/{title}"}, "sampleMetadata": {"title": "Heat"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({"valid": true, "errors": [], "warnings": [], "sampleOutput": "Movies/Heat"})
    );
    let reply = server
        .post(
            "/api/fuse/rules/validate",
            json!({"rule": {"template": ""}}),
        )
        .await;
    assert_eq!(reply.json()["valid"], false);
    assert_eq!(reply.json()["sampleOutput"], Value::Null);
    let reply = server
        .post("/api/fuse/rules/validate", json!({"sampleMetadata": {}}))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "\"rule\"");
    let reply = server
        .post(
            "/api/fuse/rules/validate",
            json!({"rule": {}, "sampleMetadata": [1]}),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "sampleMetadata");
    server.stop().await;
}

#[tokio::test]
async fn variables_and_services_keep_their_shapes() {
    let server = TestServer::start().await;
    assert_eq!(
        server.get("/api/fuse/rules/variables").await.json(),
        json!({"variables": [{"name": "Season", "path": "season", "type": "number",
            "description": "Season number", "example": "1", "modifiers": ["pad2"]}]})
    );
    let services = server.get("/api/services").await;
    assert_eq!(services.status, StatusCode::OK);
    assert_eq!(
        services.json(),
        json!({
            "services": [{"name": "meta-sort", "hostname": "nas", "baseUrl": "http://nas:8180",
                "status": "running", "lastHeartbeat": "2024-01-15T10:30:00.000Z",
                "url": "http://nas:8180", "api": "http://nas:8180"}],
            "count": 1,
            "current": "meta-fuse",
            "isLeader": false,
            "leader": null
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_400_with_a_message_never_500() {
    let server = TestServer::start().await;
    let bodies = [
        ("", "empty request body"),
        ("not json", "not valid json"),
        ("[\"/\"]", "not an array"),
        ("{}", "missing \"path\""),
        (r#"{"path": 42}"#, "got a number"),
        (r#"{"path": null}"#, "got null"),
        (r#"{"path": ["/"]}"#, "got an array"),
    ];
    for route in ["readdir", "getattr", "exists", "read", "metadata"] {
        for (body, needle) in bodies {
            let reply = server
                .call(Method::POST, &format!("/api/fuse/{route}"), body)
                .await;
            assert_error(&reply, StatusCode::BAD_REQUEST, needle);
        }
    }
    let reply = server.call(Method::PUT, "/api/fuse/rules", "{").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "not valid json");
    let reply = server
        .call(Method::POST, "/api/fuse/rules/validate", "7")
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "not a number");
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let server = TestServer::start().await;
    let reply = server.get("/api/fuse/nothing-here").await;
    assert_error(
        &reply,
        StatusCode::NOT_FOUND,
        "no route for GET /api/fuse/nothing-here",
    );

    let reply = server.get("/api/fuse/readdir").await;
    assert_error(
        &reply,
        StatusCode::METHOD_NOT_ALLOWED,
        "method GET not allowed",
    );
    assert_eq!(reply.headers["allow"], "POST, OPTIONS");
    let reply = server.call(Method::DELETE, "/api/fuse/rules", "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["allow"], "GET, PUT, HEAD, OPTIONS");
    let reply = server.post("/api/fuse/stats", json!({})).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await;
}

#[tokio::test]
async fn head_options_trailing_slash_and_cors_behave() {
    let server = TestServer::start().await;
    let reply = server.call(Method::HEAD, "/health", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_empty());
    let reply = server.call(Method::OPTIONS, "/api/fuse/readdir", "").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reply.headers["access-control-allow-methods"],
        "POST, OPTIONS"
    );
    let reply = server.get("/api/fuse/stats/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
    assert!(
        reply.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/json")
    );
    server.stop().await;
}

/// Checks the Prometheus text exposition format line by line and returns the
/// samples as `(name with labels, value)`.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    fn is_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn parse_value(text: &str) -> f64 {
        match text {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            number => number
                .parse()
                .unwrap_or_else(|error| panic!("value {number:?} is not a float: {error}")),
        }
    }
    /// `{a="x",b="y\"z"}` → checked; returns the rest of the line.
    fn skip_labels(rest: &str, line: &str) -> usize {
        let bytes = rest.as_bytes();
        let mut index = 1;
        loop {
            let name_end = rest[index..]
                .find('=')
                .unwrap_or_else(|| panic!("label without '=' in {line:?}"))
                + index;
            assert!(
                is_metric_name(&rest[index..name_end]),
                "bad label name in {line:?}"
            );
            assert_eq!(
                bytes.get(name_end + 1),
                Some(&b'"'),
                "unquoted label value in {line:?}"
            );
            index = name_end + 2;
            while bytes[index] != b'"' {
                index += if bytes[index] == b'\\' { 2 } else { 1 };
                assert!(index < bytes.len(), "unterminated label value in {line:?}");
            }
            index += 1;
            match bytes.get(index) {
                Some(b',') => index += 1,
                Some(b'}') => return index + 1,
                _ => panic!("bad label list in {line:?}"),
            }
        }
    }

    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.first().copied() {
                Some("HELP") => {
                    assert!(
                        words.len() >= 3 && is_metric_name(words[1]),
                        "bad HELP: {line:?}"
                    );
                }
                Some("TYPE") => {
                    assert_eq!(words.len(), 3, "bad TYPE: {line:?}");
                    assert!(is_metric_name(words[1]), "bad TYPE name: {line:?}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&words[2]),
                        "bad TYPE kind: {line:?}"
                    );
                    assert!(typed.insert(words[1].to_owned()), "TYPE twice: {line:?}");
                }
                _ => {}
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let name = &line[..name_end];
        assert!(is_metric_name(name), "bad metric name: {line:?}");
        assert!(typed.contains(name), "sample before its TYPE: {line:?}");
        let after_labels = if line[name_end..].starts_with('{') {
            name_end + skip_labels(&line[name_end..], line)
        } else {
            name_end
        };
        let mut fields = line[after_labels..].split_whitespace();
        let value = parse_value(
            fields
                .next()
                .unwrap_or_else(|| panic!("no value: {line:?}")),
        );
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().expect("integer timestamp");
        }
        assert!(fields.next().is_none(), "trailing fields: {line:?}");
        samples.push((line[..after_labels].to_owned(), value));
    }
    samples
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let server = TestServer::start().await;
    let reply = server.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let samples: BTreeMap<String, f64> = parse_prometheus(&reply.body).into_iter().collect();
    let expected = [
        ("metafuse_files", 1.0),
        ("metafuse_directories", 4.0),
        ("metafuse_events_processed_total", 15.0),
        ("metafuse_tail_lag_entries", 0.0),
        ("metafuse_seconds_since_last_event", 1.5),
        ("metafuse_redis_reconnects_total", 2.0),
        ("metafuse_bootstrap_duration_seconds", 0.25),
        ("metafuse_malformed_entries_skipped_total", 1.0),
        ("metafuse_redis_connected", 1.0),
        ("metafuse_bootstrap_strategy{strategy=\"replay\"}", 1.0),
        ("metafuse_source{source=\"redis\"}", 1.0),
    ];
    for (name, value) in expected {
        assert_eq!(samples.get(name), Some(&value), "{name} in\n{}", reply.body);
    }
    server.stop().await;
}

#[test]
fn the_prometheus_checker_rejects_malformed_text() {
    for bad in [
        "# TYPE m gauge\nm{a=\"1\" 1\n",
        "# TYPE m gauge\nm one\n",
        "m 1\n",
        "# TYPE m wrong\nm 1\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_prometheus(bad)).is_err(),
            "{bad:?} should be rejected"
        );
    }
}

#[tokio::test]
async fn serve_returns_after_shutdown_even_with_an_idle_keep_alive_connection() {
    let server = TestServer::start().await;
    // The client pool keeps this connection open; shutdown must still finish.
    assert_eq!(server.get("/health").await.status, StatusCode::OK);
    server.stop().await;
}

/// One request written as raw bytes (paths no client would normalise);
/// returns the whole response as text.
async fn raw_exchange(address: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut response))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

const RULES_BODY: &str =
    r#"{"config": {"version": 1, "rules": [{"id": "a", "template": "A/{title}"}]}}"#;

#[tokio::test]
async fn without_a_token_mutating_routes_accept_only_the_same_origin() {
    let server = TestServer::start().await;
    let cross_origin: [&[(&str, &str)]; 3] = [
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://evil.example"),
        ],
    ];
    for headers in cross_origin {
        let reply = server
            .call_with(Method::PUT, "/api/fuse/rules", RULES_BODY, headers)
            .await;
        assert_error(&reply, StatusCode::FORBIDDEN, "cross-origin");
        assert!(reply.headers.get("access-control-allow-origin").is_none());
        let reply = server
            .call_with(Method::POST, "/api/fuse/refresh", "", headers)
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    assert_eq!(server.backend.refreshes.load(Ordering::SeqCst), 0);
    assert_eq!(
        server.get("/api/fuse/rules").await.json()["config"]["rules"],
        json!([])
    );

    // The same origin (the dashboard served by us) and non-browsers pass.
    let host = server.base_url.trim_start_matches("http://").to_owned();
    let same_origin = format!("http://{host}");
    let reply = server
        .call_with(
            Method::PUT,
            "/api/fuse/rules",
            RULES_BODY,
            &[("origin", &same_origin)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply.headers.get("access-control-allow-origin").is_none(),
        "no CORS grant on a mutating route"
    );
    let reply = server
        .call_with(
            Method::POST,
            "/api/fuse/refresh",
            "",
            &[("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = server.call(Method::POST, "/api/fuse/refresh", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(server.backend.refreshes.load(Ordering::SeqCst), 2);

    // Reads stay open to other origins; the preflight never grants PUT.
    let reply = server
        .call_with(
            Method::GET,
            "/api/fuse/rules",
            "",
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
    let reply = server.call(Method::OPTIONS, "/api/fuse/rules", "").await;
    let granted = reply.headers["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    assert!(!granted.contains("PUT"), "{granted}");
    let reply = server.call(Method::OPTIONS, "/api/fuse/refresh", "").await;
    assert!(reply.headers.get("access-control-allow-origin").is_none());
    server.stop().await;
}

#[tokio::test]
async fn with_a_token_mutating_routes_need_it() {
    let server = TestServer::start_with(ApiConfig {
        api_token: Some("s3cret-token".into()),
        ..ApiConfig::default()
    })
    .await;
    let reply = server
        .call(Method::PUT, "/api/fuse/rules", RULES_BODY)
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "api token");
    assert!(
        reply.headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer")
    );
    let reply = server
        .call_with(
            Method::PUT,
            "/api/fuse/rules",
            RULES_BODY,
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = server.call(Method::POST, "/api/fuse/refresh", "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.backend.refreshes.load(Ordering::SeqCst), 0);
    assert_eq!(
        server.get("/api/fuse/rules").await.json()["config"]["rules"],
        json!([])
    );

    let reply = server
        .call_with(
            Method::PUT,
            "/api/fuse/rules",
            RULES_BODY,
            &[("authorization", "Bearer s3cret-token")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Reads need no token.
    assert_eq!(server.get("/api/fuse/stats").await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_they_are_buffered() {
    let server = TestServer::start().await;
    let five_mib_template = "x".repeat(5 * 1024 * 1024);
    let body =
        json!({"config": {"version": 1, "rules": [{"id": "a", "template": five_mib_template}]}})
            .to_string();
    let reply = server.call(Method::PUT, "/api/fuse/rules", &body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.contains("too large"), "{}", reply.body);
    let reply = server
        .call(Method::POST, "/api/fuse/rules/preview", &body)
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Just under the limit, a body is read in full (through hyper's small
    // per-connection buffer) and answered.
    let padding = " ".repeat(1_900_000);
    let reply = server
        .call(
            Method::POST,
            "/api/fuse/rules/preview",
            &format!("{{\"limit\": 3{padding}}}"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.json()["previews"][0]["newVirtualPath"],
        "/limit 3/Heat.mkv"
    );
    server.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_tree_and_liveness_the_process() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let slot = BackendSlot::empty();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        slot.clone(),
        ApiConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let get = |path: &'static str| {
        raw_exchange(
            address,
            Box::leak(
                format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .into_boxed_str(),
            ),
        )
    };
    let ready = get("/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("\"phase\":\"bootstrapping\""), "{ready}");
    assert!(get("/livez").await.starts_with("HTTP/1.1 200"));
    assert!(get("/health").await.starts_with("HTTP/1.1 200"));

    slot.fill(Arc::new(FixedTree::new()));
    let ready = get("/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("\"phase\":\"tailing\""), "{ready}");
    assert!(get("/livez").await.starts_with("HTTP/1.1 200"));
    let _ = stop.send(());
    server.await.expect("server");
}

#[tokio::test]
async fn the_ui_dir_serves_the_app_and_nothing_outside_it() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/ui-spa");
    let sandbox = tempfile::tempdir().expect("tempdir");
    let ui_dir = sandbox.path().join("ui");
    std::fs::create_dir_all(ui_dir.join("assets")).expect("ui dir");
    for file in ["index.html", "assets/app.js", "assets/style.css"] {
        std::fs::copy(fixture.join(file), ui_dir.join(file)).expect("copy fixture");
    }
    std::fs::write(sandbox.path().join("secret.txt"), "outside-secret").expect("secret");
    std::os::unix::fs::symlink(sandbox.path().join("secret.txt"), ui_dir.join("leak.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(sandbox.path(), ui_dir.join("up")).expect("dir symlink");
    std::os::unix::fs::symlink(ui_dir.join("assets/app.js"), ui_dir.join("inside.js"))
        .expect("inner symlink");
    let server = TestServer::start_with(ApiConfig {
        ui_dir: Some(ui_dir.clone()),
        ..ApiConfig::default()
    })
    .await;

    let index = server.get("/").await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.headers["content-type"], "text/html; charset=utf-8");
    assert!(index.body.contains("fixture-spa-index"));
    let script = server.get("/assets/app.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.body.contains("fixture-spa-app"));
    assert_eq!(
        server.get("/assets/style.css").await.headers["content-type"],
        "text/css; charset=utf-8"
    );
    // A symlink that stays inside is fine.
    assert_eq!(server.get("/inside.js").await.status, StatusCode::OK);
    // Routes of the app get the app; a directory is never listed.
    for route in ["/rules", "/settings/webdav", "/assets"] {
        let reply = server.get(route).await;
        assert_eq!(reply.status, StatusCode::OK, "{route}");
        assert!(
            reply.body.contains("fixture-spa-index"),
            "{route}: {}",
            reply.body
        );
    }
    // A missing asset is a 404, not the app parsed as script.
    assert_eq!(
        server.get("/assets/missing.js").await.status,
        StatusCode::NOT_FOUND
    );
    // API routes first; unknown API routes are JSON 404s.
    assert_eq!(server.get("/health").await.json()["service"], "meta-fuse");
    assert_eq!(server.get("/api/nope").await.status, StatusCode::NOT_FOUND);
    // Nothing outside the directory, however it is asked for.
    for hostile in ["/leak.txt", "/up/secret.txt"] {
        let reply = server.get(hostile).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{hostile}");
        assert!(!reply.body.contains("outside-secret"));
    }
    for hostile in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/ui/../secret.txt",
    ] {
        let reply = raw_exchange(
            server.address(),
            &format!("GET {hostile} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 404"), "{hostile}: {reply}");
        assert!(!reply.contains("outside-secret"), "{hostile}");
    }
    server.stop().await;
}
