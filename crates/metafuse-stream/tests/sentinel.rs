//! Redis Sentinel: one master, one replica, three sentinels on loopback, a
//! password; the source follows a `SENTINEL FAILOVER` during the tail and
//! converges, writes made after the switch included.
#![allow(clippy::unwrap_used)]

mod common;

use common::{contents, expected, relevant};
use metafuse_stream::{MetadataSource, Projection, RedisSource, Strategy, TailEvent};
use metafuse_testkit::{Library, LibrarySpec, RedisSentinels, read_truth};

const PREFIX: &str = "";

async fn follow_until(source: &mut RedisSource, projection: &mut Projection, want: &common::Files) {
    let relevant = relevant();
    while contents(projection) != *want {
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
async fn the_tail_follows_a_sentinel_failover_and_converges() {
    let sentinels = RedisSentinels::start(Some("s3cret")).unwrap();
    let library = Library::generate(&LibrarySpec {
        churn: true,
        ..LibrarySpec::new(500)
    });
    let n_writes = library.writes.len();
    let (first, second) = (n_writes / 2, n_writes * 3 / 4);
    let mut writer = sentinels.master_connection().unwrap();
    library
        .write_range(&mut writer, PREFIX, 0..first, None)
        .unwrap();

    let url = sentinels.url();
    let mut source = RedisSource::connect(&url, PREFIX, Strategy::Auto)
        .await
        .unwrap();
    assert!(
        source.describe().starts_with("redis+sentinel://:***@"),
        "{}",
        source.describe()
    );
    let mut projection = Projection::new(relevant());
    let report = source.bootstrap(&mut projection, &|_| {}).await.unwrap();
    source.resume_from(&report.last_event_id);
    assert_eq!(
        contents(&projection),
        expected(&library.truth_after(first), &relevant())
    );

    library
        .write_range(&mut writer, PREFIX, first..second, None)
        .unwrap();
    follow_until(
        &mut source,
        &mut projection,
        &expected(&library.truth_after(second), &relevant()),
    )
    .await;

    let reconnects_before = source.tail_status().reconnects();
    let old_master = sentinels.master_port().unwrap();
    let (sentinels, new_master) = tokio::task::spawn_blocking(move || {
        let new_master = sentinels.fail_over().unwrap();
        (sentinels, new_master)
    })
    .await
    .unwrap();
    assert_ne!(old_master, new_master);
    let mut writer = sentinels.master_connection().unwrap();
    library
        .write_range(&mut writer, PREFIX, second..n_writes, None)
        .unwrap();
    metafuse_testkit::Writer::new(&mut writer, PREFIX)
        .set_file("after-switch", &[("title", "Heat"), ("fileType", "video")])
        .flush()
        .unwrap();
    // A forced failover may lose what the replica had not yet received, so
    // the truth is what the new master holds, read independently.
    let truth = read_truth(&mut writer, PREFIX).unwrap();
    assert!(truth.contains_key("after-switch"));
    follow_until(&mut source, &mut projection, &expected(&truth, &relevant())).await;
    assert!(contents(&projection).contains_key("after-switch"));
    assert!(
        source.tail_status().reconnects() > reconnects_before,
        "the tail moved to the new master"
    );
}
