//! metafuse-state: see Cargo.toml description.
#![warn(missing_docs)]
