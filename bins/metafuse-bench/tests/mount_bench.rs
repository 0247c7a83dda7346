//! `metafuse-bench mount` end to end at toy sizes (needs root and
//! /dev/fuse, as the other mount tests): every scenario runs against the
//! real service and mount, sees what it wrote, and leaves neither a mount
//! nor its probe files behind. The figures themselves are not asserted.

use std::process::Command;

use metafuse_testkit::RedisServer;
use redis::Commands;
use serde_json::Value;

const N_FILES: u64 = 300;
const N_LATENCY_SAMPLES: u64 = 5;
const READ_MIB: u64 = 1;

#[test]
fn every_scenario_sees_its_writes_and_cleans_up() -> Result<(), Box<dyn std::error::Error>> {
    metafuse_testkit::require_fuse!(Ok(()));
    let redis = RedisServer::start()?;
    let files_root = tempfile::tempdir()?;
    let mountpoint = tempfile::tempdir()?;
    let output = Command::new(env!("CARGO_BIN_EXE_metafuse-bench"))
        .arg("mount")
        .args(["--redis-url", &redis.url()])
        .args(["--files", &N_FILES.to_string()])
        .arg("--files-root")
        .arg(files_root.path())
        .arg("--mountpoint")
        .arg(mountpoint.path())
        .args(["--latency-samples", &N_LATENCY_SAMPLES.to_string()])
        .args(["--read-mib", &READ_MIB.to_string()])
        .args(["--read-runs", "1"])
        .arg("--json")
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    // The seeding summary comes first; the JSON report is the rest.
    let json_start = stdout.find('{').ok_or("no JSON report")?;
    let report: Value = serde_json::from_str(&stdout[json_start..])?;

    assert_eq!(report["n_files"], N_FILES);
    let n_directories = report["n_directories"].as_u64().ok_or("n_directories")?;
    // The mountpoint itself, every directory and every file.
    assert_eq!(report["find"]["entries"], 1 + n_directories + N_FILES);

    assert_eq!(report["latency"]["lost"], 0);
    assert_eq!(
        report["latency"]["to_visible_via_stat"]["samples"],
        N_LATENCY_SAMPLES
    );

    let reads = report["read"].as_array().ok_or("read rows")?;
    let kinds: Vec<(bool, &str)> = reads
        .iter()
        .map(|read| {
            (
                read["passthrough_wanted"].as_bool().unwrap_or_default(),
                read["page_cache"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (true, "cold (fadvise DONTNEED)"),
            (true, "warm source"),
            (false, "cold (fadvise DONTNEED)"),
            (false, "warm source"),
        ]
    );
    assert!(reads.iter().all(|read| read["bytes"] == READ_MIB << 20));
    assert!(
        reads
            .iter()
            .filter(|read| read["passthrough_wanted"] == false)
            .all(|read| read["passthrough_active"] == false)
    );

    let mounts = std::fs::read_to_string("/proc/mounts")?;
    let mountpoint_text = mountpoint.path().canonicalize()?.display().to_string();
    assert!(
        !mounts
            .lines()
            .any(|line| line.split(' ').nth(1) == Some(mountpoint_text.as_str())),
        "{mountpoint_text} is still mounted"
    );
    let mut connection = redis.client().get_connection()?;
    let indexed: u64 = connection.scard("file:__index__")?;
    assert_eq!(indexed, N_FILES, "the probe files were not removed");
    Ok(())
}
