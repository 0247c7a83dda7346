//! The API-mode source against the meta-core double over a real redis-server.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use metafuse_metacore::{MetaCoreConfig, MetaCoreSource};
use metafuse_rules::RelevantProperties;
use metafuse_source::{MetadataSource, TailEvent};
use metafuse_state::Projection;
use metafuse_testkit::{
    DoubleMode, Files, MetaCoreDouble, MetaCoreDoubleConfig, RedisServer, Writer, read_truth,
};

/// Failure guard only: awaited events normally arrive in milliseconds.
const GUARD: Duration = Duration::from_secs(60);
const RELEVANT: [&str; 3] = ["filePath", "title", "size"];

fn relevant() -> RelevantProperties {
    RelevantProperties::from_names(RELEVANT)
}

fn write_library(connection: &mut redis::Connection, n_files: usize) {
    let mut writer = Writer::new(connection, "");
    for n in 0..n_files {
        let hash_id = format!("h{n:05}");
        writer.set_file(
            &hash_id,
            &[
                ("filePath", format!("lib/{n}.mkv").as_str()),
                ("title", format!("Title {n}").as_str()),
                ("size", "1234"),
                ("plot", "not relevant"),
                ("titles/eng", "nested, not relevant"),
            ],
        );
        if n % 500 == 499 {
            writer.flush().unwrap();
        }
    }
    writer.flush().unwrap();
}

/// What the projection should hold: the truth's relevant properties.
fn expected(connection: &mut redis::Connection) -> Files {
    read_truth(connection, "")
        .unwrap()
        .into_iter()
        .filter_map(|(hash_id, properties)| {
            let kept: BTreeMap<String, String> = properties
                .into_iter()
                .filter(|(name, _)| RELEVANT.contains(&name.as_str()))
                .collect();
            (!kept.is_empty()).then_some((hash_id, kept))
        })
        .collect()
}

fn held(projection: &Projection) -> Files {
    projection
        .files()
        .map(|(hash_id, file)| {
            (
                hash_id.to_owned(),
                file.properties()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect(),
            )
        })
        .filter(|(_, properties): &(String, BTreeMap<String, String>)| !properties.is_empty())
        .collect()
}

fn config(double: &MetaCoreDouble) -> MetaCoreConfig {
    MetaCoreConfig {
        reconnect_initial_delay: Duration::from_millis(20),
        reconnect_max_delay: Duration::from_millis(200),
        ..MetaCoreConfig::new(double.url())
    }
}

async fn bootstrap(source: &mut MetaCoreSource) -> Projection {
    let mut projection = Projection::new(relevant());
    source
        .bootstrap(&mut projection, &|_progress| {})
        .await
        .unwrap();
    projection
}

