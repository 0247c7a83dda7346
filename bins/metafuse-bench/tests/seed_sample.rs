//! `metafuse-bench seed-sample` against a real redis-server: writer-style
//! keys and events, real source files whose length is the `size` property,
//! and reruns that overwrite rather than pile up.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use metafuse_testkit::RedisServer;
use redis::Commands;

const HEAT_HASH_ID: &str = "c3d2e4f6a8b0c3d2e4f6a8b0c3d2e4f6";

fn sample_jsonl() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/library/sample.jsonl")
}

fn seed_sample(
    redis: &RedisServer,
    jsonl: &Path,
    files_root: &Path,
) -> std::io::Result<std::process::Output> {
    Command::new(env!("CARGO_BIN_EXE_metafuse-bench"))
        .arg("seed-sample")
        .args(["--redis-url", &redis.url()])
        .arg("--jsonl")
        .arg(jsonl)
        .arg("--files-root")
        .arg(files_root)
        .output()
}

#[test]
fn seeds_keys_events_and_source_files_idempotently() -> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisServer::start()?;
    let files_root = tempfile::tempdir()?;
    let output = seed_sample(&redis, &sample_jsonl(), files_root.path())?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("seeded 24 files"));

    let mut connection = redis.client().get_connection()?;
    let index: BTreeSet<String> = connection.smembers("file:__index__")?;
    assert_eq!(index.len(), 24);
    assert!(index.contains(HEAT_HASH_ID));
    let title: String = connection.get(format!("file:{HEAT_HASH_ID}/title"))?;
    assert_eq!(title, "Heat");

    // `size` is the real length of the source file, so reads match it.
    let file_path: String = connection.get(format!("file:{HEAT_HASH_ID}/filePath"))?;
    let source = files_root.path().join(&file_path);
    let content = std::fs::read_to_string(&source)?;
    assert!(content.contains(&file_path), "{content}");
    assert!(content.len() > 2048, "a few KiB, got {}", content.len());
    let size: String = connection.get(format!("file:{HEAT_HASH_ID}/size"))?;
    assert_eq!(size, content.len().to_string());
    for hash_id in &index {
        let file_path: String = connection.get(format!("file:{hash_id}/filePath"))?;
        let size: u64 = connection.get(format!("file:{hash_id}/size"))?;
        let on_disk = std::fs::metadata(files_root.path().join(&file_path))?.len();
        assert_eq!(size, on_disk, "{file_path}");
    }

    // Every SET has its event, as the writers do it.
    let events: Vec<redis::streams::StreamId> = connection
        .xrange_all::<_, redis::streams::StreamRangeReply>("meta:events")?
        .ids;
    let event_keys: BTreeSet<String> = events
        .iter()
        .filter(|event| event.get::<String>("type").as_deref() == Some("set"))
        .filter_map(|event| event.get::<String>("key"))
        .collect();
    assert!(event_keys.contains(&format!("file:{HEAT_HASH_ID}/title")));
    assert!(event_keys.contains(&format!("file:{HEAT_HASH_ID}/size")));

    // A rerun overwrites: same keys, same bytes, same sizes.
    let keys_before: BTreeSet<String> = connection.keys("file:*")?;
    let output = seed_sample(&redis, &sample_jsonl(), files_root.path())?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let keys_after: BTreeSet<String> = connection.keys("file:*")?;
    assert_eq!(keys_before, keys_after);
    assert_eq!(std::fs::read_to_string(&source)?, content);
    let size_after: String = connection.get(format!("file:{HEAT_HASH_ID}/size"))?;
    assert_eq!(size_after, size);
    Ok(())
}

#[test]
fn drops_size_aliases_that_would_contradict_the_source() -> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisServer::start()?;
    let files_root = tempfile::tempdir()?;
    let jsonl = files_root.path().join("library.jsonl");
    std::fs::write(
        &jsonl,
        r#"{"hashId":"h1","filePath":"/in/a.mkv","title":"A","size":"999999","fileSize":"999999","sizeByte":"999999"}"#,
    )?;
    let mut connection = redis.client().get_connection()?;
    // A writer left an old fileSize behind: it must not outlive the rerun.
    let () = connection.set("file:h1/fileSize", "123")?;
    let output = seed_sample(&redis, &jsonl, &files_root.path().join("files"))?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let on_disk = std::fs::metadata(files_root.path().join("files/in/a.mkv"))?.len();
    let size: u64 = connection.get("file:h1/size")?;
    assert_eq!(size, on_disk);
    let file_size: Option<String> = connection.get("file:h1/fileSize")?;
    let size_byte: Option<String> = connection.get("file:h1/sizeByte")?;
    assert_eq!((file_size, size_byte), (None, None));
    Ok(())
}

#[test]
fn a_bad_line_writes_nothing_and_fails() -> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisServer::start()?;
    let files_root = tempfile::tempdir()?;
    let jsonl = files_root.path().join("library.jsonl");
    std::fs::write(
        &jsonl,
        "{\"hashId\":\"h1\",\"filePath\":\"a.mkv\"}\n{\"filePath\":\"no-hash.mkv\"}\n",
    )?;
    let output = seed_sample(&redis, &jsonl, &files_root.path().join("files"))?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid line 2"), "{stderr}");
    let mut connection = redis.client().get_connection()?;
    let n_keys: u64 = redis::cmd("DBSIZE").query(&mut connection)?;
    assert_eq!(n_keys, 0);
    assert!(!files_root.path().join("files").exists());
    Ok(())
}
