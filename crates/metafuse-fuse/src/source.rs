//! Where a file's bytes come from: a local file under the files root, or
//! HTTP range reads from the leader's WebDAV.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

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

/// How long connecting to the WebDAV server may take before a read fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one socket read or write may block: a hung server must end in
/// EIO, not in FUSE threads stuck for ever (which would hang the mount).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept for reuse; more than the FUSE threads is waste.
const MAX_IDLE_CONNECTIONS: usize = 16;

/// The rest of a response body up to this size is read and thrown away so
/// that its connection can be reused; a longer rest closes the connection.
const MAX_DRAINED_BYTES: u64 = 64 * 1024;

/// Bound on the status line plus headers of one response.
const MAX_HEAD_BYTES: u64 = 64 * 1024;

/// A small blocking HTTP/1.1 client for range reads from one WebDAV
/// server, keeping idle connections for reuse (FUSE reads arrive on the
/// session threads, which are synchronous).
#[derive(Debug)]
pub(crate) struct WebdavClient {
    /// `host:port` to connect to.
    host_port: String,
    /// The URL's authority, as sent in `Host`.
    host_header: String,
    base_path: String,
    idle_connections: Mutex<Vec<BufReader<TcpStream>>>,
}

/// Why a WebDAV base URL was refused.
#[derive(Debug, thiserror::Error)]
#[error("webdav base url {url:?} is not a plain http://host[:port][/path] url")]
pub struct InvalidWebdavUrl {
    url: String,
}

/// How one range request failed.
enum ExchangeError {
    /// Nothing came back: on a pooled connection the server most likely
    /// closed it while idle, so the request is worth one retry.
    NoResponse(io::Error),
    /// The server answered (an error status, a malformed or cut response).
    Response(io::Error),
}

impl ExchangeError {
    fn into_io(self) -> io::Error {
        match self {
            ExchangeError::NoResponse(error) | ExchangeError::Response(error) => error,
        }
    }
}

/// How the end of a response body is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length {
        remaining: u64,
    },
    Chunked {
        remaining_in_chunk: u64,
        started: bool,
        finished: bool,
    },
    UntilClose,
}

/// The parts of a response head a range read needs.
struct ResponseHead {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    /// First byte of a `Content-Range: bytes first-last/total`.
    range_first: Option<u64>,
}

/// Reads one response body, decoding chunked transfer encoding.
struct BodyReader<'c> {
    connection: &'c mut BufReader<TcpStream>,
    framing: Framing,
}

fn invalid_response(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl BodyReader<'_> {
    fn is_finished(&self) -> bool {
        match self.framing {
            Framing::Length { remaining } => remaining == 0,
            Framing::Chunked { finished, .. } => finished,
            Framing::UntilClose => false,
        }
    }

    /// Reads the next chunk-size line (after the CRLF ending the previous
    /// chunk) and, after the last chunk, the trailers.
    fn next_chunk(&mut self, started: bool) -> io::Result<(u64, bool)> {
        let mut line = String::new();
        if started {
            read_head_line(self.connection, &mut line)?;
            if !line.trim_end().is_empty() {
                return Err(invalid_response(format!(
                    "webdav: chunk not followed by crlf but {line:?}"
                )));
            }
        }
        read_head_line(self.connection, &mut line)?;
        let size_text = line.trim_end().split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| invalid_response(format!("webdav: bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                read_head_line(self.connection, &mut line)?;
                if line.trim_end().is_empty() {
                    break;
                }
            }
            return Ok((0, true));
        }
        Ok((size, false))
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if buffer.is_empty() {
            return Ok(0);
        }
        if let Framing::Chunked {
            remaining_in_chunk: 0,
            started,
            finished: false,
        } = self.framing
        {
            let (size, last) = self.next_chunk(started)?;
            self.framing = Framing::Chunked {
                remaining_in_chunk: size,
                started: true,
                finished: last,
            };
        }
        let allowed = match self.framing {
            Framing::Length { remaining } => remaining,
            // Zero once the last chunk was read.
            Framing::Chunked {
                remaining_in_chunk, ..
            } => remaining_in_chunk,
            Framing::UntilClose => u64::MAX,
        };
        if allowed == 0 {
            return Ok(0);
        }
        let limit = usize::try_from(allowed)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let n_read = self.connection.read(&mut buffer[..limit])?;
        if n_read == 0 && self.framing != Framing::UntilClose {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "webdav: connection closed inside a response body",
            ));
        }
        match &mut self.framing {
            Framing::Length { remaining } => *remaining -= n_read as u64,
            Framing::Chunked {
                remaining_in_chunk, ..
            } => *remaining_in_chunk -= n_read as u64,
            Framing::UntilClose => {}
        }
        Ok(n_read)
    }
}

