//! Following `kv-leader.info` after discovery.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::DiscoveryConfig;
use crate::discover::{Leader, LeaderSource, WaitLog, WaitReason, log_found};
use crate::info_file::{InfoFileContent, read_info_file};
use crate::meta_core::MetaCoreClient;

/// Reports leader changes; stops its background task when dropped.
#[derive(Debug)]
pub struct LeaderWatcher {
    changes: mpsc::Receiver<Leader>,
    task: JoinHandle<()>,
}

impl LeaderWatcher {
    /// The next leader whose Redis or WebDAV location differs from the one
    /// before it. `None` when there is nothing to watch: the leader came from
    /// an explicit Redis URL or a pinned `META_CORE_URL`. Cancel-safe.
    pub async fn changed(&mut self) -> Option<Leader> {
        self.changes.recv().await
    }
}

impl Drop for LeaderWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches the leader info file, starting from `current` (what [`crate::discover`] returned).
///
/// Every `config.poll_interval` the file's content and mtime are read; when
/// either changed, the meta-core it names is asked for `/urls`, and a leader
/// whose `redis_url` or `webdav_url` differs from the current one is
/// reported. A missing file or a failing meta-core keeps the current leader
/// (the mount keeps serving) and is logged once per state; the attempt is
/// repeated at the next poll. Must be called inside a tokio runtime.
pub fn watch(config: DiscoveryConfig, current: Leader) -> LeaderWatcher {
    let (sender, changes) = mpsc::channel(4);
    let task = tokio::spawn(async move {
        // An explicit or pinned leader has no file to follow; dropping the
        // sender makes `changed` return `None`.
        if current.source == LeaderSource::LeaderInfoFile {
            follow_info_file(config, current, sender).await;
        }
    });
    LeaderWatcher { changes, task }
}

async fn follow_info_file(
    config: DiscoveryConfig,
    mut current: Leader,
    sender: mpsc::Sender<Leader>,
) {
    let path = config.info_file_path();
    let client = MetaCoreClient::new(config.request_timeout);
    let mut wait_log = WaitLog::default();
    // What the current leader was resolved from; the mtime is unknown until
    // the first poll, which therefore re-asks meta-core once (harmless).
    let mut resolved_from: Option<InfoFileContent> = None;
    let mut ticker = tokio::time::interval(config.poll_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let content = match read_info_file(&path).await {
            Ok(content) => content,
            Err(problem) => {
                wait_log.waiting(&keeping(&current), &WaitReason::from(problem));
                continue;
            }
        };
        if resolved_from.as_ref() == Some(&content) {
            wait_log.clear();
            continue;
        }
        let leader = match client
            .fetch_leader(&content.meta_core_url, LeaderSource::LeaderInfoFile)
            .await
        {
            Ok(leader) => leader,
            Err(problem) => {
                wait_log.waiting(&keeping(&current), &WaitReason::from(problem));
                continue;
            }
        };
        wait_log.clear();
        resolved_from = Some(content);
        let moved =
            leader.redis_url != current.redis_url || leader.webdav_url != current.webdav_url;
        current = leader.clone();
        if moved {
            log_found(&leader);
            if sender.send(leader).await.is_err() {
                return;
            }
        }
    }
}

/// The context of a wait line while the current leader stays in force.
fn keeping(current: &Leader) -> String {
    format!(
        "keeping leader {}",
        metafuse_source::redact_url(&current.redis_url)
    )
}
