//! metafuse-leader: see Cargo.toml description.
#![warn(missing_docs)]
