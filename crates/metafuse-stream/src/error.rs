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
            }
            StreamError::InvalidUrl { .. } | StreamError::UnexpectedReply { .. } => false,
        }
    }
}

/// `redis://user:secret@host/` → `redis://user:***@host/`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("redis://:secret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://me:secret@host/"),
            "rediss://me:***@host/"
        );
        assert_eq!(redact_url("redis://host/"), "redis://host/");
    }
}
