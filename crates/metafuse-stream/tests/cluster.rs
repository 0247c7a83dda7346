//! Redis Cluster: a real cluster (3 masters, a replica each, a password)
//! started on loopback; every strategy and the tail must produce exactly
//! what the cluster holds, also across a failover of the master serving
//! `meta:events`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{contents, expected, relevant};
use metafuse_stream::{MetadataSource, Projection, RedisSource, Source, Strategy, TailEvent};
use metafuse_testkit::{Library, LibrarySpec, RedisCluster, write_library_to_cluster};

const PREFIX: &str = "mm:";

fn library() -> Library {
    Library::generate(&LibrarySpec {
        churn: true,
        ..LibrarySpec::new(1_500)
    })
}

/// Applies tail batches (a resync: a fresh snapshot) until the projection
/// holds what the cluster holds.
async fn follow_until_truth(
    source: &mut RedisSource,
    projection: &mut Projection,
    cluster: &RedisCluster,
) {
    let relevant = relevant();
    let want = expected(&cluster.read_truth(PREFIX).unwrap(), &relevant);
    while contents(projection) != want {
        match source.next_batch(&relevant).await.unwrap() {
            TailEvent::Batch(batch) => {
                projection.apply_batch(batch.fetched());
                projection.record_events(batch.counts, &batch.last_event_id);
            }
            TailEvent::Resync { .. } => {
                let mut fresh = Projection::new(relevant.clone());
                let report = source.bootstrap(&mut fresh, &|_| {}).await.unwrap();
                source.resume_from(&report.last_event_id);
                *projection = fresh;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_snapshot_auto_and_the_tail_match_the_cluster_across_a_failover() {
    let mut cluster = RedisCluster::start(3, 1, Some("s3cret")).unwrap();
    let library = library();
    let n_writes = library.writes.len();
    let (first, second) = (n_writes * 3 / 5, n_writes * 4 / 5);
    let mut writer = cluster.connection().unwrap();
    write_library_to_cluster(&mut writer, &library, PREFIX, 0..first).unwrap();
    let truth = cluster.read_truth(PREFIX).unwrap();
    assert_eq!(
        truth,
        library.truth_after(first),
        "the oracle reads what was written"
    );
    let want = expected(&truth, &relevant());
    assert!(want.len() > 500, "{} files", want.len());

    let url = cluster.url();
    for strategy in [Strategy::Replay, Strategy::Snapshot, Strategy::Auto] {
        let mut source = Source::connect(&url, PREFIX).await.unwrap();
        let mut projection = Projection::new(relevant());
        let report = source
            .bootstrap(&mut projection, strategy, |_| {})
            .await
            .unwrap();
        assert_eq!(contents(&projection), want, "{strategy:?}: {report:?}");
        let per_node = source.fetched_keys_per_node();
        assert_eq!(per_node.len(), 3, "every master fetched from: {per_node:?}");
    }

    // Live: writes after the bootstrap arrive through the tail.
    let mut source = RedisSource::connect(&url, PREFIX, Strategy::Auto)
        .await
        .unwrap();
    assert!(
        source.describe().contains("redis+cluster://:***@"),
        "{}",
        source.describe()
    );
    assert!(!source.describe().contains("s3cret"));
    let mut projection = Projection::new(relevant());
    let report = source.bootstrap(&mut projection, &|_| {}).await.unwrap();
    source.resume_from(&report.last_event_id);
    write_library_to_cluster(&mut writer, &library, PREFIX, first..second).unwrap();
    follow_until_truth(&mut source, &mut projection, &cluster).await;
    assert_eq!(
        contents(&projection),
        expected(&library.truth_after(second), &relevant())
    );

    // Failover of the master serving the stream, then more writes.
    let reconnects_before = source.tail_status().reconnects();
    let old_master = cluster.master_of("meta:events").unwrap();
    let new_master = tokio::task::spawn_blocking(move || {
        let new_master = cluster.fail_over_master_of("meta:events").unwrap();
        (cluster, new_master)
    });
    let (cluster, new_master) = new_master.await.unwrap();
    assert_ne!(old_master, new_master);
    let mut writer = cluster.connection().unwrap();
    write_library_to_cluster(&mut writer, &library, PREFIX, second..n_writes).unwrap();
    // The truth after a failover is what the cluster holds, read by the
    // oracle: on a loaded machine the test cluster has been seen to drop a
    // share of the writes acknowledged right after the switch (about 1 run
    // in 10, oracle and tail agreeing on the loss), which is the cluster's
    // doing, not ours. `follow_until_truth` returns once the projection
    // equals the oracle's reading.
    follow_until_truth(&mut source, &mut projection, &cluster).await;
    assert_eq!(
        contents(&projection),
        expected(&cluster.read_truth(PREFIX).unwrap(), &relevant())
    );
    assert!(
        source.tail_status().reconnects() > reconnects_before,
        "the tail moved to the new master"
    );
}
