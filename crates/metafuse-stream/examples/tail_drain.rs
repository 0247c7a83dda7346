//! The live tail draining a whole stream as a backlog, as
//! `metafuse-bench scale` measures it, without the rest of `scale`:
//!
//! `cargo run --release -p metafuse-stream --example tail_drain -- redis://127.0.0.1:6399/ [runs]`
//!
//! Seed the Redis first (`metafuse-bench seed --files 100000 --redis-url …`).
//! Prints one line per run: events, relevant events and values per second.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use metafuse_stream::{EVENTS_STREAM, MetadataSource, RedisSource, Rules, Strategy, TailEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let url = arguments
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let runs: usize = arguments
        .next()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(3);
    let raw = std::env::var("METAFUSE_TAIL_TYPED").is_err();

    let relevant = Rules::preset("default")?.relevant_properties();
    let mut admin = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(EVENTS_STREAM)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut admin)
        .await?;
    let Some((end_id, _)) = last.into_iter().next() else {
        return Err("the stream is empty".into());
    };
    for _ in 0..runs {
        let mut source = RedisSource::connect(&url, "", Strategy::Auto).await?;
        source.set_raw_tail_reads(raw);
        source.resume_from("0-0");
        let (mut n_events, mut n_relevant, mut n_values) = (0_u64, 0_u64, 0_u64);
        let started = Instant::now();
        loop {
            match source.next_batch(&relevant).await? {
                TailEvent::Batch(batch) => {
                    n_events += batch.counts.n_events;
                    n_relevant +=
                        batch.counts.n_events - batch.counts.n_skipped - batch.counts.n_malformed;
                    n_values += batch.fetched().count() as u64;
                    if batch.last_event_id == end_id {
                        break;
                    }
                }
                TailEvent::Resync { .. } => return Err("resync while draining".into()),
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{n_events} events in {seconds:.3} s: {:.0}k events/s, {:.0}k relevant/s, {n_values} values",
            n_events as f64 / seconds / 1e3,
            n_relevant as f64 / seconds / 1e3,
        );
    }
    Ok(())
}
