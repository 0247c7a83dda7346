use std::path::PathBuf;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The leader configuration can never yield a Redis.
    #[error("cannot discover redis: {0}")]
    Discovery(#[from] metafuse_leader::LeaderError),
    /// Redis could not be reached or the bootstrap failed.
    #[error("bootstrap from {url} failed: {source}")]
    Bootstrap {
        /// The Redis URL (password redacted).
        url: String,
        /// What the stream layer said.
        #[source]
        source: metafuse_stream::StreamError,
    },
    /// The preset asked for does not exist.
    #[error(transparent)]
    UnknownPreset(#[from] metafuse_rules::UnknownPreset),
    /// The rules file exists but cannot be read.
    #[error("cannot read rules file {path:?}: {source}")]
    ReadRules {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}
