//! Renaming rules: parse and validate a rules document (JSON or TOML),
//! present a file's properties through the spec's typed view, and render
//! each file's safe virtual path. Pure: no IO, no async.
//!
//! ```
//! use metafuse_rules::{Metadata, Rules};
//!
//! let rules = Rules::preset("default").expect("shipped preset");
//! let metadata = Metadata::new([
//!     ("filePath", "watch/dark.s01e03.mkv"),
//!     ("title", "Dark"),
//!     ("season", "1"),
//!     ("episode", "3"),
//! ]);
//! let rendered = rules.render("0123abcd", &metadata);
//! assert_eq!(rendered.path, "TV Shows/Dark/S01/Dark S01E03.mkv");
//! assert_eq!(rendered.rule_id, Some("tv-series"));
//! ```
#![warn(missing_docs)]

mod condition;
mod diagnostic;
mod document;
mod metadata;
mod relevant;
mod rules;
mod sanitize;
mod template;
mod validate;

pub use crate::diagnostic::{Diagnostic, Severity};
pub use crate::document::{
    Condition, ConditionGroup, ConditionLeaf, ConditionSpelling, Format, MAX_DOCUMENT_BYTES,
    ParseError, Rule, RulesDocument, SerializeError,
};
pub use crate::metadata::{CORE_PROPERTIES, FieldValue, Metadata};
pub use crate::relevant::RelevantProperties;
pub use crate::rules::{InvalidRules, PRESET_NAMES, Rendered, Rules, UnknownPreset};
pub use crate::validate::{MAX_TEMPLATE_BYTES, validate};
