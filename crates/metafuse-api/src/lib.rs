//! The HTTP API of metafuse: the routes and JSON shapes of the reference
//! meta-fuse service (spec §6), plus `/metrics`, served with hyper.
//!
//! The service state lives elsewhere; it is reached through the [`Backend`]
//! trait, which the service implements. [`serve`] runs the server until a
//! shutdown future resolves. Route-by-route shapes are in `docs/api.md`.
#![warn(missing_docs)]

mod backend;
mod config;
mod error;
mod guard;
mod prometheus;
mod router;
mod server;
mod state;
mod static_files;
mod timestamp;
mod webdav_tokens;

pub use backend::{
    Attr, Backend, BoxFuture, EntryKind, Health, HealthStatus, MetricsSnapshot, NodeState,
    NotificationCounts, Preview, PreviewEntry, ReadInfo, RulesSnapshot, ServiceEntry, ServiceList,
    SourceState, StateBuilderStats, Stats, StreamHealth, TemplateVariable, TopologyState,
    Validation, VariableType,
};
pub use config::ApiConfig;
pub use error::ApiError;
pub use server::{serve, serve_with};
pub use state::BackendSlot;
pub use timestamp::rfc3339_millis;
pub use webdav_tokens::install_webdav_tokens;
