//! metafuse-fuse: the read-only FUSE mount of a library (the only crate
//! that depends on `fuser`).
//!
//! ```no_run
//! # fn demo(library: metafuse_vfs::SharedLibrary) -> Result<(), metafuse_fuse::MountError> {
//! let handle = metafuse_fuse::mount(library.clone(), metafuse_fuse::MountOptions::new("/mnt/library", "/files"))?;
//! // The service loop: apply a batch under the write lock, then tell the kernel.
//! let invalidations = library.apply_batch([]);
//! handle.invalidate(&invalidations);
//! handle.unmount()
//! # }
//! ```
#![warn(missing_docs)]

mod filesystem;
mod mount;

pub use metafuse_bytes::InvalidWebdavUrl;
pub use mount::{MountError, MountHandle, MountOptions, mount};
