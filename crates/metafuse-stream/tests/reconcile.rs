//! Files whose keys exist but which `file:__index__` does not list: a
//! replay holds them, a snapshot does not, and a snapshot followed by the
//! reconciliation holds exactly what the replay does — on one Redis, a
//! Redis Cluster (every master walked) and behind Sentinel.
#![allow(clippy::unwrap_used)]

mod common;

use common::{contents, expected, relevant};
use metafuse_stream::{Projection, Reconciler, Source, Strategy};
use metafuse_testkit::{
    Library, LibrarySpec, RedisCluster, RedisSentinels, RedisServer, read_truth,
    write_library_to_cluster,
};

const PREFIX: &str = "mm:";
const N_UNINDEXED: usize = 64;

fn library() -> Library {
    Library::generate(&LibrarySpec::new(400))
}

/// Takes `N_UNINDEXED` files with a `filePath` out of the index, their keys
/// left as they are; returns their hashIds, sorted.
fn unindex(library: &Library, connection: &mut impl redis::ConnectionLike) -> Vec<String> {
    let truth = library.truth();
    let mut chosen: Vec<String> = truth
        .iter()
        .filter(|(_, properties)| properties.contains_key("filePath"))
        .map(|(hash_id, _)| hash_id.clone())
        .step_by(5)
        .take(N_UNINDEXED)
        .collect();
    assert_eq!(chosen.len(), N_UNINDEXED);
    let removed: usize = redis::cmd("SREM")
        .arg(metafuse_state::index_key(PREFIX))
        .arg(&chosen)
        .query(connection)
        .unwrap();
    assert_eq!(removed, N_UNINDEXED);
    chosen.sort();
    chosen
}

/// Replay, snapshot, snapshot + reconciliation against `url`; the truth is
/// what the keys hold.
async fn check(url: &str, truth: &common::Files, unindexed: &[String]) {
    let want = expected(truth, &relevant());
    let mut source = Source::connect(url, PREFIX).await.unwrap();
    let mut replayed = Projection::new(relevant());
    source
        .bootstrap(&mut replayed, Strategy::Replay, |_| {})
        .await
        .unwrap();
    assert_eq!(contents(&replayed), want, "a replay sees every file");

    let mut snapshot = Projection::new(relevant());
    source
        .bootstrap(&mut snapshot, Strategy::Snapshot, |_| {})
        .await
        .unwrap();
    let missing = want
        .keys()
        .filter(|hash_id| !contents(&snapshot).contains_key(*hash_id))
        .count();
    assert_eq!(missing, N_UNINDEXED, "a snapshot alone misses them");

    let mut found = source.reconciler().unindexed_hash_ids().await.unwrap();
    found.sort();
    assert_eq!(found, unindexed);
    let plan = Reconciler::fetch_plan(found, snapshot.relevant());
    let values = source.fetch_plan(&plan).await.unwrap();
    snapshot.apply_batch(values.iter());
    assert_eq!(contents(&snapshot), want, "reconciled = replayed = truth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_and_its_reconciliation_hold_what_a_replay_does_on_one_redis() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    let library = library();
    library.write_all(&mut connection, PREFIX, None).unwrap();
    let unindexed = unindex(&library, &mut connection);
    let truth = read_truth(&mut connection, PREFIX).unwrap();
    check(&server.url(), &truth, &unindexed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_walks_every_master_of_a_cluster() {
    let cluster = RedisCluster::start(3, 0, Some("s3cret")).unwrap();
    let library = library();
    let mut connection = cluster.connection().unwrap();
    write_library_to_cluster(&mut connection, &library, PREFIX, 0..library.writes.len()).unwrap();
    let unindexed = unindex(&library, &mut connection);
    let masters: std::collections::BTreeSet<u16> = unindexed
        .iter()
        .map(|hash_id| {
            cluster
                .master_of(&format!("{PREFIX}file:{hash_id}/filePath"))
                .unwrap()
        })
        .collect();
    assert_eq!(masters.len(), 3, "the unindexed files live on every master");
    let truth = cluster.read_truth(PREFIX).unwrap();
    check(&cluster.url(), &truth, &unindexed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_reads_the_master_sentinel_names() {
    let sentinels = RedisSentinels::start(Some("s3cret")).unwrap();
    let library = library();
    let mut connection = sentinels.master_connection().unwrap();
    library.write_all(&mut connection, PREFIX, None).unwrap();
    let unindexed = unindex(&library, &mut connection);
    let truth = read_truth(&mut connection, PREFIX).unwrap();
    check(&sentinels.url(), &truth, &unindexed).await;
}
