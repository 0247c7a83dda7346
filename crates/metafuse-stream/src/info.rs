//! `XINFO STREAM` and friends: where the stream stands and whether it still
//! reaches back to a position.

use redis::Value;
use redis::aio::ConnectionLike;

use metafuse_state::EVENTS_STREAM;

use crate::entries::StreamId;
use crate::error::StreamError;

/// What `XINFO STREAM meta:events` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamInfo {
    pub(crate) length: u64,
    pub(crate) last_generated_id: String,
    /// Redis >= 7 only.
    pub(crate) entries_added: Option<u64>,
    /// Redis >= 7 only; `0-0` when nothing was ever deleted.
    pub(crate) max_deleted_entry_id: Option<String>,
    /// The oldest entry still held, if any.
    pub(crate) first_entry_id: Option<String>,
}

impl StreamInfo {
    /// True when entries are missing from the stream's start (trimmed or
    /// deleted), so a replay from `0` would miss changes.
    pub(crate) fn was_trimmed(&self) -> bool {
        let added_more_than_kept = self.entries_added.is_some_and(|added| added > self.length);
        added_more_than_kept || self.lost_after("0-0")
    }

    /// True when the stream may no longer hold every change after
    /// `position`: an entry newer than it was deleted (`XDEL`), or entries
    /// were trimmed and the oldest one left is newer than it. Trimming does
    /// not move `max-deleted-entry-id` in Redis 7.0, hence the second test;
    /// it can only err towards a needless resync, never towards a lost one.
    pub(crate) fn lost_after(&self, position: &str) -> bool {
        let position = StreamId::parse(position).unwrap_or_default();
        let deleted_after = self
            .max_deleted_entry_id
            .as_deref()
            .and_then(StreamId::parse)
            .is_some_and(|max_deleted| max_deleted > position);
        let removed_any = self.entries_added.is_some_and(|added| added > self.length);
        let trimmed_past = removed_any
            && self
                .first_entry_id
                .as_deref()
                .and_then(StreamId::parse)
                .is_some_and(|first| first > position);
        deleted_after || trimmed_past
    }

    /// True when the stream has not yet reached `position`: it was recreated
    /// (for instance a Redis without persistence restarted).
    pub(crate) fn is_behind(&self, position: &str) -> bool {
        StreamId::parse(&self.last_generated_id).unwrap_or_default()
            < StreamId::parse(position).unwrap_or_default()
    }
}

/// `XINFO STREAM`; `None` when the stream does not exist.
pub(crate) async fn stream_info(
    connection: &mut impl ConnectionLike,
) -> Result<Option<StreamInfo>, StreamError> {
    let reply: Result<Value, redis::RedisError> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(EVENTS_STREAM)
        .query_async(connection)
        .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(error)
            if error
                .to_string()
                .to_ascii_lowercase()
                .contains("no such key") =>
        {
            return Ok(None);
        }
        Err(cause) => {
            return Err(StreamError::Command {
                operation: "XINFO STREAM meta:events",
                cause,
            });
        }
    };
    let mut info = StreamInfo::default();
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                pairs.push((name, value));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        other => {
            return Err(StreamError::UnexpectedReply {
                operation: "XINFO STREAM meta:events",
                reply: format!("{other:?}"),
            });
        }
    };
    for (name, value) in pairs {
        let name = match name {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::SimpleString(text) => text,
            _ => continue,
        };
        match (name.as_str(), value) {
            ("length", Value::Int(length)) => info.length = length.max(0) as u64,
            ("entries-added", Value::Int(added)) => info.entries_added = Some(added.max(0) as u64),
            ("last-generated-id", value) => info.last_generated_id = text_of(value),
            ("max-deleted-entry-id", value) => info.max_deleted_entry_id = Some(text_of(value)),
            ("recorded-first-entry-id", value) => info.first_entry_id = Some(text_of(value)),
            ("first-entry", Value::Array(entry)) if info.first_entry_id.is_none() => {
                info.first_entry_id = entry.into_iter().next().map(text_of);
            }
            _ => {}
        }
    }
    Ok(Some(info))
}

fn text_of(value: Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Value::SimpleString(text) => text,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(length: u64, added: u64, max_deleted: &str) -> StreamInfo {
        StreamInfo {
            length,
            last_generated_id: "100-0".into(),
            entries_added: Some(added),
            max_deleted_entry_id: Some(max_deleted.into()),
            first_entry_id: Some("40-0".into()),
        }
    }

    #[test]
    fn trimming_is_detected_from_counts_or_deletions() {
        assert!(!info(10, 10, "0-0").was_trimmed());
        assert!(info(8, 10, "0-0").was_trimmed());
        assert!(info(10, 11, "5-0").was_trimmed());
        assert!(info(10, 10, "50-0").lost_after("49-9"));
        assert!(!info(10, 10, "50-0").lost_after("50-0"));
        assert!(
            info(10, 12, "0-0").lost_after("39-0"),
            "trimmed up to an entry newer than us"
        );
        assert!(!info(10, 12, "0-0").lost_after("40-0"));
        assert!(
            !info(10, 10, "0-0").lost_after("39-0"),
            "nothing removed: the first entry is simply the first"
        );
        assert!(info(10, 10, "0-0").is_behind("100-1"));
        assert!(!info(10, 10, "0-0").is_behind("100-0"));
    }
}
