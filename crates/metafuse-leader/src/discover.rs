//! Finding the leader once, waiting as long as it takes.

use std::time::Duration;

use crate::beacon::{BeaconWatcher, CoreAdvert, watch_cores};
use crate::config::DiscoveryConfig;
use crate::info_file::{InfoFileProblem, read_info_file};
use crate::leader::{Leader, LeaderSource, SourceMode};
use crate::meta_core::{MetaCoreClient, MetaCoreProblem, check_meta_core_url, leader_from_urls};

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
            Self::MetaCore(problem) => problem.state_key(),
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

/// Finds the leader (spec §7, §9), waiting until there is one.
///
/// Order: `config.redis_url` (unless the meta-core source is forced); else
/// `config.meta_core_url` and its `/urls`; else the info file and the
/// `/urls` of the meta-core it names; else, while there is no info file,
/// the first meta-core heard on the beacon. A meta-core's `/urls` with a
/// `redisUrl` gives direct Redis (with a warning), without one the API mode;
/// `config.forced_mode` overrides. While no leader can be found it retries,
/// logging one line each time the reason changes. Cancel-safe: dropping the
/// future abandons the search and nothing else.
pub async fn discover(config: &DiscoveryConfig) -> Result<Leader, LeaderError> {
    if let Some(redis_url) = &config.redis_url
        && config.forced_mode != Some(SourceMode::MetaCore)
    {
        tracing::info!(
            "using redis at {} (explicit redis url)",
            metafuse_source::redact_url(redis_url)
        );
        return Ok(Leader {
            mode: SourceMode::Redis,
            redis_url: redis_url.clone(),
            webdav_url: None,
            api_url: None,
            hostname: None,
            source: LeaderSource::ExplicitRedisUrl,
        });
    }
    if let Some(pinned_url) = &config.meta_core_url {
        check_meta_core_url(pinned_url).map_err(|error| LeaderError::InvalidMetaCoreUrl {
            url: pinned_url.clone(),
            reason: error.to_string(),
        })?;
    }
    let client = MetaCoreClient::new(config.request_timeout);
    let mut wait_log = WaitLog::default();
    let mut backoff = Backoff::new(config.retry_initial_delay, config.retry_max_delay);
    let mut previous_was_meta_core = false;
    let mut beacon = BeaconState::NotStarted;
    loop {
        let attempt = match &config.meta_core_url {
            Some(pinned_url) => client
                .fetch_leader(pinned_url, LeaderSource::PinnedMetaCore, config.forced_mode)
                .await
                .map_err(WaitReason::from),
            None => match resolve_from_info_file(config, &client).await {
                Err(WaitReason::InfoFile(
                    problem @ (InfoFileProblem::FileMissing { .. }
                    | InfoFileProblem::LocksDirectoryMissing { .. }),
                )) => match beacon.current_core(config) {
                    Some(core) => resolve_from_beacon(config, &client, core).await,
                    None => Err(WaitReason::InfoFile(problem)),
                },
                other => other,
            },
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
        match &mut beacon {
            // A core heard on the beacon ends the wait at once.
            BeaconState::Listening(watcher) if !reason.is_meta_core() => {
                let _ = tokio::time::timeout(delay, watcher.wait_for_core()).await;
            }
            _ => tokio::time::sleep(delay).await,
        }
    }
}

/// The beacon listener of one discovery, started the first time there is
/// neither a pin nor an info file.
#[derive(Debug)]
enum BeaconState {
    NotStarted,
    Listening(BeaconWatcher),
    Unavailable,
}

impl BeaconState {
    fn current_core(&mut self, config: &DiscoveryConfig) -> Option<CoreAdvert> {
        if matches!(self, Self::NotStarted) {
            *self = match &config.beacon {
                None => Self::Unavailable,
                Some(beacon_config) => match watch_cores(beacon_config, None) {
                    Ok(watcher) => {
                        tracing::info!(
                            "listening for meta-core on the beacon {}:{}",
                            beacon_config.group,
                            beacon_config.port
                        );
                        Self::Listening(watcher)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen on the beacon; waiting for kv-leader.info only");
                        Self::Unavailable
                    }
                },
            };
        }
        match self {
            Self::Listening(watcher) => watcher.current(),
            _ => None,
        }
    }
}

/// The leader a beacon advertisement names: its advertised `/urls` (which
/// never carries a `redisUrl`, so API mode), or, when the Redis source is
/// forced, the core's own `/urls`.
pub(crate) async fn resolve_from_beacon(
    config: &DiscoveryConfig,
    client: &MetaCoreClient,
    core: CoreAdvert,
) -> Result<Leader, WaitReason> {
    if config.forced_mode == Some(SourceMode::Redis) {
        return Ok(client
            .fetch_leader(&core.api_url, LeaderSource::Beacon, config.forced_mode)
            .await?);
    }
    Ok(leader_from_urls(
        &core.api_url,
        core.urls,
        LeaderSource::Beacon,
        config.forced_mode,
    )?)
}

pub(crate) async fn resolve_from_info_file(
    config: &DiscoveryConfig,
    client: &MetaCoreClient,
) -> Result<Leader, WaitReason> {
    let content = read_info_file(&config.info_file_path()).await?;
    Ok(client
        .fetch_leader(
            &content.meta_core_url,
            LeaderSource::LeaderInfoFile,
            config.forced_mode,
        )
        .await?)
}

pub(crate) fn log_found(leader: &Leader) {
    tracing::info!(
        "leader found: {} at {} (via {}; source {})",
        leader.hostname.as_deref().unwrap_or("unknown host"),
        leader.location(),
        leader.source,
        leader.mode
    );
    if leader.mode == SourceMode::Redis && leader.source != LeaderSource::ExplicitRedisUrl {
        tracing::warn!(
            "meta-core {} publishes its redis ({}): reading redis directly; newer meta-cores keep it private and are read through their API",
            leader.api_url.as_deref().unwrap_or("?"),
            metafuse_source::redact_url(&leader.redis_url)
        );
    }
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
            WaitReason::MetaCore(MetaCoreProblem::Http {
                url: "http://core:9000".into(),
                error: metafuse_http::HttpError::Unreachable {
                    url: "http://core:9000/urls".into(),
                    reason: reason.into(),
                },
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
