//! Writes to Redis exactly as the MetaMesh writers make them, and reads back
//! what Redis holds, so tests and benchmarks share one definition of both.
//!
//! A writer change is three commands: `SET {prefix}file:{hashId}/{property}`,
//! `SADD {prefix}file:__index__ {hashId}`, and one entry
//! `XADD meta:events * type set key … ts …` (a deletion: `DEL` and a `del`
//! entry, the index untouched). The stream key is not prefixed: the writers
//! share one stream whatever their key prefix.

use std::collections::BTreeMap;

use metafuse_state::{EVENTS_STREAM, FILE_KEY_PREFIX, escape_glob};

/// Every file's properties: hashId → property → value.
pub type Files = BTreeMap<String, BTreeMap<String, String>>;

/// The `ts` field of every entry unless [`Writer::with_timestamp_ms`] says
/// otherwise; metafuse never reads it, so a fixed value keeps runs equal.
const DEFAULT_TIMESTAMP_MS: u64 = 1_700_000_000_000;

/// Queues writer-style changes and sends them in one pipeline on
/// [`Writer::flush`].
///
/// Changes are applied in the order they were queued; nothing is sent
/// before `flush`, and changes still queued when the writer is dropped are
/// discarded.
#[must_use = "nothing is written until `flush`"]
pub struct Writer<'connection> {
    connection: &'connection mut redis::Connection,
    prefix: String,
    timestamp_ms: u64,
    maxlen: Option<usize>,
    /// Queued commands; `true` marks a stream entry, whose id `flush` may
    /// return.
    commands: Vec<(redis::Cmd, bool)>,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Writer")
            .field("prefix", &self.prefix)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("maxlen", &self.maxlen)
            .field("n_queued_commands", &self.commands.len())
            .finish_non_exhaustive()
    }
}

impl<'connection> Writer<'connection> {
    /// A writer of keys under `prefix` (`""` or e.g. `"mm:"`).
    pub fn new(connection: &'connection mut redis::Connection, prefix: &str) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            timestamp_ms: DEFAULT_TIMESTAMP_MS,
            maxlen: None,
            commands: Vec::new(),
        }
    }

    /// Puts `timestamp_ms` in the `ts` field of every entry.
    pub fn with_timestamp_ms(mut self, timestamp_ms: u64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// Trims the stream to about `maxlen` entries with every `XADD`
    /// (`MAXLEN ~`), as writers configured to cap the stream do.
    pub fn with_maxlen(mut self, maxlen: Option<usize>) -> Self {
        self.maxlen = maxlen;
        self
    }

    /// The key of a file property: `{prefix}file:{hash_id}/{property}`.
    pub fn key(&self, hash_id: &str, property: &str) -> String {
        metafuse_state::file_key(&self.prefix, hash_id, property)
    }

    fn index_key(&self) -> String {
        metafuse_state::index_key(&self.prefix)
    }

    /// Sets a property (`""` is how writers store null): `SET`, `SADD` to
    /// the index, a `set` entry.
    pub fn set(&mut self, hash_id: &str, property: &str, value: &str) -> &mut Self {
        let key = self.key(hash_id, property);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(value);
        let mut add_to_index = redis::cmd("SADD");
        add_to_index.arg(self.index_key()).arg(hash_id);
        self.commands.push((set, false));
        self.commands.push((add_to_index, false));
        self.event("set", &key)
    }

    /// Sets every `(property, value)` of one file, in order.
    pub fn set_file<Property, Value>(
        &mut self,
        hash_id: &str,
        properties: &[(Property, Value)],
    ) -> &mut Self
    where
        Property: AsRef<str>,
        Value: AsRef<str>,
    {
        for (property, value) in properties {
            self.set(hash_id, property.as_ref(), value.as_ref());
        }
        self
    }

    /// Deletes a property: `DEL` and a `del` entry.
    pub fn del(&mut self, hash_id: &str, property: &str) -> &mut Self {
        let key = self.key(hash_id, property);
        let mut delete = redis::cmd("DEL");
        delete.arg(&key);
        self.commands.push((delete, false));
        self.event("del", &key)
    }

    /// Removes a file from the index (`SREM`), as writers do once its last
    /// property is gone. Adds no entry.
    pub fn remove_from_index(&mut self, hash_id: &str) -> &mut Self {
        let mut remove = redis::cmd("SREM");
        remove.arg(self.index_key()).arg(hash_id);
        self.commands.push((remove, false));
        self
    }

    /// Appends an entry `type {kind} key {key}` alone, without touching
    /// `key`: for events about keys that hold nothing (the key is taken
    /// verbatim, not prefixed).
    pub fn event(&mut self, kind: &str, key: &str) -> &mut Self {
        let mut append = redis::cmd("XADD");
        append.arg(EVENTS_STREAM);
        if let Some(maxlen) = self.maxlen {
            append.arg("MAXLEN").arg("~").arg(maxlen);
        }
        append
            .arg("*")
            .arg("type")
            .arg(kind)
            .arg("key")
            .arg(key)
            .arg("ts")
            .arg(self.timestamp_ms);
        self.commands.push((append, true));
        self
    }

    /// Sends every queued change in one pipeline; returns the id of the
    /// last entry appended, if any was queued.
    pub fn flush(&mut self) -> redis::RedisResult<Option<String>> {
        let commands = std::mem::take(&mut self.commands);
        if commands.is_empty() {
            return Ok(None);
        }
        let last_event = commands.iter().rposition(|(_, is_event)| *is_event);
        let mut pipeline = redis::pipe();
        for (position, (command, _)) in commands.iter().enumerate() {
            pipeline.add_command(command.clone());
            // Only the last entry's id is decoded: seeding 100k files must
            // not build a reply per command.
            if Some(position) != last_event {
                pipeline.ignore();
            }
        }
        match last_event {
            Some(_) => {
                let (last_event_id,): (String,) = pipeline.query(self.connection)?;
                Ok(Some(last_event_id))
            }
            None => {
                pipeline.query::<()>(self.connection)?;
                Ok(None)
            }
        }
    }
}

