//! metafuse-rules: see Cargo.toml description.
#![warn(missing_docs)]
