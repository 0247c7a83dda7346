/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The URL is not a usable `redis://` or `rediss://` URL.
    #[error("invalid redis url {url:?}: {cause}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// Why it was rejected.
        cause: redis::RedisError,
    },
    /// No connection could be made.
    #[error("cannot connect to redis at {url}: {cause}")]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The underlying error.
        cause: redis::RedisError,
    },
    /// A command failed.
    #[error("redis {operation} failed: {cause}")]
    Command {
        /// What we were doing (`XRANGE meta:events`, `MGET`, ...).
        operation: &'static str,
        /// The underlying error.
        cause: redis::RedisError,
    },
    /// Redis answered in a shape we do not understand.
    #[error("unexpected redis reply to {operation}: {reply}")]
    UnexpectedReply {
        /// The command concerned.
        operation: &'static str,
        /// A short description of what came back.
        reply: String,
    },
}

impl StreamError {
    pub(crate) fn command(
        operation: &'static str,
    ) -> impl FnOnce(redis::RedisError) -> StreamError {
        move |cause| StreamError::Command { operation, cause }
    }

    /// True when the error is about the connection rather than the data:
    /// worth retrying after reconnecting.
    pub fn is_connection_error(&self) -> bool {
        match self {
            StreamError::Connect { .. } => true,
            StreamError::Command { cause, .. } => {
                cause.is_io_error()
                    || cause.is_connection_dropped()
                    || cause.is_connection_refusal()
                    || cause.is_timeout()
                    || cause.is_unrecoverable_error()
                    // A Redis that just restarted answers LOADING until its
                    // dataset is in memory: it is back, not yet usable.
                    || cause.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    // Cluster: the slot moved (failover, resharding) or the
                    // cluster is reconfiguring; a blocked read is told
                    // UNBLOCKED when its master becomes a replica.
                    || cause.is_cluster_error()
                    || cause.to_string().contains("UNBLOCKED")
            }
            StreamError::InvalidUrl { .. } | StreamError::UnexpectedReply { .. } => false,
        }
    }
}

// The message is complete, so the source layer's error carries it as it is,
// sorted by what a caller can do about it.
impl From<StreamError> for metafuse_source::SourceError {
    fn from(error: StreamError) -> Self {
        let message = error.to_string();
        if error.is_connection_error() {
            metafuse_source::SourceError::Connection { message }
        } else if let StreamError::InvalidUrl { .. } = error {
            metafuse_source::SourceError::InvalidLocation { message }
        } else {
            metafuse_source::SourceError::Reply { message }
        }
    }
}
