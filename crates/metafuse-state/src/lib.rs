//! The state projection of metafuse: for every file, only its relevant
//! properties, compactly stored, built from values fetched from Redis.
//!
//! Pure: no IO, no async. The stream side (`metafuse-stream`) reads events
//! and fetches values; this crate turns them into per-file state and
//! [`Delta`]s (a file became visible, changed, or is gone), following the
//! behaviour contract (spec §3):
//!
//! - a file is complete (visible) once it has a non-empty `filePath`;
//! - `""` counts as absent everywhere, so storing it deletes the property;
//! - deleting `filePath` hides the file but keeps its other properties;
//!   deleting its last property forgets it;
//! - any change of a complete file, including a deletion, is a change.
//!
//! ```
//! use metafuse_state::{Delta, FetchedValue, Projection, RelevantProperties};
//!
//! let mut projection = Projection::new(RelevantProperties::from_names(["title"]));
//! let deltas = projection.apply_batch([
//!     FetchedValue { hash_id: "abc", property: "title", value: Some("Heat") },
//!     FetchedValue { hash_id: "abc", property: "filePath", value: Some("watch/heat.mkv") },
//!     FetchedValue { hash_id: "abc", property: "genre", value: Some("crime") }, // not relevant
//! ]);
//! assert_eq!(deltas, vec![Delta::Visible("abc".into())]);
//! let file = projection.file("abc").unwrap();
//! assert_eq!(file.get("title"), Some("Heat"));
//! assert_eq!(file.get("genre"), None);
//!
//! assert_eq!(projection.apply("abc", "filePath", None), Some(Delta::Gone("abc".into())));
//! assert_eq!(projection.complete_count(), 0);
//! assert_eq!(projection.file_count(), 1); // still knows the title
//! ```
//!
//! A file's virtual path is [`FileRef::render`] with the active [`Rules`];
//! `README.md` shows a whole embedding, from hand-made values to paths.
#![warn(missing_docs)]

mod checkpoint;
mod key;
mod projection;
mod record;
mod value_bytes;

pub use checkpoint::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointError, decode_checkpoint, encode_checkpoint,
};
pub use key::{
    EVENTS_STREAM, FILE_KEY_PREFIX, INDEX_HASH_ID, KeyError, escape_glob, file_key, index_key,
    parse_event_key,
};
pub use projection::{Delta, EventCounts, FetchPlan, FetchedValue, FileRef, Projection, Stats};
pub use value_bytes::{FILE_PATH_PROPERTY, file_path_bytes, stored_value};
// What this crate's API takes and gives, so an embedder needs one dependency
// line: the relevant set a projection keeps, and the rules that render a
// file's path ([`FileRef::render`]). The whole rules crate is `rules`.
pub use metafuse_rules::{
    self as rules, InvalidRules, Metadata, RelevantProperties, Rendered, Rules, RulesDocument,
};

// The README's embedding example is compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests;
