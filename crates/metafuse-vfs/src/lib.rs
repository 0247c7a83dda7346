//! metafuse-vfs: the virtual tree of a library (pure, no IO, no async).
//!
//! [`Tree`] holds directories and files built from rendered paths, updated
//! per file with collisions resolved from the current state alone, stable
//! inodes and the kernel invalidations each change needs. [`Library`]
//! composes the projection, the rules and the tree; [`SharedLibrary`] is the
//! handle the FUSE mount and the HTTP API read from. Its `*_reporting`
//! updates also say which virtual paths changed ([`TreeChanges`]), noted
//! before the change so a removed directory is still known by its path: the
//! change feed's data ([`ChangeBatch`]).
#![warn(missing_docs)]

mod change;
mod entries;
mod library;
mod names;
mod tree;

#[cfg(test)]
mod inode_tests;
#[cfg(test)]
mod tree_tests;

pub use change::{ChangeBatch, ChangeCause, PathChange, PathChangeKind, TreeChanges};
pub use library::{Library, SharedLibrary};
pub use tree::{FileSpec, Invalidation, NodeKind, NodeRef, ROOT_INODE, Tree, TreeBuilder};
