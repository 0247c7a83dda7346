//! Tree build and memory at scale, without Redis: the synthetic library
//! (heavy name collisions included) applied to a projection in batches,
//! then the tree built from it, reporting µs/file and the process's RSS.
//!
//! `cargo bench -p metafuse-benches --bench tree` (100k files); set
//! `METAFUSE_TREE_FILES=1000000` for the 1M case. Not a criterion bench: a
//! single build of a million files is the figure wanted, and RSS is only
//! meaningful for one build in a fresh process.

use std::sync::Arc;
use std::time::Instant;

use metafuse_rules::Rules;
use metafuse_state::{FetchedValue, Projection};
use metafuse_testkit::{Library, LibrarySpec};

/// `VmRSS` and `VmHWM` of this process in KiB (0 when unreadable).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let n_files: usize = std::env::var("METAFUSE_TREE_FILES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100_000);
    let library = Library::generate(&LibrarySpec {
        n_files,
        seed: 1,
        churn: true,
    });
    let rules = Arc::new(Rules::preset("default").expect("the default preset loads"));
    let (rss_before, _) = memory_kib();

    let started = Instant::now();
    let mut projection = Projection::new(rules.relevant_properties());
    for chunk in library.writes.chunks(10_000) {
        projection.apply_batch(chunk.iter().map(|write| FetchedValue {
            hash_id: &library.hash_ids[write.file as usize],
            property: write.property,
            value: write.value.as_deref(),
        }));
    }
    let projection_time = started.elapsed();
    let (rss_projection, _) = memory_kib();
    let n_complete = projection.complete_count();

    let started = Instant::now();
    let built = metafuse_vfs::Library::from_projection(projection, rules);
    let tree_time = started.elapsed();
    let (rss_tree, hwm) = memory_kib();

    let per_file = |time: std::time::Duration, n: usize| time.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!(
        "tree bench: {n_files} files ({} writes, {n_complete} complete, {} directories)",
        library.writes.len(),
        built.directory_count()
    );
    println!(
        "  projection apply: {:.3} s, {:.2} µs/write; RSS +{} KiB ({} B/file)",
        projection_time.as_secs_f64(),
        per_file(projection_time, library.writes.len()),
        rss_projection.saturating_sub(rss_before),
        rss_projection.saturating_sub(rss_before) * 1024 / n_complete.max(1) as u64
    );
    println!(
        "  tree build: {:.3} s, {:.2} µs/file; RSS +{} KiB ({} B/file); VmRSS {} KiB, VmHWM {} KiB",
        tree_time.as_secs_f64(),
        per_file(tree_time, n_complete),
        rss_tree.saturating_sub(rss_projection),
        rss_tree.saturating_sub(rss_projection) * 1024 / n_complete.max(1) as u64,
        rss_tree,
        hwm
    );
}
