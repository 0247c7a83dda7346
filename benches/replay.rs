//! Bootstrap against a private redis-server holding a 10k-file library with
//! churn: replay and snapshot, end to end.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metafuse_rules::Rules;
use metafuse_stream::{Projection, Source, Strategy};
use metafuse_testkit::{Library, LibrarySpec, RedisServer};

fn bootstrap(criterion: &mut Criterion) {
    let server = RedisServer::start().expect("redis-server starts");
    let library = Library::generate(&LibrarySpec {
        n_files: 10_000,
        seed: 1,
        churn: true,
    });
    let mut connection = server
        .client()
        .get_connection()
        .expect("connects to its own redis");
    library
        .write_all(&mut connection, "", None)
        .expect("seeds the library");
    let relevant = Rules::preset("default")
        .expect("the default preset loads")
        .relevant_properties();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime starts");
    let source = runtime
        .block_on(Source::connect(&server.url(), ""))
        .expect("connects");

    let mut group = criterion.benchmark_group("bootstrap 10k files");
    group.throughput(Throughput::Elements(library.writes.len() as u64));
    group.sample_size(10);
    for strategy in [Strategy::Replay, Strategy::Snapshot] {
        group.bench_function(strategy.name(), |bencher| {
            bencher.iter(|| {
                runtime.block_on(async {
                    let mut source = source.clone();
                    let mut projection = Projection::new(relevant.clone());
                    source
                        .bootstrap(&mut projection, strategy, |_| {})
                        .await
                        .expect("bootstraps");
                    projection
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bootstrap);
criterion_main!(benches);
