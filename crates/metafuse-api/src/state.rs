//! What the server and the router share: the backend slot and the
//! per-server state. Its own module so that `server` (accepting
//! connections) and `router` (answering requests) do not depend on each
//! other.

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

use crate::backend::Backend;
use crate::config::ApiConfig;

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

/// What every connection shares: the backend, the limits, and the budget
/// of request bytes buffered at once.
pub(crate) struct ServerState {
    pub(crate) backend: BackendSlot,
    pub(crate) config: ApiConfig,
    pub(crate) body_budget: Arc<Semaphore>,
}
