//! What can go wrong with one request.

use std::time::Duration;

/// A failed request. Every message names the URL (password removed) and is
/// complete on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be asked by this client.
    #[error("{url:?} is not a valid http url: {reason}")]
    InvalidUrl {
        /// The URL, password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection, or the connection broke before an answer.
    #[error("{url} is unreachable: {reason}")]
    Unreachable {
        /// The URL, password removed.
        url: String,
        /// The cause chain, e.g. "connection refused".
        reason: String,
    },
    /// No complete answer within the response timeout.
    #[error("{url} did not answer within {timeout:?}")]
    TimedOut {
        /// The URL, password removed.
        url: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// A status the caller did not accept.
    #[error("{url} answered http {status}{}", retry_hint(*.retry_after))]
    Status {
        /// The URL, password removed.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// `Retry-After` in seconds, when the server sent one.
        retry_after: Option<Duration>,
    },
    /// The body broke off, was too large, or did not decode.
    #[error("{url} sent a bad body: {reason}")]
    BadBody {
        /// The URL, password removed.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

fn retry_hint(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|delay| format!(" (retry after {} s)", delay.as_secs()))
        .unwrap_or_default()
}

impl HttpError {
    /// The HTTP status, for [`HttpError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's `Retry-After`, for [`HttpError::Status`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short name of the kind of failure, so that callers can log one line
    /// per change of state rather than per attempt.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid url",
            Self::Unreachable { .. } => "unreachable",
            Self::TimedOut { .. } => "timed out",
            Self::Status { .. } => "http status",
            Self::BadBody { .. } => "bad body",
        }
    }
}
