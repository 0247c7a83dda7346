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
//! # Targets and what they receive
//! Specs (`--notify`, or `targets` in `[notify]` of the TOML file, where a
//! table `{ kind = "plex", url = …, token = …, section = … }` works too):
//! `plex=URL,token=T[,section=ID]`, `jellyfin=URL,key=K`, `emby=URL,key=K`,
//! `exec=PROGRAM`, `webhook=URL`. URLs are plain `http://`.
//!
//! Paths are sent as the media server sees them: `{media_path_prefix}/{dir}`.
//!
//! - **Plex**: `GET {url}/library/sections/{key}/refresh?path={media path}`
//!   per directory, in the section whose location holds it (sections and
//!   locations from `GET {url}/library/sections`, JSON); a section with
//!   more than `max_directories` directories, a directory above a
//!   location, or everything → `GET {url}/library/sections/{key}/refresh`
//!   for each section under the mount. Token in `X-Plex-Token`.
//! - **Jellyfin / Emby**: `POST {url}/Library/Media/Updated` with
//!   `{"Updates":[{"Path":…,"UpdateType":"Created"|"Modified"}]}`; everything
//!   or too many → `POST {url}/Library/Refresh`. Jellyfin gets the key as
//!   `Authorization: MediaBrowser Token="K"` (Jellyfin 12 no longer reads
//!   the legacy `X-Emby-Token`, 10.x reads both); Emby as `X-Emby-Token`.
//! - **exec**: the program with the media paths as arguments and on stdin,
//!   one per line, and `METAFUSE_NOTIFY_SCOPE=directories`; everything or
//!   too many → the prefix alone and `METAFUSE_NOTIFY_SCOPE=all`. A non-zero
//!   exit is a failure (retried).
//! - **webhook**: `POST` of `application/json`:
//!   `{"scope":"directories"|"all","mediaPathPrefix":"/mnt/library",
//!   "directories":[{"path":"TV Shows/Dark","mediaPath":"/mnt/library/TV Shows/Dark","change":"created"|"modified"}]}`
//!   (`directories` is empty when the scope is `all`).
//!
//! # Timing and counters
//! A directory is sent `debounce` (5 s) after its last change (at most
//! `max_delay`, 60 s, after its first), together with every directory that
//! would be due within a quarter of the debounce. Each request is tried
//! `max_attempts` (6) times, waiting `retry_initial` (1 s) doubled per
//! attempt up to `retry_max` (60 s); each target retries on its own.
//! [`NotifyMetrics`] counts requests sent, attempts failed, requests
//! abandoned and changes coalesced (sent with another's request).
#![warn(missing_docs)]

mod coalesce;
mod http;
mod notifier;
mod spec;
mod target;

pub use notifier::{Notifier, NotifierHandle, NotifyMetrics, NotifyMetricsSource};
pub use spec::{NotifierSpec, NotifyConfig, SpecError};
