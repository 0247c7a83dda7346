//! The Redis side of metafuse: rebuilds a [`Projection`] from a MetaMesh
//! Redis — replaying `meta:events` or taking a snapshot of
//! `file:__index__`, whichever is possible and cheaper — then follows the
//! stream live.
//!
//! Events only say which key changed; the value a `GET` returns is the
//! truth. So `set` and `del` are handled alike: relevant keys are coalesced
//! and their current values fetched with pipelined `MGET`s (never a round
//! trip per event), nil meaning gone. Malformed entries are counted and
//! skipped.
//!
//! [`RedisSource`] is this crate's [`MetadataSource`], the service's view of
//! it; [`Source`] and [`Tail`] are the parts, for tools and benchmarks.
//! Every Redis connection of metafuse is opened here.
//!
//! Keys: the `REDIS_PREFIX` applies to `file:` keys
//! (`{prefix}file:{hashId}/{property}`, `{prefix}file:__index__`); the
//! stream is always `meta:events`, as the writers name it.
//!
//! This crate re-exports the state and rules types an embedder needs, so
//! one dependency line suffices:
//!
//! ```no_run
//! use metafuse_stream::{Projection, Rules, Source, Strategy, TailEvent};
//!
//! # async fn follow() -> Result<(), Box<dyn std::error::Error>> {
//! let relevant = Rules::preset("default")?.relevant_properties();
//! let mut projection = Projection::new(relevant.clone());
//! let mut source = Source::connect("redis://127.0.0.1:6379/", "").await?;
//! let report = source.bootstrap(&mut projection, Strategy::Auto, |_| {}).await?;
//! println!("{} files ready in {:?}", projection.complete_count(), report.elapsed);
//!
//! let mut tail = source.tail(&report.last_event_id);
//! loop {
//!     match tail.next_batch(&relevant).await? {
//!         TailEvent::Batch(batch) => {
//!             for delta in projection.apply_batch(batch.fetched()) {
//!                 println!("{delta:?}");
//!             }
//!             projection.record_events(batch.counts, &batch.last_event_id);
//!         }
//!         TailEvent::Resync { .. } => {
//!             let mut fresh = Projection::new(relevant.clone());
//!             let report = source.bootstrap(&mut fresh, Strategy::Snapshot, |_| {}).await?;
//!             projection = fresh;
//!             tail.resume_from(&report.last_event_id);
//!         }
//!     }
//! }
//! # }
//! ```
#![warn(missing_docs)]

mod connect;
mod entries;
mod error;
mod fetch;
mod info;
mod liveness;
mod redis_source;
mod resp;
mod source;
mod tail;

pub use error::StreamError;
pub use metafuse_rules::{RelevantProperties, Rules, RulesDocument};
pub use metafuse_source::{
    BootstrapMethod, BootstrapReport, FetchedValues, MAX_VALUE_BYTES, MetadataSource, Phase,
    Progress, SourceError, TailBatch, TailEvent, TailStatus, Timings,
};
pub use metafuse_state::{
    Delta, EVENTS_STREAM, EventCounts, FetchPlan, FetchedValue, FileRef, KeyError, Projection,
    Stats, parse_event_key,
};
pub use redis_source::RedisSource;
pub use source::{Source, Strategy};
pub use tail::Tail;
