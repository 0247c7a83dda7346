//! A plain RESP2 connection for the two bulk readers of a bootstrap: stream
//! pages (`XRANGE`) and value pipelines (`MGET`). Their replies are decoded
//! straight from the socket buffer, without building a `redis::Value` tree
//! (an allocation per field): the redis crate's reply parser and its
//! allocations were most of a replay's time. Plain TCP and Unix sockets
//! only; a `rediss://` source keeps using the redis crate's connections.

use std::time::Duration;

use redis::{ConnectionAddr, ErrorKind, RedisError, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes asked from the socket per read.
const READ_CHUNK: usize = 256 * 1024;

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<Stream: AsyncRead + AsyncWrite + Unpin + Send> Duplex for Stream {}

/// Why a reply could not be decoded from the bytes buffered so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Short {
    /// The reply goes on beyond the buffer: read more and decode again.
    Incomplete,
    /// Not RESP2: the connection cannot be trusted any more.
    Protocol(&'static str),
}

/// One RESP2 header, with a bulk string's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frame<'reply> {
    /// `$n` with its bytes.
    Bulk(&'reply [u8]),
    /// `$-1` or `*-1`.
    Nil,
    /// `*n`: `n` values follow.
    Array(usize),
    /// `+text`.
    Simple(&'reply [u8]),
    /// `-text`.
    Error(&'reply [u8]),
    /// `:n`.
    Integer(i64),
}

/// Walks RESP2 values in a byte slice, borrowing from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'reply> {
    bytes: &'reply [u8],
    pub(crate) position: usize,
}

impl<'reply> Reader<'reply> {
    pub(crate) fn new(bytes: &'reply [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    fn line(&mut self) -> Result<&'reply [u8], Short> {
        let rest = &self.bytes[self.position..];
        // Only header lines are searched (a few bytes each): bulk strings are
        // skipped by their length.
        let end = rest
            .iter()
            .position(|&byte| byte == b'\n')
            .ok_or(Short::Incomplete)?;
        if end == 0 || rest[end - 1] != b'\r' {
            return Err(Short::Protocol("a line does not end with CRLF"));
        }
        self.position += end + 1;
        Ok(&rest[..end - 1])
    }

    /// The next header (and a bulk string's bytes).
    pub(crate) fn frame(&mut self) -> Result<Frame<'reply>, Short> {
        let start = self.position;
        let result = self.frame_at_position();
        if result.is_err() {
            self.position = start;
        }
        result
    }

    fn frame_at_position(&mut self) -> Result<Frame<'reply>, Short> {
        let line = self.line()?;
        let (&marker, text) = line.split_first().ok_or(Short::Protocol("an empty line"))?;
        match marker {
            b'$' => {
                let length = parse_integer(text)?;
                let Ok(length) = usize::try_from(length) else {
                    return Ok(Frame::Nil);
                };
                let rest = &self.bytes[self.position..];
                if rest.len() < length + 2 {
                    return Err(Short::Incomplete);
                }
                if &rest[length..length + 2] != b"\r\n" {
                    return Err(Short::Protocol("a bulk string does not end with CRLF"));
                }
                self.position += length + 2;
                Ok(Frame::Bulk(&rest[..length]))
            }
            b'*' => {
                let count = parse_integer(text)?;
                Ok(usize::try_from(count).map_or(Frame::Nil, Frame::Array))
            }
            b'+' => Ok(Frame::Simple(text)),
            b'-' => Ok(Frame::Error(text)),
            b':' => Ok(Frame::Integer(parse_integer(text)?)),
            _ => Err(Short::Protocol("an unknown reply type")),
        }
    }

    /// Skips the rest of a value whose header was `frame`.
    pub(crate) fn skip_children(&mut self, frame: Frame<'_>) -> Result<(), Short> {
        let mut pending = match frame {
            Frame::Array(count) => count,
            _ => 0,
        };
        while pending > 0 {
            pending -= 1;
            if let Frame::Array(count) = self.frame()? {
                pending += count;
            }
        }
        Ok(())
    }

    /// The value read since `start`, for a message.
    pub(crate) fn describe_since(&self, start: usize) -> String {
        let bytes = &self.bytes[start..self.position];
        match redis::parse_redis_value(bytes) {
            Ok(value) => format!("{value:?}"),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        }
    }
}

/// A decimal `i64`, read as `str::parse` reads it (an optional sign, then
/// digits). By hand: every header has one, and going through `str` checked
/// each as UTF-8 first, a tenth of a live tail's own time.
fn parse_integer(text: &[u8]) -> Result<i64, Short> {
    const NOT_A_NUMBER: Short = Short::Protocol("a length is not a number");
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        Some((b'+', digits)) => (false, digits),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(NOT_A_NUMBER);
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return Err(NOT_A_NUMBER);
        }
        let digit = i64::from(digit - b'0');
        // Accumulated negatively when negative, so that `i64::MIN` fits.
        value = value
            .checked_mul(10)
            .and_then(|value| {
                if negative {
                    value.checked_sub(digit)
                } else {
                    value.checked_add(digit)
                }
            })
            .ok_or(NOT_A_NUMBER)?;
    }
    Ok(value)
}

