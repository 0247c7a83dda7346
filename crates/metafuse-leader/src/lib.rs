//! Where is Redis? Leader discovery for metafuse (spec §7).
//!
//! In order of precedence: an explicit Redis URL (`--redis-url`/`REDIS_URL`);
//! a pinned meta-core API (`META_CORE_URL`, asked for `GET {url}/urls`); or the
//! meta-core leader info file `{META_CORE_PATH}/locks/kv-leader.info`, whose one
//! line names the leader's meta-core API, which is asked for `/urls`.
//!
//! [`discover`] waits (logging once per change of reason, not per attempt)
//! until a leader is found; [`watch`] follows the info file afterwards and
//! reports a leader whose Redis or WebDAV location differs.
#![warn(missing_docs)]

mod config;
mod discover;
mod info_file;
mod meta_core;
mod watch;

pub use config::DiscoveryConfig;
pub use discover::{Leader, LeaderError, LeaderSource, discover};
pub use meta_core::UrlsResponse;
pub use watch::{LeaderWatcher, watch};
