//! The fuser `Filesystem`: every method is a short match over a helper that
//! returns `Result<_, Errno>`. Library locks are held for one query and
//! never across IO.

use std::ffi::OsStr;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use hashbrown::HashMap;
use metafuse_vfs::{NodeKind, NodeRef, SharedLibrary};
use parking_lot::Mutex;

use crate::source::{WebdavClient, local_source_path, read_local};

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
    pub(crate) files_root: PathBuf,
    pub(crate) webdav: Option<WebdavClient>,
    pub(crate) ownership: Ownership,
    pub(crate) passthrough_wanted: bool,
    /// Set in `init` when the kernel granted passthrough; cleared for good
    /// when registering a backing file fails (no privilege, stacking...).
    pub(crate) passthrough_active: Arc<AtomicBool>,
    pub(crate) open_files: Mutex<HashMap<u64, OpenFile>>,
    pub(crate) open_directories: Mutex<HashMap<u64, Arc<Vec<DirectoryEntry>>>>,
    /// The kernel wants one backing id per inode for all its open handles.
    pub(crate) backing_files: Mutex<HashMap<u64, (Arc<BackingId>, usize)>>,
    pub(crate) next_handle: AtomicU64,
}

#[derive(Debug)]
pub(crate) enum OpenFile {
    Local(File),
    Passthrough { ino: u64 },
    Remote { file_path: String },
}

#[derive(Debug)]
pub(crate) struct DirectoryEntry {
    name: String,
    attributes: FileAttr,
}

fn time_from_ms(epoch_ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(epoch_ms.unsigned_abs());
    if epoch_ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
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
        FileAttr {
            ino: INodeNo(node.ino()),
            size: node.size_bytes(),
            blocks: node.size_bytes().div_ceil(512),
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

    fn allocate_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    fn lookup_attributes(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let library = self.library.read();
        let node = library.lookup(parent.0, name).ok_or(Errno::ENOENT)?;
        Ok(self.attributes(node))
    }

    fn node_attributes(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        let library = self.library.read();
        let node = library.get(ino.0).ok_or(Errno::ENOENT)?;
        Ok(self.attributes(node))
    }

    fn snapshot_directory(&self, ino: INodeNo) -> Result<Vec<DirectoryEntry>, Errno> {
        let library = self.library.read();
        let directory = library.get(ino.0).ok_or(Errno::ENOENT)?;
        let children = library.children(ino.0).ok_or(Errno::ENOTDIR)?;
        let parent = library.get(directory.parent_ino()).unwrap_or(directory);
        let mut entries = vec![
            DirectoryEntry {
                name: ".".to_owned(),
                attributes: self.attributes(directory),
            },
            DirectoryEntry {
                name: "..".to_owned(),
                attributes: self.attributes(parent),
            },
        ];
        entries.extend(children.map(|child| DirectoryEntry {
            name: child.name().to_owned(),
            attributes: self.attributes(child),
        }));
        Ok(entries)
    }

    fn directory_entries(&self, handle: FileHandle) -> Result<Arc<Vec<DirectoryEntry>>, Errno> {
        self.open_directories
            .lock()
            .get(&handle.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// Opens the source of a file: passthrough when possible, else a local
    /// handle, else WebDAV; EIO when there is no readable source.
    fn open_source(
        &self,
        ino: INodeNo,
        reply: &ReplyOpen,
    ) -> Result<(OpenFile, Option<Arc<BackingId>>), Errno> {
        let source_path = {
            let library = self.library.read();
            let node = library.get(ino.0).ok_or(Errno::ENOENT)?;
            node.source_path().ok_or(Errno::EISDIR)?.to_owned()
        };
        let local = local_source_path(&self.files_root, &source_path)
            .and_then(|path| File::open(path).ok());
        let Some(file) = local else {
            return match &self.webdav {
                Some(_) => Ok((
                    OpenFile::Remote {
                        file_path: source_path,
                    },
                    None,
                )),
                None => {
                    tracing::debug!(ino = ino.0, source_path, "no readable source");
                    Err(Errno::EIO)
                }
            };
        };
        if self.passthrough_active.load(Ordering::Relaxed) {
            let mut backing_files = self.backing_files.lock();
            if let Some((backing_id, n_open)) = backing_files.get_mut(&ino.0) {
                *n_open += 1;
                return Ok((
                    OpenFile::Passthrough { ino: ino.0 },
                    Some(backing_id.clone()),
                ));
            }
            match reply.open_backing(&file) {
                Ok(backing_id) => {
                    let backing_id = Arc::new(backing_id);
                    backing_files.insert(ino.0, (backing_id.clone(), 1));
                    return Ok((OpenFile::Passthrough { ino: ino.0 }, Some(backing_id)));
                }
                Err(error) => {
                    tracing::info!(%error, "passthrough unavailable, reading through the mount");
                    self.passthrough_active.store(false, Ordering::Relaxed);
                }
            }
        }
        Ok((OpenFile::Local(file), None))
    }

    fn read_open_file(&self, handle: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        enum Source {
            Local(File),
            Remote(String),
        }
        // Clone what the read needs so that no lock is held during IO.
        let source = match self.open_files.lock().get(&handle.0) {
            Some(OpenFile::Local(file)) => Source::Local(file.try_clone().map_err(|_| Errno::EIO)?),
            Some(OpenFile::Remote { file_path }) => Source::Remote(file_path.clone()),
            Some(OpenFile::Passthrough { .. }) | None => return Err(Errno::EBADF),
        };
        let size = size as usize;
        let result = match source {
            Source::Local(file) => read_local(&file, offset, size),
            Source::Remote(file_path) => match &self.webdav {
                Some(webdav) => webdav.read_range(&file_path, offset, size),
                None => return Err(Errno::EIO),
            },
        };
        result.map_err(|error| {
            tracing::warn!(%error, fh = handle.0, offset, "read failed");
            Errno::EIO
        })
    }

    fn release_file(&self, handle: FileHandle) {
        let Some(open_file) = self.open_files.lock().remove(&handle.0) else {
            return;
        };
        if let OpenFile::Passthrough { ino } = open_file {
            let mut backing_files = self.backing_files.lock();
            if let Some((_, n_open)) = backing_files.get_mut(&ino) {
                *n_open -= 1;
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
        match self.lookup_attributes(parent, name) {
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
        match self.node_attributes(ino) {
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
        match self.read_open_file(handle, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(errno) => reply.error(errno),
        }
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
            Ok(entries) => {
                let handle = self.allocate_handle();
                self.open_directories
                    .lock()
                    .insert(handle, Arc::new(entries));
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
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.directory_entries(handle) {
            Ok(entries) => entries,
            Err(errno) => return reply.error(errno),
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in entries.iter().enumerate().skip(skip) {
            let next_offset = index as u64 + 1;
            if reply.add(
                entry.attributes.ino,
                next_offset,
                entry.attributes.kind,
                &entry.name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _request: &Request,
        _ino: INodeNo,
        handle: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.directory_entries(handle) {
            Ok(entries) => entries,
            Err(errno) => return reply.error(errno),
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in entries.iter().enumerate().skip(skip) {
            let next_offset = index as u64 + 1;
            if reply.add(
                entry.attributes.ino,
                next_offset,
                &entry.name,
                &CACHE_TTL,
                &entry.attributes,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
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
