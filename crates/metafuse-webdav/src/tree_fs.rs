//! The live virtual tree as a dav-server filesystem: read-only, names and
//! sizes from the library (as the mount shows them), bytes from
//! metafuse-bytes.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsStream,
    OpenOptions, ReadDirMeta,
};
use futures_util::FutureExt;
use metafuse_bytes::{ByteSources, OpenSource};
use metafuse_vfs::{NodeKind, NodeRef, SharedLibrary};

/// The filesystem handed to dav-server: cheap to clone (two `Arc`s).
#[derive(Clone, Debug)]
pub(crate) struct TreeFs {
    pub(crate) library: SharedLibrary,
    pub(crate) sources: ByteSources,
}

/// What PROPFIND and GET need of a node, copied out under the read lock.
#[derive(Clone, Debug)]
struct NodeMeta {
    ino: u64,
    is_dir: bool,
    len: u64,
    mtime_ms: i64,
    ctime_ms: i64,
}

fn time_from_ms(epoch_ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(epoch_ms.unsigned_abs());
    let time = if epoch_ms >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    time.unwrap_or(UNIX_EPOCH)
}

impl NodeMeta {
    fn of(node: NodeRef<'_>) -> Self {
        NodeMeta {
            ino: node.ino(),
            is_dir: node.kind() == NodeKind::Directory,
            len: if node.kind() == NodeKind::Directory {
                0
            } else {
                node.size_bytes()
            },
            mtime_ms: node.mtime_ms(),
            ctime_ms: node.ctime_ms(),
        }
    }
}

impl DavMetaData for NodeMeta {
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> Result<SystemTime, FsError> {
        Ok(time_from_ms(self.mtime_ms))
    }
    fn created(&self) -> Result<SystemTime, FsError> {
        Ok(time_from_ms(self.ctime_ms))
    }
    fn is_dir(&self) -> bool {
        self.is_dir
    }
    /// Inode, size and mtime: a changed file (new source, new size) gets
    /// a new tag, as the mount's attributes change.
    fn etag(&self) -> Option<String> {
        Some(format!("{:x}-{:x}-{:x}", self.ino, self.len, self.mtime_ms))
    }
}

struct Entry {
    name: String,
    meta: NodeMeta,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        async move { Ok(meta) }.boxed()
    }
}

/// An open file: a position over a byte source. Reads run on the
/// blocking pool (local `pread`, or the blocking upstream client).
#[derive(Debug)]
struct SourceFile {
    source: Arc<OpenSource>,
    meta: NodeMeta,
    position: u64,
}

impl DavFile for SourceFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        async move { Ok(meta) }.boxed()
    }
    fn write_buf(&mut self, _: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        async { Err(FsError::Forbidden) }.boxed()
    }
    fn write_bytes(&mut self, _: Bytes) -> FsFuture<'_, ()> {
        async { Err(FsError::Forbidden) }.boxed()
    }
    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        let source = self.source.clone();
        let offset = self.position;
        async move {
            let bytes = tokio::task::spawn_blocking(move || source.read_at(offset, count))
                .await
                .map_err(|_| FsError::GeneralFailure)?
                .map_err(|error| {
                    tracing::warn!(%error, offset, "webdav: read of a source failed");
                    FsError::GeneralFailure
                })?;
            self.position += bytes.len() as u64;
            Ok(Bytes::from(bytes))
        }
        .boxed()
    }
    fn seek(&mut self, position: SeekFrom) -> FsFuture<'_, u64> {
        let target = match position {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.meta.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let result = match target {
            Some(offset) => {
                self.position = offset;
                Ok(offset)
            }
            None => Err(FsError::GeneralFailure),
        };
        async move { result }.boxed()
    }
    fn flush(&mut self) -> FsFuture<'_, ()> {
        async { Ok(()) }.boxed()
    }
}