/// What Redis holds under `prefix`: every `{prefix}file:{hashId}/{property}`
/// key with a non-empty value (empty strings are how writers store null),
/// found by `SCAN`, not through the index, so files missing from the index
/// are counted too. Files without a non-empty property are absent.
pub fn read_truth(connection: &mut redis::Connection, prefix: &str) -> redis::RedisResult<Files> {
    let file_prefix = format!("{prefix}{FILE_KEY_PREFIX}");
    let pattern = format!("{}*", escape_glob(&file_prefix));
    let keys: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(&pattern)
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter(connection)?
        .collect::<Result<_, _>>()?;
    let mut files = Files::new();
    for chunk in keys.chunks(1000) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(connection)?;
        for (key, value) in chunk.iter().zip(values) {
            // `file:__index__` and other keys without a `/` are not properties.
            let Some((hash_id, property)) = key
                .strip_prefix(&file_prefix)
                .and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            if let Some(value) = value.filter(|value| !value.is_empty()) {
                files
                    .entry(hash_id.to_owned())
                    .or_default()
                    .insert(property.to_owned(), value);
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::RedisServer;

    #[test]
    fn a_set_a_del_and_an_index_removal_land_as_writers_make_them() {
        let server = RedisServer::start().unwrap();
        let mut connection = server.client().get_connection().unwrap();
        let mut writer = Writer::new(&mut connection, "p:").with_timestamp_ms(42);
        writer
            .set_file("h1", &[("title", "Heat"), ("filePath", "watch/heat.mkv")])
            .set("h2", "title", "");
        let first_id = writer.flush().unwrap().unwrap();
        let last_id = writer
            .del("h1", "title")
            .remove_from_index("h2")
            .flush()
            .unwrap()
            .unwrap();
        assert!(first_id < last_id, "{first_id} then {last_id}");
        assert_eq!(writer.flush().unwrap(), None, "nothing queued");

        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(EVENTS_STREAM)
            .arg("-")
            .arg("+")
            .query::<Vec<(String, Vec<(String, String)>)>>(&mut connection)
            .unwrap()
            .into_iter()
            .map(|(id, fields)| {
                let flat = fields
                    .into_iter()
                    .flat_map(|(name, value)| [name, value])
                    .collect();
                (id, flat)
            })
            .collect();
        let fields: Vec<Vec<String>> = entries.iter().map(|(_, f)| f.clone()).collect();
        let entry = |kind: &str, key: &str| -> Vec<String> {
            ["type", kind, "key", key, "ts", "42"]
                .map(str::to_owned)
                .to_vec()
        };
        assert_eq!(
            fields,
            [
                entry("set", "p:file:h1/title"),
                entry("set", "p:file:h1/filePath"),
                entry("set", "p:file:h2/title"),
                entry("del", "p:file:h1/title"),
            ]
        );
        assert_eq!(entries[2].0, first_id);
        assert_eq!(entries[3].0, last_id);
        let index: Vec<String> = redis::cmd("SMEMBERS")
            .arg("p:file:__index__")
            .query(&mut connection)
            .unwrap();
        assert_eq!(index, ["h1"]);

        let truth = read_truth(&mut connection, "p:").unwrap();
        let expected: Files = [(
            "h1".to_owned(),
            [("filePath".to_owned(), "watch/heat.mkv".to_owned())].into(),
        )]
        .into();
        assert_eq!(truth, expected, "h2 holds only a null");
        assert!(read_truth(&mut connection, "").unwrap().is_empty());
    }

    #[test]
    fn maxlen_trims_the_stream() {
        let server = RedisServer::start().unwrap();
        let mut connection = server.client().get_connection().unwrap();
        let mut writer = Writer::new(&mut connection, "").with_maxlen(Some(10));
        for index in 0..1000 {
            writer.event("set", &format!("file:h{index}/title"));
        }
        writer.flush().unwrap();
        let length: usize = redis::cmd("XLEN")
            .arg(EVENTS_STREAM)
            .query(&mut connection)
            .unwrap();
        assert!(length < 1000, "{length} entries");
    }

    #[test]
    fn glob_characters_in_a_prefix_are_taken_literally() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
