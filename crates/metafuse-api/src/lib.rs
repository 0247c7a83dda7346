//! metafuse-api: see Cargo.toml description.
#![warn(missing_docs)]
