//! The fuser `Filesystem`: every method is a short match over a helper that
//! returns `Result<_, Errno>`. Library read locks are held for one query
//! (and the reply that the kernel caches, see `lookup`), never across the
//! IO of reading a source.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, Notifier, OpenAccMode,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use hashbrown::{HashMap, HashSet};
use metafuse_bytes::{ByteSources, OpenError, OpenSource};
use metafuse_vfs::{Library, NodeKind, NodeRef, SharedLibrary};
use parking_lot::Mutex;

/// Entries and attributes can be cached long: every change of the tree
/// reaches the kernel as an invalidation.
const CACHE_TTL: Duration = Duration::from_secs(3600);

/// Owner and modes reported for every node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ownership {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) file_mode: u16,
    pub(crate) dir_mode: u16,
}

#[derive(Debug)]
pub(crate) struct MetafuseFilesystem {
    pub(crate) library: SharedLibrary,
    pub(crate) sources: ByteSources,
    pub(crate) ownership: Ownership,
    pub(crate) passthrough_wanted: bool,
    /// Set in `init` when the kernel granted passthrough. A failed
    /// registration of one backing file (a source on a stacked FUSE, an
    /// odd file) only makes that open read through the mount.
    pub(crate) passthrough_active: Arc<AtomicBool>,
    /// Whether a failed passthrough registration was logged at info
    /// level already (later ones go to debug).
    pub(crate) passthrough_failure_reported: AtomicBool,
    /// Real sizes of sources whose metadata size was wrong, found at open
    /// (`fstat`): inode → (metadata size it corrects, real size). Only
    /// used while the metadata still says the same size.
    pub(crate) observed_sizes: Mutex<HashMap<u64, (u64, u64)>>,
    /// Set once the session exists, to tell the kernel about corrected
    /// sizes.
    pub(crate) notifier: Arc<OnceLock<Notifier>>,
    /// Ioctl commands already logged (once each, at debug level).
    pub(crate) reported_ioctls: Mutex<HashSet<u32>>,
    pub(crate) open_files: Mutex<HashMap<u64, OpenFile>>,
    pub(crate) open_directories: Mutex<HashMap<u64, Arc<DirectorySnapshot>>>,
    /// The kernel wants one backing id per inode for all its open handles.
    pub(crate) backing_files: Mutex<HashMap<u64, (Arc<BackingId>, usize)>>,
    pub(crate) next_handle: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct OpenFile {
    /// Shared so that a read clones a pointer, not a descriptor.
    source: Arc<OpenSource>,
    /// The inode whose backing file the kernel reads itself (passthrough);
    /// `source` still serves a read that reaches us anyway.
    passthrough_ino: Option<u64>,
}

/// The names of a directory when it was opened: offsets index this list,
/// so a listing neither skips nor repeats entries while the tree changes.
/// Each entry is looked up again when it is returned, so a name removed
/// meanwhile is left out instead of being handed to the kernel as a live
/// (cached) entry.
#[derive(Debug)]
pub(crate) struct DirectorySnapshot {
    ino: u64,
    /// `.`, `..`, then the children in the tree's stable order.
    names: Vec<String>,
}

/// The replies of `readdir` (names and kinds) and `readdirplus` (with
/// attributes the kernel caches), so that one body answers both.
trait ListingReply {
    /// Adds an entry; returns true when the buffer is full.
    fn add_entry(&mut self, next_offset: u64, name: &str, attributes: &FileAttr) -> bool;
    fn ok(self);
    fn error(self, errno: Errno);
}

impl ListingReply for ReplyDirectory {
    fn add_entry(&mut self, next_offset: u64, name: &str, attributes: &FileAttr) -> bool {
        self.add(attributes.ino, next_offset, attributes.kind, name)
    }
    fn ok(self) {
        ReplyDirectory::ok(self);
    }
    fn error(self, errno: Errno) {
        ReplyDirectory::error(self, errno);
    }
}

impl ListingReply for ReplyDirectoryPlus {
    fn add_entry(&mut self, next_offset: u64, name: &str, attributes: &FileAttr) -> bool {
        self.add(
            attributes.ino,
            next_offset,
            name,
            &CACHE_TTL,
            attributes,
            Generation(0),
        )
    }
    fn ok(self) {
        ReplyDirectoryPlus::ok(self);
    }
    fn error(self, errno: Errno) {
        ReplyDirectoryPlus::error(self, errno);
    }
}

/// Largest read whose buffer a session thread keeps for the next one: the
/// kernel's default cap on one request (256 pages, `fs.fuse.max_pages_limit`).
/// A larger request (a raised limit) gets a buffer of its own.
const KEPT_READ_BUFFER_BYTES: usize = 1 << 20;

thread_local! {
    /// The bytes of the current read of this session thread, reused from
    /// one read to the next: a fresh `Vec` per request cost an allocation
    /// and the zeroing of every byte before `pread` overwrote it.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Block size reported by `statfs`.
const STATFS_BLOCK_SIZE: u32 = 4096;

/// A timestamp from metadata; values beyond what `SystemTime` holds (bad
/// input) become the epoch rather than a panic.
fn time_from_ms(epoch_ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(epoch_ms.unsigned_abs());
    let time = if epoch_ms >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    time.unwrap_or(UNIX_EPOCH)
}

impl MetafuseFilesystem {
    fn attributes(&self, node: NodeRef<'_>) -> FileAttr {
        let (kind, perm, nlink) = match node.kind() {
            NodeKind::Directory => (
                FileType::Directory,
                self.ownership.dir_mode,
                u32::try_from(node.n_subdirectories() + 2).unwrap_or(u32::MAX),
            ),
            NodeKind::File => (FileType::RegularFile, self.ownership.file_mode, 1),
        };
        let (mtime, ctime) = (time_from_ms(node.mtime_ms()), time_from_ms(node.ctime_ms()));
        let size = self.size_of(node);
        FileAttr {
            ino: INodeNo(node.ino()),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime,
            crtime: ctime,
            kind,
            perm,
            nlink,
            uid: self.ownership.uid,
            gid: self.ownership.gid,
            rdev: 0,
            // Large reads make `cp` and media servers issue fewer requests.
            blksize: 128 * 1024,
            flags: 0,
        }
    }

    /// The metadata's size, unless an open found the source to differ.
    fn size_of(&self, node: NodeRef<'_>) -> u64 {
        let metadata_size = node.size_bytes();
        if node.kind() != NodeKind::File {
            return metadata_size;
        }
        match self.observed_sizes.lock().get(&node.ino()) {
            Some(&(corrected, real_size)) if corrected == metadata_size => real_size,
            _ => metadata_size,
        }
    }

    /// Records the real size of an opened source and, when it differs
    /// from what the kernel was told, makes the kernel ask again, so that
    /// `stat` and `read` agree (with and without passthrough).
    fn correct_size(&self, ino: u64, real_size: u64) {
        let metadata_size = {
            let library = self.library.read();
            let Some(node) = library.get(ino) else {
                return;
            };
            node.size_bytes()
        };
        let previous = {
            let mut observed_sizes = self.observed_sizes.lock();
            if real_size == metadata_size {
                observed_sizes.remove(&ino)
            } else {
                observed_sizes.insert(ino, (metadata_size, real_size))
            }
        };
        let told = previous
            .filter(|&(corrected, _)| corrected == metadata_size)
            .map_or(metadata_size, |(_, size)| size);
        if told == real_size {
            return;
        }
        tracing::debug!(
            ino,
            metadata_size,
            real_size,
            "source size differs from the metadata"
        );
        // Attributes only (negative offset): the page cache is not stale.
        if let Some(notifier) = self.notifier.get()
            && let Err(error) = notifier.inval_inode(INodeNo(ino), -1, 0)
            && error.raw_os_error() != Some(libc::ENOENT)
        {
            tracing::debug!(%error, ino, "size invalidation refused");
        }
    }

    fn allocate_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    fn lookup_attributes(
        &self,
        library: &Library,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<FileAttr, Errno> {
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let node = library.lookup(parent.0, name).ok_or(Errno::ENOENT)?;
        Ok(self.attributes(node))
    }

    fn node_attributes(&self, library: &Library, ino: INodeNo) -> Result<FileAttr, Errno> {
        let node = library.get(ino.0).ok_or(Errno::ENOENT)?;
        Ok(self.attributes(node))
    }

    fn snapshot_directory(&self, ino: INodeNo) -> Result<DirectorySnapshot, Errno> {
        let library = self.library.read();
        library.get(ino.0).ok_or(Errno::ENOENT)?;
        let children = library.children(ino.0).ok_or(Errno::ENOTDIR)?;
        let mut names = vec![".".to_owned(), "..".to_owned()];
        names.extend(children.map(|child| child.name().to_owned()));
        Ok(DirectorySnapshot { ino: ino.0, names })
    }

    fn directory_snapshot(&self, handle: FileHandle) -> Result<Arc<DirectorySnapshot>, Errno> {
        self.open_directories
            .lock()
            .get(&handle.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// Calls `add(next_offset, name, attributes)` for the snapshot's
    /// entries from `offset` on that still exist, with their current
    /// attributes, until `add` reports a full buffer.
    fn for_each_live_entry(
        &self,
        library: &Library,
        snapshot: &DirectorySnapshot,
        offset: u64,
        mut add: impl FnMut(u64, &str, &FileAttr) -> bool,
    ) {
        let Some(directory) = library.get(snapshot.ino) else {
            return;
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, name) in snapshot.names.iter().enumerate().skip(skip) {
            let node = match name.as_str() {
                "." => Some(directory),
                ".." => Some(library.get(directory.parent_ino()).unwrap_or(directory)),
                _ => library.lookup(snapshot.ino, name),
            };
            let Some(node) = node else {
                continue;
            };
            if add(index as u64 + 1, name, &self.attributes(node)) {
                break;
            }
        }
    }

    /// Answers `readdir` or `readdirplus` from the snapshot of an open
    /// directory. The reply is sent under the read lock, like every reply
    /// the kernel caches (see `lookup`).
    fn reply_listing(&self, handle: FileHandle, offset: u64, mut reply: impl ListingReply) {
        let snapshot = match self.directory_snapshot(handle) {
            Ok(snapshot) => snapshot,
            Err(errno) => return reply.error(errno),
        };
        let library = self.library.read();
        self.for_each_live_entry(
            &library,
            &snapshot,
            offset,
            |next_offset, name, attributes| reply.add_entry(next_offset, name, attributes),
        );
        reply.ok();
    }

    /// ENOENT unless the node exists, for methods that need nothing more.
    fn existing_node(&self, ino: INodeNo) -> Result<(), Errno> {
        self.library
            .read()
            .get(ino.0)
            .map(drop)
            .ok_or(Errno::ENOENT)
    }

    /// Opens the source of a file: passthrough when possible, else a local
    /// handle, else WebDAV; EACCES when the path rule refuses it, EIO when
    /// there is no readable source.
    fn open_source(
        &self,
        ino: INodeNo,
        reply: &ReplyOpen,
    ) -> Result<(OpenFile, Option<Arc<BackingId>>), Errno> {
        let source_path = {
            let library = self.library.read();
            let node = library.get(ino.0).ok_or(Errno::ENOENT)?;
            library.source_path(node).ok_or(Errno::EISDIR)?.to_owned()
        };
        let source = self
            .sources
            .open_stored(&source_path)
            .map_err(|error: OpenError| {
                tracing::debug!(ino = ino.0, %error, "no readable source");
                Errno::from_i32(error.errno())
            })?;
        if let OpenSource::Local(local) = &source {
            self.correct_size(ino.0, local.len());
        }
        if let OpenSource::Local(local) = &source
            && self.passthrough_active.load(Ordering::Relaxed)
            && let Some(backing_id) = self.backing_id(ino.0, local.file(), reply)
        {
            let open_file = OpenFile {
                source: Arc::new(source),
                passthrough_ino: Some(ino.0),
            };
            return Ok((open_file, Some(backing_id)));
        }
        let open_file = OpenFile {
            source: Arc::new(source),
            passthrough_ino: None,
        };
        Ok((open_file, None))
    }

    /// The backing id of `ino` for one more open handle: the kernel wants
    /// one per inode, so the first open registers `file` and later ones
    /// share it. None when registering fails (no privilege, stacking too
    /// deep, not a regular file): that open reads through the mount.
    fn backing_id(
        &self,
        ino: u64,
        file: &std::fs::File,
        reply: &ReplyOpen,
    ) -> Option<Arc<BackingId>> {
        let mut backing_files = self.backing_files.lock();
        if let Some((backing_id, n_open)) = backing_files.get_mut(&ino) {
            *n_open += 1;
            return Some(backing_id.clone());
        }
        match reply.open_backing(file) {
            Ok(backing_id) => {
                let backing_id = Arc::new(backing_id);
                backing_files.insert(ino, (backing_id.clone(), 1));
                Some(backing_id)
            }
            Err(error) => {
                if self
                    .passthrough_failure_reported
                    .swap(true, Ordering::Relaxed)
                {
                    tracing::debug!(%error, ino, "passthrough refused for this file");
                } else {
                    tracing::info!(%error, ino, "passthrough refused for a file, reading it through the mount");
                }
                None
            }
        }
    }

    /// The source of an open file; cloned so that no lock is held during IO.
    fn open_source_of(&self, handle: FileHandle) -> Result<Arc<OpenSource>, Errno> {
        match self.open_files.lock().get(&handle.0) {
            Some(open_file) => Ok(open_file.source.clone()),
            None => Err(Errno::EBADF),
        }
    }

    /// Answers a read: a local source straight into this thread's reused
    /// buffer, the upstream WebDAV into a buffer of its own.
    fn reply_read(&self, handle: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        let source = match self.open_source_of(handle) {
            Ok(source) => source,
            Err(errno) => return reply.error(errno),
        };
        let failed = |error: std::io::Error| {
            tracing::warn!(%error, fh = handle.0, offset, "read of a source failed");
            Errno::EIO
        };
        let size = size as usize;
        match &*source {
            OpenSource::Local(local) if size <= KEPT_READ_BUFFER_BYTES => {
                READ_BUFFER.with_borrow_mut(|buffer| {
                    if buffer.len() < size {
                        buffer.resize(size, 0);
                    }
                    match local.read_into(offset, &mut buffer[..size]) {
                        Ok(n_read) => reply.data(&buffer[..n_read]),
                        Err(error) => reply.error(failed(error)),
                    }
                });
            }
            source => match source.read_at(offset, size) {
                Ok(bytes) => reply.data(&bytes),
                Err(error) => reply.error(failed(error)),
            },
        }
    }

    fn release_file(&self, handle: FileHandle) {
        let Some(open_file) = self.open_files.lock().remove(&handle.0) else {
            return;
        };
        if let Some(ino) = open_file.passthrough_ino {
            let mut backing_files = self.backing_files.lock();
            if let Some((_, n_open)) = backing_files.get_mut(&ino) {
                *n_open = n_open.saturating_sub(1);
                if *n_open == 0 {
                    backing_files.remove(&ino);
                }
            }
        }
    }
}

impl Filesystem for MetafuseFilesystem {
    fn init(&mut self, _request: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Listings come with attributes: one request per directory page
        // instead of one lookup per entry.
        if config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS)
            .is_err()
        {
            tracing::info!("kernel without readdirplus");
        }
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        if self.passthrough_wanted
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough_active.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // Replies that the kernel caches are sent while the read lock is
        // held: a writer sends its invalidations only after its write lock,
        // so they always reach the kernel after this reply and never before
        // it, which would leave a stale entry cached for the whole TTL.
        let library = self.library.read();
        match self.lookup_attributes(&library, parent, name) {
            Ok(attributes) => reply.entry(&CACHE_TTL, &attributes, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(
        &self,
        _request: &Request,
        ino: INodeNo,
        _handle: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        let library = self.library.read();
        match self.node_attributes(&library, ino) {
            Ok(attributes) => reply.attr(&CACHE_TTL, &attributes),
            Err(errno) => reply.error(errno),
        }
    }

    fn open(&self, _request: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            reply.error(Errno::EROFS);
            return;
        }
        match self.open_source(ino, &reply) {
            Ok((open_file, backing_id)) => {
                let handle = self.allocate_handle();
                self.open_files.lock().insert(handle, open_file);
                match backing_id {
                    Some(backing_id) => reply.opened_passthrough(
                        FileHandle(handle),
                        FopenFlags::empty(),
                        &backing_id,
                    ),
                    // Contents only change with an inode invalidation,
                    // which also drops these cached pages.
                    None => reply.opened(FileHandle(handle), FopenFlags::FOPEN_KEEP_CACHE),
                }
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.reply_read(handle, offset, size, reply);
    }

    fn release(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_file(handle);
        reply.ok();
    }

    fn opendir(&self, _request: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // A snapshot per open keeps offsets consistent while the tree changes.
        match self.snapshot_directory(ino) {
            Ok(snapshot) => {
                let handle = self.allocate_handle();
                self.open_directories
                    .lock()
                    .insert(handle, Arc::new(snapshot));
                reply.opened(FileHandle(handle), FopenFlags::empty());
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.reply_listing(handle, offset, reply);
    }

    fn readdirplus(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.reply_listing(handle, offset, reply);
    }

    fn releasedir(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.open_directories.lock().remove(&handle.0);
        reply.ok();
    }

    // ----- the rest of what tools call on a read-only tree -----

    /// Nothing is ever buffered for writing: every close succeeds.
    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    /// Only reached without `default_permissions`: existence and
    /// read-only-ness; the kernel checks modes itself.
    fn access(&self, _: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.existing_node(ino) {
            Ok(()) if mask.contains(AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    /// No ioctl is supported; `ENOTTY` is what a plain file answers (Python
    /// asks `TCGETS` on every `open()`), logged once per command.
    fn ioctl(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        _: IoctlFlags,
        cmd: u32,
        _: &[u8],
        _: u32,
        reply: ReplyIoctl,
    ) {
        if self.reported_ioctls.lock().insert(cmd) {
            tracing::debug!(cmd, ino = ino.0, "unsupported ioctl answered with ENOTTY");
        }
        reply.error(Errno::ENOTTY);
    }

    /// There are no symlinks; the kernel only asks for one by mistake.
    fn readlink(&self, _: &Request, _: INodeNo, reply: ReplyData) {
        reply.error(Errno::EINVAL);
    }

    /// No node has extended attributes (`ls -l` and SELinux tools ask).
    fn getxattr(&self, _: &Request, ino: INodeNo, _: &OsStr, _: u32, reply: ReplyXattr) {
        match self.existing_node(ino) {
            Ok(()) => reply.error(Errno::ENODATA),
            Err(errno) => reply.error(errno),
        }
    }

    fn listxattr(&self, _: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.existing_node(ino) {
            // Size 0 asks for the length of the (empty) name list.
            Ok(()) if size == 0 => reply.size(0),
            Ok(()) => reply.data(&[]),
            Err(errno) => reply.error(errno),
        }
    }

    /// Sizes for `df`: the library's bytes as used blocks, nothing free
    /// (like any read-only image), its nodes as used inodes.
    fn statfs(&self, _: &Request, _: INodeNo, reply: ReplyStatfs) {
        let (total_bytes, n_nodes) = {
            let library = self.library.read();
            let n_nodes = library.file_count() + library.directory_count() + 1;
            (library.total_size_bytes(), n_nodes as u64)
        };
        reply.statfs(
            total_bytes.div_ceil(u64::from(STATFS_BLOCK_SIZE)),
            0,
            0,
            n_nodes,
            0,
            STATFS_BLOCK_SIZE,
            255,
            STATFS_BLOCK_SIZE,
        );
    }

    // ----- read-only: every write attempt is EROFS -----

    fn setattr(
        &self,
        _request: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _handle: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, _: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _: &Request, _: INodeNo, _: &OsStr, _: &std::path::Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: INodeNo,
        _: &OsStr,
        _: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _: &Request, _: INodeNo, _: INodeNo, _: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: &[u8],
        _: WriteFlags,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: u32,
        _: u32,
        _: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: &[u8],
        _: i32,
        _: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}
