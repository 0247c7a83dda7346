//! What discovery finds: the data source to use and where it is.

/// Which kind of source the service reads metadata from (spec §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceMode {
    /// Direct Redis: `--redis-url`/`REDIS_URL`, or a meta-core whose `/urls`
    /// still publishes a `redisUrl`.
    Redis,
    /// meta-core's HTTP API and event stream ("api-mediated access"): its
    /// `/urls` names no `redisUrl`.
    MetaCore,
}

impl SourceMode {
    /// The name used in flags, logs and the API: `redis` or `metacore`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::MetaCore => "metacore",
        }
    }
}

impl std::fmt::Display for SourceMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for SourceMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "redis" => Ok(Self::Redis),
            "metacore" | "meta-core" | "api" => Ok(Self::MetaCore),
            other => Err(format!("unknown source {other:?}: use redis or metacore")),
        }
    }
}

/// Where metafuse reads its data from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// How to read metadata: [`SourceMode::Redis`] uses `redis_url`,
    /// [`SourceMode::MetaCore`] uses `api_url`.
    pub mode: SourceMode,
    /// Redis URL, passed on as given (`redis://`, `rediss://`, ...); empty
    /// in [`SourceMode::MetaCore`].
    pub redis_url: String,
    /// WebDAV base for reading file bytes not on the local files volume;
    /// `None` when Redis was given explicitly.
    pub webdav_url: Option<String>,
    /// Meta-core API base URL the leader was learned from (no trailing
    /// slash); always set in [`SourceMode::MetaCore`].
    pub api_url: Option<String>,
    /// Host name of the leader's meta-core, if known.
    pub hostname: Option<String>,
    /// How the leader was found.
    pub source: LeaderSource,
}

impl Leader {
    /// What this leader is shown as in logs: the API URL in meta-core
    /// mode, the Redis URL (password hidden) otherwise.
    pub fn location(&self) -> String {
        match self.mode {
            SourceMode::MetaCore => self.api_url.clone().unwrap_or_default(),
            SourceMode::Redis => metafuse_source::redact_url(&self.redis_url),
        }
    }

    /// Whether switching from `self` to `other` changes where data or bytes
    /// come from (a leader switch).
    pub fn differs_in_location(&self, other: &Leader) -> bool {
        self.mode != other.mode
            || self.redis_url != other.redis_url
            || self.webdav_url != other.webdav_url
            || (self.mode == SourceMode::MetaCore && self.api_url != other.api_url)
    }
}

/// How a [`Leader`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderSource {
    /// `--redis-url`/`REDIS_URL`.
    ExplicitRedisUrl,
    /// `META_CORE_URL` and its `/urls`.
    PinnedMetaCore,
    /// `kv-leader.info` and the `/urls` of the meta-core it names.
    LeaderInfoFile,
    /// A beacon v2 `metamesh.core` advertisement (spec §9).
    Beacon,
}

impl std::fmt::Display for LeaderSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::ExplicitRedisUrl => "explicit redis url",
            Self::PinnedMetaCore => "META_CORE_URL",
            Self::LeaderInfoFile => "kv-leader.info",
            Self::Beacon => "beacon",
        })
    }
}
