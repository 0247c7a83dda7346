//! The live tail against a real redis-server: concurrent writers, restarts,
//! trimming, malformed entries, rules changes.
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{bootstrap, contents, expected, last_generated_id, relevant};
use metafuse_stream::{Projection, Source, Strategy, Tail, TailEvent};
use metafuse_testkit::{Library, LibrarySpec, RedisServer, Writer};

/// Applies tail batches until the tail has read up to `target`.
async fn follow_until(tail: &mut Tail, projection: &mut Projection, target: &str) {
    let relevant = projection.relevant().clone();
    while tail.last_event_id() != target {
        match tail.next_batch(&relevant).await.unwrap() {
            TailEvent::Batch(batch) => {
                projection.apply_batch(batch.fetched());
                projection.record_events(batch.counts, &batch.last_event_id);
            }
            TailEvent::Resync { last_event_id } => panic!("unexpected resync at {last_event_id}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_during_bootstrap_are_not_lost() {
    let server = RedisServer::start().unwrap();
    let library = Library::generate(&LibrarySpec {
        n_files: 1500,
        seed: 11,
        churn: true,
    });
    let half = library.writes.len() / 2;
    let mut connection = server.client().get_connection().unwrap();
    library
        .write_range(&mut connection, "", 0..half, None)
        .unwrap();

    for strategy in [Strategy::Replay, Strategy::Snapshot] {
        let _: () = redis::cmd("FLUSHALL").query(&mut connection).unwrap();
        library
            .write_range(&mut connection, "", 0..half, None)
            .unwrap();
        let writer_library = library.clone();
        let mut writer_connection = server.client().get_connection().unwrap();
        let writer = std::thread::spawn(move || {
            let end = writer_library.writes.len();
            writer_library
                .write_range(&mut writer_connection, "", half..end, None)
                .unwrap();
        });
        let (mut projection, report) = bootstrap(&server.url(), "", strategy).await;
        writer.join().unwrap();
        let target = last_generated_id(&mut connection);
        let source = Source::connect(&server.url(), "").await.unwrap();
        let mut tail = source.tail(&report.last_event_id);
        follow_until(&mut tail, &mut projection, &target).await;
        assert_eq!(
            contents(&projection),
            expected(&library.truth(), &relevant()),
            "{strategy:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_survives_a_redis_restart_and_converges() {
    let mut server = RedisServer::start_persistent().unwrap();
    let library = Library::generate(&LibrarySpec {
        n_files: 200,
        seed: 12,
        churn: true,
    });
    let third = library.writes.len() / 3;
    let mut connection = server.client().get_connection().unwrap();
    library
        .write_range(&mut connection, "", 0..third, None)
        .unwrap();
    let (mut projection, report) = bootstrap(&server.url(), "", Strategy::Auto).await;
    let source = Source::connect(&server.url(), "").await.unwrap();
    let mut tail = source.tail(&report.last_event_id);
    tail.set_block(std::time::Duration::from_millis(100));

    library
        .write_range(&mut connection, "", third..2 * third, None)
        .unwrap();
    let target = last_generated_id(&mut connection);
    follow_until(&mut tail, &mut projection, &target).await;

    server.kill();
    // The tail keeps retrying while Redis is down, and resumes once it is back.
    let relevant = relevant();
    let pending = tokio::spawn(async move {
        let event = tail.next_batch(&relevant).await.unwrap();
        (tail, event)
    });
    server.restart().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    library
        .write_range(&mut connection, "", 2 * third..library.writes.len(), None)
        .unwrap();
    let (mut tail, event) = pending.await.unwrap();
    let TailEvent::Batch(batch) = event else {
        panic!("a persistent redis needs no resync")
    };
    projection.apply_batch(batch.fetched());
    projection.record_events(batch.counts, &batch.last_event_id);
    let target = last_generated_id(&mut connection);
    follow_until(&mut tail, &mut projection, &target).await;
    assert_eq!(
        contents(&projection),
        expected(&library.truth(), &common::relevant())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_trimmed_past_the_tail_asks_for_a_resync_and_a_snapshot_restores_the_truth() {
    let server = RedisServer::start().unwrap();
    let library = Library::generate(&LibrarySpec {
        n_files: 100,
        seed: 13,
        churn: false,
    });
    let half = library.writes.len() / 2;
    let mut connection = server.client().get_connection().unwrap();
    library
        .write_range(&mut connection, "", 0..half, None)
        .unwrap();
    let (_, report) = bootstrap(&server.url(), "", Strategy::Replay).await;
    let mut source = Source::connect(&server.url(), "").await.unwrap();
    let mut tail = source.tail(&report.last_event_id);

    library
        .write_range(&mut connection, "", half..library.writes.len(), None)
        .unwrap();
    let _: () = redis::cmd("XTRIM")
        .arg("meta:events")
        .arg("MAXLEN")
        .arg(10)
        .query(&mut connection)
        .unwrap();
    let event = tail.next_batch(&relevant()).await.unwrap();
    assert!(
        matches!(event, TailEvent::Resync { ref last_event_id } if *last_event_id == report.last_event_id),
        "{event:?}"
    );

    let mut fresh = Projection::new(relevant());
    let report = source
        .bootstrap(&mut fresh, Strategy::Auto, |_| {})
        .await
        .unwrap();
    assert_eq!(report.strategy_used, Strategy::Snapshot);
    tail.resume_from(&report.last_event_id);
    assert_eq!(contents(&fresh), expected(&library.truth(), &relevant()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_counts_malformed_entries_and_moves_past_them() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    let (mut projection, report) = bootstrap(&server.url(), "", Strategy::Auto).await;
    let source = Source::connect(&server.url(), "").await.unwrap();
    let mut tail = source.tail(&report.last_event_id);
    // An entry without a key, then the write it did not describe.
    let _: () = redis::cmd("XADD")
        .arg("meta:events")
        .arg("*")
        .arg("type")
        .arg("oops")
        .query(&mut connection)
        .unwrap();
    Writer::new(&mut connection, "")
        .set("a", "filePath", "watch/a.mkv")
        .flush()
        .unwrap();
    let target = last_generated_id(&mut connection);
    follow_until(&mut tail, &mut projection, &target).await;
    assert_eq!(projection.stats().malformed_entries, 1);
    assert!(projection.file("a").unwrap().is_complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newly_relevant_properties_are_fetched_for_known_files() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    let library = Library::generate(&LibrarySpec::new(60));
    library.write_all(&mut connection, "p:", None).unwrap();
    let mut source = Source::connect(&server.url(), "p:").await.unwrap();
    let narrow = metafuse_stream::RelevantProperties::from_names(["title"]);
    let mut projection = Projection::new(narrow);
    source
        .bootstrap(&mut projection, Strategy::Replay, |_| {})
        .await
        .unwrap();

    let wide = metafuse_stream::RelevantProperties::from_names(["title", "video", "genres"]);
    let plan = projection.set_relevant(wide.clone());
    let values = source.fetch_plan(&plan).await.unwrap();
    projection.apply_batch(values.iter());
    assert_eq!(contents(&projection), expected(&library.truth(), &wide));
    assert!(
        projection
            .files()
            .any(|(_, file)| file.get("video/codec").is_some())
    );
}

/// Appends `n_entries` events about a property no rules use (cheap: nothing
/// to fetch) in one pipeline; returns the last id.
fn add_irrelevant_events(connection: &mut redis::Connection, n_entries: usize) -> String {
    let mut writer = Writer::new(connection, "");
    for index in 0..n_entries {
        writer.event("set", &format!("file:h{index}/notARelevantProperty"));
    }
    writer.flush().unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_reports_connection_reads_lag_and_reconnects() {
    let mut server = RedisServer::start_persistent().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    add_irrelevant_events(&mut connection, 3);
    let (_, report) = bootstrap(&server.url(), "", Strategy::Replay).await;
    let source = Source::connect(&server.url(), "").await.unwrap();
    let mut tail = source.tail(&report.last_event_id);
    tail.set_block(std::time::Duration::from_millis(100));
    let status = tail.status();
    assert!(!status.is_connected(), "nothing read yet");
    assert_eq!(status.last_entry_at(), None);
    assert_eq!(status.lag_entries(), None);

    let before_read = std::time::SystemTime::now();
    add_irrelevant_events(&mut connection, 1);
    let relevant = relevant();
    let TailEvent::Batch(batch) = tail.next_batch(&relevant).await.unwrap() else {
        panic!("no resync expected");
    };
    assert_eq!(batch.counts.n_events, 1);
    assert!(status.is_connected());
    assert!(status.last_entry_at().unwrap() >= before_read);
    assert_eq!(status.lag_entries(), Some(0), "caught up");

    // More entries than one XREAD takes: the lag is what is left.
    add_irrelevant_events(&mut connection, 10_005);
    let TailEvent::Batch(batch) = tail.next_batch(&relevant).await.unwrap() else {
        panic!("no resync expected");
    };
    assert_eq!(batch.counts.n_events, 10_000);
    assert_eq!(status.lag_entries(), Some(5), "10 005 added, 10 000 read");
    let TailEvent::Batch(batch) = tail.next_batch(&relevant).await.unwrap() else {
        panic!("no resync expected");
    };
    assert_eq!(batch.counts.n_events, 5);
    assert_eq!(status.lag_entries(), Some(0));
    assert_eq!(status.reconnects(), 0);

    server.kill();
    let pending = tokio::spawn(async move {
        let event = tail.next_batch(&relevant).await.unwrap();
        (tail, event)
    });
    server.restart().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    // One entry: the pending read may wake between the XADDs of a longer
    // pipeline and return only the first.
    let last_id = add_irrelevant_events(&mut connection, 1);
    let (tail, event) = pending.await.unwrap();
    assert!(matches!(event, TailEvent::Batch(_)));
    assert_eq!(tail.last_event_id(), last_id);
    assert!(status.is_connected());
    assert_eq!(status.reconnects(), 1, "one loss, one reconnection");
    assert_eq!(status.lag_entries(), Some(0));

    // A tail that takes over the handle continues its counters.
    let mut successor = source.tail(&last_id);
    successor.set_status(status.clone());
    assert_eq!(successor.status().reconnects(), 1);
}

/// The state task cancels reads whenever a command comes: a read cut short
/// while its `XREAD` waits (raw connection, reply still due) must lose
/// nothing, and the next read must not mistake a stale reply for its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_cancelled_while_waiting_lose_nothing() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    let first = Writer::new(&mut connection, "")
        .set_file("0a", &[("title", "Before"), ("filePath", "before.mkv")])
        .flush()
        .unwrap()
        .unwrap();
    let source = Source::connect(&server.url(), "").await.unwrap();
    let mut tail = source.tail(&first);
    tail.set_block(std::time::Duration::from_secs(2));
    let mut projection = Projection::new(relevant());
    let relevant_properties = projection.relevant().clone();
    // Cut short while blocked: nothing was written, so every read is
    // still waiting when it is dropped.
    for _ in 0..3 {
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            tail.next_batch(&relevant_properties),
        )
        .await;
        assert!(cancelled.is_err(), "nothing was written yet");
    }
    let mut writer = Writer::new(&mut connection, "");
    for index in 0..50 {
        writer.set_file(
            &format!("b{index:03}"),
            &[
                ("title", "After"),
                ("filePath", &format!("after-{index}.mkv")),
            ],
        );
    }
    let target = writer.flush().unwrap().unwrap();
    follow_until(&mut tail, &mut projection, &target).await;
    assert_eq!(projection.complete_count(), 50);
    // Moved back: a read waiting after the old position is not taken for
    // one after the new.
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        tail.next_batch(&relevant_properties),
    )
    .await;
    assert!(cancelled.is_err(), "nothing after the end");
    tail.resume_from(&first);
    let mut again = Projection::new(relevant());
    follow_until(&mut tail, &mut again, &target).await;
    assert_eq!(again.complete_count(), 50);
}

/// Polls `future` `n_polls` times, letting the runtime run in between, and
/// drops it unless it finished: a read cut short at whatever point it had
/// reached, as the state task's commands cut reads short.
async fn poll_then_drop<Output>(
    future: impl std::future::Future<Output = Output>,
    n_polls: usize,
) -> Option<Output> {
    let mut future = std::pin::pin!(future);
    for _ in 0..n_polls {
        let polled =
            std::future::poll_fn(|context| std::task::Poll::Ready(future.as_mut().poll(context)))
                .await;
        if let std::task::Poll::Ready(output) = polled {
            return Some(output);
        }
        tokio::task::yield_now().await;
    }
    None
}

/// A backlog is read with the next `XREAD` sent ahead, in the write of the
/// values' `MGET`s: reads cut short at every point of that (waiting for the
/// read-ahead reply, between the values and it, while fetching) lose no
/// entry and read none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_read_ahead_and_cut_short_anywhere_reads_every_entry_once() {
    let server = RedisServer::start().unwrap();
    let library = Library::generate(&LibrarySpec {
        n_files: 1500,
        seed: 21,
        churn: true,
    });
    let mut connection = server.client().get_connection().unwrap();
    library
        .write_range(&mut connection, "", 0..library.writes.len(), None)
        .unwrap();
    let n_entries: u64 = redis::cmd("XLEN")
        .arg(metafuse_stream::EVENTS_STREAM)
        .query(&mut connection)
        .unwrap();
    assert!(n_entries > 30_000, "several full reads: {n_entries}");
    let target = last_generated_id(&mut connection);
    let source = Source::connect(&server.url(), "").await.unwrap();
    let mut tail = source.tail("0-0");
    let mut projection = Projection::new(relevant());
    let relevant_properties = projection.relevant().clone();
    let (mut n_read, mut n_cut_short) = (0, 0);
    let mut n_polls = 1;
    while tail.last_event_id() != target {
        let event = match poll_then_drop(tail.next_batch(&relevant_properties), n_polls).await {
            Some(event) => event,
            None => {
                n_cut_short += 1;
                tail.next_batch(&relevant_properties).await
            }
        };
        n_polls = n_polls % 7 + 1;
        let TailEvent::Batch(batch) = event.unwrap() else {
            panic!("no resync expected");
        };
        n_read += batch.counts.n_events;
        projection.apply_batch(batch.fetched());
        projection.record_events(batch.counts, &batch.last_event_id);
    }
    assert_eq!(n_read, n_entries, "every entry read once");
    assert!(n_cut_short > 0, "some reads were cut short");
    assert_eq!(
        contents(&projection),
        expected(&library.truth(), &relevant())
    );
}

/// The `XREAD` sent ahead of a batch is answered before that batch's values
/// are asked for: a value changed after it was sent (here without an event,
/// to tell the two apart) is read as it is when the batch is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_read_with_their_batch_not_when_its_read_was_sent_ahead() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.client().get_connection().unwrap();
    add_irrelevant_events(&mut connection, 10_000);
    let mut writer = Writer::new(&mut connection, "");
    let title_key = writer.key("fresh", "title");
    let target = writer
        .set_file("fresh", &[("title", "Old"), ("filePath", "fresh.mkv")])
        .flush()
        .unwrap()
        .unwrap();
    let source = Source::connect(&server.url(), "").await.unwrap();
    let mut tail = source.tail("0-0");
    let relevant = relevant();
    let TailEvent::Batch(batch) = tail.next_batch(&relevant).await.unwrap() else {
        panic!("no resync expected");
    };
    assert_eq!(
        batch.counts.n_events, 10_000,
        "a full read: the next is sent ahead"
    );
    let _: () = redis::cmd("SET")
        .arg(&title_key)
        .arg("New")
        .query(&mut connection)
        .unwrap();
    let TailEvent::Batch(batch) = tail.next_batch(&relevant).await.unwrap() else {
        panic!("no resync expected");
    };
    assert_eq!(batch.last_event_id, target);
    let titles: Vec<_> = batch
        .fetched()
        .filter(|value| value.hash_id == "fresh" && value.property == "title")
        .map(|value| value.value)
        .collect();
    assert_eq!(titles, [Some("New")]);
}
