//! How the API server protects itself and what it serves besides the API.

use std::path::PathBuf;
use std::time::Duration;

/// Limits and options of the HTTP server. [`ApiConfig::default`] suits a
/// real deployment; tests shorten the timeouts.
#[derive(Clone)]
pub struct ApiConfig {
    /// `--api-token` / `API_TOKEN`: when set, mutating routes (`PUT
    /// /api/fuse/rules`, `POST /api/fuse/refresh`) need `Authorization:
    /// Bearer <token>`; when not, they accept only same-origin requests.
    pub api_token: Option<String>,
    /// `--ui-dir`: a built dashboard served at `/` (API routes first).
    pub ui_dir: Option<PathBuf>,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// A client must send a request's headers within this (also the idle
    /// limit of a kept-alive connection).
    pub header_read_timeout: Duration,
    /// A client must send a request's whole body within this (408 otherwise).
    pub body_read_timeout: Duration,
    /// Largest request body (rules documents are the largest real ones).
    pub max_body_bytes: usize,
    /// Request bytes buffered at once over all connections; a request
    /// whose body does not fit now is answered 503 instead of queueing.
    pub max_buffered_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_token: None,
            ui_dir: None,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            // A 1 MiB rules document plus its `{"config": ...}` wrapper and
            // pretty-printing.
            max_body_bytes: 2 * 1024 * 1024,
            max_buffered_body_bytes: 32 * 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        formatter
            .debug_struct("ApiConfig")
            .field("api_token", &self.api_token.as_ref().map(|_| "<set>"))
            .field("ui_dir", &self.ui_dir)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_buffered_body_bytes", &self.max_buffered_body_bytes)
            .finish()
    }
}
