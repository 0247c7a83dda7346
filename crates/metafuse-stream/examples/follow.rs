//! Bootstraps from Redis and follows the stream, printing deltas:
//! `cargo run -p metafuse-stream --example follow -- redis://127.0.0.1:6379/ [prefix]`
//!
//! Only `metafuse-stream` is needed: it re-exports the state and rules types.

use metafuse_stream::{Projection, Rules, Source, Strategy, TailEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let url = arguments
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let prefix = arguments.next().unwrap_or_default();

    let relevant = Rules::preset("default")?.relevant_properties();
    let mut projection = Projection::new(relevant.clone());
    let mut source = Source::connect(&url, &prefix).await?;
    let report = source
        .bootstrap(&mut projection, Strategy::Auto, |_| {})
        .await?;
    println!(
        "{} files visible after {:?} ({})",
        projection.complete_count(),
        report.elapsed,
        report.reason
    );

    let mut tail = source.tail(&report.last_event_id);
    loop {
        match tail.next_batch(&relevant).await? {
            TailEvent::Batch(batch) => {
                for delta in projection.apply_batch(batch.fetched()) {
                    println!("{delta:?}");
                }
                projection.record_events(batch.counts, &batch.last_event_id);
            }
            TailEvent::Resync { .. } => {
                let mut fresh = Projection::new(relevant.clone());
                let report = source
                    .bootstrap(&mut fresh, Strategy::Snapshot, |_| {})
                    .await?;
                projection = fresh;
                tail.resume_from(&report.last_event_id);
                println!(
                    "resynchronised: {} files visible",
                    projection.complete_count()
                );
            }
        }
    }
}