/// A private connection speaking RESP2 on a plain socket.
pub(crate) struct RespConnection {
    stream: Box<dyn Duplex>,
    buffer: Vec<u8>,
    /// Where the unconsumed bytes of `buffer` start.
    consumed: usize,
    response_timeout: Duration,
    request: Vec<u8>,
}

impl std::fmt::Debug for RespConnection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RespConnection")
            .finish_non_exhaustive()
    }
}

impl RespConnection {
    /// Connects as `client` would, authenticating and selecting its
    /// database; `None` for TLS, which only the redis crate speaks.
    pub(crate) async fn open(
        client: &redis::Client,
        response_timeout: Duration,
    ) -> Result<Option<Self>, RedisError> {
        let info = client.get_connection_info();
        let stream: Box<dyn Duplex> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            _ => return Ok(None),
        };
        let mut connection = Self {
            stream,
            buffer: Vec::with_capacity(READ_CHUNK),
            consumed: 0,
            response_timeout,
            request: Vec::new(),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = vec!["AUTH"];
            auth.extend(settings.username());
            auth.push(password);
            connection.simple_command(&auth).await?;
        }
        if settings.db() != 0 {
            connection
                .simple_command(&["SELECT", &settings.db().to_string()])
                .await?;
        }
        Ok(Some(connection))
    }

    /// Sends one command and fails unless it is answered with a non-error.
    async fn simple_command(&mut self, arguments: &[&str]) -> Result<(), RedisError> {
        self.request.clear();
        encode_command(
            &mut self.request,
            arguments.len(),
            arguments.iter().map(|argument| argument.as_bytes()),
        );
        self.send_request().await?;
        self.read_reply(|reader| match reader.frame()? {
            Frame::Error(line) => Ok(Err(server_error(line))),
            frame => reader.skip_children(frame).map(Ok),
        })
        .await?
    }

    /// Appends one command of `n_arguments` arguments to the request being
    /// built.
    pub(crate) fn push_command<'argument>(
        &mut self,
        n_arguments: usize,
        arguments: impl IntoIterator<Item = &'argument [u8]>,
    ) {
        encode_command(&mut self.request, n_arguments, arguments);
    }

    /// Sends the commands pushed so far.
    pub(crate) async fn send_request(&mut self) -> Result<(), RedisError> {
        let request = std::mem::take(&mut self.request);
        let written =
            with_timeout(self.response_timeout, write_all(&mut self.stream, &request)).await;
        self.request = request;
        self.request.clear();
        written
    }

    /// Decodes one reply with `decode`, reading until it is whole. `decode`
    /// sees the buffered bytes from the reply's start and must leave the
    /// reader after the reply; it may be called again, from the start, when
    /// it reported [`Short::Incomplete`], so it must keep no state across
    /// calls that it cannot redo.
    pub(crate) async fn read_reply<Decoded>(
        &mut self,
        mut decode: impl FnMut(&mut Reader<'_>) -> Result<Decoded, Short>,
    ) -> Result<Decoded, RedisError> {
        loop {
            let mut reader = Reader::new(&self.buffer[self.consumed..]);
            match decode(&mut reader) {
                Ok(decoded) => {
                    self.consumed += reader.position;
                    return Ok(decoded);
                }
                Err(Short::Incomplete) => self.fill().await?,
                Err(Short::Protocol(what)) => {
                    return Err(RedisError::from((
                        ErrorKind::Parse,
                        "invalid reply",
                        what.to_owned(),
                    )));
                }
            }
        }
    }

    /// The bytes read and not consumed yet, from the next reply's start.
    pub(crate) fn unconsumed(&self) -> &[u8] {
        &self.buffer[self.consumed..]
    }

    /// Consumes `n_bytes` of [`Self::unconsumed`]: a reply decoded without
    /// [`Self::read_reply`].
    pub(crate) fn consume(&mut self, n_bytes: usize) {
        self.consumed = (self.consumed + n_bytes).min(self.buffer.len());
    }

    /// Reads more bytes, first dropping the consumed ones.
    pub(crate) async fn fill(&mut self) -> Result<(), RedisError> {
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        // Reads into the spare capacity: no zeroing of bytes about to be
        // overwritten.
        self.buffer.reserve(READ_CHUNK);
        let n_read = with_timeout(
            self.response_timeout,
            read_some(&mut self.stream, &mut self.buffer),
        )
        .await?;
        if n_read == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(())
    }
}

async fn with_timeout<Output>(
    response_timeout: Duration,
    operation: impl Future<Output = Result<Output, RedisError>>,
) -> Result<Output, RedisError> {
    match tokio::time::timeout(response_timeout, operation).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
    }
}

async fn write_all(stream: &mut Box<dyn Duplex>, bytes: &[u8]) -> Result<(), RedisError> {
    Ok(stream.write_all(bytes).await?)
}

async fn read_some(stream: &mut Box<dyn Duplex>, into: &mut Vec<u8>) -> Result<usize, RedisError> {
    Ok(stream.read_buf(into).await?)
}