/// Reads one CRLF-terminated line of a response head, refusing endless
/// lines and a connection closed mid-head.
fn read_head_line(connection: &mut BufReader<TcpStream>, line: &mut String) -> io::Result<()> {
    line.clear();
    let n_read = connection.take(MAX_HEAD_BYTES).read_line(line)?;
    if n_read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "webdav: connection closed before the end of the response head",
        ));
    }
    if !line.ends_with('\n') {
        return Err(invalid_response(
            "webdav: response head line too long".to_owned(),
        ));
    }
    Ok(())
}

/// Fills `buffer` from `reader` as far as it goes; fewer bytes only at its
/// end.
fn read_up_to(reader: &mut impl Read, buffer: &mut Vec<u8>, size: usize) -> io::Result<()> {
    buffer.resize(size, 0);
    let mut filled = 0;
    while filled < size {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n_read) => filled += n_read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buffer.truncate(filled);
    Ok(())
}

impl WebdavClient {
    pub(crate) fn new(base_url: &str) -> Result<Self, InvalidWebdavUrl> {
        let invalid = || InvalidWebdavUrl {
            url: base_url.to_owned(),
        };
        let rest = base_url.strip_prefix("http://").ok_or_else(invalid)?;
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(index) => rest.split_at(index),
            None => (rest, ""),
        };
        if authority.is_empty()
            || authority.contains('@')
            || authority.chars().any(char::is_whitespace)
            || path.contains(['?', '#'])
        {
            return Err(invalid());
        }
        let host_port = match authority.rsplit_once(':') {
            // `[::1]` without a port has a colon too.
            Some((_, port)) if !port.contains(']') => {
                port.parse::<u16>().map_err(|_| invalid())?;
                authority.to_owned()
            }
            _ => format!("{authority}:80"),
        };
        Ok(WebdavClient {
            host_port,
            host_header: authority.to_owned(),
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

    fn connect(&self) -> io::Result<BufReader<TcpStream>> {
        let mut last_error = None;
        for address in self.host_port.to_socket_addrs()? {
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(IO_TIMEOUT))?;
                    stream.set_write_timeout(Some(IO_TIMEOUT))?;
                    return Ok(BufReader::new(stream));
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("webdav: no address for {}", self.host_port),
            )
        }))
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
        let pooled = self.idle_connections.lock().pop();
        if let Some(connection) = pooled {
            match self.exchange(connection, &target, offset, size) {
                Ok(bytes) => return Ok(bytes),
                // Closed by the server while idle: retry on a new connection.
                Err(ExchangeError::NoResponse(error)) => {
                    tracing::debug!(%error, "webdav: pooled connection unusable, reconnecting");
                }
                Err(ExchangeError::Response(error)) => return Err(error),
            }
        }
        let connection = self.connect()?;
        self.exchange(connection, &target, offset, size)
            .map_err(ExchangeError::into_io)
    }

    /// One request and its response on `connection`, which goes back to
    /// the pool when the response was read completely and may be reused.
    fn exchange(
        &self,
        mut connection: BufReader<TcpStream>,
        target: &str,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, ExchangeError> {
        let last = offset.saturating_add(size as u64 - 1);
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nRange: bytes={offset}-{last}\r\nAccept-Encoding: identity\r\nConnection: keep-alive\r\n\r\n",
            self.host_header
        );
        connection
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(ExchangeError::NoResponse)?;
        // An empty or failed first read means the request never got an
        // answer; anything later is the server's answer, not a stale socket.
        match connection.fill_buf() {
            Ok([]) => {
                return Err(ExchangeError::NoResponse(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "webdav: connection closed without a response",
                )));
            }
            Ok(_) => {}
            Err(error) => return Err(ExchangeError::NoResponse(error)),
        }
        let head = read_response_head(&mut connection).map_err(ExchangeError::Response)?;
        let mut body = BodyReader {
            connection: &mut connection,
            framing: head.framing,
        };
        let mut bytes = Vec::new();
        let result = match head.status {
            206 => match head.range_first {
                Some(first) if first != offset => Err(invalid_response(format!(
                    "webdav: asked for bytes from {offset} of {target}, got bytes from {first}"
                ))),
                _ => read_up_to(&mut body, &mut bytes, size),
            },
            // A server ignoring Range sends the whole file: skip to `offset`.
            200 => io::copy(&mut (&mut body).take(offset), &mut io::sink())
                .and_then(|_| read_up_to(&mut body, &mut bytes, size)),
            // Past the end of the file: nothing to read.
            416 => Ok(()),
            status => Err(io::Error::other(format!(
                "webdav: status {status} for {target}"
            ))),
        };
        let reusable = head.keep_alive
            && (body.is_finished()
                || io::copy(&mut (&mut body).take(MAX_DRAINED_BYTES), &mut io::sink()).is_ok()
                    && body.is_finished());
        // Even after an error status: its body was read, the connection
        // is as good as any.
        if reusable {
            let mut idle_connections = self.idle_connections.lock();
            if idle_connections.len() < MAX_IDLE_CONNECTIONS {
                idle_connections.push(connection);
            }
        }
        result.map_err(ExchangeError::Response)?;
        Ok(bytes)
    }
}