impl TreeFs {
    /// The node at a request path (decoded bytes; our names are UTF-8).
    fn node_meta(&self, path: &DavPath) -> Result<NodeMeta, FsError> {
        let path = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::NotFound)?;
        let library = self.library.read();
        library
            .resolve(path)
            .map(NodeMeta::of)
            .ok_or(FsError::NotFound)
    }
}

/// `<D:displayname>` of a name, escaped for XML (names hold no control
/// characters: the path rules remove them).
fn displayname_xml(name: &str) -> Vec<u8> {
    let mut escaped = String::with_capacity(name.len());
    for character in name.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            character if character.is_control() => {}
            character => escaped.push(character),
        }
    }
    format!("<D:displayname xmlns:D=\"DAV:\">{escaped}</D:displayname>").into_bytes()
}

fn displayname_prop(xml: Option<Vec<u8>>) -> DavProp {
    DavProp {
        name: "displayname".to_owned(),
        prefix: Some("D".to_owned()),
        namespace: Some("DAV:".to_owned()),
        xml,
    }
}

impl TreeFs {
    fn name_of(&self, path: &DavPath) -> Result<String, FsError> {
        let path = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::NotFound)?;
        let library = self.library.read();
        let node = library.resolve(path).ok_or(FsError::NotFound)?;
        Ok(node.name().to_owned())
    }
}

impl DavFileSystem for TreeFs {
    /// `displayname` is the only property beyond dav-server's live ones;
    /// it is served as a "dead" property, read-only (PROPPATCH is refused
    /// before dav-server sees it).
    fn have_props<'a>(
        &'a self,
        _: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        async { true }.boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let name = self.name_of(path)?;
            Ok(vec![displayname_prop(
                do_content.then(|| displayname_xml(&name)),
            )])
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            if prop.name != "displayname" || prop.namespace.as_deref() != Some("DAV:") {
                return Err(FsError::NotFound);
            }
            Ok(displayname_xml(&self.name_of(path)?))
        }
        .boxed()
    }

    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write
                || options.append
                || options.truncate
                || options.create
                || options.create_new
            {
                return Err(FsError::Forbidden);
            }
            let path_text = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::NotFound)?;
            let (mut meta, file_path) = {
                let library = self.library.read();
                let node = library.resolve(path_text).ok_or(FsError::NotFound)?;
                let file_path = library
                    .source_path(node)
                    .ok_or(FsError::Forbidden)?
                    .to_owned();
                (NodeMeta::of(node), file_path)
            };
            let sources = self.sources.clone();
            let source = tokio::task::spawn_blocking(move || sources.open_stored(&file_path))
                .await
                .map_err(|_| FsError::GeneralFailure)?
                .map_err(|error| {
                    tracing::debug!(%error, "webdav: no readable source");
                    match error.errno() {
                        13 => FsError::Forbidden,
                        _ => FsError::GeneralFailure,
                    }
                })?;
            // The real size, as the mount corrects it at open: GET's
            // Content-Length then matches the bytes sent.
            if let OpenSource::Local(local) = &source {
                meta.len = local.len();
            }
            let file: Box<dyn DavFile> = Box::new(SourceFile {
                source: Arc::new(source),
                meta,
                position: 0,
            });
            Ok(file)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let path = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::NotFound)?;
            let entries: Vec<Result<Box<dyn DavDirEntry>, FsError>> = {
                let library = self.library.read();
                let node = library.resolve(path).ok_or(FsError::NotFound)?;
                let children = library.children(node.ino()).ok_or(FsError::Forbidden)?;
                children
                    .map(|child| {
                        let entry: Box<dyn DavDirEntry> = Box::new(Entry {
                            name: child.name().to_owned(),
                            meta: NodeMeta::of(child),
                        });
                        Ok(entry)
                    })
                    .collect()
            };
            let stream: FsStream<Box<dyn DavDirEntry>> =
                Box::pin(futures_util::stream::iter(entries));
            Ok(stream)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let meta: Box<dyn DavMetaData> = Box::new(self.node_meta(path)?);
            Ok(meta)
        }
        .boxed()
    }
}
