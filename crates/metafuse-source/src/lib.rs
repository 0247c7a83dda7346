//! The metadata source layer: what every source of library metadata (a
//! MetaMesh Redis, the meta-core HTTP API) offers the service, and the types
//! they share.
//!
//! A source rebuilds a [`Projection`](metafuse_state::Projection) with
//! [`MetadataSource::bootstrap`], follows its changes with
//! [`MetadataSource::next_batch`] and fetches current values on demand with
//! [`MetadataSource::fetch_plan`]. Positions are opaque event ids: only the
//! source knows what they mean (see [`MetadataSource::event_id_order`]).
//!
//! No IO and no async runtime here: futures are plain boxed futures, so the
//! trait is object-safe and the service can hold a `Box<dyn MetadataSource>`.
#![warn(missing_docs)]

mod error;
mod fetched;
mod redact;
mod report;
mod tail_status;
mod topology;
mod traits;

pub use error::SourceError;
pub use fetched::{FetchedValues, MAX_VALUE_BYTES};
pub use redact::redact_url;
pub use report::{BootstrapMethod, BootstrapReport, Phase, Progress, Timings};
pub use tail_status::{NOT_CONNECTED_YET, TailStatus};
pub use topology::{SourceNode, SourceTopology, TopologyReader};
pub use traits::{
    BoxFuture, EventIdOrder, MetadataSource, ProgressFn, SourceKind, TailBatch, TailEvent,
    opaque_event_id_order,
};
