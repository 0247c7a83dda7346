use std::path::PathBuf;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The leader configuration can never yield a Redis.
    #[error("cannot discover redis: {0}")]
    Discovery(metafuse_leader::LeaderError),
    /// The bootstrap failed for a reason that waiting cannot mend (an
    /// unreachable source is waited for instead).
    #[error("bootstrap from {url} failed: {cause}")]
    Bootstrap {
        /// Where the source is (credentials redacted).
        url: String,
        /// What the source said.
        cause: metafuse_source::SourceError,
    },
    /// The preset asked for does not exist.
    #[error(transparent)]
    UnknownPreset(#[from] metafuse_rules::UnknownPreset),
    /// The rules file exists but cannot be read.
    #[error("cannot read rules file {path:?}: {cause}")]
    ReadRules {
        /// The file.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
}

// Written out rather than `#[from]`: the message above already carries the
// cause, and `#[from]` would also expose it as `source()`, printing it twice
// in an error chain.
impl From<metafuse_leader::LeaderError> for ServiceError {
    fn from(error: metafuse_leader::LeaderError) -> Self {
        ServiceError::Discovery(error)
    }
}