/// Parses the status line and the headers that matter for a range read.
fn read_response_head(connection: &mut BufReader<TcpStream>) -> io::Result<ResponseHead> {
    let mut line = String::new();
    read_head_line(connection, &mut line)?;
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| invalid_response(format!("webdav: bad status line {line:?}")))?;
    // HTTP/1.0 closes after each response unless asked otherwise.
    let mut keep_alive = version == "HTTP/1.1";
    let (mut content_length, mut chunked, mut range_first) = (None, false, None);
    loop {
        read_head_line(connection, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length =
                Some(value.parse::<u64>().map_err(|_| {
                    invalid_response(format!("webdav: bad content-length {value:?}"))
                })?);
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let codings: Vec<&str> = value.split(',').map(str::trim).collect();
            match codings.as_slice() {
                [coding] if coding.eq_ignore_ascii_case("chunked") => chunked = true,
                [coding] if coding.eq_ignore_ascii_case("identity") => {}
                _ => {
                    return Err(invalid_response(format!(
                        "webdav: unsupported transfer-encoding {value:?}"
                    )));
                }
            }
        } else if name.eq_ignore_ascii_case("content-range") {
            range_first = value
                .strip_prefix("bytes ")
                .and_then(|range| range.split(['-', '/']).next())
                .and_then(|first| first.trim().parse().ok());
        }
    }
    // Chunked encoding wins over a content-length (RFC 9112 6.3).
    let framing = if chunked {
        Framing::Chunked {
            remaining_in_chunk: 0,
            started: false,
            finished: false,
        }
    } else if let Some(remaining) = content_length {
        Framing::Length { remaining }
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(ResponseHead {
        status,
        framing,
        keep_alive,
        range_first,
    })
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
        let ipv6 = WebdavClient::new("http://[::1]/dav").expect("valid");
        assert_eq!(
            (ipv6.host_port.as_str(), ipv6.host_header.as_str()),
            ("[::1]:80", "[::1]")
        );
        assert_eq!(
            WebdavClient::new("http://[::1]:81")
                .expect("valid")
                .host_port,
            "[::1]:81"
        );
        for refused in [
            "http://leader:http/dav",
            "http://user@leader/dav",
            "http://leader/dav?x=1",
            "http://lea der/dav",
        ] {
            assert!(WebdavClient::new(refused).is_err(), "{refused}");
        }
    }
}
