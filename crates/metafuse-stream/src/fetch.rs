//! Fetching current values with pipelined `MGET`s: never a round trip per
//! key.

use metafuse_state::FetchedValue;
use redis::Value;
use redis::aio::{ConnectionLike, MultiplexedConnection};

use crate::entries::RelevantKey;
use crate::error::StreamError;

/// Keys per `MGET`: large enough to amortise the command, small enough that
/// one reply never holds Redis for long.
const KEYS_PER_MGET: usize = 512;

/// Values larger than this are skipped as malformed: no media property is
/// that long, and a runaway writer must not blow up our memory.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
struct OwnedValue {
    key: RelevantKey,
    value: Option<String>,
}

/// Values fetched from Redis, owned; [`FetchedValues::iter`] lends them as
/// [`FetchedValue`]s for `Projection::apply_batch`.
#[derive(Clone, Debug, Default)]
pub struct FetchedValues {
    values: Vec<OwnedValue>,
    n_malformed: u64,
}

impl FetchedValues {
    /// The values, ready for `Projection::apply_batch`.
    pub fn iter(&self) -> impl Iterator<Item = FetchedValue<'_>> {
        self.values.iter().map(|owned| FetchedValue {
            hash_id: owned.key.hash_id(),
            property: owned.key.property(),
            value: owned.value.as_deref(),
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Values skipped because they were not UTF-8 or too large.
    pub fn n_malformed(&self) -> u64 {
        self.n_malformed
    }

    pub(crate) fn extend(&mut self, other: FetchedValues) {
        self.values.extend(other.values);
        self.n_malformed += other.n_malformed;
    }
}

/// Fetches the current value of every key with pipelined `MGET`s.
pub(crate) async fn fetch_values(
    connection: &mut MultiplexedConnection,
    keys: Vec<RelevantKey>,
) -> Result<FetchedValues, StreamError> {
    let mut fetched = FetchedValues {
        values: Vec::with_capacity(keys.len()),
        n_malformed: 0,
    };
    if keys.is_empty() {
        return Ok(fetched);
    }
    let mut pipeline = redis::pipe();
    let n_commands = keys.len().div_ceil(KEYS_PER_MGET);
    for chunk in keys.chunks(KEYS_PER_MGET) {
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
    let mut keys = keys.into_iter();
    for reply in replies {
        if let Value::ServerError(error) = reply {
            return Err(StreamError::Command {
                operation: "MGET",
                cause: error.into(),
            });
        }
        let Value::Array(values) = reply else {
            return Err(StreamError::UnexpectedReply {
                operation: "MGET",
                reply: format!("{reply:?}"),
            });
        };
        for value in values {
            let Some(key) = keys.next() else { break };
            match value {
                Value::Nil => fetched.values.push(OwnedValue { key, value: None }),
                Value::BulkString(bytes) if bytes.len() <= MAX_VALUE_BYTES => {
                    match String::from_utf8(bytes) {
                        Ok(value) => fetched.values.push(OwnedValue {
                            key,
                            value: Some(value),
                        }),
                        Err(_) => {
                            tracing::debug!(key = key.key, "skipping a value that is not utf-8");
                            fetched.n_malformed += 1;
                        }
                    }
                }
                other => {
                    tracing::debug!(key = key.key, reply = ?kind_of(&other), "skipping an oversized or odd value");
                    fetched.n_malformed += 1;
                }
            }
        }
    }
    Ok(fetched)
}

fn kind_of(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => format!("{} bytes", bytes.len()),
        other => format!("{other:?}").chars().take(40).collect(),
    }
}
