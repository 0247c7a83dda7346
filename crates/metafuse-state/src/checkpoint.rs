//! The checkpoint format: a projection and its position, as bytes (pure; no
//! IO — writing the file atomically is the service's job).
//!
//! A warm restart loads the projection from a checkpoint and tails from its
//! position instead of bootstrapping. A checkpoint is only trusted when it
//! is intact (magic, version, length and checksum all agree) and then only
//! used when it was written against the same source identity and relevant
//! set ([`Checkpoint::fits`]); anything else is a typed error or a
//! mismatch, never a silently wrong tree.
//!
//! Layout (integers little-endian):
//! ```text
//! "METAFUSE-CKPT\0" (14 bytes)  version: u16  payload length: u64
//! checksum of the payload: u64 (XXH3-64)  payload
//! payload: source identity, event id (strings), relevant names (u32 count
//!          + strings), property names in id order (u32 count + strings,
//!          `filePath` first), files (u64 count; each a u32 length and the
//!          file's record in the projection's packed layout: varint hashId
//!          length, hashId, then varint name id, varint length, value per
//!          property); a string is a u32 length + UTF-8
//! ```
//! Version 2 stores the records as the projection holds them, so loading
//! is one validating pass and one copy per file (version 1 re-applied every
//! property by name). Version 1 checkpoints are refused, which means a full
//! bootstrap once after an upgrade.
//! The checksum catches truncation and corruption, not tampering.

use metafuse_rules::RelevantProperties;

use crate::projection::{EventCounts, Projection};

const MAGIC: &[u8; 14] = b"METAFUSE-CKPT\0";
/// The format version written; others are refused.
pub const CHECKPOINT_VERSION: u16 = 2;
const HEADER_BYTES: usize = MAGIC.len() + 2 + 8 + 8;

/// Why bytes are not a usable checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not a metafuse checkpoint at all (another file, garbage).
    #[error("not a metafuse checkpoint (bad magic bytes)")]
    NotACheckpoint,
    /// Written by a format version this build does not read.
    #[error(
        "checkpoint format version {found} is not supported (this build reads {CHECKPOINT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// Shorter than its header says: an interrupted write.
    #[error("checkpoint is truncated: {expected} bytes expected, {found} present")]
    Truncated {
        /// Bytes the header announces (header included).
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The payload does not match its checksum.
    #[error("checkpoint is corrupt: checksum mismatch")]
    ChecksumMismatch,
    /// The payload is intact but does not decode.
    #[error("checkpoint is malformed: {reason}")]
    Malformed {
        /// What did not decode.
        reason: String,
    },
}

/// A decoded checkpoint: the projection and where it stands.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// What identifies the data behind the source it was written from.
    pub source_identity: String,
    /// The last event the projection reflects (opaque; the source's).
    pub event_id: String,
    /// The projection as it was, relevant set included.
    pub projection: Projection,
}

impl Checkpoint {
    /// Whether this checkpoint may stand in for a bootstrap of a source
    /// with `source_identity` under `relevant`: same data, same relevant
    /// set (otherwise values are missing or extra).
    pub fn fits(&self, source_identity: &str, relevant: &RelevantProperties) -> bool {
        self.source_identity == source_identity
            && self.projection.relevant().names().eq(relevant.names())
    }
}

