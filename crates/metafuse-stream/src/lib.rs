//! metafuse-stream: see Cargo.toml description.
#![warn(missing_docs)]
