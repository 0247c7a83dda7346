//! The old design, re-implemented only as a baseline: `XREAD` 100 entries
//! at a time from `0`, and for every relevant event one sequential `GET`
//! into a map of maps. Never use this outside the benchmark.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use metafuse_stream::{RelevantProperties, parse_event_key};
use redis::streams::StreamReadReply;

pub(crate) struct BaselineRun {
    /// Events processed before the limit.
    pub(crate) n_events: u64,
    /// Entries in the stream.
    pub(crate) n_stream_entries: u64,
    /// Files known when stopped.
    pub(crate) n_files: usize,
    /// Time spent.
    pub(crate) measured: Duration,
    /// Time for the whole stream, extrapolated linearly if stopped early.
    pub(crate) extrapolated: Duration,
}

pub(crate) async fn run(
    url: &str,
    prefix: &str,
    relevant: &RelevantProperties,
    limit: u64,
) -> anyhow::Result<BaselineRun> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let n_stream_entries: u64 = redis::cmd("XLEN")
        .arg(metafuse_stream::EVENTS_STREAM)
        .query_async(&mut connection)
        .await?;
    let mut state: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut last_id = "0".to_owned();
    let mut n_events = 0u64;
    let started = Instant::now();
    'read: loop {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(metafuse_stream::EVENTS_STREAM)
            .arg(&last_id)
            .query_async(&mut connection)
            .await?;
        let Some(reply) = reply else { break };
        let Some(stream) = reply.keys.into_iter().next() else {
            break;
        };
        if stream.ids.is_empty() {
            break;
        }
        for entry in stream.ids {
            last_id = entry.id.clone();
            n_events += 1;
            let key: Option<String> = entry.get("key");
            if let Some(key) = key
                && let Ok((hash_id, property)) = parse_event_key(&key, prefix)
                && relevant.is_relevant(property)
            {
                let value: Option<String> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await?;
                let file = state.entry(hash_id.to_owned()).or_default();
                match value {
                    Some(value) if !value.is_empty() => {
                        file.insert(property.to_owned(), value);
                    }
                    _ => {
                        file.remove(property);
                    }
                }
            }
            if n_events >= limit {
                break 'read;
            }
        }
    }
    let measured = started.elapsed();
    let extrapolated = if n_events > 0 && n_events < n_stream_entries {
        measured.mul_f64(n_stream_entries as f64 / n_events as f64)
    } else {
        measured
    };
    Ok(BaselineRun {
        n_events,
        n_stream_entries,
        n_files: state.len(),
        measured,
        extrapolated,
    })
}