/// XXH3-64: enough to notice a torn write, at memory speed (a byte-wise
/// hash took tens of milliseconds per 100k files).
fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// `projection` at `event_id` of the source `source_identity`, as bytes.
pub fn encode_checkpoint(
    projection: &Projection,
    event_id: &str,
    source_identity: &str,
) -> Vec<u8> {
    let mut payload = Vec::with_capacity(projection.state_size() + 1024);
    put_string(&mut payload, source_identity);
    put_string(&mut payload, event_id);
    let names: Vec<&str> = projection.relevant().names().collect();
    payload.extend_from_slice(&(names.len() as u32).to_le_bytes());
    for name in names {
        put_string(&mut payload, name);
    }
    let (property_names, records) = projection.raw_parts();
    payload.extend_from_slice(&(property_names.len() as u32).to_le_bytes());
    for name in property_names {
        put_string(&mut payload, name);
    }
    payload.extend_from_slice(&(projection.file_count() as u64).to_le_bytes());
    for record in records {
        payload.extend_from_slice(&(record.len() as u32).to_le_bytes());
        payload.extend_from_slice(record);
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads what [`encode_checkpoint`] wrote; anything else is an error.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(CheckpointError::NotACheckpoint);
    }
    if bytes.len() < HEADER_BYTES {
        return Err(CheckpointError::Truncated {
            expected: HEADER_BYTES as u64,
            found: bytes.len() as u64,
        });
    }
    let mut header = Reader {
        bytes: &bytes[MAGIC.len()..HEADER_BYTES],
    };
    let version = u16::from_le_bytes(header.array()?);
    if version != CHECKPOINT_VERSION {
        return Err(CheckpointError::UnsupportedVersion { found: version });
    }
    let payload_len = u64::from_le_bytes(header.array()?);
    let expected_checksum = u64::from_le_bytes(header.array()?);
    let payload = &bytes[HEADER_BYTES..];
    let expected = (HEADER_BYTES as u64).saturating_add(payload_len);
    if (payload.len() as u64) < payload_len {
        return Err(CheckpointError::Truncated {
            expected,
            found: bytes.len() as u64,
        });
    }
    if payload.len() as u64 > payload_len {
        return Err(CheckpointError::Malformed {
            reason: format!(
                "{} bytes after the payload",
                payload.len() as u64 - payload_len
            ),
        });
    }
    if checksum(payload) != expected_checksum {
        return Err(CheckpointError::ChecksumMismatch);
    }
    let mut reader = Reader { bytes: payload };
    let source_identity = reader.string()?.to_owned();
    let event_id = reader.string()?.to_owned();
    let n_names = u32::from_le_bytes(reader.array()?);
    let mut names = Vec::new();
    for _ in 0..n_names {
        names.push(reader.string()?);
    }
    let relevant = RelevantProperties::from_names(names);
    let n_property_names = u32::from_le_bytes(reader.array()?);
    let mut property_names = Vec::new();
    for _ in 0..n_property_names {
        property_names.push(reader.string()?);
    }
    let n_files = usize::try_from(u64::from_le_bytes(reader.array()?)).map_err(|_| {
        CheckpointError::Malformed {
            reason: "file count overflows".to_owned(),
        }
    })?;
    // Each file takes at least 4 bytes: the count cannot be trusted further.
    if n_files > reader.bytes.len() / 4 {
        return Err(CheckpointError::Malformed {
            reason: format!("{n_files} files announced in {} bytes", reader.bytes.len()),
        });
    }
    let mut projection = Projection::from_raw_parts(relevant, property_names, n_files, || {
        let length = u32::from_le_bytes(reader.array().map_err(reason_of)?);
        reader.take(length as usize).map_err(reason_of)
    })
    .map_err(|reason| CheckpointError::Malformed { reason })?;
    if !reader.bytes.is_empty() {
        return Err(CheckpointError::Malformed {
            reason: "bytes left after the last file".to_owned(),
        });
    }
    if !event_id.is_empty() {
        projection.record_events(EventCounts::default(), &event_id);
    }
    Ok(Checkpoint {
        source_identity,
        event_id,
        projection,
    })
}

/// The reason inside a reader's error (always `Malformed`).
fn reason_of(error: CheckpointError) -> String {
    match error {
        CheckpointError::Malformed { reason } => reason,
        other => other.to_string(),
    }
}

struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], CheckpointError> {
        if self.bytes.len() < n {
            return Err(CheckpointError::Malformed {
                reason: "a field runs past the payload".to_owned(),
            });
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn string(&mut self) -> Result<&'b str, CheckpointError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        std::str::from_utf8(self.take(len)?).map_err(|error| CheckpointError::Malformed {
            reason: format!("text is not UTF-8: {error}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn contents(projection: &Projection) -> BTreeMap<String, BTreeMap<String, String>> {
        projection
            .files()
            .map(|(hash_id, file)| {
                (
                    hash_id.to_owned(),
                    file.properties()
                        .map(|(name, value)| (name.to_owned(), value.to_owned()))
                        .collect(),
                )
            })
            .collect()
    }

    fn sample() -> Projection {
        let mut projection = Projection::new(RelevantProperties::from_names([
            "filePath", "title", "titles",
        ]));
        projection.apply("a", "filePath", Some("x/a.mkv"));
        projection.apply("a", "titles/eng", Some("Heat"));
        projection.apply("b", "title", Some("incomplete"));
        projection
    }

    #[test]
    fn round_trip_keeps_files_position_and_relevant_set() {
        let projection = sample();
        let bytes = encode_checkpoint(&projection, "1-0", "redis run_id=r replid=p");
        let checkpoint = decode_checkpoint(&bytes).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(contents(&checkpoint.projection), contents(&projection));
        assert_eq!(checkpoint.projection.complete_count(), 1);
        assert_eq!(checkpoint.event_id, "1-0");
        assert_eq!(checkpoint.projection.last_event_id(), Some("1-0"));
        assert!(checkpoint.fits("redis run_id=r replid=p", projection.relevant()));
        assert!(!checkpoint.fits("redis run_id=other replid=p", projection.relevant()));
        assert!(!checkpoint.fits(
            "redis run_id=r replid=p",
            &RelevantProperties::from_names(["filePath"])
        ));
    }

    #[test]
    fn truncated_corrupt_and_foreign_bytes_are_refused() {
        let bytes = encode_checkpoint(&sample(), "1-0", "id");
        for cut in [0, 5, HEADER_BYTES - 1, HEADER_BYTES, bytes.len() - 1] {
            let error = decode_checkpoint(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(
                    error,
                    CheckpointError::Truncated { .. } | CheckpointError::NotACheckpoint
                ),
                "cut at {cut}: {error}"
            );
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert_eq!(
            decode_checkpoint(&flipped).unwrap_err(),
            CheckpointError::ChecksumMismatch
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_checkpoint(&longer).unwrap_err(),
            CheckpointError::Malformed { .. }
        ));
        let mut future = bytes.clone();
        future[MAGIC.len()] = 9;
        assert_eq!(
            decode_checkpoint(&future).unwrap_err(),
            CheckpointError::UnsupportedVersion { found: 9 }
        );
        assert_eq!(
            decode_checkpoint(b"{\"json\": true}").unwrap_err(),
            CheckpointError::NotACheckpoint
        );
    }

    /// `payload` under a valid header, so only the payload's own checks
    /// can refuse it.
    fn with_header(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&checksum(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A payload with the given property names and raw records.
    fn payload(property_names: &[&str], records: &[&[u8]]) -> Vec<u8> {
        let mut payload = Vec::new();
        put_string(&mut payload, "id");
        put_string(&mut payload, "1-0");
        payload.extend_from_slice(&1u32.to_le_bytes());
        put_string(&mut payload, "title");
        payload.extend_from_slice(&(property_names.len() as u32).to_le_bytes());
        for name in property_names {
            put_string(&mut payload, name);
        }
        payload.extend_from_slice(&(records.len() as u64).to_le_bytes());
        for record in records {
            payload.extend_from_slice(&(record.len() as u32).to_le_bytes());
            payload.extend_from_slice(record);
        }
        payload
    }

    #[test]
    fn intact_checksum_but_wrong_records_are_refused() {
        let names = ["filePath", "title", "plot"];
        // hashId "a", filePath "x": a good record.
        let good: &[u8] = b"\x01a\x00\x01x";
        let checkpoint = decode_checkpoint(&with_header(&payload(&names, &[good])))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(checkpoint.projection.complete_count(), 1);
        assert_eq!(
            checkpoint
                .projection
                .file("a")
                .and_then(|file| file.get("filePath")),
            Some("x")
        );
        // (what is wrong, property names, records)
        type Case<'c> = (&'c str, &'c [&'c str], Vec<&'c [u8]>);
        let wrong: [Case<'_>; 10] = [
            ("value past the record", &names, vec![b"\x01a\x00\x05x"]),
            ("unknown name id", &names, vec![b"\x01a\x07\x01x"]),
            ("irrelevant name", &names, vec![b"\x01a\x02\x01x"]),
            ("empty value", &names, vec![b"\x01a\x00\x00"]),
            ("no property", &names, vec![b"\x01a"]),
            ("empty hashId", &names, vec![b"\x00\x00\x01x"]),
            (
                "name twice in a file",
                &names,
                vec![b"\x01a\x00\x01x\x00\x01y"],
            ),
            ("file twice", &names, vec![good, good]),
            ("not UTF-8", &names, vec![b"\x01a\x00\x01\xff"]),
            ("filePath not first", &["title", "filePath"], vec![good]),
        ];
        for (what, names, records) in wrong {
            let error = decode_checkpoint(&with_header(&payload(names, &records))).unwrap_err();
            assert!(
                matches!(error, CheckpointError::Malformed { .. }),
                "{what}: {error}"
            );
        }
        let mut announced_too_many = payload(&names, &[good]);
        let count_at = announced_too_many.len() - good.len() - 4 - 8;
        announced_too_many[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_checkpoint(&with_header(&announced_too_many)).unwrap_err(),
            CheckpointError::Malformed { .. }
        ));
    }

    #[test]
    fn version_1_checkpoints_are_refused() {
        let mut bytes = encode_checkpoint(&sample(), "1-0", "id");
        bytes[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(
            decode_checkpoint(&bytes).unwrap_err(),
            CheckpointError::UnsupportedVersion { found: 1 }
        );
    }

    proptest! {
        #[test]
        fn any_projection_round_trips(
            files in proptest::collection::btree_map(
                "[a-z0-9]{1,8}",
                proptest::collection::btree_map(
                    prop_oneof![Just("filePath"), Just("title"), Just("size"), Just("titles/eng")],
                    "\\PC{1,12}",
                    0..4,
                ),
                0..20,
            ),
            event_id in "\\PC{0,20}",
            identity in "\\PC{0,30}",
        ) {
            let mut projection = Projection::new(RelevantProperties::from_names([
                "filePath", "title", "size", "titles",
            ]));
            for (hash_id, properties) in &files {
                for (name, value) in properties {
                    projection.apply(hash_id, name, Some(value));
                }
            }
            let bytes = encode_checkpoint(&projection, &event_id, &identity);
            let checkpoint = decode_checkpoint(&bytes).map_err(|error| TestCaseError::fail(error.to_string()))?;
            prop_assert_eq!(contents(&checkpoint.projection), contents(&projection));
            prop_assert_eq!(checkpoint.event_id, event_id);
            prop_assert_eq!(checkpoint.source_identity, identity);
            prop_assert_eq!(checkpoint.projection.complete_count(), projection.complete_count());
            // Any single-byte truncation is refused, never trusted.
            if !bytes.is_empty() {
                prop_assert!(decode_checkpoint(&bytes[..bytes.len() - 1]).is_err());
            }
        }
    }
}
