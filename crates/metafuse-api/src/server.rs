//! Accepting connections and shutting down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::ApiConfig;
use crate::router::handle;
use crate::state::{BackendSlot, ServerState};

/// Pause after a failed accept (e.g. out of file descriptors) so the loop
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// hyper's read buffer per connection; requests' headers are small, and
/// bodies do not go through it.
const MAX_READ_BUFFER_BYTES: usize = 64 * 1024;
/// What a connection over [`ApiConfig::max_connections`] gets before it is
/// closed: nothing is read from it, nothing waits.
const OVERLOADED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 53\r\n\r\n{\"error\":\"too many connections; retry in a moment\"}\r\n";

/// Serves the API on `listener` with the default [`ApiConfig`] until
/// `shutdown` resolves; see [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    backend: impl Into<BackendSlot>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, backend, ApiConfig::default(), shutdown).await;
}

/// Serves the API on `listener` until `shutdown` resolves, then lets requests
/// in flight finish and returns.
///
/// Every accepted socket gets `TCP_NODELAY`: without it small JSON replies
/// wait on Nagle's algorithm and delayed ACKs (~30 ms per request). Accept
/// errors are logged and retried, never fatal. Slow or too many clients are
/// bounded by `config` (header and body timeouts, a connection cap, a cap
/// on buffered request bytes): over a limit the answer is 503 at once,
/// never an unbounded queue.
pub async fn serve_with(
    listener: TcpListener,
    backend: impl Into<BackendSlot>,
    config: ApiConfig,
    shutdown: impl Future<Output = ()>,
) {
    warn_when_exposed(&listener, &config);
    let connection_slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let refusal_slots = Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS));
    let state = Arc::new(ServerState {
        backend: backend.into(),
        body_budget: Arc::new(Semaphore::new(
            config.max_buffered_body_bytes.min(Semaphore::MAX_PERMITS),
        )),
        config,
    });
    let (stop_sender, stop_receiver) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut n_refused = 0_u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
                        refuse(stream, &refusal_slots);
                        n_refused += 1;
                        if n_refused.is_power_of_two() {
                            tracing::warn!(n_refused, max_connections = state.config.max_connections, "api connection limit reached; answering 503");
                        }
                        continue;
                    };
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY for {peer}: {error}");
                    }
                    connections.spawn(serve_connection(stream, state.clone(), stop_receiver.clone(), slot));
                }
                Err(error) => {
                    tracing::warn!("accepting an api connection failed: {error}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Ignoring the error: no connection is listening when all are gone.
    let _ = stop_sender.send(true);
    while connections.join_next().await.is_some() {}
}

/// Refused connections kept open at once to deliver their 503.
const MAX_LINGERING_REFUSALS: usize = 64;
/// How long a refused connection is kept to deliver its 503.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Answers a connection over the cap with 503 and closes it. Closing at
/// once would reset the connection when the client's request arrives, and
/// the reset can destroy the 503 before the client reads it; so the
/// request is read and dropped for a moment first, with a fixed buffer, a
/// time limit and a cap on such connections (beyond it they are just
/// closed).
fn refuse(stream: tokio::net::TcpStream, refusal_slots: &Arc<Semaphore>) {
    // A full send buffer just loses the courtesy reply.
    let _ = stream.try_write(OVERLOADED_RESPONSE);
    let Ok(lingering) = refusal_slots.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _lingering = lingering;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            let _ = stream.shutdown().await;
            let mut discard = [0u8; 4096];
            while matches!(stream.read(&mut discard).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// Anyone who reaches a non-loopback address can read the library and, with
/// a browser's help or a token, change the rules: say so once at start.
fn warn_when_exposed(listener: &TcpListener, config: &ApiConfig) {
    let Ok(address) = listener.local_addr() else {
        return;
    };
    if address.ip().is_loopback() {
        return;
    }
    if config.api_token.is_some() {
        tracing::warn!(%address, "the api listens beyond loopback: anyone who reaches it can read the library; changing rules or refreshing needs the api token");
    } else {
        tracing::warn!(%address, "the api listens beyond loopback without --api-token: anyone who reaches it can read the library, and rules changes are refused only to cross-origin browsers; set --api-token (API_TOKEN) to require a token");
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    state: Arc<ServerState>,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let header_read_timeout = state.config.header_read_timeout;
    let service = service_fn(move |request| handle(state.clone(), request));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_READ_BUFFER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!("api connection ended: {error}");
            }
        }
        // The guard `wait_for` returns is not Send; drop it inside.
        () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
            connection.as_mut().graceful_shutdown();
            if let Err(error) = connection.await {
                tracing::debug!("api connection ended during shutdown: {error}");
            }
        }
    }
}
