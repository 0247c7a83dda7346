//! Decoding `XRANGE`/`XREAD` replies (raw `redis::Value`, ~1.6x faster than
//! the typed reply) into the relevant keys to fetch.

use hashbrown::{HashMap, HashSet};
use metafuse_rules::RelevantProperties;
use metafuse_state::{EventCounts, KeyError, parse_event_key};
use redis::Value;

/// A relevant key to fetch, with where its hashId sits inside it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RelevantKey {
    pub(crate) key: String,
    hash_start: u32,
    hash_end: u32,
}

impl RelevantKey {
    /// `key` must be `{prefix}file:{hash_id}/{property}` with `hash_id` a
    /// sub-slice of it.
    pub(crate) fn parse(key: String, prefix: &str) -> Result<Self, KeyError> {
        let (hash_id, _) = parse_event_key(&key, prefix)?;
        let hash_start = prefix.len() + "file:".len();
        let hash_end = hash_start + hash_id.len();
        Ok(Self {
            key,
            hash_start: hash_start as u32,
            hash_end: hash_end as u32,
        })
    }

    pub(crate) fn hash_id(&self) -> &str {
        &self.key[self.hash_start as usize..self.hash_end as usize]
    }

    pub(crate) fn property(&self) -> &str {
        &self.key[self.hash_end as usize + 1..]
    }
}

/// Remembers which property names are relevant: `is_relevant` runs once per
/// distinct name instead of once per event.
#[derive(Clone, Debug)]
pub(crate) struct RelevanceCache {
    relevant: RelevantProperties,
    decisions: HashMap<Box<str>, bool>,
}

impl RelevanceCache {
    pub(crate) fn new(relevant: RelevantProperties) -> Self {
        Self {
            relevant,
            decisions: HashMap::new(),
        }
    }

    pub(crate) fn set(&mut self, relevant: &RelevantProperties) {
        if &self.relevant != relevant {
            self.relevant = relevant.clone();
            self.decisions.clear();
        }
    }

    pub(crate) fn is_relevant(&mut self, property: &str) -> bool {
        if let Some(&decision) = self.decisions.get(property) {
            return decision;
        }
        let decision = self.relevant.is_relevant(property);
        self.decisions.insert(property.into(), decision);
        decision
    }
}

/// The relevant keys of a run of stream entries, coalesced: a key changed
/// several times in the run is fetched once, after the run was read.
#[derive(Debug, Default)]
pub(crate) struct EntryBatch {
    pub(crate) keys: Vec<RelevantKey>,
    pub(crate) counts: EventCounts,
    pub(crate) last_id: Option<String>,
    seen: HashSet<String>,
}

/// Why one entry was skipped as malformed; logged at debug level only, since
/// one writer bug can produce millions.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Malformed {
    #[error("entry fields are not an array")]
    Shape,
    #[error("entry lacks its {0:?} field")]
    MissingField(&'static str),
    #[error("unknown entry type {0:?}")]
    UnknownType(String),
    #[error(transparent)]
    Key(KeyError),
    #[error("entry key is not utf-8")]
    NotUtf8,
}

