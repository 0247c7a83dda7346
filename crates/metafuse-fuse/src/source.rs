//! Where a file's bytes come from: a local file under the files root, or
//! HTTP range reads from the leader's WebDAV.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use parking_lot::Mutex;

/// The local path of a `filePath` under the files root: an absolute
/// `filePath` is taken under the root too; `None` when it would escape the
/// root (`..`), which is treated as a missing source.
pub(crate) fn local_source_path(files_root: &Path, file_path: &str) -> Option<PathBuf> {
    let relative = Path::new(file_path.trim_start_matches('/'));
    let mut path = files_root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

/// Reads exactly `size` bytes at `offset`, fewer only at end of file.
pub(crate) fn read_local(file: &File, offset: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut buffer = vec![0; size];
    let mut filled = 0;
    while filled < size {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n_read) => filled += n_read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buffer.truncate(filled);
    Ok(buffer)
}

/// A small blocking HTTP/1.1 client for range reads from one WebDAV
/// server, keeping idle connections for reuse (FUSE reads arrive on the
/// session threads, which are synchronous).
#[derive(Debug)]
pub(crate) struct WebdavClient {
    host_port: String,
    base_path: String,
    idle_connections: Mutex<Vec<BufReader<TcpStream>>>,
}

/// Why a WebDAV base URL was refused.
#[derive(Debug, thiserror::Error)]
#[error("webdav base url {url:?} is not a plain http://host[:port][/path] url")]
pub struct InvalidWebdavUrl {
    url: String,
}

impl WebdavClient {
    pub(crate) fn new(base_url: &str) -> Result<Self, InvalidWebdavUrl> {
        let invalid = || InvalidWebdavUrl {
            url: base_url.to_owned(),
        };
        let rest = base_url.strip_prefix("http://").ok_or_else(invalid)?;
        let (authority, path) = match rest.find('/') {
            Some(index) => rest.split_at(index),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(invalid());
        }
        let host_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(WebdavClient {
            host_port,
            base_path: path.trim_end_matches('/').to_owned(),
            idle_connections: Mutex::new(Vec::new()),
        })
    }

    /// `{base}/{filePath}` with the path percent-encoded.
    fn request_target(&self, file_path: &str) -> String {
        let mut target = self.base_path.clone();
        for segment in file_path.split('/').filter(|segment| !segment.is_empty()) {
            target.push('/');
            for byte in segment.bytes() {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    target.push(byte as char);
                } else {
                    target.push_str(&format!("%{byte:02X}"));
                }
            }
        }
        target
    }

    /// Bytes `[offset, offset + size)` of the file (fewer at its end).
    pub(crate) fn read_range(
        &self,
        file_path: &str,
        offset: u64,
        size: usize,
    ) -> io::Result<Vec<u8>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        let target = self.request_target(file_path);
        // A pooled connection may have been closed by the server meanwhile:
        // one retry on a fresh connection.
        let pooled = self.idle_connections.lock().pop();
        if let Some(connection) = pooled
            && let Ok(bytes) = self.read_range_on(connection, &target, offset, size)
        {
            return Ok(bytes);
        }
        let stream = TcpStream::connect(&self.host_port)?;
        stream.set_nodelay(true)?;
        self.read_range_on(BufReader::new(stream), &target, offset, size)
    }

    fn read_range_on(
        &self,
        mut connection: BufReader<TcpStream>,
        target: &str,
        offset: u64,
        size: usize,
    ) -> io::Result<Vec<u8>> {
        let last = offset + size as u64 - 1;
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nRange: bytes={offset}-{last}\r\nConnection: keep-alive\r\n\r\n",
            self.host_port
        );
        connection.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        connection.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::other(format!("webdav: bad status line {line:?}")))?;
        let (mut content_length, mut keep_alive) = (None, true);
        loop {
            line.clear();
            connection.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse::<u64>().ok();
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    keep_alive = false;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(io::Error::other(
                        "webdav: chunked responses are not supported",
                    ));
                }
            }
        }
        let content_length = content_length
            .ok_or_else(|| io::Error::other("webdav: response without content-length"))?;
        let mut body = vec![0; usize::try_from(content_length).map_err(io::Error::other)?];
        connection.read_exact(&mut body)?;
        let bytes = match status {
            206 => body,
            // Past the end of the file: nothing to read.
            416 => Vec::new(),
            // A server ignoring Range sends the whole file.
            200 => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(body.len());
                let end = start.saturating_add(size).min(body.len());
                body[start..end].to_vec()
            }
            other => {
                return Err(io::Error::other(format!(
                    "webdav: status {other} for {target}"
                )));
            }
        };
        if keep_alive {
            self.idle_connections.lock().push(connection);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_are_taken_under_the_files_root() {
        let root = Path::new("/files");
        let cases = [
            ("movies/heat.mkv", Some("/files/movies/heat.mkv")),
            ("/movies/heat.mkv", Some("/files/movies/heat.mkv")),
            ("./a//b.mkv", Some("/files/a/b.mkv")),
            ("../etc/passwd", None),
            ("a/../../b", None),
        ];
        for (file_path, expected) in cases {
            assert_eq!(
                local_source_path(root, file_path),
                expected.map(PathBuf::from),
                "{file_path}"
            );
        }
    }

    #[test]
    fn webdav_urls_and_targets() {
        let client = WebdavClient::new("http://leader:8080/webdav/").expect("valid");
        assert_eq!(client.host_port, "leader:8080");
        assert_eq!(
            client.request_target("/TV/Dark é 1.mkv"),
            "/webdav/TV/Dark%20%C3%A9%201.mkv"
        );
        assert_eq!(
            WebdavClient::new("http://leader").expect("valid").host_port,
            "leader:80"
        );
        assert!(WebdavClient::new("https://leader").is_err());
        assert!(WebdavClient::new("http:///x").is_err());
    }
}
