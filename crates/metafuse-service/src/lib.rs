//! metafuse-service: the async composition shared by the binaries.
//!
//! [`Service::start`] finds the metadata source (a
//! `metafuse_source::MetadataSource`: the leader's Redis directly, or
//! meta-core's HTTP API and event stream, as discovery or `--source`
//! decides), starts from the warm-restart checkpoint when it still fits or
//! bootstraps the projection, builds the tree and then keeps it live: one
//! state task owns the source and serialises every change (tail batches,
//! resynchronisations, rules changes, leader switches), applying each under
//! the library's write lock only for the swap, so readers (the FUSE mount,
//! the HTTP API) never wait for the source.
//!
//! Every change is published on the change feed
//! ([`Service::subscribe_changes`]) as the virtual paths it added, removed
//! or changed. The kernel invalidation is one subscriber of that feed
//! ([`Service::attach_invalidation_sink`], the mount), the one the service
//! waits for before it reports an event applied.
//!
//! A tree built from a snapshot (or a checkpoint) is reconciled in the
//! background with the keys in Redis: files the index does not list are
//! found and applied like any change ([`Service::wait_for_reconciliation`]).
#![warn(missing_docs)]

mod backend;
mod checkpoint;
mod config;
mod error;
mod inner;
mod reconcile;
mod registration;
mod rules_file;
mod service;
mod services;
mod status;

pub use config::{Ownership, RulesSource, ServiceConfig};
pub use error::ServiceError;
pub use inner::{InvalidationSink, NotificationCountsSource};
pub use metafuse_vfs::{ChangeBatch, ChangeCause, PathChange, PathChangeKind};
pub use registration::{HEARTBEAT_INTERVAL, Registration, RegistrationConfig, local_hostname};
pub use rules_file::{MAX_RULES_BACKUPS, RULES_FILE_NAME, backup_path};
pub use service::Service;
