//! `metafuse-stats --list` against a real redis-server, and `--api` against
//! a tiny HTTP server serving fixed JSON.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use metafuse_testkit::{RedisServer, Writer};

fn stats_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_metafuse-stats"));
    // A REDIS_URL of the developer's shell must not leak into the tests.
    command.env_remove("REDIS_URL").env_remove("REDIS_PREFIX");
    command
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes the shipped sample library writer-style: a `SET` per property,
/// the index, and one `set` event per key.
fn seed_sample_library(redis: &RedisServer) -> Result<(), Box<dyn std::error::Error>> {
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/library/sample.jsonl");
    let text = std::fs::read_to_string(sample)?;
    let mut connection = redis.client().get_connection()?;
    let mut writer = Writer::new(&mut connection, "");
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)?;
        let hash_id = object["hashId"].as_str().ok_or("hashId is not a string")?;
        for (property, value) in &object {
            let Some(value) = value.as_str().filter(|_| property != "hashId") else {
                continue;
            };
            writer.set(hash_id, property, value);
        }
    }
    writer.flush()?;
    Ok(())
}

const EXPECTED_SAMPLE_PATHS: &[&str] = &[
    "/Images/dark-poster.jpg",
    "/Images/readme.pdf",
    "/Movies/.. (2020)/.. (2020).mkv",
    "/Movies/AC-DC Live at River Plate (2011)/AC-DC Live at River Plate (2011).mkv",
    "/Movies/Face-Off (1997)/Face-Off (1997).mkv",
    "/Movies/Heat (1995)/Heat (1995) Extended.mkv",
    // Two files claim `Heat (1995).mkv`: the larger hashId gets its suffix.
    "/Movies/Heat (1995)/Heat (1995) [f6a5b4c5].mkv",
    "/Movies/Heat (1995)/Heat (1995).eng.srt",
    "/Movies/Heat (1995)/Heat (1995).mkv",
    "/Movies/Le Fabuleux Destin d'Amélie Poulain (2001)/Le Fabuleux Destin d'Amélie Poulain (2001).mkv",
    "/Movies/Who Framed Roger Rabbit (1988)/Who Framed Roger Rabbit (1988).mkv",
    "/Movies/千と千尋の神隠し/千と千尋の神隠し.mkv",
    "/TV Shows/Breaking Bad/S00/Breaking Bad S00E01.mkv",
    "/TV Shows/Breaking Bad/S02/Breaking Bad S02E05 Director's Cut.mkv",
    "/TV Shows/Breaking Bad/extra/Breaking Bad S02.mp4",
    "/TV Shows/Dark/S01/Dark S01E01.mkv",
    "/TV Shows/Dark/S01/Dark S01E01.srt",
    "/TV Shows/Dark/S01/Dark S01E02.mkv",
    "/TV Shows/Dark/S01/Dark S01E03.eng.srt",
    "/TV Shows/Dark/S01/Dark S01E03.mkv",
    "/TV Shows/Dark/S02/Dark S02E01.torrent",
    "/TV Shows/Jürgen & die Ärzte Live/S03/Jürgen & die Ärzte Live S03E10.mkv",
    "/Unsorted/NOTES",
    "/Unsorted/unknown-clip.mkv",
];

#[test]
fn list_prints_every_virtual_path_sorted_with_collision_suffixes()
-> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisServer::start()?;
    seed_sample_library(&redis)?;
    let output = stats_command()
        .args(["--redis-url", &redis.url(), "--list"])
        .output()?;
    assert!(output.status.success(), "stderr: {}", stderr_of(&output));
    let stdout = stdout_of(&output);
    let paths: Vec<&str> = stdout.lines().collect();
    assert_eq!(paths, EXPECTED_SAMPLE_PATHS);
    Ok(())
}

