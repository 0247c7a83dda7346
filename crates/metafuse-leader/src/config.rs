use std::path::PathBuf;
use std::time::Duration;

use crate::beacon::BeaconConfig;
use crate::leader::SourceMode;

/// Where to look for the leader and how patiently.
///
/// The binaries resolve it from flags, environment and config file in
/// `metafuse-cli`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Explicit Redis URL (`--redis-url`/`REDIS_URL`); wins over everything.
    pub redis_url: Option<String>,
    /// Pinned meta-core API base URL (`META_CORE_URL`); asked for `/urls`.
    pub meta_core_url: Option<String>,
    /// The meta-core volume (`META_CORE_PATH`, default `/meta-core`).
    pub meta_core_path: PathBuf,
    /// Timeout of one `/urls` request, connect included.
    pub request_timeout: Duration,
    /// First delay between failed `/urls` attempts; doubles up to `retry_max_delay`.
    pub retry_initial_delay: Duration,
    /// Longest delay between failed `/urls` attempts.
    pub retry_max_delay: Duration,
    /// How often the info file is looked at while it is missing and while watching.
    pub poll_interval: Duration,
    /// `--source redis|metacore`: overrides the mode a meta-core's `/urls`
    /// implies; `metacore` also makes discovery ignore `redis_url`.
    pub forced_mode: Option<SourceMode>,
    /// Beacon v2 discovery, used while there is neither a pin nor an info
    /// file; `None` disables it.
    pub beacon: Option<BeaconConfig>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            meta_core_url: None,
            meta_core_path: PathBuf::from("/meta-core"),
            request_timeout: Duration::from_secs(5),
            retry_initial_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            forced_mode: None,
            beacon: Some(BeaconConfig::default()),
        }
    }
}

impl DiscoveryConfig {
    /// Reads `REDIS_URL`, `META_CORE_URL` and `META_CORE_PATH` from any
    /// variable source (tests, config files).
    ///
    /// Empty or blank values count as unset: compose files often declare
    /// `REDIS_URL=` to mean "not pinned".
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let non_blank = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let defaults = Self::default();
        Self {
            redis_url: non_blank("REDIS_URL"),
            meta_core_url: non_blank("META_CORE_URL"),
            meta_core_path: non_blank("META_CORE_PATH")
                .map(PathBuf::from)
                .unwrap_or(defaults.meta_core_path),
            ..defaults
        }
    }

    /// `{meta_core_path}/locks/kv-leader.info`.
    pub fn info_file_path(&self) -> PathBuf {
        self.meta_core_path.join("locks").join("kv-leader.info")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_variables_count_as_unset_and_path_defaults() {
        let config = DiscoveryConfig::from_lookup(|name| match name {
            "REDIS_URL" => Some("  ".to_owned()),
            "META_CORE_URL" => Some("http://meta-core:9000".to_owned()),
            _ => None,
        });
        assert_eq!(config.redis_url, None);
        assert_eq!(
            config.meta_core_url.as_deref(),
            Some("http://meta-core:9000")
        );
        assert_eq!(
            config.info_file_path(),
            PathBuf::from("/meta-core/locks/kv-leader.info")
        );
    }

    #[test]
    fn meta_core_path_is_taken_from_the_environment() {
        let config = DiscoveryConfig::from_lookup(|name| {
            (name == "META_CORE_PATH").then(|| "/srv/core".to_owned())
        });
        assert_eq!(
            config.info_file_path(),
            PathBuf::from("/srv/core/locks/kv-leader.info")
        );
    }
}
