//! Fetching current values with pipelined `MGET`s: never a round trip per
//! key. The one `MGET` path of metafuse, on either kind of connection.

use metafuse_source::FetchedValues;
use redis::Value;
use redis::aio::{ConnectionLike, MultiplexedConnection};

use crate::cluster::{ClusterFetcher, StateConnection};
use crate::connect::BulkConnection;
use crate::entries::RelevantKey;
use crate::error::StreamError;
use crate::resp::{Frame, RespConnection, server_error};

/// Keys per `MGET`: large enough to amortise the command, small enough that
/// one reply never holds Redis for long.
const KEYS_PER_MGET: usize = 512;

/// A connection to run `MGET`s on: the redis crate's, or a raw RESP one
/// decoding each value straight from the socket buffer.
pub(crate) enum MgetConnection<'c> {
    Raw(&'c mut RespConnection),
    Multiplexed(&'c mut MultiplexedConnection),
    /// A cluster: keys grouped by slot and owner (see `cluster.rs`).
    Cluster(&'c std::sync::Arc<tokio::sync::Mutex<ClusterFetcher>>),
}

impl<'c> From<&'c mut StateConnection> for MgetConnection<'c> {
    fn from(connection: &'c mut StateConnection) -> Self {
        match connection {
            StateConnection::Single(connection) => MgetConnection::Multiplexed(connection),
            StateConnection::Cluster { fetcher, .. }
            | StateConnection::StreamNode { fetcher, .. } => MgetConnection::Cluster(fetcher),
        }
    }
}

impl<'c> From<&'c mut MultiplexedConnection> for MgetConnection<'c> {
    fn from(connection: &'c mut MultiplexedConnection) -> Self {
        MgetConnection::Multiplexed(connection)
    }
}

impl<'c> From<&'c mut BulkConnection> for MgetConnection<'c> {
    fn from(connection: &'c mut BulkConnection) -> Self {
        match connection {
            BulkConnection::Raw(connection) => MgetConnection::Raw(connection),
            BulkConnection::Multiplexed(connection) => MgetConnection::Multiplexed(connection),
            BulkConnection::Cluster(fetcher) => MgetConnection::Cluster(fetcher),
        }
    }
}

/// One value of an `MGET` reply, whichever decoder read it.
enum ValueReply<'v> {
    Nil,
    Bytes(&'v [u8]),
    /// Neither a string nor nil: described for the log.
    Odd(&'v dyn std::fmt::Debug),
}

/// Keeps `value` as the value of `key`, or counts it as malformed.
fn keep(fetched: &mut FetchedValues, key: &RelevantKey, value: ValueReply<'_>) {
    match value {
        ValueReply::Nil => {
            fetched.push(key.hash_id(), key.property(), None);
        }
        ValueReply::Bytes(bytes) => {
            if !fetched.push_bytes(key.hash_id(), key.property(), Some(bytes)) {
                tracing::debug!(
                    key = key.key,
                    n_bytes = bytes.len(),
                    "skipping a value that is too large"
                );
            }
        }
        ValueReply::Odd(reply) => {
            tracing::debug!(key = key.key, ?reply, "skipping an odd value");
            fetched.record_malformed();
        }
    }
}

/// Fetches the current value of every key with pipelined `MGET`s (nil
/// meaning gone), in the order of `keys`.
pub(crate) async fn fetch_values<'c>(
    connection: impl Into<MgetConnection<'c>>,
    keys: Vec<RelevantKey>,
) -> Result<FetchedValues, StreamError> {
    match connection.into() {
        MgetConnection::Cluster(fetcher) => fetcher.lock().await.fetch(keys).await,
        connection => fetch_values_in_slots(connection, keys, None).await,
    }
}

