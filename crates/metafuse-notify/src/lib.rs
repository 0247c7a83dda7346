//! metafuse-notify: tells media servers (Plex, Jellyfin, Emby), a program
//! or a webhook which directories of the library changed, the moment the
//! change feed reports them — debounced per directory, merged into their
//! ancestors, bounded per call, retried with backoff, never blocking the
//! caller. A bulk change (bootstrap, rules, resync) becomes one
//! library-level refresh rather than thousands of directory scans.
//!
//! ```no_run
//! # async fn example(batches: Vec<std::sync::Arc<metafuse_vfs::ChangeBatch>>) {
//! use metafuse_notify::{Notifier, NotifyConfig};
//! let config = NotifyConfig {
//!     targets: vec!["plex=http://plex:32400,token=T".parse().expect("valid spec")],
//!     ..NotifyConfig::default()
//! };
//! let notifier = Notifier::spawn(config, "/mnt/library");
//! for batch in batches {
//!     notifier.push(batch);
//! }
//! println!("{:?}", notifier.metrics());
//! notifier.shutdown().await;
//! # }
//! ```
//!
//! What each target receives is described in the `target` module docs
//! (and in the crate README section of docs/configuration.md once wired).
#![warn(missing_docs)]

mod coalesce;
mod http;
mod notifier;
mod spec;
mod target;

pub use notifier::{Notifier, NotifierHandle, NotifyMetrics, NotifyMetricsSource};
pub use spec::{NotifierSpec, NotifyConfig, SpecError};
