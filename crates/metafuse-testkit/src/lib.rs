//! Test and benchmark support for metafuse.
//!
//! Tests never depend on a service they did not start: [`RedisServer`] starts a
//! private `redis-server` on a free loopback port, in a temporary directory,
//! and stops it when dropped. [`Writer`] writes to it exactly as the
//! MetaMesh writers do, and [`read_truth`] reads back what it holds.
//! [`require_fuse!`] skips a mount test where FUSE cannot work, saying why;
//! [`TableCheck`] makes a table test check every row.
#![warn(missing_docs)]

mod cluster;
mod fuse;
mod library;
mod metacore;
mod mounts;
mod redis_server;
mod sentinel;
mod table;
mod writer;

pub use cluster::{RedisCluster, write_library_to_cluster};
pub use fuse::{REQUIRE_FUSE_VARIABLE, fuse_required, fuse_unavailable, report_fuse_skip};
pub use library::{EVENTS_STREAM, Library, LibrarySpec, Write};
pub use metacore::{DoubleMode, MetaCoreDouble, MetaCoreDoubleConfig, MetaCoreDoubleError};
pub use mounts::{MountingChild, is_mounted, lazy_unmount};
pub use redis_server::{RedisServer, RedisServerError};
pub use sentinel::{RedisSentinels, SENTINEL_MASTER_NAME};
pub use table::TableCheck;
pub use writer::{Files, Writer, read_truth};
