//! Physical anchors for benchmarks: how fast Redis itself hands out what a
//! bootstrap and the tail read, measured with the raw RESP connection and
//! nothing else (values skipped, not kept). A figure of metafuse is judged
//! against these, measured on the same server in the same run.

use std::time::{Duration, Instant};

use metafuse_rules::RelevantProperties;
use metafuse_state::{EVENTS_STREAM, index_key};

use crate::entries::RelevantKey;
use crate::error::StreamError;
use crate::resp::{Frame, RespConnection, Short, server_error};
use crate::source::snapshot_names;

/// Generous: an anchor reads everything Redis holds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Keys per `MGET`, and `MGET`s per pipelined window: the snapshot's own
/// sizes (512 keys, batches of 1,000 files × names).
const KEYS_PER_MGET: usize = 512;
const MGETS_PER_WINDOW: usize = 32;

/// What one anchor read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnchorFigures {
    /// Items read: stream entries, or keys asked for.
    pub n_items: u64,
    /// Of those, the ones that held a value (`MGET`), or all (`XRANGE`).
    pub n_present: u64,
    /// Time of the timed part (the reads), not of the preparation.
    pub elapsed: Duration,
}

impl AnchorFigures {
    /// Items per second.
    pub fn rate(&self) -> f64 {
        self.n_items as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn open(url: &str) -> Result<RespConnection, StreamError> {
    let client = redis::Client::open(url).map_err(StreamError::command("connect"))?;
    RespConnection::open(&client, RESPONSE_TIMEOUT)
        .await
        .map_err(StreamError::command("connect"))?
        .ok_or_else(|| StreamError::UnexpectedReply {
            operation: "connect",
            reply: "anchors speak plain TCP or Unix sockets only".to_owned(),
        })
}

fn protocol(operation: &'static str, what: &str) -> StreamError {
    StreamError::UnexpectedReply {
        operation,
        reply: what.to_owned(),
    }
}

/// Pipelined `MGET`s of exactly the keys a snapshot asks for (every indexed
/// file × the names `relevant` needs), in the snapshot's chunk sizes, on one
/// raw connection. Listing the index and building the keys is not timed.
pub async fn raw_snapshot_mget(
    url: &str,
    prefix: &str,
    relevant: &RelevantProperties,
) -> Result<AnchorFigures, StreamError> {
    let client = redis::Client::open(url).map_err(StreamError::command("connect"))?;
    // No response timeout: listing a big index takes a while.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut admin = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(StreamError::command("connect"))?;
    let hash_ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(index_key(prefix))
        .query_async(&mut admin)
        .await
        .map_err(StreamError::command("SMEMBERS file:__index__"))?;
    let names = snapshot_names(relevant);
    let mut buffer = String::new();
    let mut keys = Vec::with_capacity(hash_ids.len() * names.len());
    for hash_id in hash_ids.iter().filter(|hash_id| !hash_id.contains('/')) {
        for name in &names {
            if let Ok(key) = RelevantKey::build(&mut buffer, prefix, hash_id, name) {
                keys.push(key.key);
            }
        }
    }
    drop(hash_ids);
    let mut connection = open(url).await?;
    let mut figures = AnchorFigures::default();
    let started = Instant::now();
    for window in keys.chunks(KEYS_PER_MGET * MGETS_PER_WINDOW) {
        let chunks: Vec<&[String]> = window.chunks(KEYS_PER_MGET).collect();
        for chunk in &chunks {
            connection.push_command(
                1 + chunk.len(),
                std::iter::once(&b"MGET"[..]).chain(chunk.iter().map(|key| key.as_bytes())),
            );
        }
        connection
            .send_request()
            .await
            .map_err(StreamError::command("MGET"))?;
        for _ in &chunks {
            let n_present = connection
                .read_reply(|reader| match reader.frame()? {
                    Frame::Array(n_values) => {
                        let mut n_present = 0_u64;
                        for _ in 0..n_values {
                            match reader.frame()? {
                                Frame::Bulk(_) => n_present += 1,
                                Frame::Nil => {}
                                _ => return Err(Short::Protocol("an MGET value is not a string")),
                            }
                        }
                        Ok(Ok(n_present))
                    }
                    Frame::Error(line) => Ok(Err(server_error(line))),
                    _ => Err(Short::Protocol("an MGET reply is not an array")),
                })
                .await
                .map_err(StreamError::command("MGET"))?
                .map_err(StreamError::command("MGET"))?;
            figures.n_present += n_present;
        }
        figures.n_items += window.len() as u64;
    }
    figures.elapsed = started.elapsed();
    Ok(figures)
}

/// Reads the whole `meta:events` stream with `XRANGE` pages of `page`
/// entries on one raw connection, skipping the fields.
pub async fn raw_xrange(url: &str, page: usize) -> Result<AnchorFigures, StreamError> {
    let mut connection = open(url).await?;
    let page_text = page.max(1).to_string();
    let mut start = "-".to_owned();
    let mut figures = AnchorFigures::default();
    let started = Instant::now();
    loop {
        connection.push_command(
            6,
            [
                &b"XRANGE"[..],
                EVENTS_STREAM.as_bytes(),
                start.as_bytes(),
                b"+",
                b"COUNT",
                page_text.as_bytes(),
            ],
        );
        connection
            .send_request()
            .await
            .map_err(StreamError::command("XRANGE"))?;
        let (n_entries, last_id) = connection
            .read_reply(|reader| {
                let n_entries = match reader.frame()? {
                    Frame::Array(n_entries) => n_entries,
                    Frame::Nil => 0,
                    Frame::Error(_) => return Ok(Err("an error reply")),
                    _ => return Ok(Err("not an array")),
                };
                let mut last_id = None;
                for _ in 0..n_entries {
                    if reader.frame()? != Frame::Array(2) {
                        return Ok(Err("an entry is not [id, fields]"));
                    }
                    let Frame::Bulk(id) = reader.frame()? else {
                        return Ok(Err("an entry id is not a string"));
                    };
                    last_id = Some(id);
                    let fields = reader.frame()?;
                    reader.skip_children(fields)?;
                }
                Ok(Ok((n_entries, last_id.map(<[u8]>::to_vec))))
            })
            .await
            .map_err(StreamError::command("XRANGE"))?
            .map_err(|what| protocol("XRANGE", what))?;
        figures.n_items += n_entries as u64;
        match last_id {
            Some(last_id) if n_entries >= page.max(1) => {
                start = format!("({}", String::from_utf8_lossy(&last_id));
            }
            _ => break,
        }
    }
    figures.n_present = figures.n_items;
    figures.elapsed = started.elapsed();
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn anchors_read_every_entry_and_every_snapshot_key() {
        let server = metafuse_testkit::RedisServer::start().unwrap();
        let mut connection = server.client().get_connection().unwrap();
        let mut writer = metafuse_testkit::Writer::new(&mut connection, "");
        for index in 0..30 {
            writer.set_file(
                &format!("{index:032x}"),
                &[("title", "A"), ("filePath", "a.mkv")],
            );
        }
        writer.flush().unwrap();
        let xrange = raw_xrange(&server.url(), 7).await.unwrap();
        assert_eq!(xrange.n_items, 60);
        let relevant = RelevantProperties::from_names(["title", "movieYear"]);
        let mget = raw_snapshot_mget(&server.url(), "", &relevant)
            .await
            .unwrap();
        let n_names = snapshot_names(&relevant).len() as u64;
        assert_eq!((mget.n_items, mget.n_present), (30 * n_names, 60));
    }
}