#[test]
fn json_reports_the_bootstrap_with_the_api_meanings() -> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisServer::start()?;
    seed_sample_library(&redis)?;
    // A file the state knows but the mount does not show: no filePath.
    let mut connection = redis.client().get_connection()?;
    Writer::new(&mut connection, "")
        .set("0000pathless", "title", "No Path")
        .flush()?;
    let output = stats_command()
        .args(["--redis-url", &redis.url(), "--json"])
        .output()?;
    assert!(output.status.success(), "stderr: {}", stderr_of(&output));
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output))?;
    assert_eq!(summary["fileCount"], EXPECTED_SAMPLE_PATHS.len());
    assert_eq!(summary["filesComplete"], EXPECTED_SAMPLE_PATHS.len());
    assert_eq!(summary["filesKnown"], EXPECTED_SAMPLE_PATHS.len() + 1);
    assert_eq!(summary["stateSize"], EXPECTED_SAMPLE_PATHS.len() + 1);
    assert!(
        summary["stateBytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 0),
        "{summary}"
    );
    for field in [
        "eventsProcessed",
        "propertiesFetched",
        "propertiesSkipped",
        "bootstrapMs",
    ] {
        assert!(summary[field].is_u64(), "{field} in {summary}");
    }
    assert!(summary["strategy"].is_string(), "{summary}");
    assert_eq!(summary["topology"]["mode"], "single", "{summary}");
    assert_eq!(
        summary["topology"]["nodes"][0]["address"],
        format!("127.0.0.1:{}", redis.port())
    );
    Ok(())
}

#[test]
fn a_cluster_reports_every_master_and_what_was_fetched_from_each()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = metafuse_testkit::RedisCluster::start(3, 0, None)?;
    let library = metafuse_testkit::Library::generate(&metafuse_testkit::LibrarySpec::new(300));
    metafuse_testkit::write_library_to_cluster(
        &mut cluster.connection()?,
        &library,
        "",
        0..library.writes.len(),
    )?;
    let output = stats_command()
        .args([
            "--redis-url",
            &cluster.url(),
            "--json",
            "--strategy",
            "snapshot",
        ])
        .output()?;
    assert!(output.status.success(), "stderr: {}", stderr_of(&output));
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output))?;
    assert_eq!(summary["fileCount"], 300, "{summary}");
    assert_eq!(summary["topology"]["mode"], "cluster", "{summary}");
    let mut masters: Vec<String> = cluster
        .master_ports()?
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    masters.sort();
    let nodes = summary["topology"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reported: Vec<String> = nodes
        .iter()
        .filter_map(|node| Some(node["address"].as_str()?.to_owned()))
        .collect();
    assert_eq!(reported, masters, "{summary}");
    assert!(
        nodes
            .iter()
            .all(|node| node["fetchedKeys"].as_u64() > Some(0)),
        "{summary}"
    );
    Ok(())
}

#[test]
fn list_follows_the_chosen_preset() -> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisServer::start()?;
    seed_sample_library(&redis)?;
    let default_output = stats_command()
        .args(["--redis-url", &redis.url(), "--list"])
        .output()?;
    let plex_output = stats_command()
        .args(["--redis-url", &redis.url(), "--list", "--preset", "plex"])
        .output()?;
    assert!(
        plex_output.status.success(),
        "stderr: {}",
        stderr_of(&plex_output)
    );
    // Every file stays visible under any rules, whatever its path.
    assert_eq!(
        stdout_of(&plex_output).lines().count(),
        EXPECTED_SAMPLE_PATHS.len()
    );
    assert_ne!(stdout_of(&plex_output), stdout_of(&default_output));
    Ok(())
}

const STATS_JSON: &str = r#"{"fileCount":5123,"directoryCount":847,"totalSize":15847392847362,"lastRefresh":"2024-01-15T10:30:00.000Z","stateBuilder":{"eventsProcessed":15234,"propertiesFetched":8934,"propertiesSkipped":6300,"filesComplete":5123,"lastEventId":"1703808000000-0","stateSize":5301},"strategy":"replay","bootstrapMs":1893}"#;
const HEALTH_JSON: &str = r#"{"status":"ok","timestamp":"2024-01-15T10:30:00.000Z","service":"meta-fuse","redis":{"connected":true},"stream":{"phase":"tailing","lastEventId":"1703808000000-0","secondsSinceLastEvent":1.5,"lagEntries":0}}"#;
const SERVICES_JSON: &str = r#"{"services":[],"current":"meta-fuse","leader":{"hostname":"meta-core-dev","redisUrl":"redis://meta-core:6379"},"isLeader":false}"#;

