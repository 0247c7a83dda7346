//! Finding the leader once, waiting as long as it takes.

use std::time::Duration;

use crate::config::DiscoveryConfig;
use crate::info_file::{InfoFileProblem, read_info_file};
use crate::meta_core::{MetaCoreClient, MetaCoreProblem, check_meta_core_url};

/// Where metafuse reads its data from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// Redis URL, passed on as given (`redis://`, `rediss://`, ...).
    pub redis_url: String,
    /// WebDAV base for reading file bytes not on the local files volume;
    /// `None` when Redis was given explicitly.
    pub webdav_url: Option<String>,
    /// Meta-core API base URL the leader was learned from, if any.
    pub api_url: Option<String>,
    /// Host name of the leader's meta-core, if known.
    pub hostname: Option<String>,
    /// How the leader was found.
    pub source: LeaderSource,
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
}

impl std::fmt::Display for LeaderSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::ExplicitRedisUrl => "explicit redis url",
            Self::PinnedMetaCore => "META_CORE_URL",
            Self::LeaderInfoFile => "kv-leader.info",
        })
    }
}

/// Configuration that can never yield a leader, so waiting would be pointless.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// `META_CORE_URL` is not an absolute `http://` URL.
    #[error("invalid META_CORE_URL {url:?}: {reason}")]
    InvalidMetaCoreUrl {
        /// The configured value.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why there is no leader yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WaitReason {
    #[error(transparent)]
    InfoFile(#[from] InfoFileProblem),
    #[error(transparent)]
    MetaCore(#[from] MetaCoreProblem),
}

impl WaitReason {
    /// Two reasons with the same key are the same state: logged once.
    fn state_key(&self) -> String {
        match self {
            Self::InfoFile(problem) => match problem {
                InfoFileProblem::LocksDirectoryMissing { .. } => "locks directory missing".into(),
                InfoFileProblem::FileMissing { .. } => "info file missing".into(),
                InfoFileProblem::FileEmpty { .. } => "info file empty".into(),
                InfoFileProblem::FileUnreadable { reason, .. } => {
                    format!("info file unreadable: {reason}")
                }
            },
            Self::MetaCore(problem) => {
                let url = match problem {
                    MetaCoreProblem::InvalidUrl { url, .. }
                    | MetaCoreProblem::Unreachable { url, .. }
                    | MetaCoreProblem::TimedOut { url, .. }
                    | MetaCoreProblem::HttpStatus { url, .. }
                    | MetaCoreProblem::BadBody { url, .. }
                    | MetaCoreProblem::NoRedisUrl { url } => url,
                };
                format!("meta-core {url} {}", problem.kind())
            }
        }
    }

    /// Missing-file states are polled at a steady pace (a stat is free);
    /// a failing meta-core is retried with backoff.
    fn is_meta_core(&self) -> bool {
        matches!(self, Self::MetaCore(_))
    }
}

/// Logs one line per change of waiting state, never one per attempt.
#[derive(Debug, Default)]
pub(crate) struct WaitLog {
    last_state: Option<String>,
}

impl WaitLog {
    /// Returns whether the state changed (and was logged).
    pub(crate) fn waiting(&mut self, context: &str, reason: &WaitReason) -> bool {
        let key = reason.state_key();
        if self.last_state.as_ref() == Some(&key) {
            return false;
        }
        tracing::warn!("{context}: {reason}");
        self.last_state = Some(key);
        true
    }

    pub(crate) fn clear(&mut self) {
        self.last_state = None;
    }
}

/// Exponential backoff between failed meta-core attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Finds the leader (spec §7), waiting until there is one.
///
/// Order: `config.redis_url`; else `config.meta_core_url` and its `/urls`;
/// else the info file and the `/urls` of the meta-core it names. While no
/// leader can be found (missing file or `locks/` directory, unreachable
/// meta-core, bad JSON) it retries, logging one line each time the reason
/// changes. Cancel-safe: dropping the future abandons the search and nothing else.
pub async fn discover(config: &DiscoveryConfig) -> Result<Leader, LeaderError> {
    if let Some(redis_url) = &config.redis_url {
        tracing::info!(
            "using redis at {} (explicit redis url)",
            metafuse_source::redact_url(redis_url)
        );
        return Ok(Leader {
            redis_url: redis_url.clone(),
            webdav_url: None,
            api_url: None,
            hostname: None,
            source: LeaderSource::ExplicitRedisUrl,
        });
    }
    if let Some(pinned_url) = &config.meta_core_url {
        check_meta_core_url(pinned_url).map_err(|problem| LeaderError::InvalidMetaCoreUrl {
            url: pinned_url.clone(),
            reason: problem.to_string(),
        })?;
    }
    let client = MetaCoreClient::new(config.request_timeout);
    let mut wait_log = WaitLog::default();
    let mut backoff = Backoff::new(config.retry_initial_delay, config.retry_max_delay);
    let mut previous_was_meta_core = false;
    loop {
        let attempt = match &config.meta_core_url {
            Some(pinned_url) => client
                .fetch_leader(pinned_url, LeaderSource::PinnedMetaCore)
                .await
                .map_err(WaitReason::from),
            None => resolve_from_info_file(config, &client).await,
        };
        let reason = match attempt {
            Ok(leader) => {
                log_found(&leader);
                return Ok(leader);
            }
            Err(reason) => reason,
        };
        wait_log.waiting("waiting for a leader", &reason);
        let delay = if reason.is_meta_core() {
            if !previous_was_meta_core {
                backoff.reset();
            }
            backoff.next_delay()
        } else {
            config.poll_interval
        };
        previous_was_meta_core = reason.is_meta_core();
        tokio::time::sleep(delay).await;
    }
}

pub(crate) async fn resolve_from_info_file(
    config: &DiscoveryConfig,
    client: &MetaCoreClient,
) -> Result<Leader, WaitReason> {
    let content = read_info_file(&config.info_file_path()).await?;
    Ok(client
        .fetch_leader(&content.meta_core_url, LeaderSource::LeaderInfoFile)
        .await?)
}

pub(crate) fn log_found(leader: &Leader) {
    tracing::info!(
        "leader found: {} at {} (via {})",
        leader.hostname.as_deref().unwrap_or("unknown host"),
        metafuse_source::redact_url(&leader.redis_url),
        leader.source
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn same_kind_of_problem_is_logged_once_and_a_new_kind_again() {
        let mut wait_log = WaitLog::default();
        let refused = |reason: &str| {
            WaitReason::MetaCore(MetaCoreProblem::Unreachable {
                url: "http://core:9000".into(),
                reason: reason.into(),
            })
        };
        assert!(wait_log.waiting("test", &refused("connection refused")));
        assert!(!wait_log.waiting("test", &refused("connection reset")));
        let missing = WaitReason::InfoFile(InfoFileProblem::FileMissing {
            path: PathBuf::from("/x"),
        });
        assert!(wait_log.waiting("test", &missing));
        assert!(wait_log.waiting("test", &refused("connection refused")));
        wait_log.clear();
        assert!(wait_log.waiting("test", &refused("connection refused")));
    }
}
