//! Where is Redis? Leader discovery for metafuse (spec §7).
//!
//! In order of precedence: an explicit Redis URL (`--redis-url`/`REDIS_URL`);
//! a pinned meta-core API (`META_CORE_URL`, asked for `GET {url}/urls`); or the
//! meta-core leader info file `{META_CORE_PATH}/locks/kv-leader.info`, whose one
//! line names the leader's meta-core API, which is asked for `/urls`.
//!
//! When neither is configured nor the info file exists, the first meta-core
//! heard on the beacon v2 multicast group is used ([`watch_cores`]).
//!
//! The result says which source to read from ([`SourceMode`]): a meta-core
//! whose `/urls` publishes a `redisUrl` is read through that Redis, one that
//! publishes none (the lockdown, spec §9) through its HTTP API.
//!
//! [`discover`] waits (logging once per change of reason, not per attempt)
//! until a leader is found; [`watch`] follows the info file or the beacon
//! afterwards and reports a leader whose location differs. [`advertise`]
//! sends our own beacon advertisement ([`service_resource`]).
#![warn(missing_docs)]

mod beacon;
mod config;
mod discover;
mod info_file;
mod leader;
mod meta_core;
mod watch;

pub use beacon::{
    BeaconAdvertiser, BeaconConfig, BeaconMessage, BeaconNode, BeaconResource, BeaconWatcher,
    CORE_CAPABILITY, CoreAdvert, SERVICE_CAPABILITY, advertise, service_resource, watch_cores,
};
pub use config::DiscoveryConfig;
pub use discover::{LeaderError, discover};
pub use leader::{Leader, LeaderSource, SourceMode};
pub use meta_core::{UrlsResponse, choose_mode};
pub use watch::{LeaderWatcher, watch};
