//! Fetching current values with pipelined `MGET`s: never a round trip per
//! key.

use metafuse_state::FetchedValue;
use redis::Value;
use redis::aio::{ConnectionLike, MultiplexedConnection};

use crate::entries::RelevantKey;
use crate::error::StreamError;
use crate::resp::{Frame, RespConnection, server_error};

/// Keys per `MGET`: large enough to amortise the command, small enough that
/// one reply never holds Redis for long.
const KEYS_PER_MGET: usize = 512;

/// Values larger than this are skipped as malformed: no media property is
/// that long, and a runaway writer must not blow up our memory.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
struct OwnedValue {
    key: RelevantKey,
    /// Where the value sits in [`FetchedValues::text`]; `None` = gone.
    value: Option<(usize, usize)>,
}

/// Values fetched from Redis, owned; [`FetchedValues::iter`] lends them as
/// [`FetchedValue`]s for `Projection::apply_batch`.
#[derive(Clone, Debug, Default)]
pub struct FetchedValues {
    values: Vec<OwnedValue>,
    /// Every value, end to end: one allocation per batch, not per value.
    text: String,
    n_malformed: u64,
}

impl FetchedValues {
    /// The values, ready for `Projection::apply_batch`.
    pub fn iter(&self) -> impl Iterator<Item = FetchedValue<'_>> {
        self.values.iter().map(|owned| FetchedValue {
            hash_id: owned.key.hash_id(),
            property: owned.key.property(),
            value: owned.value.map(|(start, end)| &self.text[start..end]),
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
        let shift = self.text.len();
        self.text.push_str(&other.text);
        self.values
            .extend(other.values.into_iter().map(|owned| OwnedValue {
                value: owned.value.map(|(start, end)| (start + shift, end + shift)),
                ..owned
            }));
        self.n_malformed += other.n_malformed;
    }

    fn with_capacity(n_values: usize) -> Self {
        Self {
            values: Vec::with_capacity(n_values),
            ..Self::default()
        }
    }

    /// Keeps the value of `key` (`None` = gone), or counts it as malformed
    /// when it is not UTF-8 or too large.
    fn push(&mut self, key: RelevantKey, value: Option<&[u8]>) {
        let Some(bytes) = value else {
            self.values.push(OwnedValue { key, value: None });
            return;
        };
        if bytes.len() > MAX_VALUE_BYTES {
            tracing::debug!(key = key.key, "skipping a value of {} bytes", bytes.len());
            self.n_malformed += 1;
            return;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            tracing::debug!(key = key.key, "skipping a value that is not utf-8");
            self.n_malformed += 1;
            return;
        };
        let start = self.text.len();
        self.text.push_str(text);
        self.values.push(OwnedValue {
            key,
            value: Some((start, self.text.len())),
        });
    }

    fn skip_odd(&mut self, key: RelevantKey, reply: impl std::fmt::Debug) {
        tracing::debug!(key = key.key, ?reply, "skipping an odd value");
        self.n_malformed += 1;
    }
}

/// Fetches the current value of every key with pipelined `MGET`s.
pub(crate) async fn fetch_values(
    connection: &mut MultiplexedConnection,
    keys: Vec<RelevantKey>,
) -> Result<FetchedValues, StreamError> {
    let mut fetched = FetchedValues::with_capacity(keys.len());
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
                Value::Nil => fetched.push(key, None),
                Value::BulkString(bytes) => fetched.push(key, Some(&bytes)),
                other => fetched.skip_odd(key, kind_of(&other)),
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

/// [`fetch_values`] on a [`RespConnection`], decoding each value straight
/// from the socket buffer.
pub(crate) async fn fetch_values_raw(
    connection: &mut RespConnection,
    keys: Vec<RelevantKey>,
) -> Result<FetchedValues, StreamError> {
    let mut fetched = FetchedValues::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(fetched);
    }
    let n_commands = keys.len().div_ceil(KEYS_PER_MGET);
    for chunk in keys.chunks(KEYS_PER_MGET) {
        let arguments = chunk.iter().map(|key| key.key.as_bytes());
        connection.push_command(
            1 + chunk.len(),
            std::iter::once(&b"MGET"[..]).chain(arguments),
        );
    }
    connection
        .send_request()
        .await
        .map_err(StreamError::command("MGET"))?;
    let mut keys = keys.into_iter();
    for _ in 0..n_commands {
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
            let mut key = keys.next();
            connection
                .read_reply(|reader| {
                    let frame = reader.frame()?;
                    reader.skip_children(frame)?;
                    let Some(key) = key.take() else {
                        return Ok(());
                    };
                    match frame {
                        Frame::Nil => fetched.push(key, None),
                        Frame::Bulk(bytes) => fetched.push(key, Some(bytes)),
                        other => fetched.skip_odd(key, other),
                    }
                    Ok(())
                })
                .await
                .map_err(StreamError::command("MGET"))?;
        }
    }
    Ok(fetched)
}
