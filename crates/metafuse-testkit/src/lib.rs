//! Test and benchmark support for metafuse.
//!
//! Tests never depend on a service they did not start: [`RedisServer`] starts a
//! private `redis-server` on a free loopback port, in a temporary directory,
//! and stops it when dropped. [`Writer`] writes to it exactly as the
//! MetaMesh writers do, and [`read_truth`] reads back what it holds.
#![warn(missing_docs)]

mod cluster;
mod library;
mod mounts;
mod redis_server;
mod sentinel;
mod writer;

pub use cluster::{RedisCluster, write_library_to_cluster};
pub use library::{EVENTS_STREAM, Library, LibrarySpec, Write};
pub use mounts::{MountingChild, is_mounted, lazy_unmount};
pub use redis_server::{RedisServer, RedisServerError};
pub use sentinel::{RedisSentinels, SENTINEL_MASTER_NAME};
pub use writer::{Files, Writer, read_truth};
