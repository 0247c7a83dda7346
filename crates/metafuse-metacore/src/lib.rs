//! meta-core's API mode as a metadata source (spec §9).
//!
//! Current meta-core keeps its Redis private: metadata is read through its
//! HTTP API (`GET /meta`, `/meta/{hash}`, `/meta/{hash}/{key…}`) and changes
//! arrive as Server-Sent Events (`GET /api/events/meta`). [`MetaCoreSource`]
//! implements `metafuse_source::MetadataSource` over them:
//! - bootstrap complete by construction: the event stream is opened first
//!   and buffered, then `/meta` and every document are read with bounded
//!   concurrency over keep-alive connections (only relevant properties are
//!   kept), then the keys named by events received meanwhile are re-read;
//! - tail: one reader task holds the stream, resumes with `Last-Event-ID`,
//!   reconnects with backoff, honours `Retry-After`, and reconnects when no
//!   byte arrived for the watchdog time; a `gap` becomes
//!   `TailEvent::Resync`; changed keys are fetched per batch with bounded
//!   concurrency, a 404 meaning gone.
#![warn(missing_docs)]

mod fetch;
mod reader;
mod source;
mod sse;

pub use source::{MetaCoreConfig, MetaCoreSource};
