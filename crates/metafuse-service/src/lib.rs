//! metafuse-service: see Cargo.toml description.
#![warn(missing_docs)]
