//! Mounts made by tests: whether one is there, and a guard for a child
//! process that mounts, so a failing test leaves neither behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Whether `mountpoint` is listed in this mount namespace's mount table.
pub fn is_mounted(mountpoint: &Path) -> bool {
    // Canonicalise the parent, not the mountpoint itself: a dead FUSE mount
    // answers ENOTCONN to anything asked of it.
    let canonical = match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|parent| parent.join(name))
            .unwrap_or_else(|_| mountpoint.to_path_buf()),
        _ => mountpoint.to_path_buf(),
    };
    let Some(wanted) = canonical.to_str() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mounts")
        .map(|mounts| {
            mounts
                .lines()
                .any(|line| line.split(' ').nth(1) == Some(wanted))
        })
        .unwrap_or(false)
}

/// Detaches whatever is mounted on `mountpoint` (`umount -l`), for clean-up
/// paths where a test has failed half way.
pub fn lazy_unmount(mountpoint: &Path) {
    let _ = Command::new("umount").arg("-l").arg(mountpoint).status();
}

/// A child process that mounts on `mountpoint`: dropping it kills and reaps
/// the child and detaches a mount it left behind.
#[derive(Debug)]
pub struct MountingChild {
    /// The process, for its pipes, pid and exit status.
    pub child: Child,
    mountpoint: PathBuf,
}

impl MountingChild {
    /// Guards `child`, which mounts on `mountpoint`.
    pub fn new(child: Child, mountpoint: impl Into<PathBuf>) -> Self {
        MountingChild {
            child,
            mountpoint: mountpoint.into(),
        }
    }
}

impl Drop for MountingChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(&self.mountpoint) {
            lazy_unmount(&self.mountpoint);
        }
    }
}
