//! metafuse-vfs: see Cargo.toml description.
#![warn(missing_docs)]
