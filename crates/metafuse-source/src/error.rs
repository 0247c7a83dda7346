/// What went wrong with a metadata source, sorted by what the caller can do
/// about it. Each message is complete (it names the source and the cause),
/// so it is logged or shown as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source's location is unusable (a malformed URL): retrying
    /// cannot help.
    #[error("{message}")]
    InvalidLocation {
        /// The complete message, credentials redacted.
        message: String,
    },
    /// The source could not be reached, or the connection broke: worth
    /// retrying, after reconnecting.
    #[error("{message}")]
    Connection {
        /// The complete message, credentials redacted.
        message: String,
    },
    /// The source answered with an error, or with something we do not
    /// understand.
    #[error("{message}")]
    Reply {
        /// The complete message.
        message: String,
    },
}

impl SourceError {
    /// True when the error is about the connection rather than the data:
    /// worth retrying after reconnecting.
    pub fn is_connection_error(&self) -> bool {
        matches!(self, SourceError::Connection { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_errors_are_worth_a_retry() {
        let connection = SourceError::Connection {
            message: "cannot connect to redis at redis://h/: refused".into(),
        };
        assert!(connection.is_connection_error());
        assert_eq!(
            connection.to_string(),
            "cannot connect to redis at redis://h/: refused"
        );
        for other in [
            SourceError::InvalidLocation {
                message: "bad".into(),
            },
            SourceError::Reply {
                message: "odd".into(),
            },
        ] {
            assert!(!other.is_connection_error(), "{other:?}");
        }
    }
}
