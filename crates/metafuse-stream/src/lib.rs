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
//! A snapshot reads the index; [`Reconciler`] finds the files whose keys
//! exist but which the index lacks (a paced `SCAN`), for the owner of the
//! source to fetch and apply after a snapshot.
//! Every Redis connection of metafuse is opened here.
//!
//! Keys: the `REDIS_PREFIX` applies to `file:` keys
//! (`{prefix}file:{hashId}/{property}`, `{prefix}file:__index__`); the
//! stream is always `meta:events`, as the writers name it.
//!
//! URLs (`--redis-url`; a password in the URL is never logged):
//!
//! | form | meaning |
//! |---|---|
//! | `redis://[user:password@]host:port[/db]`, `rediss://…` | one Redis (TLS with `rediss`) |
//! | `redis+cluster://[user:password@]host:port[,host:port…]` | a Redis Cluster, through any of these seed nodes; `rediss+cluster://` for TLS |
//! | `redis+sentinel://[user:password@]host:port[,host:port…]/master-name` | the master the sentinels name (port 26379 if omitted); `rediss+sentinel://` for TLS to the master |
//!
//! In a cluster, bulk fetches are grouped by hash slot and owner and sent
//! to every master in parallel (one pipeline per node, never a cross-slot
//! `MGET`), `SCAN` walks every master, and the tail reads the master
//! serving `meta:events`, re-resolved after a failover. With Sentinel every
//! connection goes to the master named at that moment, so a switch is a
//! reconnect: the tail resumes from its last id, or resynchronises when the
//! new master's stream does not reach it. The credentials of a cluster URL
//! apply to every node; those of a sentinel URL to the master only (the
//! sentinels are asked without). `REDIS_PREFIX` works unchanged; hash tags
//! are never assumed.
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

mod anchors;
mod cluster;
mod connect;
mod entries;
mod error;
mod fetch;
mod info;
mod liveness;
mod reconcile;
mod redis_source;
mod resp;
mod sentinel;
mod source;
mod tail;

pub use anchors::{AnchorFigures, raw_snapshot_mget, raw_xrange};
pub use error::StreamError;
pub use metafuse_rules::{RelevantProperties, Rules, RulesDocument};
pub use metafuse_source::{
    BootstrapMethod, BootstrapReport, FetchedValues, MAX_VALUE_BYTES, MetadataSource, Phase,
    Progress, SourceError, SourceNode, SourceTopology, TailBatch, TailEvent, TailStatus, Timings,
};
pub use metafuse_state::{
    Delta, EVENTS_STREAM, EventCounts, FetchPlan, FetchedValue, FileRef, KeyError, Projection,
    Stats, parse_event_key,
};
pub use reconcile::Reconciler;
pub use redis_source::RedisSource;
pub use source::{Source, Strategy};
pub use tail::Tail;
