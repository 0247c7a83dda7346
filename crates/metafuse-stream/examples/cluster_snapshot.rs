//! Snapshot time of one library held by one Redis node and by a 3-master
//! Redis Cluster, both started here on loopback, same run.
//!
//! `cargo run --release -p metafuse-stream --example cluster_snapshot -- 100000`
//!
//! The cluster is measured with several snapshot batch sizes (files per
//! batch): an `MGET` there holds the keys of one slot only, so the batch
//! size decides how many keys each one carries.
//!
//! For big libraries, fewer runs and batch sizes:
//! `METAFUSE_BENCH_RUNS=1 METAFUSE_BENCH_BATCHES=1000 cargo run --release -p metafuse-stream --example cluster_snapshot -- 1000000`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use metafuse_stream::{Projection, Rules, Source, Strategy};
use metafuse_testkit::{Library, LibrarySpec, RedisCluster, RedisServer, write_library_to_cluster};

/// Runs per configuration, `METAFUSE_BENCH_RUNS` (default 3; the median counts).
fn runs() -> usize {
    std::env::var("METAFUSE_BENCH_RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .filter(|runs| *runs > 0)
        .unwrap_or(3)
}

/// Files per cluster snapshot batch to try, `METAFUSE_BENCH_BATCHES`
/// (comma-separated; default the current default, then larger).
fn batch_sizes() -> Vec<usize> {
    std::env::var("METAFUSE_BENCH_BATCHES")
        .ok()
        .map(|text| {
            text.split(',')
                .filter_map(|size| size.trim().parse().ok())
                .collect()
        })
        .filter(|sizes: &Vec<usize>| !sizes.is_empty())
        .unwrap_or_else(|| vec![1_000, 8_000, 32_000])
}

async fn snapshot_times(
    url: &str,
    files_per_batch: Option<usize>,
    relevant: &metafuse_stream::RelevantProperties,
) -> Vec<Duration> {
    let mut times = Vec::new();
    for _ in 0..runs() {
        let mut source = Source::connect(url, "").await.unwrap();
        if let Some(n_files) = files_per_batch {
            source.set_files_per_snapshot_batch(n_files);
        }
        let mut projection = Projection::new(relevant.clone());
        let started = Instant::now();
        source
            .bootstrap(&mut projection, Strategy::Snapshot, |_| {})
            .await
            .unwrap();
        times.push(started.elapsed());
        println!(
            "  {url} (batch {files_per_batch:?}): {} files in {:?}",
            projection.complete_count(),
            started.elapsed()
        );
    }
    times.sort();
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n_files: usize = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(100_000);
    let relevant = Rules::preset("default").unwrap().relevant_properties();
    let library = Library::generate(&LibrarySpec::new(n_files));
    println!("{n_files} files, {} writes", library.writes.len());

    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    library.write_all(&mut connection, "", None).unwrap();
    let cluster = RedisCluster::start(3, 0, None).unwrap();
    let mut cluster_connection = cluster.connection().unwrap();
    write_library_to_cluster(
        &mut cluster_connection,
        &library,
        "",
        0..library.writes.len(),
    )
    .unwrap();
    println!("written");

    let single = snapshot_times(&server.url(), None, &relevant).await;
    let median = runs() / 2;
    let mut line = format!(
        "snapshot of {n_files} files, median of {}: one node {:?}",
        runs(),
        single[median]
    );
    for files_per_batch in batch_sizes() {
        let clustered = snapshot_times(&cluster.url(), Some(files_per_batch), &relevant).await;
        line.push_str(&format!(
            ", 3-master cluster with {files_per_batch}-file batches {:?} ({:.2}x)",
            clustered[median],
            clustered[median].as_secs_f64() / single[median].as_secs_f64()
        ));
    }
    println!("{line}");
}
