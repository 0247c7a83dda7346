//! Opening a `filePath` wherever its bytes are: the local file beneath the
//! files root, else the upstream WebDAV.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::local::LocalSource;
use crate::location::{PathRefused, SourceLocation};
use crate::upstream::{InvalidWebdavUrl, UpstreamClient};

/// The byte sources of a library: the files root and, optionally, the
/// leader's WebDAV for files not found there. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ByteSources {
    files_root: PathBuf,
    upstream: Option<Arc<UpstreamClient>>,
}

/// An opened source.
#[derive(Debug)]
pub enum OpenSource {
    /// A local file beneath the files root.
    Local(LocalSource),
    /// A file read by range requests from the upstream WebDAV.
    Upstream {
        /// The client of the upstream server.
        client: Arc<UpstreamClient>,
        /// The file's place, already checked by the path rule.
        location: SourceLocation,
    },
}

/// Why a source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path rule refused the `filePath` itself.
    #[error("file path {file_path:?} refused: {reason}")]
    Refused {
        /// The `filePath`, lossily decoded.
        file_path: String,
        /// Which part of the rule.
        reason: PathRefused,
    },
    /// The path leads out of the files root through a symlink.
    #[error("file path {file_path:?} leads out of the files root")]
    LeavesRoot {
        /// The `filePath`, lossily decoded.
        file_path: String,
    },
    /// No local file and no upstream to ask.
    #[error("no readable source for {file_path:?}: {cause}")]
    Unavailable {
        /// The `filePath`, lossily decoded.
        file_path: String,
        /// Why the local open failed.
        cause: io::Error,
    },
}

impl OpenError {
    /// The errno a filesystem answers: EACCES when the rule refused, EIO
    /// for a missing source (the file stays listed).
    pub fn errno(&self) -> i32 {
        match self {
            OpenError::Refused { .. } | OpenError::LeavesRoot { .. } => {
                rustix::io::Errno::ACCESS.raw_os_error()
            }
            OpenError::Unavailable { .. } => rustix::io::Errno::IO.raw_os_error(),
        }
    }
}

impl ByteSources {
    /// Sources under `files_root`, with `upstream_base_url` (plain
    /// `http://host[:port][/path]`) for files not found there.
    pub fn new(
        files_root: impl Into<PathBuf>,
        upstream_base_url: Option<&str>,
    ) -> Result<Self, InvalidWebdavUrl> {
        let upstream = upstream_base_url
            .map(UpstreamClient::new)
            .transpose()?
            .map(Arc::new);
        Ok(ByteSources {
            files_root: files_root.into(),
            upstream,
        })
    }

    /// The files root.
    pub fn files_root(&self) -> &Path {
        &self.files_root
    }

    /// Opens a `filePath` as the projection stores it (a non-UTF-8 path is
    /// kept there escaped; see [`metafuse_state::file_path_bytes`]): the local file beneath the root, else (missing
    /// or unreadable there) the upstream. A path refused by the rule or
    /// leading out of the root through a symlink is never asked upstream.
    pub fn open_stored(&self, stored_file_path: &str) -> Result<OpenSource, OpenError> {
        self.open(&metafuse_state::file_path_bytes(stored_file_path))
    }

    /// [`ByteSources::open_stored`] for a `filePath` given as its exact bytes.
    pub fn open(&self, file_path: &[u8]) -> Result<OpenSource, OpenError> {
        let lossy = || String::from_utf8_lossy(file_path).into_owned();
        let location = SourceLocation::resolve(&self.files_root, file_path).map_err(|reason| {
            OpenError::Refused {
                file_path: lossy(),
                reason,
            }
        })?;
        match location.open_local() {
            Ok(local) => Ok(OpenSource::Local(local)),
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                tracing::warn!(
                    file_path = lossy(),
                    "source leads out of the files root: refused"
                );
                Err(OpenError::LeavesRoot { file_path: lossy() })
            }
            Err(cause) => match &self.upstream {
                Some(client) => Ok(OpenSource::Upstream {
                    client: client.clone(),
                    location,
                }),
                None => Err(OpenError::Unavailable {
                    file_path: lossy(),
                    cause,
                }),
            },
        }
    }
}

impl OpenSource {
    /// Bytes `[offset, offset + size)` (fewer at the end of the file).
    pub fn read_at(&self, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        match self {
            OpenSource::Local(local) => local.read_at(offset, size),
            OpenSource::Upstream { client, location } => client.read_range(location, offset, size),
        }
    }

    /// The real length: `fstat` for a local file, the `Content-Range`
    /// total of a one-byte request upstream.
    pub fn length(&self) -> io::Result<u64> {
        match self {
            OpenSource::Local(local) => Ok(local.len()),
            OpenSource::Upstream { client, location } => client.length(location),
        }
    }
}
