//! TLS: a real redis-server listening with a certificate from a throwaway
//! CA. An unverifiable certificate is refused; told not to verify
//! (`#insecure`), every strategy and the tail work over TLS.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bootstrap, contents, expected, relevant};
use metafuse_stream::{Projection, Source, Strategy, TailEvent};
use metafuse_testkit::{Library, LibrarySpec, RedisServer, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_verify_certificates_and_bootstrap_and_tail_over_tls() {
    let server = RedisServer::start_tls().unwrap();
    let tls_url = server.tls_url().unwrap();
    let library = Library::generate(&LibrarySpec {
        churn: true,
        ..LibrarySpec::new(300)
    });
    let mut connection = server.client().get_connection().unwrap();
    library
        .write_range(&mut connection, "", 0..library.writes.len(), None)
        .unwrap();
    let want = expected(&library.truth(), &relevant());

    // Nobody trusts the throwaway CA: the certificate is refused.
    let refused = Source::connect(&tls_url, "").await.unwrap_err();
    assert!(refused.is_connection_error(), "{refused}");
    assert!(
        refused.to_string().to_lowercase().contains("certificate"),
        "{refused}"
    );

    let insecure = format!("{tls_url}#insecure");
    for strategy in [Strategy::Replay, Strategy::Snapshot, Strategy::Auto] {
        let (projection, report) = bootstrap(&insecure, "", strategy).await;
        assert_eq!(contents(&projection), want, "{strategy:?}: {report:?}");
    }

    // Live over TLS.
    let mut source = Source::connect(&insecure, "").await.unwrap();
    let mut projection = Projection::new(relevant());
    let report = source
        .bootstrap(&mut projection, Strategy::Auto, |_| {})
        .await
        .unwrap();
    let mut tail = source.tail(&report.last_event_id);
    let last = Writer::new(&mut connection, "")
        .set_file("over-tls", &[("title", "Heat"), ("fileType", "video")])
        .flush()
        .unwrap()
        .unwrap();
    let relevant = relevant();
    while tail.last_event_id() != last {
        match tail.next_batch(&relevant).await.unwrap() {
            TailEvent::Batch(batch) => {
                projection.apply_batch(batch.fetched());
                projection.record_events(batch.counts, &batch.last_event_id);
            }
            TailEvent::Resync { last_event_id } => panic!("unexpected resync at {last_event_id}"),
        }
    }
    assert_eq!(
        contents(&projection)
            .get("over-tls")
            .and_then(|file| file.get("title")),
        Some(&"Heat".to_owned())
    );
}
