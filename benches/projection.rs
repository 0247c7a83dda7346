//! The pure projection: stream-shaped values applied per second, without
//! Redis, on a synthetic 20k-file library with churn.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metafuse_rules::Rules;
use metafuse_state::{FetchedValue, Projection};
use metafuse_testkit::{Library, LibrarySpec};

fn apply_library(criterion: &mut Criterion) {
    let library = Library::generate(&LibrarySpec {
        n_files: 20_000,
        seed: 1,
        churn: true,
    });
    let relevant = Rules::preset("default")
        .expect("the default preset loads")
        .relevant_properties();
    let mut group = criterion.benchmark_group("projection");
    group.throughput(Throughput::Elements(library.writes.len() as u64));
    group.sample_size(20);
    group.bench_function("apply_batch 20k files with churn", |bencher| {
        bencher.iter(|| {
            let mut projection = Projection::new(relevant.clone());
            for chunk in library.writes.chunks(10_000) {
                projection.apply_batch(chunk.iter().map(|write| FetchedValue {
                    hash_id: &library.hash_ids[write.file as usize],
                    property: write.property,
                    value: write.value.as_deref(),
                }));
            }
            projection
        });
    });
    group.finish();

    let mut projection = Projection::new(relevant);
    for write in &library.writes {
        projection.apply(
            &library.hash_ids[write.file as usize],
            write.property,
            write.value.as_deref(),
        );
    }
    let stats = projection.stats();
    eprintln!(
        "projection of {} files: {} bytes, {} bytes per file",
        stats.file_count,
        stats.state_size,
        stats.state_size / stats.file_count.max(1)
    );
}

criterion_group!(benches, apply_library);
criterion_main!(benches);