fn encode_command<'argument>(
    request: &mut Vec<u8>,
    n_arguments: usize,
    arguments: impl IntoIterator<Item = &'argument [u8]>,
) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(request, "*{n_arguments}\r\n");
    for argument in arguments {
        let _ = write!(request, "${}\r\n", argument.len());
        request.extend_from_slice(argument);
        request.extend_from_slice(b"\r\n");
    }
}

/// The error a `-` reply stands for, as the redis crate would report it.
pub(crate) fn server_error(line: &[u8]) -> RedisError {
    let mut reply = Vec::with_capacity(line.len() + 3);
    reply.push(b'-');
    reply.extend_from_slice(line);
    reply.extend_from_slice(b"\r\n");
    match redis::parse_redis_value(&reply) {
        Ok(Value::ServerError(error)) => error.into(),
        Ok(_) | Err(_) => RedisError::from((
            ErrorKind::Parse,
            "invalid error reply",
            String::from_utf8_lossy(line).into_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_whole_or_not_at_all() {
        let bytes = b"*2\r\n$3\r\nabc\r\n$-1\r\n:42\r\n+OK\r\n-ERR no\r\n$5\r\nab";
        let mut reader = Reader::new(bytes);
        assert_eq!(reader.frame(), Ok(Frame::Array(2)));
        assert_eq!(reader.frame(), Ok(Frame::Bulk(b"abc")));
        assert_eq!(reader.frame(), Ok(Frame::Nil));
        assert_eq!(reader.frame(), Ok(Frame::Integer(42)));
        assert_eq!(reader.frame(), Ok(Frame::Simple(b"OK")));
        assert_eq!(reader.frame(), Ok(Frame::Error(b"ERR no")));
        let before = reader.position;
        assert_eq!(reader.frame(), Err(Short::Incomplete));
        assert_eq!(
            reader.position, before,
            "an incomplete frame consumes nothing"
        );
        assert_eq!(
            Reader::new(b"?\r\n").frame(),
            Err(Short::Protocol("an unknown reply type"))
        );
    }

    #[test]
    fn integers_parse_as_str_parse_would() {
        for text in [
            "0",
            "42",
            "-1",
            "-0",
            "+5",
            "007",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(
                parse_integer(text.as_bytes()),
                Ok(text.parse::<i64>().unwrap()),
                "{text}"
            );
        }
        for text in [
            "",
            "-",
            "+",
            "+-1",
            "1a",
            " 1",
            "1.0",
            "--1",
            "9223372036854775808",
            "-9223372036854775809",
        ] {
            assert!(parse_integer(text.as_bytes()).is_err(), "{text:?}");
        }
    }

    #[test]
    fn nested_values_are_skipped_whole() {
        let bytes = b"*2\r\n*1\r\n$1\r\na\r\n:1\r\n+next\r\n";
        let mut reader = Reader::new(bytes);
        let frame = reader.frame().unwrap();
        assert_eq!(reader.skip_children(frame), Ok(()));
        assert_eq!(reader.frame(), Ok(Frame::Simple(b"next")));
    }

    #[test]
    fn commands_are_encoded_as_arrays_of_bulk_strings() {
        let mut request = Vec::new();
        encode_command(&mut request, 2, [&b"GET"[..], b"k"]);
        assert_eq!(request, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    async fn get(connection: &mut RespConnection, key: &str) -> Option<Vec<u8>> {
        connection.push_command(2, [&b"GET"[..], key.as_bytes()]);
        connection.send_request().await.unwrap();
        connection
            .read_reply(|reader| match reader.frame()? {
                Frame::Bulk(bytes) => Ok(Some(bytes.to_vec())),
                _ => Ok(None),
            })
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_authenticate_and_select_the_database_of_the_url() {
        let server = metafuse_testkit::RedisServer::start().unwrap();
        let mut admin = server.client().get_connection().unwrap();
        let _: () = redis::cmd("SELECT").arg(3).query(&mut admin).unwrap();
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("in three")
            .query(&mut admin)
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg("secret")
            .query(&mut admin)
            .unwrap();
        let url = |password: &str| format!("redis://:{password}@127.0.0.1:{}/3", server.port());
        let timeout = Duration::from_secs(10);

        let client = redis::Client::open(url("secret")).unwrap();
        let mut connection = RespConnection::open(&client, timeout)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            get(&mut connection, "k").await.as_deref(),
            Some(&b"in three"[..])
        );

        let wrong = redis::Client::open(url("wrong")).unwrap();
        let refused = RespConnection::open(&wrong, timeout).await.unwrap_err();
        assert!(refused.to_string().contains("WRONGPASS"), "{refused}");

        let tls = redis::Client::open("rediss://127.0.0.1:1/").unwrap();
        assert!(
            RespConnection::open(&tls, timeout).await.unwrap().is_none(),
            "tls is left to the redis crate"
        );
    }

    #[test]
    fn error_replies_become_server_errors() {
        let error = server_error(b"WRONGTYPE Operation against a key");
        assert!(error.to_string().contains("WRONGTYPE"), "{error}");
    }
}
