//! The HTTP side: authentication, the read-only guard, and dav-server for
//! the protocol (PROPFIND XML, ranges, conditional requests).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dav_server::body::Body;
use dav_server::{DavConfig, DavHandler, DavMethodSet};
use headers::authorization::Basic;
use headers::{Authorization, HeaderMapExt};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metafuse_bytes::ByteSources;
use metafuse_vfs::SharedLibrary;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::tokens::TokenStore;
use crate::tree_fs::TreeFs;

/// The realm of the Basic challenge (spec §11).
pub const REALM: &str = "metafuse-webdav";

/// Failed attempts per address within [`FAILURE_WINDOW`] before further
/// attempts get 429 until the window ends.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; older entries are dropped first.
const MAX_TRACKED_ADDRESSES: usize = 10_000;
/// Bytes per source read while streaming a body: large enough that the
/// per-read cost (a blocking-pool hop, or one upstream range request)
/// does not dominate, small enough that nothing big is ever buffered.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Who may read.
#[derive(Clone, Debug)]
pub enum WebdavAuth {
    /// HTTP Basic, any user name, a live token as password.
    Tokens(Arc<TokenStore>),
    /// Anyone (`--webdav-no-auth`, trusted networks only).
    NoAuth,
}

/// Failed attempts per client address.
#[derive(Debug, Default)]
struct FailureLimiter {
    by_address: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    /// Seconds to wait when `address` used up its attempts.
    fn blocked_for(&self, address: IpAddr) -> Option<u64> {
        let by_address = self.by_address.lock();
        let &(n_failures, since) = by_address.get(&address)?;
        let elapsed = since.elapsed();
        (n_failures >= MAX_FAILURES && elapsed < FAILURE_WINDOW)
            .then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    fn record_failure(&self, address: IpAddr) {
        let mut by_address = self.by_address.lock();
        if by_address.len() >= MAX_TRACKED_ADDRESSES {
            by_address.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = by_address.entry(address).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    fn forget(&self, address: IpAddr) {
        self.by_address.lock().remove(&address);
    }
}

/// The read-only WebDAV server of a library. Share it (`Arc`) between
/// the listener of `--webdav-listen` and the API's `/webdav/` route.
pub struct WebdavServer {
    handler: DavHandler,
    auth: WebdavAuth,
    failures: FailureLimiter,
}

impl std::fmt::Debug for WebdavServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WebdavServer")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Methods that would change something: refused before dav-server sees
/// them, so nothing is ever touched.
fn is_write_method(method: &Method) -> bool {
    !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS" | "PROPFIND")
}

impl WebdavServer {
    /// Serves `library` with bytes from `sources`. `prefix` is the URL
    /// path it is mounted under (`""` on its own listener, `"/webdav"`
    /// under the API).
    pub fn new(
        library: SharedLibrary,
        sources: ByteSources,
        auth: WebdavAuth,
        prefix: &str,
    ) -> Self {
        let handler = DavConfig::new()
            .filesystem(Box::new(TreeFs { library, sources }))
            .strip_prefix(prefix.trim_end_matches('/'))
            .methods(DavMethodSet::WEBDAV_RO)
            .read_buf_size(READ_CHUNK_BYTES)
            .build_handler();
        WebdavServer {
            handler,
            auth,
            failures: FailureLimiter::default(),
        }
    }

    /// Answers one request from `peer`.
    pub async fn handle<B>(&self, request: Request<B>, peer: IpAddr) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if let WebdavAuth::Tokens(store) = &self.auth {
            if let Some(seconds) = self.failures.blocked_for(peer) {
                let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "too many failed attempts");
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
            let password = request
                .headers()
                .typed_get::<Authorization<Basic>>()
                .map(|credentials| credentials.password().to_owned());
            let store = store.clone();
            let accepted = match password {
                // The store reads a small file: off the async threads.
                Some(password) => tokio::task::spawn_blocking(move || store.verify(&password))
                    .await
                    .unwrap_or(false),
                None => false,
            };
            if !accepted {
                // A request without credentials is a client asking for
                // the challenge, not a guess.
                if request.headers().contains_key(hyper::header::AUTHORIZATION) {
                    self.failures.record_failure(peer);
                }
                let mut response = plain(StatusCode::UNAUTHORIZED, "authentication required");
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"metafuse-webdav\", charset=\"UTF-8\""),
                );
                return response;
            }
            self.failures.forget(peer);
        }
        if is_write_method(request.method()) {
            return plain(StatusCode::FORBIDDEN, "read-only");
        }
        if request.method().as_str() == "PROPFIND"
            && request
                .headers()
                .get("depth")
                .is_some_and(|depth| depth.as_bytes().eq_ignore_ascii_case(b"infinity"))
        {
            let mut response = Response::new(Body::from(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n",
            ));
            *response.status_mut() = StatusCode::FORBIDDEN;
            response.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/xml; charset=utf-8"),
            );
            return response;
        }
        let is_options = request.method() == Method::OPTIONS;
        let mut response = self.handler.handle(request).await;
        if is_options {
            // dav-server advertises class 2 and 3 (locking, PATCH), which a
            // read-only server without LOCK must not claim.
            let headers = response.headers_mut();
            headers.insert("dav", HeaderValue::from_static("1"));
            headers.insert(
                hyper::header::ALLOW,
                HeaderValue::from_static("OPTIONS, GET, HEAD, PROPFIND"),
            );
        }
        response
    }
}

/// Serves `server` on `listener` (`--webdav-listen`) until `shutdown`
/// resolves: HTTP/1.1 with keep-alive, one task per connection.
pub async fn serve(
    listener: TcpListener,
    server: Arc<WebdavServer>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: keep serving.
                    tracing::warn!(%error, "webdav: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(request, peer.ip()).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "webdav: connection ended with an error");
            }
        });
    }
}
