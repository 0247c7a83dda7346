//! Test and benchmark support for metafuse.
//!
//! Tests never depend on a service they did not start: [`RedisServer`] starts a
//! private `redis-server` on a free loopback port, in a temporary directory,
//! and stops it when dropped.
#![warn(missing_docs)]

mod library;
mod redis_server;

pub use library::{EVENTS_STREAM, Library, LibrarySpec, Write};
pub use redis_server::{RedisServer, RedisServerError};