impl EntryBatch {
    /// A batch of keys that came from no stream entry (a snapshot).
    pub(crate) fn from_keys(keys: Vec<RelevantKey>) -> Self {
        Self {
            keys,
            ..Self::default()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts.n_events == 0
    }

    /// Adds the entries of one `XRANGE` reply (an array of `[id, fields]`)
    /// and returns how many there were.
    pub(crate) fn add_entries(
        &mut self,
        reply: Value,
        prefix: &str,
        relevance: &mut RelevanceCache,
    ) -> usize {
        let Value::Array(entries) = reply else {
            return 0;
        };
        let n_entries = entries.len();
        for entry in entries {
            self.add_entry(entry, prefix, relevance);
        }
        n_entries
    }

    fn add_entry(&mut self, entry: Value, prefix: &str, relevance: &mut RelevanceCache) {
        let Value::Array(mut parts) = entry else {
            self.counts.n_malformed += 1;
            return;
        };
        // Without an id we cannot advance past the entry; ids are produced
        // by Redis itself, so this never happens with a real server.
        let (Some(fields), Some(Value::BulkString(id))) = (parts.pop(), parts.pop()) else {
            self.counts.n_malformed += 1;
            return;
        };
        self.counts.n_events += 1;
        if let Ok(id) = String::from_utf8(id) {
            self.last_id = Some(id);
        }
        match self.classify(fields, prefix, relevance) {
            Ok(Some(key)) => {
                if self.seen.insert(key.key.clone()) {
                    self.keys.push(key);
                }
            }
            Ok(None) => self.counts.n_skipped += 1,
            Err(reason) => {
                tracing::debug!(%reason, id = self.last_id.as_deref().unwrap_or(""), "skipping malformed stream entry");
                self.counts.n_malformed += 1;
            }
        }
    }

    /// `Ok(Some)` = a relevant key to fetch; `Ok(None)` = ignored (not
    /// relevant, or an index change); `Err` = malformed.
    fn classify(
        &self,
        fields: Value,
        prefix: &str,
        relevance: &mut RelevanceCache,
    ) -> Result<Option<RelevantKey>, Malformed> {
        let fields = match fields {
            Value::Array(fields) => fields,
            _ => return Err(Malformed::Shape),
        };
        let mut kind: Option<Vec<u8>> = None;
        let mut key: Option<Vec<u8>> = None;
        let mut pairs = fields.into_iter();
        while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
            let (Value::BulkString(name), Value::BulkString(value)) = (name, value) else {
                continue;
            };
            match name.as_slice() {
                b"type" => kind = Some(value),
                b"key" => key = Some(value),
                _ => {}
            }
        }
        let kind = kind.ok_or(Malformed::MissingField("type"))?;
        if kind != b"set" && kind != b"del" {
            return Err(Malformed::UnknownType(
                String::from_utf8_lossy(&kind).into_owned(),
            ));
        }
        let key = String::from_utf8(key.ok_or(Malformed::MissingField("key"))?)
            .map_err(|_| Malformed::NotUtf8)?;
        match RelevantKey::parse(key, prefix) {
            Ok(key) => Ok(relevance.is_relevant(key.property()).then_some(key)),
            // Index changes carry no property: ignored, not malformed.
            Err(KeyError::IndexKey { .. }) => Ok(None),
            Err(error) => Err(Malformed::Key(error)),
        }
    }
}

/// The id of the last entry of an `XRANGE` reply, if any.
pub(crate) fn last_entry_id(reply: &Value) -> Option<String> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let Value::Array(parts) = entries.last()? else {
        return None;
    };
    match parts.first()? {
        Value::BulkString(id) => String::from_utf8(id.clone()).ok(),
        _ => None,
    }
}

/// A stream id `ms-seq`, ordered numerically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct StreamId {
    pub(crate) millis: u64,
    pub(crate) sequence: u64,
}

impl StreamId {
    pub(crate) fn parse(id: &str) -> Option<Self> {
        let (millis, sequence) = id.split_once('-').unwrap_or((id, "0"));
        Some(Self {
            millis: millis.parse().ok()?,
            sequence: sequence.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|field| bulk(field)).collect()),
        ])
    }

    #[test]
    fn keeps_relevant_keys_once_and_counts_the_rest() {
        let mut relevance = RelevanceCache::new(RelevantProperties::from_names(["title"]));
        let mut batch = EntryBatch::default();
        let reply = Value::Array(vec![
            entry("1-0", &["type", "set", "key", "p:file:a/title", "ts", "1"]),
            entry("1-1", &["type", "del", "key", "p:file:a/title"]),
            entry("1-2", &["type", "set", "key", "p:file:a/genre"]),
            entry("1-3", &["type", "set", "key", "p:file:__index__"]),
            entry("1-4", &["type", "set"]),
            entry("1-5", &["type", "rename", "key", "p:file:a/title"]),
            entry("1-6", &["type", "set", "key", "other"]),
            Value::Array(vec![
                bulk("1-7"),
                Value::Array(vec![
                    bulk("type"),
                    bulk("set"),
                    bulk("key"),
                    Value::BulkString(vec![0xff]),
                ]),
            ]),
            entry("1-8", &["type", "set", "key", "p:file:b/filePath"]),
        ]);
        assert_eq!(batch.add_entries(reply, "p:", &mut relevance), 9);
        let keys: Vec<(&str, &str)> = batch
            .keys
            .iter()
            .map(|key| (key.hash_id(), key.property()))
            .collect();
        assert_eq!(keys, vec![("a", "title"), ("b", "filePath")]);
        assert_eq!(
            batch.counts,
            EventCounts {
                n_events: 9,
                n_skipped: 2,
                n_malformed: 4
            }
        );
        assert_eq!(batch.last_id.as_deref(), Some("1-8"));
    }

    #[test]
    fn stream_ids_order_numerically() {
        assert!(StreamId::parse("10-0") > StreamId::parse("9-5"));
        assert!(StreamId::parse("5-10") > StreamId::parse("5-9"));
        assert_eq!(StreamId::parse("0-0"), Some(StreamId::default()));
        assert_eq!(StreamId::parse("junk"), None);
    }
}
