//! A meta-core test double: the HTTP API and event stream of spec §9,
//! served over a real `redis-server` (usually a [`crate::RedisServer`]).
//!
//! What it implements, from meta-core's documented contract:
//! - `GET /api/events/meta`: one SSE event per `meta:events` entry, framed
//!   `id: …\nevent: …\ndata: {compact json, keys sorted}\n\n`; no
//!   `Last-Event-ID` starts at `$` (re-armed every poll until an entry
//!   arrives, so entries can be missed, as in meta-core); an id at or after
//!   the oldest entry resumes strictly after it; an older or unparsable id
//!   gives one `event: gap` without `id:` and every entry from the oldest;
//!   `:keep-alive` after [`MetaCoreDoubleConfig::keep_alive_after`] without
//!   output; 503 + `Retry-After: 5` when Redis is down before the stream
//!   starts; the connection simply closes on a Redis error mid-stream.
//! - `GET /meta`, `/meta/{hash}`, `/meta/{hash}/{key…}` (404 for a missing
//!   key and for an empty value), `/urls` with an empty `redisUrl`,
//!   `/health`, and WebDAV `GET`/`HEAD` with `Range` over a files directory.
//!
//! Switches for tests ([`DoubleMode`]): answer 503 as if storage were down,
//! hang (accept connections, never answer; open streams go silent), or
//! [`MetaCoreDouble::stop`] and [`MetaCoreDouble::restart`] on the same port.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metafuse_state::{EVENTS_STREAM, escape_glob, index_key};
use redis::AsyncConnectionConfig;
use redis::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

type Body = BoxBody<Bytes, Infallible>;

/// What the double serves from and how fast it talks.
#[derive(Debug, Clone)]
pub struct MetaCoreDoubleConfig {
    /// The Redis holding the library (`redis://127.0.0.1:port/`).
    pub redis_url: String,
    /// Key prefix of `file:` keys (`REDIS_PREFIX`), usually empty.
    pub prefix: String,
    /// Served under `/webdav/`, if any.
    pub files_dir: Option<PathBuf>,
    /// Silence after which the stream sends `:keep-alive` (meta-core: 30 s).
    pub keep_alive_after: Duration,
    /// How long one `XREAD` blocks (meta-core: 2 s); keep-alives and mode
    /// switches are noticed at this pace.
    pub read_block: Duration,
}

impl MetaCoreDoubleConfig {
    /// meta-core's timings over `redis_url`, no prefix, no files.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            prefix: String::new(),
            files_dir: None,
            keep_alive_after: Duration::from_secs(30),
            read_block: Duration::from_secs(2),
        }
    }
}

/// How the double answers, switchable while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoubleMode {
    /// As meta-core does.
    Normal,
    /// As if its storage were down: 503 `storage_unavailable` with
    /// `Retry-After: 5` everywhere but `/health` (200, `degraded`); open
    /// event streams close.
    Unavailable,
    /// New connections are accepted and never answered; open event streams
    /// stay open and send nothing ever again, not even keep-alives (a dead
    /// path: they do not come back with [`DoubleMode::Normal`]).
    Hang,
}

#[derive(Debug)]
struct Shared {
    config: MetaCoreDoubleConfig,
    client: redis::Client,
    url: String,
    mode: watch::Sender<DoubleMode>,
    streams_opened: watch::Sender<u64>,
    streams_hung: watch::Sender<u64>,
    stream_requests: watch::Sender<u64>,
    requests: Mutex<Vec<String>>,
    /// Every `file:` key grouped by hash, so `/meta/{hash}` does not scan
    /// the whole keyspace per document (a 100k-file bootstrap would be
    /// quadratic); rebuilt whenever Redis may have changed.
    key_index: tokio::sync::Mutex<Option<KeyIndex>>,
}

/// The `file:` keys by hash as of one state of Redis.
#[derive(Debug)]
struct KeyIndex {
    /// The newest `meta:events` id and the key count when it was built:
    /// every writer write appends an event, and a key added or removed
    /// without one changes the count.
    generation: (Option<String>, u64),
    keys_by_hash: std::collections::HashMap<String, Vec<String>>,
}

