//! metafuse-bytes: where a file's bytes come from, for every server of the
//! tree (the FUSE mount, the WebDAV server, the API's reports).
//!
//! [`SourceLocation::resolve`] owns the path rule: a `filePath` (raw bytes)
//! is taken beneath the files root, `..` is refused, and opening lets the
//! kernel refuse symlinks that lead out of the root.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let sources = metafuse_bytes::ByteSources::new("/files", Some("http://leader/webdav"))?;
//! let source = sources.open(b"movies/heat.mkv")?;
//! let first_kib = source.read_at(0, 1024)?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod local;
mod location;
mod sources;
mod upstream;

pub use local::LocalSource;
pub use location::{PathRefused, SourceLocation};
pub use sources::{ByteSources, OpenError, OpenSource};
pub use upstream::{InvalidWebdavUrl, UpstreamClient};
