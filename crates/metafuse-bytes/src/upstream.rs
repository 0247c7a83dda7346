//! HTTP range reads from the leader's WebDAV: a small blocking HTTP/1.1
//! client (FUSE reads arrive on synchronous session threads).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use parking_lot::Mutex;

use crate::location::SourceLocation;

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
pub struct UpstreamClient {
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
    /// The `total` of a `Content-Range` (also on a 416).
    range_total: Option<u64>,
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

impl UpstreamClient {
    /// A client for `http://host[:port][/path]`.
    pub fn new(base_url: &str) -> Result<Self, InvalidWebdavUrl> {
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
        Ok(UpstreamClient {
            host_port,
            host_header: authority.to_owned(),
            base_path: path.trim_end_matches('/').to_owned(),
            idle_connections: Mutex::new(Vec::new()),
        })
    }

    /// `{base}/{filePath}` from the validated, percent-encoded segments of
    /// the path rule: no `..` ever reaches the network.
    fn request_target(&self, location: &SourceLocation) -> String {
        format!("{}/{}", self.base_path, location.percent_encoded())
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
    pub fn read_range(
        &self,
        location: &SourceLocation,
        offset: u64,
        size: usize,
    ) -> io::Result<Vec<u8>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        self.request(location, offset, size).map(|(bytes, _)| bytes)
    }

    /// The file's length, from the `Content-Range` total of a one-byte
    /// range request.
    pub fn length(&self, location: &SourceLocation) -> io::Result<u64> {
        let (bytes, total) = self.request(location, 0, 1)?;
        match total {
            Some(total) => Ok(total),
            // A server ignoring Range: only an empty file gives no byte.
            None if bytes.is_empty() => Ok(0),
            None => Err(invalid_response(format!(
                "webdav: no length for {}",
                self.request_target(location)
            ))),
        }
    }

    /// One range request, with one retry on a stale pooled connection:
    /// the bytes and the `Content-Range` total, when sent.
    fn request(
        &self,
        location: &SourceLocation,
        offset: u64,
        size: usize,
    ) -> io::Result<(Vec<u8>, Option<u64>)> {
        let target = self.request_target(location);
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
    ) -> Result<(Vec<u8>, Option<u64>), ExchangeError> {
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
        Ok((bytes, head.range_total))
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
    let (mut content_length, mut chunked) = (None, false);
    let (mut range_first, mut range_total) = (None, None);
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
            let range = value.strip_prefix("bytes ").unwrap_or("");
            let (span, total) = range.split_once('/').unwrap_or((range, ""));
            range_first = span
                .split('-')
                .next()
                .and_then(|first| first.trim().parse().ok());
            range_total = total.trim().parse().ok();
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
        range_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webdav_urls_and_targets() {
        let client = UpstreamClient::new("http://leader:8080/webdav/").expect("valid");
        assert_eq!(client.host_port, "leader:8080");
        let location = SourceLocation::resolve(
            std::path::Path::new("/files"),
            "/TV/Dark é 1.mkv".as_bytes(),
        )
        .expect("valid");
        assert_eq!(
            client.request_target(&location),
            "/webdav/TV/Dark%20%C3%A9%201.mkv"
        );
        assert_eq!(
            UpstreamClient::new("http://leader")
                .expect("valid")
                .host_port,
            "leader:80"
        );
        assert!(UpstreamClient::new("https://leader").is_err());
        assert!(UpstreamClient::new("http:///x").is_err());
        let ipv6 = UpstreamClient::new("http://[::1]/dav").expect("valid");
        assert_eq!(
            (ipv6.host_port.as_str(), ipv6.host_header.as_str()),
            ("[::1]:80", "[::1]")
        );
        assert_eq!(
            UpstreamClient::new("http://[::1]:81")
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
            assert!(UpstreamClient::new(refused).is_err(), "{refused}");
        }
    }
}
