//! metafuse-service: the async composition shared by the binaries.
//!
//! [`Service::start`] finds Redis, bootstraps the projection, builds the
//! tree and then keeps it live: one state task owns the stream tail and
//! serialises every change (stream batches, resynchronisations, rules
//! changes, leader switches), applying each under the library's write lock
//! only for the swap, so readers (the FUSE mount, the HTTP API) never wait
//! for Redis. Invalidations go to the sinks attached with
//! [`Service::attach_invalidation_sink`] (the mount).
#![warn(missing_docs)]

mod backend;
mod config;
mod error;
mod registration;
mod rules_file;
mod service;
mod services;
mod status;

pub use config::{Ownership, RulesSource, ServiceConfig};
pub use error::ServiceError;
pub use registration::{HEARTBEAT_INTERVAL, Registration, RegistrationConfig, local_hostname};
pub use rules_file::{MAX_RULES_BACKUPS, RULES_FILE_NAME, backup_path};
pub use service::{InvalidationSink, Service};
