//! Losses no new entry announces: an idle tail must notice them by itself
//! (a flush and a rewrite with lower ids, a trim to empty, an `XDEL` of
//! entries it never read), ask for a resynchronisation, and a snapshot then
//! gives exactly what Redis holds.
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::time::Duration;

use common::{bootstrap, contents, expected, last_generated_id, relevant};
use metafuse_stream::{Projection, Source, Strategy, TailEvent};
use metafuse_testkit::{Library, LibrarySpec, RedisServer, read_truth};

/// Writes a library, bootstraps, lets a tail reach the idle, verified state,
/// runs `damage`, and expects the tail to ask for a resync without any new
/// entry; then checks a snapshot against the truth.
async fn an_idle_tail_notices(damage: impl FnOnce(&mut redis::Connection, &str)) {
    let server = RedisServer::start().unwrap();
    let library = Library::generate(&LibrarySpec {
        n_files: 60,
        seed: 21,
        churn: false,
    });
    let mut connection = server.client().get_connection().unwrap();
    library.write_all(&mut connection, "", None).unwrap();
    let (_, report) = bootstrap(&server.url(), "", Strategy::Replay).await;
    let mut source = Source::connect(&server.url(), "").await.unwrap();
    let mut tail = source.tail(&report.last_event_id);
    // Short blocks: an idle verification every 50 ms.
    tail.set_block(Duration::from_millis(50));
    let status = tail.status();
    let pending = tokio::spawn(async move {
        let event = tail.next_batch(&relevant()).await.unwrap();
        (tail, event)
    });
    // Connected and verified: from here on only an idle check can notice.
    status
        .wait_for(|status| status.is_connected() && status.not_live_reason().is_none())
        .await;

    let some_file = library.truth().into_keys().next().unwrap();
    damage(&mut connection, &some_file);

    let (mut tail, event) = pending.await.unwrap();
    assert!(
        matches!(event, TailEvent::Resync { ref last_event_id } if *last_event_id == report.last_event_id),
        "{event:?}"
    );
    assert!(
        status
            .not_live_reason()
            .is_some_and(|reason| reason.contains("resynchronising")),
        "{:?}",
        status.not_live_reason()
    );
    let mut fresh = Projection::new(relevant());
    let report = source
        .bootstrap(&mut fresh, Strategy::Snapshot, |_| {})
        .await
        .unwrap();
    tail.resume_from(&report.last_event_id);
    assert_eq!(status.not_live_reason(), None);
    let truth = read_truth(&mut connection, "").unwrap();
    assert_eq!(contents(&fresh), expected(&truth, &relevant()));
}

/// The id right after `id`'s millisecond, so an explicit `XADD` goes last.
fn next_id(id: &str) -> String {
    let milliseconds: u64 = id.split('-').next().unwrap().parse().unwrap();
    format!("{}-0", milliseconds + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xdel_of_unread_entries_while_idle_is_noticed() {
    an_idle_tail_notices(|connection, hash_id| {
        let key = format!("file:{hash_id}/title");
        let id = next_id(&last_generated_id(connection));
        // The change and its entry land, and the entry is gone before any
        // reader could see it: the blocked XREAD is never woken.
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg("Deleted Before Read")
            .ignore()
            .cmd("XADD")
            .arg("meta:events")
            .arg(&id)
            .arg("type")
            .arg("set")
            .arg("key")
            .arg(&key)
            .ignore()
            .cmd("XDEL")
            .arg("meta:events")
            .arg(&id)
            .ignore()
            .query(connection)
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_to_empty_while_idle_is_noticed() {
    an_idle_tail_notices(|connection, hash_id| {
        let key = format!("file:{hash_id}/title");
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg("Trimmed Before Read")
            .ignore()
            .cmd("XADD")
            .arg("meta:events")
            .arg("*")
            .arg("type")
            .arg("set")
            .arg("key")
            .arg(&key)
            .ignore()
            .cmd("XTRIM")
            .arg("meta:events")
            .arg("MAXLEN")
            .arg(0)
            .ignore()
            .query(connection)
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_and_a_new_library_with_lower_ids_while_idle_is_noticed() {
    an_idle_tail_notices(|connection, _| {
        // A new library whose stream ids are all below our position.
        let mut pipeline = redis::pipe();
        pipeline.atomic().cmd("FLUSHALL").ignore();
        for index in 0..5 {
            let hash_id = format!("new{index}");
            for (sequence, (property, value)) in [
                ("title", format!("New {index}")),
                ("fileType", "video".to_owned()),
                ("filePath", format!("new/{index}.mkv")),
            ]
            .into_iter()
            .enumerate()
            {
                let key = format!("file:{hash_id}/{property}");
                pipeline.cmd("SET").arg(&key).arg(value).ignore();
                pipeline
                    .cmd("SADD")
                    .arg("file:__index__")
                    .arg(&hash_id)
                    .ignore();
                pipeline
                    .cmd("XADD")
                    .arg("meta:events")
                    .arg(format!("{}-{sequence}", index + 1))
                    .arg("type")
                    .arg("set")
                    .arg("key")
                    .arg(&key)
                    .ignore();
            }
        }
        let _: () = pipeline.query(connection).unwrap();
    })
    .await;
}