/// Tails until the projection holds `target`; a resync rebuilds it.
/// Returns how many resyncs happened.
async fn converge(source: &mut MetaCoreSource, projection: &mut Projection, target: &Files) -> u32 {
    let relevant = relevant();
    let mut resyncs = 0;
    tokio::time::timeout(GUARD, async {
        while held(projection) != *target {
            match source.next_batch(&relevant).await {
                Ok(TailEvent::Batch(batch)) => {
                    projection.apply_batch(batch.fetched());
                    projection.record_events(batch.counts, &batch.last_event_id);
                }
                Ok(TailEvent::Resync { .. }) => {
                    resyncs += 1;
                    *projection = bootstrap(source).await;
                }
                Err(error) => panic!("tail failed: {error}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "did not converge: {} files held, {} expected",
            held(projection).len(),
            target.len()
        )
    });
    resyncs
}

#[tokio::test]
async fn bootstrap_is_exact_and_live_adds_moves_and_deletes_appear() {
    let redis = RedisServer::start().unwrap();
    let mut connection = redis.client().get_connection().unwrap();
    write_library(&mut connection, 600);
    let double = MetaCoreDouble::start(MetaCoreDoubleConfig::new(redis.url()))
        .await
        .unwrap();
    let mut source = MetaCoreSource::new(config(&double));
    let mut projection = bootstrap(&mut source).await;
    let truth = expected(&mut connection);
    assert_eq!(truth.len(), 600);
    assert_eq!(held(&projection), truth);
    assert_eq!(projection.complete_count(), 600);

    Writer::new(&mut connection, "")
        .set_file("new", &[("filePath", "lib/new.mkv"), ("title", "New")])
        .set("h00001", "filePath", "moved/1.mkv")
        .del("h00002", "filePath")
        .del("h00002", "title")
        .del("h00002", "size")
        .set("h00003", "plot", "irrelevant change")
        .flush()
        .unwrap();
    let truth = expected(&mut connection);
    converge(&mut source, &mut projection, &truth).await;
    assert!(
        projection
            .file("h00002")
            .is_none_or(|file| !file.is_complete())
    );
    assert_eq!(
        projection.file("h00001").unwrap().get("filePath"),
        Some("moved/1.mkv")
    );
}

#[tokio::test]
async fn writes_made_during_the_bootstrap_are_not_lost() {
    let redis = RedisServer::start().unwrap();
    let mut connection = redis.client().get_connection().unwrap();
    write_library(&mut connection, 1000);
    let double = MetaCoreDouble::start(MetaCoreDoubleConfig::new(redis.url()))
        .await
        .unwrap();
    let writer_client = redis.client();
    // Writes that overlap the bootstrap: each changes a file's title and
    // moves another, so a lost event leaves a wrong value behind.
    let writes = std::thread::spawn(move || {
        let mut connection = writer_client.get_connection().unwrap();
        for round in 0..200 {
            let hash_id = format!("h{:05}", (round * 7) % 1000);
            Writer::new(&mut connection, "")
                .set(&hash_id, "title", &format!("changed {round}"))
                .set(
                    &format!("h{:05}", (round * 11) % 1000),
                    "filePath",
                    &format!("moved/{round}.mkv"),
                )
                .flush()
                .unwrap();
        }
    });
    let mut source = MetaCoreSource::new(config(&double));
    let mut projection = bootstrap(&mut source).await;
    writes.join().unwrap();
    let truth = expected(&mut connection);
    converge(&mut source, &mut projection, &truth).await;
}

#[tokio::test]
async fn a_trimmed_position_resynchronises_to_the_exact_state() {
    let redis = RedisServer::start().unwrap();
    let mut connection = redis.client().get_connection().unwrap();
    write_library(&mut connection, 200);
    let mut double = MetaCoreDouble::start(MetaCoreDoubleConfig::new(redis.url()))
        .await
        .unwrap();
    let mut source = MetaCoreSource::new(config(&double));
    let mut projection = bootstrap(&mut source).await;
    // While meta-core is away, many writes happen and the stream is trimmed
    // past our position.
    double.stop();
    Writer::new(&mut connection, "")
        .set("h00010", "title", "while away")
        .del("h00011", "filePath")
        .set_file("fresh", &[("filePath", "lib/fresh.mkv")])
        .flush()
        .unwrap();
    let _: u64 = redis::cmd("XTRIM")
        .arg("meta:events")
        .arg("MAXLEN")
        .arg(1)
        .query(&mut connection)
        .unwrap();
    double.restart().await.unwrap();
    let truth = expected(&mut connection);
    let resyncs = converge(&mut source, &mut projection, &truth).await;
    assert!(resyncs >= 1, "the gap was seen as a resync");
}

#[tokio::test]
async fn a_meta_core_answering_503_then_back_converges() {
    let redis = RedisServer::start().unwrap();
    let mut connection = redis.client().get_connection().unwrap();
    write_library(&mut connection, 100);
    let double = MetaCoreDouble::start(MetaCoreDoubleConfig {
        read_block: Duration::from_millis(50),
        ..MetaCoreDoubleConfig::new(redis.url())
    })
    .await
    .unwrap();
    let mut source = MetaCoreSource::new(config(&double));
    let mut projection = bootstrap(&mut source).await;
    let opened_before = double.event_streams_opened();
    double.set_mode(DoubleMode::Unavailable);
    // Back after the stream was refused at least once.
    tokio::time::timeout(
        GUARD,
        double.wait_for_event_stream_requests(opened_before + 1),
    )
    .await
    .unwrap();
    // Written after the old stream closed: only a new stream brings it.
    Writer::new(&mut connection, "")
        .set("h00005", "title", "during the outage")
        .flush()
        .unwrap();
    double.set_mode(DoubleMode::Normal);
    let truth = expected(&mut connection);
    converge(&mut source, &mut projection, &truth).await;
    assert!(double.event_streams_opened() > opened_before);
    assert!(source.tail_status().reconnects() >= 1);
}

#[tokio::test]
async fn a_hung_connection_is_detected_by_the_watchdog() {
    let redis = RedisServer::start().unwrap();
    let mut connection = redis.client().get_connection().unwrap();
    write_library(&mut connection, 50);
    let double = MetaCoreDouble::start(MetaCoreDoubleConfig {
        read_block: Duration::from_millis(50),
        ..MetaCoreDoubleConfig::new(redis.url())
    })
    .await
    .unwrap();
    let mut source = MetaCoreSource::new(MetaCoreConfig {
        watchdog: Duration::from_millis(500),
        ..config(&double)
    });
    let mut projection = bootstrap(&mut source).await;
    double.set_mode(DoubleMode::Hang);
    double.wait_for_hung_streams(1).await;
    // The hung stream never speaks again: only a reconnect brings this.
    double.set_mode(DoubleMode::Normal);
    Writer::new(&mut connection, "")
        .set("h00007", "title", "after the hang")
        .flush()
        .unwrap();
    let truth = expected(&mut connection);
    converge(&mut source, &mut projection, &truth).await;
    assert!(double.event_streams_opened() >= 2);
}

#[tokio::test]
async fn a_bootstrap_over_a_trimmed_stream_needs_no_resync_but_a_trimmed_resume_does() {
    let redis = RedisServer::start().unwrap();
    let mut connection = redis.client().get_connection().unwrap();
    write_library(&mut connection, 100);
    Writer::new(&mut connection, "")
        .set("h00001", "title", "kept")
        .flush()
        .unwrap();
    // The stream now starts after the library's writes: a bootstrap's start
    // is older than the oldest entry, and the double answers with a gap.
    let _: u64 = redis::cmd("XTRIM")
        .arg("meta:events")
        .arg("MAXLEN")
        .arg(1)
        .query(&mut connection)
        .unwrap();
    let double = MetaCoreDouble::start(MetaCoreDoubleConfig::new(redis.url()))
        .await
        .unwrap();
    let mut source = MetaCoreSource::new(config(&double));
    let mut projection = bootstrap(&mut source).await;
    Writer::new(&mut connection, "")
        .set("h00002", "title", "live")
        .flush()
        .unwrap();
    let truth = expected(&mut connection);
    assert_eq!(converge(&mut source, &mut projection, &truth).await, 0);

    // A warm restart from a position older than the stream: resync.
    let mut restarted = MetaCoreSource::new(config(&double));
    let mut from_checkpoint = projection.clone();
    restarted.resume_from("1-0");
    Writer::new(&mut connection, "")
        .set("h00003", "title", "after restart")
        .flush()
        .unwrap();
    let truth = expected(&mut connection);
    assert!(converge(&mut restarted, &mut from_checkpoint, &truth).await >= 1);
}
