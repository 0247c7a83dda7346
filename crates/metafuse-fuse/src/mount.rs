//! Mounting, kernel invalidations and unmounting.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fuser::{BackgroundSession, Config, INodeNo, MountOption, Notifier, SessionACL};
use metafuse_vfs::{Invalidation, SharedLibrary};

use crate::filesystem::{MetafuseFilesystem, Ownership};
use metafuse_bytes::{ByteSources, InvalidWebdavUrl};

/// How to mount a library.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Existing empty directory to mount on.
    pub mountpoint: PathBuf,
    /// Root under which `filePath`s are found (`FILES_VOLUME`).
    pub files_root: PathBuf,
    /// WebDAV base URL for files not under `files_root` (plain `http://`).
    pub webdav_base_url: Option<String>,
    /// Owner reported for every node (`PUID`); default: this process's uid.
    pub uid: Option<u32>,
    /// Group reported for every node (`PGID`); default: this process's gid.
    pub gid: Option<u32>,
    /// Mode of files (`FUSE_FILE_MODE`).
    pub file_mode: u16,
    /// Mode of directories (`FUSE_DIR_MODE`).
    pub dir_mode: u16,
    /// Let other users (Plex, Jellyfin) read the mount.
    pub allow_other: bool,
    /// FUSE session threads.
    pub n_threads: usize,
    /// Try kernel passthrough reads (kernel >= 6.9, root); falls back to
    /// reads through the mount when refused.
    pub passthrough: bool,
    /// Mount even on a non-empty directory or an existing mount, hiding
    /// what is there (`--allow-non-empty`).
    pub allow_non_empty: bool,
}

impl MountOptions {
    /// Defaults: modes 644/755, other users allowed, 4 threads, passthrough.
    pub fn new(mountpoint: impl Into<PathBuf>, files_root: impl Into<PathBuf>) -> Self {
        MountOptions {
            mountpoint: mountpoint.into(),
            files_root: files_root.into(),
            webdav_base_url: None,
            uid: None,
            gid: None,
            file_mode: 0o644,
            dir_mode: 0o755,
            allow_other: true,
            n_threads: 4,
            passthrough: true,
            allow_non_empty: false,
        }
    }
}

/// Why mounting or unmounting failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The WebDAV URL is unusable.
    #[error(transparent)]
    WebdavUrl(#[from] InvalidWebdavUrl),
    /// The mountpoint holds files or is a mount already; mounting would
    /// hide them (allowed with `allow_non_empty`).
    #[error(
        "mountpoint {mountpoint:?} {reason}; refusing to hide it (allow with --allow-non-empty)"
    )]
    MountpointInUse {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// `is not empty` or `is already a mount`.
        reason: &'static str,
    },
    /// The kernel or fusermount refused the mount.
    #[error("mounting on {mountpoint:?} failed: {cause}")]
    Mount {
        /// Where we tried to mount.
        mountpoint: PathBuf,
        /// What the system said.
        cause: io::Error,
    },
    /// Unmounting failed (the mount may be busy).
    #[error("unmounting {mountpoint:?} failed: {cause}")]
    Unmount {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// What the system said.
        cause: io::Error,
    },
}

/// A live mount. Dropping it unmounts.
#[derive(Debug)]
pub struct MountHandle {
    session: Option<BackgroundSession>,
    notifier: Notifier,
    mountpoint: PathBuf,
    passthrough_active: Arc<AtomicBool>,
    /// Unmounts if this process dies; told to stand down on a clean unmount.
    watchdog: Option<Child>,
}

/// Starts a child that lazily unmounts `mountpoint` when its stdin closes
/// without the word `keep`, i.e. when this process dies without unmounting
/// (even by SIGKILL: the kernel closes the pipe). It runs in its own process
/// group so that a signal to ours spares it. `umount -l` needs root (what
/// the service and CI run as, no fusermount helper needed); the fusermount
/// helpers cover an unprivileged mount.
fn watch_for_death(mountpoint: &Path) -> io::Result<Child> {
    let mountpoint = mountpoint.canonicalize()?;
    Command::new("sh")
        .arg("-c")
        .arg(concat!(
            r#"read -r word; [ "$word" = keep ] && exit 0; "#,
            r#"umount -l "$0" 2>/dev/null || fusermount3 -uz "$0" 2>/dev/null || exec fusermount -uz "$0""#
        ))
        .arg(mountpoint)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

/// Why `mountpoint` must not be mounted on: it holds entries or is a
/// mount point already (its device differs from its parent's, or the
/// mount table lists it). A dead FUSE mount fails `read_dir` with ENOTCONN.
fn mountpoint_in_use(mountpoint: &Path) -> io::Result<Option<&'static str>> {
    if std::fs::read_dir(mountpoint)?.next().is_some() {
        return Ok(Some("is not empty"));
    }
    let canonical = mountpoint.canonicalize()?;
    let device = std::fs::metadata(&canonical)?.dev();
    let parent_device = match canonical.parent() {
        Some(parent) => std::fs::metadata(parent)?.dev(),
        None => return Ok(Some("is already a mount")),
    };
    if device != parent_device || listed_in_mount_table(&canonical) {
        return Ok(Some("is already a mount"));
    }
    Ok(None)
}

