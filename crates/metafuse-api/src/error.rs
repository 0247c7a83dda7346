use hyper::StatusCode;

/// Why a request could not be answered; each maps to one HTTP status and a
/// `{"error": message}` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No file or directory at this virtual path (404).
    #[error("path not found: {path}")]
    NotFound {
        /// The virtual path asked for.
        path: String,
    },
    /// A directory operation on a file (404, as the reference answered).
    #[error("not a directory: {path}")]
    NotADirectory {
        /// The virtual path asked for.
        path: String,
    },
    /// A file operation on a directory (404, as the reference answered).
    #[error("not a file: {path}")]
    NotAFile {
        /// The virtual path asked for.
        path: String,
    },
    /// The request itself is wrong: body, parameter, rules document (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A rules document failed validation (400, with the reference's
    /// `{"success": false, "errors": [...]}` body).
    #[error("rules rejected: {}", .0.join("; "))]
    InvalidRules(Vec<String>),
    /// The service cannot do it right now, e.g. Redis is unreachable (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A failure on our side (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } | Self::NotADirectory { .. } | Self::NotAFile { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::BadRequest(_) | Self::InvalidRules(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn body(&self) -> serde_json::Value {
        match self {
            Self::InvalidRules(errors) => serde_json::json!({
                "success": false,
                "errors": errors,
                "error": self.to_string(),
            }),
            _ => serde_json::json!({ "error": self.to_string() }),
        }
    }
}
