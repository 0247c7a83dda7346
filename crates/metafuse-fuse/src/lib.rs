//! metafuse-fuse: see Cargo.toml description.
#![warn(missing_docs)]