/// Whether `/proc/self/mountinfo` has a mount on `canonical` (bind mounts
/// of the same filesystem keep the parent's device number).
fn listed_in_mount_table(canonical: &Path) -> bool {
    let Ok(mount_table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = canonical.as_os_str().to_string_lossy();
    mount_table.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mount_point| unescape_mount_point(mount_point) == wanted)
    })
}

/// What the kernel may read ahead on the mount, in KiB: one full request
/// (the kernel's default cap, 256 pages of 4 KiB, `fs.fuse.max_pages_limit`).
const READ_AHEAD_KB: u32 = 1024;

/// Raises the read-ahead of the mount's own backing device (its
/// `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`) from the kernel's 128 KiB to
/// `READ_AHEAD_KB`, so that a sequential read without passthrough arrives
/// in 1 MiB requests instead of 128 KiB ones: eight times fewer round
/// trips through FUSE. The kernel offers FUSE only its default read-ahead
/// at `init` and ignores a larger answer; the sysfs file is root's, so an
/// unprivileged mount keeps 128 KiB (logged at debug level). The device
/// and its setting go away with the mount.
fn raise_read_ahead(mountpoint: &Path) {
    let device = mountpoint
        .canonicalize()
        .ok()
        .and_then(|canonical| mount_device(&canonical));
    let Some(device) = device else {
        tracing::debug!(mountpoint = %mountpoint.display(), "mount not found in the mount table: read-ahead left as is");
        return;
    };
    let setting = format!("/sys/class/bdi/{device}/read_ahead_kb");
    match std::fs::write(&setting, format!("{READ_AHEAD_KB}\n")) {
        Ok(()) => tracing::debug!(%setting, kb = READ_AHEAD_KB, "read-ahead raised"),
        Err(error) => tracing::debug!(%error, %setting, "read-ahead left at the kernel's default"),
    }
}

/// The `MAJOR:MINOR` device of the mount on `canonical` (the last one
/// listed: a mount over an existing one is listed after it).
fn mount_device(canonical: &Path) -> Option<String> {
    let mount_table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = canonical.as_os_str().to_string_lossy();
    mount_table.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        (unescape_mount_point(mount_point) == wanted).then(|| device.to_owned())
    })
}

/// Mount table fields escape space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(field: &str) -> String {
    let mut unescaped = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(index) = rest.find('\\') {
        unescaped.push_str(&rest[..index]);
        let octal = rest.get(index + 1..index + 4);
        match octal.and_then(|digits| u8::from_str_radix(digits, 8).ok()) {
            Some(byte) => {
                unescaped.push(char::from(byte));
                rest = &rest[index + 4..];
            }
            None => {
                unescaped.push('\\');
                rest = &rest[index + 1..];
            }
        }
    }
    unescaped.push_str(rest);
    unescaped
}

