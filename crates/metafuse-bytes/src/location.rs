//! The path rule: where a `filePath` points beneath the files root, and
//! opening it there with the kernel refusing every way out.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use crate::local::LocalSource;

/// Why a `filePath` was refused before touching any file or the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathRefused {
    /// A `..` component: it could only climb out of the root.
    #[error("a `..` component would leave the files root")]
    ParentComponent,
    /// A NUL byte, which no file name can hold.
    #[error("a NUL byte is not allowed in a file path")]
    NulByte,
    /// Nothing but `/` and `.`: the root itself, not a file.
    #[error("the path names the files root itself, not a file")]
    NoFileName,
}

/// A `filePath` resolved beneath a files root: the one owner of the path
/// rule, used for local opens, upstream WebDAV requests and the paths the
/// API reports.
///
/// The rule: an absolute `filePath` is taken under the root too; empty and
/// `.` components are dropped; `..` and NUL are refused outright. Opening
/// ([`SourceLocation::open_local`]) then lets the kernel refuse symlinks that
/// leave the root (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`,
/// or a component-by-component `O_NOFOLLOW` walk where `openat2` is
/// missing); symlinks that stay inside are followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    files_root: PathBuf,
    /// Never empty; no segment is empty, `.`, `..` or holds `/` or NUL.
    segments: Vec<Vec<u8>>,
}

/// Symlinks followed by the fallback walk before giving up, like the
/// kernel's own limit.
const MAX_SYMLINKS: usize = 40;

/// `openat2` races with a concurrent rename give EAGAIN; a few retries
/// are enough in practice.
const MAX_OPENAT2_ATTEMPTS: usize = 8;

/// Set once `openat2` answered ENOSYS (old kernel, seccomp filter).
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// The error of a path that would leave the root, as the kernel says it.
fn leaves_root() -> io::Error {
    rustix::io::Errno::ACCESS.into()
}

impl SourceLocation {
    /// Applies the path rule to `file_path` (raw bytes: a `filePath` need
    /// not be UTF-8) under `files_root`.
    pub fn resolve(files_root: &Path, file_path: &[u8]) -> Result<Self, PathRefused> {
        Self::resolve_bytes(files_root, file_path)
    }

    /// [`SourceLocation::resolve`] for a `filePath` as the projection
    /// stores it: a non-UTF-8 path is kept there in an escaped form
    /// ([`metafuse_state::file_path_bytes`] gives its exact bytes back).
    pub fn resolve_stored(files_root: &Path, stored_file_path: &str) -> Result<Self, PathRefused> {
        Self::resolve_bytes(
            files_root,
            &metafuse_state::file_path_bytes(stored_file_path),
        )
    }

    fn resolve_bytes(files_root: &Path, file_path: &[u8]) -> Result<Self, PathRefused> {
        if file_path.contains(&0) {
            return Err(PathRefused::NulByte);
        }
        let mut segments = Vec::new();
        for segment in file_path.split(|&byte| byte == b'/') {
            match segment {
                b"" | b"." => {}
                b".." => return Err(PathRefused::ParentComponent),
                _ => segments.push(segment.to_vec()),
            }
        }
        if segments.is_empty() {
            return Err(PathRefused::NoFileName);
        }
        Ok(SourceLocation {
            files_root: files_root.to_path_buf(),
            segments,
        })
    }

    /// The path relative to the root (`movies/heat.mkv`).
    pub fn relative_path(&self) -> PathBuf {
        let mut path = PathBuf::new();
        for segment in &self.segments {
            path.push(OsStr::from_bytes(segment));
        }
        path
    }

    /// The path under the root, for reports (`/files/movies/heat.mkv`).
    /// Opening must go through [`SourceLocation::open_local`], which also
    /// checks the symlinks on the way.
    pub fn local_path(&self) -> PathBuf {
        self.files_root.join(self.relative_path())
    }