/// A running meta-core double; stops when dropped.
#[derive(Debug)]
pub struct MetaCoreDouble {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl Drop for MetaCoreDouble {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Why the double could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetaCoreDoubleError {
    /// The Redis URL is not one the redis crate accepts.
    #[error("invalid redis url for the meta-core double: {0}")]
    RedisUrl(redis::RedisError),
    /// The listening socket could not be had.
    #[error("cannot listen for the meta-core double: {0}")]
    Listen(std::io::Error),
}

impl MetaCoreDouble {
    /// Starts serving on a free loopback port. Must run inside a tokio runtime.
    pub async fn start(config: MetaCoreDoubleConfig) -> Result<Self, MetaCoreDoubleError> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(MetaCoreDoubleError::RedisUrl)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(MetaCoreDoubleError::Listen)?;
        let address = listener.local_addr().map_err(MetaCoreDoubleError::Listen)?;
        let shared = Arc::new(Shared {
            config,
            client,
            url: format!("http://{address}"),
            mode: watch::channel(DoubleMode::Normal).0,
            streams_opened: watch::channel(0).0,
            streams_hung: watch::channel(0).0,
            stream_requests: watch::channel(0).0,
            requests: Mutex::new(Vec::new()),
            key_index: tokio::sync::Mutex::new(None),
        });
        let server = Some(tokio::spawn(serve(listener, shared.clone())));
        Ok(Self {
            address,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:{port}`, the API base URL.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// The `/urls` object it serves (empty `redisUrl`).
    pub fn urls_json(&self) -> serde_json::Value {
        urls_json(&self.shared.url)
    }

    /// Switches how it answers from now on.
    pub fn set_mode(&self, mode: DoubleMode) {
        self.shared.mode.send_replace(mode);
    }

    /// Event streams opened so far (answered 200).
    pub fn event_streams_opened(&self) -> u64 {
        *self.shared.streams_opened.borrow()
    }

    /// Waits until at least `count` event streams were opened.
    pub async fn wait_for_event_streams(&self, count: u64) {
        let mut opened = self.shared.streams_opened.subscribe();
        let _ = opened.wait_for(|opened| *opened >= count).await;
    }

    /// Waits until at least `count` requests for the event stream arrived,
    /// answered or refused.
    pub async fn wait_for_event_stream_requests(&self, count: u64) {
        let mut requests = self.shared.stream_requests.subscribe();
        let _ = requests.wait_for(|requests| *requests >= count).await;
    }

    /// Waits until at least `count` open event streams went silent in
    /// [`DoubleMode::Hang`].
    pub async fn wait_for_hung_streams(&self, count: u64) {
        let mut hung = self.shared.streams_hung.subscribe();
        let _ = hung.wait_for(|hung| *hung >= count).await;
    }

    /// Every request line served so far (`GET /meta`), for tests that count.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .map(|requests| requests.clone())
            .unwrap_or_default()
    }

    /// Stops listening and drops every connection (as a killed meta-core).
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same port, in [`DoubleMode::Normal`].
    pub async fn restart(&mut self) -> Result<(), MetaCoreDoubleError> {
        self.stop();
        self.set_mode(DoubleMode::Normal);
        // The aborted server's socket closes asynchronously: retry briefly.
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) if attempts < 100 => {
                    attempts += 1;
                    let _ = error;
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(error) => return Err(MetaCoreDoubleError::Listen(error)),
            }
        };
        self.server = Some(tokio::spawn(serve(listener, self.shared.clone())));
        Ok(())
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set (server aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            if *shared.mode.borrow() == DoubleMode::Hang {
                // Hold the socket, never read it.
                let _held = stream;
                std::future::pending::<()>().await;
                return;
            }
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

fn urls_json(url: &str) -> serde_json::Value {
    serde_json::json!({
        "hostname": "127.0.0.1",
        "baseUrl": url,
        "apiUrl": url,
        "redisUrl": "",
        "webdavUrl": format!("{url}/webdav"),
        "webdavUrlInternal": format!("{url}/webdav"),
    })
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, slug: &str, message: &str) -> Response<Body> {
    let retryable = status == StatusCode::SERVICE_UNAVAILABLE;
    let mut response = json(
        status,
        &serde_json::json!({"error": slug, "message": message, "retryable": retryable}),
    );
    if retryable {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn storage_unavailable() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "storage not connected",
    )
}

async fn route(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    if let Ok(mut requests) = shared.requests.lock() {
        requests.push(format!("{} {path}", request.method()));
    }
    if path == "/api/events/meta" {
        shared
            .stream_requests
            .send_modify(|requests| *requests += 1);
    }
    let mode = *shared.mode.borrow();
    if path == "/health" {
        let redis_up = mode == DoubleMode::Normal && connection(shared).await.is_some();
        return json(
            StatusCode::OK,
            &serde_json::json!({
                "status": if redis_up { "ok" } else { "degraded" },
                "redis": redis_up,
                "timestamp": now_ms().to_string(),
            }),
        );
    }
    if path == "/urls" {
        return json(StatusCode::OK, &urls_json(&shared.url));
    }
    if let Some(file_path) = path.strip_prefix("/webdav/") {
        return webdav(shared, &request, file_path).await;
    }
    if mode == DoubleMode::Unavailable {
        return storage_unavailable();
    }
    let Some(mut redis) = connection(shared).await else {
        return storage_unavailable();
    };
    if request.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "internal", "only GET");
    }
    if path == "/api/events/meta" {
        let last_event_id = request
            .headers()
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        return event_stream(shared.clone(), last_event_id);
    }
    if path == "/meta" {
        let members: Result<Vec<String>, _> = redis::cmd("SMEMBERS")
            .arg(index_key(&shared.config.prefix))
            .query_async(&mut redis)
            .await;
        return match members {
            Ok(hash_ids) => json(
                StatusCode::OK,
                &serde_json::json!({"count": hash_ids.len(), "hashIds": hash_ids}),
            ),
            Err(_) => storage_unavailable(),
        };
    }
    if let Some(rest) = path.strip_prefix("/meta/") {
        let mut segments = rest.split('/').map(percent_decode);
        let hash_id = segments.next().unwrap_or_default();
        let key: Vec<String> = segments.collect();
        return if key.is_empty() {
            document(shared, &mut redis, &hash_id).await
        } else {
            value(shared, &mut redis, &hash_id, &key.join("/")).await
        };
    }
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

async fn connection(shared: &Shared) -> Option<redis::aio::MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()
}

async fn document(
    shared: &Shared,
    redis: &mut redis::aio::MultiplexedConnection,
    hash_id: &str,
) -> Response<Body> {
    let key_prefix = format!("{}file:{hash_id}/", shared.config.prefix);
    let Some(keys) = keys_of_hash(shared, redis, hash_id).await else {
        return storage_unavailable();
    };
    if keys.is_empty() {
        return error(StatusCode::NOT_FOUND, "unknown_root", "unknown root");
    }
    let values: Result<Vec<Option<String>>, _> =
        redis::cmd("MGET").arg(&keys).query_async(redis).await;
    let Ok(values) = values else {
        return storage_unavailable();
    };
    let metadata: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .zip(values)
        .filter_map(|(key, value)| {
            Some((
                key.strip_prefix(&key_prefix)?.to_owned(),
                serde_json::Value::String(value?),
            ))
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({"hashId": hash_id, "metadata": metadata}),
    )
}

/// The `file:{hash}/…` keys of one hash, from the key index (rebuilt by
/// one `SCAN` of the keyspace when Redis changed since it was built);
/// `None` when Redis fails.
async fn keys_of_hash(
    shared: &Shared,
    redis: &mut redis::aio::MultiplexedConnection,
    hash_id: &str,
) -> Option<Vec<String>> {
    let (newest, n_keys): (Vec<(String, Value)>, u64) = redis::pipe()
        .cmd("XREVRANGE")
        .arg(EVENTS_STREAM)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .cmd("DBSIZE")
        .query_async(redis)
        .await
        .ok()?;
    let generation = (newest.into_iter().next().map(|(id, _)| id), n_keys);
    let mut index = shared.key_index.lock().await;
    if index.as_ref().map(|index| &index.generation) != Some(&generation) {
        let file_prefix = format!("{}file:", shared.config.prefix);
        let pattern = format!("{}*", escape_glob(&file_prefix));
        let mut keys_by_hash: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(redis)
                .await
                .ok()?;
            for key in batch {
                if let Some((hash, _)) = key
                    .strip_prefix(&file_prefix)
                    .and_then(|rest| rest.split_once('/'))
                {
                    keys_by_hash.entry(hash.to_owned()).or_default().push(key);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        *index = Some(KeyIndex {
            generation,
            keys_by_hash,
        });
    }
    Some(
        index
            .as_ref()
            .and_then(|index| index.keys_by_hash.get(hash_id).cloned())
            .unwrap_or_default(),
    )
}

async fn value(
    shared: &Shared,
    redis: &mut redis::aio::MultiplexedConnection,
    hash_id: &str,
    property: &str,
) -> Response<Body> {
    let key = format!("{}file:{hash_id}/{property}", shared.config.prefix);
    let value: Result<Option<String>, _> = redis::cmd("GET").arg(&key).query_async(redis).await;
    match value {
        Err(_) => storage_unavailable(),
        // meta-core answers 404 for an empty value as for a missing key.
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such key"),
        Ok(Some(text)) if text.is_empty() => {
            error(StatusCode::NOT_FOUND, "not_found", "no such key")
        }
        Ok(Some(text)) => {
            let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or_default()
}

fn event_stream(shared: Arc<Shared>, last_event_id: Option<String>) -> Response<Body> {
    let (sender, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(64);
    shared.streams_opened.send_modify(|opened| *opened += 1);
    tokio::spawn(pump_events(shared, last_event_id, sender));
    let mut response = Response::new(body.boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Whether `id` is a `<ms>-<seq>` stream id, and its parts.
fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// One SSE event for a stream entry, framed as meta-core frames it.
fn frame_entry(id: &str, fields: &[(String, String)]) -> String {
    let mut kind = "message".to_owned();
    let mut data = BTreeMap::new();
    for (name, value) in fields {
        if name == "type" {
            kind = value.clone();
        } else {
            data.insert(name.clone(), value.clone());
        }
    }
    let data = serde_json::to_string(&data).unwrap_or_else(|_| "{}".to_owned());
    format!("id: {id}\nevent: {kind}\ndata: {data}\n\n")
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

fn as_entry(entry: &Value) -> Option<(String, Vec<(String, String)>)> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let id = text(parts.first()?)?;
    let Value::Array(flat) = parts.get(1)? else {
        return None;
    };
    let fields = flat
        .chunks(2)
        .filter_map(|pair| Some((text(pair.first()?)?, text(pair.get(1)?)?)))
        .collect();
    Some((id, fields))
}

/// The entries of an XRANGE reply: `(id, [(field, value)])`.
fn xrange_entries(reply: &Value) -> Vec<(String, Vec<(String, String)>)> {
    match reply {
        Value::Array(items) => items.iter().filter_map(as_entry).collect(),
        _ => Vec::new(),
    }
}

/// The entries of an XREAD reply of one stream (RESP2 array or RESP3 map).
fn xread_entries(reply: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let lists: Vec<&Value> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|stream| match stream {
                Value::Array(parts) => parts.get(1),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(_, list)| list).collect(),
        _ => Vec::new(),
    };
    lists.into_iter().flat_map(xrange_entries).collect()
}

async fn pump_events(
    shared: Arc<Shared>,
    last_event_id: Option<String>,
    mut sender: http_body_util::channel::Sender<Bytes, Infallible>,
) {
    // A dedicated connection without response timeout: XREAD blocks.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(None);
    let Ok(mut redis) = shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    else {
        return;
    };
    let mut cursor = match last_event_id {
        None => "$".to_owned(),
        Some(requested) => {
            let oldest: Result<Value, _> = redis::cmd("XRANGE")
                .arg(EVENTS_STREAM)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut redis)
                .await;
            let oldest = oldest
                .ok()
                .and_then(|reply| xrange_entries(&reply).into_iter().next())
                .map(|(id, _)| id);
            match oldest {
                None => requested,
                Some(oldest) => {
                    let requested_parts = parse_stream_id(&requested);
                    if requested_parts.is_some() && requested_parts >= parse_stream_id(&oldest) {
                        requested
                    } else {
                        let gap = serde_json::json!({
                            "requested": requested,
                            "resumeFrom": oldest,
                            "reason": "retention",
                        });
                        let frame = format!("event: gap\ndata: {gap}\n\n");
                        if sender.send_data(Bytes::from(frame)).await.is_err() {
                            return;
                        }
                        "0".to_owned()
                    }
                }
            }
        }
    };
    let mut mode = shared.mode.subscribe();
    let mut last_write = Instant::now();
    let block_ms = shared.config.read_block.as_millis().max(1) as u64;
    loop {
        let current_mode = *mode.borrow_and_update();
        match current_mode {
            DoubleMode::Unavailable => return,
            DoubleMode::Hang => {
                // Silent but open for good: the client must notice by itself.
                shared.streams_hung.send_modify(|hung| *hung += 1);
                let _held = sender;
                std::future::pending::<()>().await;
                return;
            }
            DoubleMode::Normal => {}
        }
        let reply: Result<Value, _> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(block_ms)
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(EVENTS_STREAM)
            .arg(&cursor)
            .query_async(&mut redis)
            .await;
        let Ok(reply) = reply else {
            // A Redis error mid-stream: just close, as meta-core does.
            return;
        };
        for (id, fields) in xread_entries(&reply) {
            if sender
                .send_data(Bytes::from(frame_entry(&id, &fields)))
                .await
                .is_err()
            {
                return;
            }
            cursor = id;
            last_write = Instant::now();
        }
        if last_write.elapsed() >= shared.config.keep_alive_after {
            if sender
                .send_data(Bytes::from_static(b":keep-alive\n\n"))
                .await
                .is_err()
            {
                return;
            }
            last_write = Instant::now();
        }
    }
}

/// The byte range a `Range` header asks of a `length`-byte file:
/// `Ok(None)` for the whole file, `Err(())` when unsatisfiable.
fn byte_range(range: Option<&str>, length: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = range.and_then(|range| range.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().map_err(|_| ())?;
            (
                length.saturating_sub(suffix),
                length.checked_sub(1).ok_or(())?,
            )
        }
        (start, "") => (start.parse().map_err(|_| ())?, length.saturating_sub(1)),
        (start, end) => (
            start.parse().map_err(|_| ())?,
            end.parse::<u64>()
                .map_err(|_| ())?
                .min(length.saturating_sub(1)),
        ),
    };
    if start >= length || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn webdav(shared: &Shared, request: &Request<Incoming>, file_path: &str) -> Response<Body> {
    let Some(root) = &shared.config.files_dir else {
        return error(StatusCode::NOT_FOUND, "not_found", "no files");
    };
    let relative = PathBuf::from(percent_decode(file_path));
    if relative
        .components()
        .any(|component| !matches!(component, Component::Normal(_)))
    {
        return error(StatusCode::FORBIDDEN, "forbidden", "path escapes the root");
    }
    let full: &Path = &root.join(relative);
    let Ok(bytes) = tokio::fs::read(full).await else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such file");
    };
    let length = bytes.len() as u64;
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok());
    let (status, body, content_range) = match byte_range(range, length) {
        Err(()) => {
            let mut response = Response::new(Empty::new().boxed());
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
        Ok(None) => (StatusCode::OK, Bytes::from(bytes), None),
        Ok(Some((start, end))) => (
            StatusCode::PARTIAL_CONTENT,
            Bytes::from(bytes).slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{length}")),
        ),
    };
    let body_length = body.len();
    let mut response = if request.method() == Method::HEAD {
        Response::new(Empty::new().boxed())
    } else {
        Response::new(Full::new(body).boxed())
    };
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_length));
    if let Some(content_range) = content_range.and_then(|text| HeaderValue::from_str(&text).ok()) {
        headers.insert(header::CONTENT_RANGE, content_range);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_http_says() {
        assert_eq!(byte_range(None, 10), Ok(None));
        assert_eq!(byte_range(Some("bytes=2-4"), 10), Ok(Some((2, 4))));
        assert_eq!(byte_range(Some("bytes=7-"), 10), Ok(Some((7, 9))));
        assert_eq!(byte_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(byte_range(Some("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(byte_range(Some("bytes=10-"), 10), Err(()));
    }

    #[test]
    fn entries_are_framed_with_sorted_compact_json() {
        let fields = [
            ("type".to_owned(), "set".to_owned()),
            ("ts".to_owned(), "1747999999999".to_owned()),
            ("key".to_owned(), "file:h/title".to_owned()),
        ];
        assert_eq!(
            frame_entry("1-0", &fields),
            "id: 1-0\nevent: set\ndata: {\"key\":\"file:h/title\",\"ts\":\"1747999999999\"}\n\n"
        );
        assert_eq!(
            frame_entry("2-0", &[("key".to_owned(), "k".to_owned())]),
            "id: 2-0\nevent: message\ndata: {\"key\":\"k\"}\n\n"
        );
    }
}