/// Mounts `library` read-only on `options.mountpoint` and serves it on a
/// background multi-threaded session until the handle is unmounted or
/// dropped.
pub fn mount(library: SharedLibrary, options: MountOptions) -> Result<MountHandle, MountError> {
    let sources = ByteSources::new(&options.files_root, options.webdav_base_url.as_deref())?;
    if !options.allow_non_empty {
        let in_use = mountpoint_in_use(&options.mountpoint).map_err(|cause| MountError::Mount {
            mountpoint: options.mountpoint.clone(),
            cause,
        })?;
        if let Some(reason) = in_use {
            return Err(MountError::MountpointInUse {
                mountpoint: options.mountpoint.clone(),
                reason,
            });
        }
    }
    // /proc/self is owned by this process's effective uid and gid.
    let process_owner = std::fs::metadata("/proc/self").ok();
    let ownership = Ownership {
        uid: options
            .uid
            .unwrap_or_else(|| process_owner.as_ref().map_or(0, MetadataExt::uid)),
        gid: options
            .gid
            .unwrap_or_else(|| process_owner.as_ref().map_or(0, MetadataExt::gid)),
        file_mode: options.file_mode,
        dir_mode: options.dir_mode,
    };
    let passthrough_active = Arc::new(AtomicBool::new(false));
    let notifier_slot = Arc::new(OnceLock::new());
    let make_filesystem = || MetafuseFilesystem {
        library: library.clone(),
        sources: sources.clone(),
        ownership,
        passthrough_wanted: options.passthrough,
        passthrough_active: passthrough_active.clone(),
        passthrough_failure_reported: AtomicBool::new(false),
        observed_sizes: Default::default(),
        notifier: notifier_slot.clone(),
        reported_ioctls: Default::default(),
        open_files: Default::default(),
        open_directories: Default::default(),
        backing_files: Default::default(),
        next_handle: AtomicU64::new(1),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("metafuse".to_owned()),
        MountOption::Subtype("metafuse".to_owned()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        // The kernel enforces the configured owner and modes (PUID, PGID,
        // FUSE_FILE_MODE, FUSE_DIR_MODE); without it anyone may read all.
        MountOption::DefaultPermissions,
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::RootAndOwner
    };
    config.n_threads = Some(options.n_threads.max(1));
    config.clone_fd = options.n_threads > 1;

    let mount_error = |cause| MountError::Mount {
        mountpoint: options.mountpoint.clone(),
        cause,
    };
    // Not fuser's AutoUnmount: it needs the fusermount helper, whose
    // watcher dies at once in containers (the mount then hangs on unmount).
    // As root fuser mounts directly; `watch_for_death` gives the same
    // guarantee with a tiny child process.
    let session = fuser::Session::new(make_filesystem(), &options.mountpoint, &config)
        .map_err(mount_error)?;
    let notifier = session.notifier();
    let _ = notifier_slot.set(notifier.clone());
    let session = session.spawn().map_err(mount_error)?;
    raise_read_ahead(&options.mountpoint);
    let watchdog = match watch_for_death(&options.mountpoint) {
        Ok(watchdog) => Some(watchdog),
        Err(error) => {
            tracing::warn!(%error, "no auto-unmount: a killed process would leave a dead mount");
            None
        }
    };
    tracing::info!(
        mountpoint = %options.mountpoint.display(),
        auto_unmount = watchdog.is_some(),
        passthrough = passthrough_active.load(Ordering::Relaxed),
        "mounted"
    );
    Ok(MountHandle {
        session: Some(session),
        notifier,
        mountpoint: options.mountpoint,
        passthrough_active,
        watchdog,
    })
}

impl MountHandle {
    /// Tells the kernel to forget what changed. Call it after the batch
    /// was applied and the library lock released: the kernel may call
    /// back into the filesystem while handling these.
    pub fn invalidate(&self, invalidations: &[Invalidation]) {
        let mut unique: Vec<&Invalidation> = invalidations.iter().collect();
        unique.sort_unstable_by(|left, right| sort_key(left).cmp(&sort_key(right)));
        unique.dedup();
        for invalidation in unique {
            let result = match invalidation {
                Invalidation::Entry { parent, name } => self
                    .notifier
                    .inval_entry(INodeNo(*parent), OsStr::new(name)),
                // Offset 0, length 0: attributes and every cached page.
                Invalidation::Inode { ino } => self.notifier.inval_inode(INodeNo(*ino), 0, 0),
            };
            match result {
                // The kernel did not have it cached: nothing to forget.
                Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(error) => tracing::debug!(%error, ?invalidation, "invalidation refused"),
                Ok(()) => {}
            }
        }
    }

    /// Where the library is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether reads go straight to the source files (kernel passthrough).
    pub fn passthrough_active(&self) -> bool {
        self.passthrough_active.load(Ordering::Relaxed)
    }

    /// Whether the kernel unmounts by itself if this process dies.
    pub fn auto_unmount(&self) -> bool {
        self.watchdog.is_some()
    }

    /// Unmounts and waits for the session threads to finish.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmount_session()
    }

    fn unmount_session(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        wait_until_not_busy(&self.mountpoint);
        let result = session
            .umount_and_join()
            .map_err(|cause| MountError::Unmount {
                mountpoint: self.mountpoint.clone(),
                cause,
            });
        // After a failed unmount (busy) the watchdog stays armed: the
        // mount is then detached when this process exits instead of being
        // left dead.
        if result.is_ok()
            && let Some(mut watchdog) = self.watchdog.take()
        {
            if let Some(mut stdin) = watchdog.stdin.take() {
                let _ = stdin.write_all(b"keep\n");
            }
            let _ = watchdog.wait();
        }
        result
    }
}

/// How long an unmount waits for the mount to stop being busy.
const UNMOUNT_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (boundedly) until nothing holds the mount busy, so that the
/// unmount that follows is not refused with `EBUSY` for a file a client
/// closed an instant ago (the kernel lets go of it asynchronously; seen in
/// tests right after reads). `MNT_EXPIRE` asks without unmounting: `EAGAIN`
/// means "not busy" (the mount is only marked), `EBUSY` means busy. Any
/// other answer — not permitted (a user mount goes through fusermount3),
/// not mounted — ends the wait and the real unmount reports what it finds.
fn wait_until_not_busy(mountpoint: &std::path::Path) {
    let deadline = std::time::Instant::now() + UNMOUNT_BUSY_WAIT;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_EXPIRE) {
            Err(nix::errno::Errno::EBUSY) if std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            Err(nix::errno::Errno::EBUSY) => {
                tracing::info!(mountpoint = %mountpoint.display(), "the mount is still busy; unmounting anyway");
                return;
            }
            _ => return,
        }
    }
}

fn sort_key(invalidation: &Invalidation) -> (u8, u64, &str) {
    match invalidation {
        Invalidation::Entry { parent, name } => (0, *parent, name),
        Invalidation::Inode { ino } => (1, *ino, ""),
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(error) = self.unmount_session() {
            tracing::warn!(%error, "unmount on drop failed");
        }
    }
}