    /// The path as percent-encoded URL segments (`TV/Dark%20S01.mkv`):
    /// only unreserved bytes stay as they are, so no `/`, `.`-only
    /// segment or `%` of the name can change the URL's meaning.
    pub fn percent_encoded(&self) -> String {
        let mut encoded = String::new();
        for (index, segment) in self.segments.iter().enumerate() {
            if index > 0 {
                encoded.push('/');
            }
            for &byte in segment {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    encoded.push(char::from(byte));
                } else {
                    encoded.push_str(&format!("%{byte:02X}"));
                }
            }
        }
        encoded
    }

    /// Opens the file read-only beneath the root. A path whose symlinks
    /// lead out of the root fails with `EACCES` (`PermissionDenied`); a
    /// source that is not a regular file fails too.
    pub fn open_local(&self) -> io::Result<LocalSource> {
        let root = rustix::fs::open(
            &self.files_root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let descriptor = if OPENAT2_MISSING.load(Ordering::Relaxed) {
            open_by_walk(root, &self.segments)?
        } else {
            match open_with_openat2(&root, &self.relative_path()) {
                Err(error)
                    if error.raw_os_error() == Some(rustix::io::Errno::NOSYS.raw_os_error()) =>
                {
                    tracing::debug!(
                        "openat2 unavailable: resolving source paths component by component"
                    );
                    OPENAT2_MISSING.store(true, Ordering::Relaxed);
                    open_by_walk(root, &self.segments)?
                }
                result => result?,
            }
        };
        LocalSource::from_file(File::from(descriptor))
    }

    /// Test hook: the fallback walk, whatever the kernel offers.
    #[cfg(test)]
    pub(crate) fn open_local_by_walk(&self) -> io::Result<LocalSource> {
        let root = rustix::fs::open(
            &self.files_root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        LocalSource::from_file(File::from(open_by_walk(root, &self.segments)?))
    }
}

/// Flags of the final open: read-only, and never blocking on a FIFO that
/// someone placed in the root (it is refused as not a regular file).
fn file_open_flags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

fn open_with_openat2(root: &OwnedFd, relative: &Path) -> io::Result<OwnedFd> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match rustix::fs::openat2(root, relative, file_open_flags(), Mode::empty(), resolve) {
            Ok(descriptor) => return Ok(descriptor),
            Err(rustix::io::Errno::AGAIN) if attempt < MAX_OPENAT2_ATTEMPTS => {}
            // EXDEV: the path (through a `..` or an absolute symlink)
            // would leave the root.
            Err(rustix::io::Errno::XDEV) => return Err(leaves_root()),
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// The same rule without `openat2`: each component opened with
/// `O_NOFOLLOW` from its parent's descriptor; a symlink is read and its
/// target's components walked in its place, `..` climbing only the
/// directories opened so far and an absolute target refused, as
/// `RESOLVE_BENEATH` does.
fn open_by_walk(root: OwnedFd, segments: &[Vec<u8>]) -> io::Result<OwnedFd> {
    let mut directories = vec![root];
    let mut pending: VecDeque<Vec<u8>> = segments.iter().cloned().collect();
    let mut n_symlinks = 0;
    while let Some(name) = pending.pop_front() {
        match name.as_slice() {
            b"" | b"." => continue,
            b".." => {
                if directories.len() == 1 {
                    return Err(leaves_root());
                }
                directories.pop();
                continue;
            }
            _ => {}
        }
        let parent = directories.last().ok_or_else(leaves_root)?;
        let name_path = OsStr::from_bytes(&name);
        let is_last = pending.is_empty();
        let flags = if is_last {
            file_open_flags() | OFlags::NOFOLLOW
        } else {
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
        };
        match rustix::fs::openat(parent, name_path, flags, Mode::empty()) {
            Ok(descriptor) if is_last => return Ok(descriptor),
            Ok(descriptor) => directories.push(descriptor),
            Err(errno @ (rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)) => {
                let status = rustix::fs::statat(parent, name_path, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(status.st_mode) != FileType::Symlink {
                    return Err(errno.into());
                }
                n_symlinks += 1;
                if n_symlinks > MAX_SYMLINKS {
                    return Err(rustix::io::Errno::LOOP.into());
                }
                let target = rustix::fs::readlinkat(parent, name_path, Vec::new())?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    return Err(leaves_root());
                }
                for segment in target.rsplit(|&byte| byte == b'/') {
                    pending.push_front(segment.to_vec());
                }
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    // Every name was consumed by `..`: the path ends at a directory.
    Err(rustix::io::Errno::ISDIR.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_rule_keeps_paths_under_the_root() {
        let root = Path::new("/files");
        let cases: [(&[u8], Result<&str, PathRefused>); 9] = [
            (b"movies/heat.mkv", Ok("/files/movies/heat.mkv")),
            (b"/movies/heat.mkv", Ok("/files/movies/heat.mkv")),
            (b"./a//b.mkv", Ok("/files/a/b.mkv")),
            (b"../etc/passwd", Err(PathRefused::ParentComponent)),
            (b"a/../../b", Err(PathRefused::ParentComponent)),
            (b".", Err(PathRefused::NoFileName)),
            (b"/", Err(PathRefused::NoFileName)),
            (b"", Err(PathRefused::NoFileName)),
            (b"a\0b", Err(PathRefused::NulByte)),
        ];
        for (file_path, expected) in cases {
            let resolved = SourceLocation::resolve(root, file_path).map(|l| l.local_path());
            assert_eq!(
                resolved,
                expected.map(PathBuf::from),
                "{}",
                String::from_utf8_lossy(file_path)
            );
        }
    }

    #[test]
    fn url_segments_are_percent_encoded_bytes() {
        let location =
            SourceLocation::resolve(Path::new("/f"), b"/TV/Dark \xc3\xa9 1%.mkv/x\xff#?")
                .expect("ok");
        assert_eq!(
            location.percent_encoded(),
            "TV/Dark%20%C3%A9%201%25.mkv/x%FF%23%3F"
        );
    }

    /// Both openers, so the fallback is tested where openat2 exists.
    fn open_both(location: &SourceLocation) -> [io::Result<LocalSource>; 2] {
        [location.open_local(), location.open_local_by_walk()]
    }

    #[test]
    fn symlinks_may_not_leave_the_root() {
        let outside = tempfile::tempdir().expect("outside");
        std::fs::write(outside.path().join("secret"), b"outside").expect("secret");
        let root = tempfile::tempdir().expect("root");
        let root_path = root.path();
        std::fs::create_dir(root_path.join("dir")).expect("dir");
        std::fs::write(root_path.join("dir/real.mkv"), b"inside!").expect("real");
        symlink(outside.path(), root_path.join("evil")).expect("evil");
        symlink(
            outside.path().join("secret"),
            root_path.join("replaced.mkv"),
        )
        .expect("replaced");
        symlink("../../secret", root_path.join("dir/climb")).expect("climb");
        symlink("dir/real.mkv", root_path.join("inside.mkv")).expect("inside");
        symlink("../dir/real.mkv", root_path.join("dir/up-and-in.mkv")).expect("up-and-in");
        symlink("/proc/self/root/etc/hostname", root_path.join("magic")).expect("magic");
        for refused in ["evil/secret", "replaced.mkv", "dir/climb", "magic"] {
            let location = SourceLocation::resolve(root_path, refused.as_bytes()).expect("rule");
            for result in open_both(&location) {
                let error = result.err().unwrap_or_else(|| panic!("{refused} opened"));
                assert_eq!(
                    error.kind(),
                    io::ErrorKind::PermissionDenied,
                    "{refused}: {error}"
                );
            }
        }
        for allowed in ["dir/real.mkv", "inside.mkv", "dir/up-and-in.mkv"] {
            let location = SourceLocation::resolve(root_path, allowed.as_bytes()).expect("rule");
            for result in open_both(&location) {
                let source = result.unwrap_or_else(|error| panic!("{allowed}: {error}"));
                assert_eq!(source.read_at(0, 100).expect("read"), b"inside!");
                assert_eq!(source.len(), 7);
            }
        }
        let directory = SourceLocation::resolve(root_path, b"dir").expect("rule");
        for result in open_both(&directory) {
            assert!(result.is_err(), "a directory is not a source");
        }
    }
}
