//! Accepting connections and shutting down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::backend::Backend;
use crate::router::handle;

/// Where the server finds its backend. A slot can start empty, so the API
/// answers while the service is still waiting for a leader or for Redis, or
/// bootstrapping: health then reports `starting` and the other routes 503.
/// [`BackendSlot::fill`] makes the backend live for every connection at once.
#[derive(Clone)]
pub struct BackendSlot(watch::Sender<Option<Arc<dyn Backend>>>);

impl BackendSlot {
    /// A slot with no backend yet.
    pub fn empty() -> Self {
        BackendSlot(watch::Sender::new(None))
    }

    /// Serves `backend` from now on.
    pub fn fill(&self, backend: Arc<dyn Backend>) {
        self.0.send_replace(Some(backend));
    }

    pub(crate) fn current(&self) -> Option<Arc<dyn Backend>> {
        self.0.borrow().clone()
    }
}

impl From<Arc<dyn Backend>> for BackendSlot {
    fn from(backend: Arc<dyn Backend>) -> Self {
        BackendSlot(watch::Sender::new(Some(backend)))
    }
}

impl<B: Backend> From<Arc<B>> for BackendSlot {
    fn from(backend: Arc<B>) -> Self {
        BackendSlot(watch::Sender::new(Some(backend)))
    }
}

impl std::fmt::Debug for BackendSlot {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.borrow().is_some() {
            "filled"
        } else {
            "empty"
        };
        formatter.debug_tuple("BackendSlot").field(&state).finish()
    }
}

/// A client that opens a connection and sends nothing is dropped after this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves the API on `listener` until `shutdown` resolves, then lets requests
/// in flight finish and returns.
///
/// Every accepted socket gets `TCP_NODELAY`: without it small JSON replies
/// wait on Nagle's algorithm and delayed ACKs (~30 ms per request). Accept
/// errors are logged and retried, never fatal.
pub async fn serve(
    listener: TcpListener,
    backend: impl Into<BackendSlot>,
    shutdown: impl Future<Output = ()>,
) {
    let backend = backend.into();
    let (stop_sender, stop_receiver) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY for {peer}: {error}");
                    }
                    connections.spawn(serve_connection(stream, backend.clone(), stop_receiver.clone()));
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

async fn serve_connection(
    stream: tokio::net::TcpStream,
    backend: BackendSlot,
    mut stop: watch::Receiver<bool>,
) {
    let service = service_fn(move |request| handle(backend.clone(), request));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
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