/// [`fetch_values`] on one node; with `slots` (the slot of every key, keys
/// sorted by it), no `MGET` spans two slots, as a cluster node demands.
pub(crate) async fn fetch_values_in_slots(
    connection: MgetConnection<'_>,
    keys: Vec<RelevantKey>,
    slots: Option<&[u16]>,
) -> Result<FetchedValues, StreamError> {
    let mut fetched = FetchedValues::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(fetched);
    }
    let chunks = mget_chunks(&keys, slots);
    let n_commands = chunks.len();
    let mut pending = keys.iter();
    match connection {
        // Reached through `fetch_values` only, which fans a cluster out to
        // its nodes first.
        MgetConnection::Cluster(_) => {
            return Err(StreamError::UnexpectedReply {
                operation: "MGET",
                reply: "a cluster fetch must be split by node first".to_owned(),
            });
        }
        MgetConnection::Multiplexed(connection) => {
            let mut pipeline = redis::pipe();
            for &chunk in &chunks {
                let command = pipeline.cmd("MGET");
                for key in chunk {
                    command.arg(&key.key);
                }
            }
            // Raw replies: MGET answers plain values, no nested errors to look for.
            let replies = connection
                .req_packed_commands(&pipeline, 0, n_commands)
                .await
                .map_err(StreamError::command("MGET"))?;
            for reply in replies {
                let values = match reply {
                    Value::Array(values) => values,
                    Value::ServerError(error) => {
                        return Err(StreamError::Command {
                            operation: "MGET",
                            cause: error.into(),
                        });
                    }
                    other => {
                        return Err(StreamError::UnexpectedReply {
                            operation: "MGET",
                            reply: format!("{other:?}"),
                        });
                    }
                };
                for value in values {
                    let Some(key) = pending.next() else { break };
                    let value = match &value {
                        Value::Nil => ValueReply::Nil,
                        Value::BulkString(bytes) => ValueReply::Bytes(bytes),
                        other => ValueReply::Odd(other),
                    };
                    keep(&mut fetched, key, value);
                }
            }
        }
        MgetConnection::Raw(connection) => {
            read_raw_values(connection, &keys, &chunks, &mut fetched, |_| {}).await?;
        }
    }
    Ok(fetched)
}

/// [`fetch_values`] on a raw connection outside a cluster, with `then`
/// pushing more commands into the same write after the `MGET`s (the live
/// tail's next `XREAD`: Redis works on it while the values are decoded).
/// Their replies are left on the connection, after the values.
pub(crate) async fn fetch_values_then(
    connection: &mut RespConnection,
    keys: Vec<RelevantKey>,
    then: impl FnOnce(&mut RespConnection),
) -> Result<FetchedValues, StreamError> {
    let mut fetched = FetchedValues::with_capacity(keys.len());
    let chunks = mget_chunks(&keys, None);
    read_raw_values(connection, &keys, &chunks, &mut fetched, then).await?;
    Ok(fetched)
}

/// Sends one `MGET` per chunk of `keys` (and whatever `then` pushes) in one
/// write, and keeps the values of the `MGET`s in `fetched`.
async fn read_raw_values(
    connection: &mut RespConnection,
    keys: &[RelevantKey],
    chunks: &[&[RelevantKey]],
    fetched: &mut FetchedValues,
    then: impl FnOnce(&mut RespConnection),
) -> Result<(), StreamError> {
    let mut pending = keys.iter();
    for &chunk in chunks {
        let arguments = chunk.iter().map(|key| key.key.as_bytes());
        connection.push_command(
            1 + chunk.len(),
            std::iter::once(&b"MGET"[..]).chain(arguments),
        );
    }
    then(connection);
    connection
        .send_request()
        .await
        .map_err(StreamError::command("MGET"))?;
    for _ in 0..chunks.len() {
        let n_values = connection
            .read_reply(|reader| {
                let start = reader.position;
                match reader.frame()? {
                    Frame::Array(n_values) => Ok(Ok(n_values)),
                    Frame::Error(line) => Ok(Err(StreamError::Command {
                        operation: "MGET",
                        cause: server_error(line),
                    })),
                    other => {
                        reader.skip_children(other)?;
                        Ok(Err(StreamError::UnexpectedReply {
                            operation: "MGET",
                            reply: reader.describe_since(start),
                        }))
                    }
                }
            })
            .await
            .map_err(StreamError::command("MGET"))??;
        for _ in 0..n_values {
            let mut key = pending.next();
            connection
                .read_reply(|reader| {
                    let frame = reader.frame()?;
                    reader.skip_children(frame)?;
                    let Some(key) = key.take() else {
                        return Ok(());
                    };
                    let value = match &frame {
                        Frame::Nil => ValueReply::Nil,
                        Frame::Bulk(bytes) => ValueReply::Bytes(bytes),
                        other => ValueReply::Odd(other),
                    };
                    keep(fetched, key, value);
                    Ok(())
                })
                .await
                .map_err(StreamError::command("MGET"))?;
        }
    }
    Ok(())
}

/// The keys of each `MGET`: at most [`KEYS_PER_MGET`], and all of one slot
/// when `slots` are given.
fn mget_chunks<'k>(keys: &'k [RelevantKey], slots: Option<&[u16]>) -> Vec<&'k [RelevantKey]> {
    let Some(slots) = slots else {
        return keys.chunks(KEYS_PER_MGET).collect();
    };
    let mut chunks = Vec::new();
    let mut start = 0;
    for end in 1..=keys.len() {
        let slot_ends = end == keys.len() || slots.get(end) != slots.get(start);
        if slot_ends || end - start == KEYS_PER_MGET {
            chunks.push(&keys[start..end]);
            start = end;
        }
    }
    chunks
}