/// Serves the fixed JSON of the routes `--api` reads, one connection at a
/// time, until the test process ends. Returns the base URL.
fn start_fixed_api() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base_url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(&stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Drain the headers; GETs carry no body.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header != "\r\n" {
                header.clear();
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/api/fuse/stats" => ("200 OK", STATS_JSON),
                "/api/fuse/health" => ("200 OK", HEALTH_JSON),
                "/api/services" => ("200 OK", SERVICES_JSON),
                _ => ("404 Not Found", r#"{"error":"not found"}"#),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(base_url)
}

#[test]
fn api_prints_a_readable_table() -> Result<(), Box<dyn std::error::Error>> {
    let base_url = start_fixed_api()?;
    let output = stats_command().args(["--api", &base_url]).output()?;
    assert!(output.status.success(), "stderr: {}", stderr_of(&output));
    let table = stdout_of(&output);
    for expected in [
        "status              ok",
        "redis               connected",
        "leader              meta-core-dev (redis://meta-core:6379)",
        "files               5123",
        "directories         847",
        "total size          14.4 TiB (15847392847362 bytes)",
        "events processed    15234",
        "properties fetched  8934 (6300 skipped)",
        "stream              tailing, last event 1703808000000-0",
        "tail lag            0 entries",
        "last event          1.5 s ago",
        "strategy            replay (bootstrap 1893 ms)",
    ] {
        assert!(
            table.contains(expected),
            "missing {expected:?} in:\n{table}"
        );
    }
    Ok(())
}

#[test]
fn api_json_prints_stats_and_health() -> Result<(), Box<dyn std::error::Error>> {
    let base_url = start_fixed_api()?;
    let output = stats_command()
        .args(["--api", &format!("{base_url}/"), "--json"])
        .output()?;
    assert!(output.status.success(), "stderr: {}", stderr_of(&output));
    let printed: serde_json::Value = serde_json::from_str(&stdout_of(&output))?;
    assert_eq!(
        printed["stats"],
        serde_json::from_str::<serde_json::Value>(STATS_JSON)?
    );
    assert_eq!(
        printed["health"],
        serde_json::from_str::<serde_json::Value>(HEALTH_JSON)?
    );
    Ok(())
}

#[test]
fn unreachable_api_exits_1_with_a_message() -> Result<(), Box<dyn std::error::Error>> {
    // A port that was free a moment ago and has no listener now.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base_url = format!("http://127.0.0.1:{port}");
    let output = stats_command().args(["--api", &base_url]).output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!("cannot reach metafuse at {base_url}/api/fuse/")),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn unreachable_redis_exits_1() -> Result<(), Box<dyn std::error::Error>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let output = stats_command()
        .args([
            "--redis-url",
            &format!("redis://127.0.0.1:{port}/"),
            "--list",
        ])
        .output()?;
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr: {}",
        stderr_of(&output)
    );
    assert!(output.stdout.is_empty());
    Ok(())
}

/// The exit-code table shared with `metafuse`: a malformed Redis URL is the
/// source's fault (3), a missing one a configuration error (2).
#[test]
fn malformed_redis_url_exits_3_and_missing_one_exits_2() -> Result<(), Box<dyn std::error::Error>> {
    let output = stats_command()
        .args(["--redis-url", "not a url", "--list"])
        .output()?;
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("invalid redis url"),
        "{}",
        stderr_of(&output)
    );

    let output = stats_command().arg("--list").output()?;
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    Ok(())
}

/// `--config` is the same TOML file `metafuse` reads: its `redis_url` and
/// `preset` are used when no flag or environment variable gives them.
#[test]
fn redis_url_and_preset_come_from_the_config_file() -> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisServer::start()?;
    seed_sample_library(&redis)?;
    let directory = tempfile::tempdir()?;
    let config = directory.path().join("metafuse.toml");
    std::fs::write(
        &config,
        format!("redis_url = \"{}\"\npreset = \"plex\"\n", redis.url()),
    )?;
    let output = stats_command()
        .arg("--config")
        .arg(&config)
        .arg("--list")
        .output()?;
    assert!(output.status.success(), "stderr: {}", stderr_of(&output));
    assert!(
        stdout_of(&output).contains("/TV Shows/Dark/Season 01/Dark - S01E01.mkv"),
        "{}",
        stdout_of(&output)
    );
    Ok(())
}
