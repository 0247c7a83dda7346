//! What the service needs to know to start.

use std::path::PathBuf;
use std::time::Duration;

use metafuse_leader::DiscoveryConfig;
use metafuse_stream::Strategy;

/// Where the renaming rules come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RulesSource {
    /// A rules file (JSON or TOML), watched for edits. When it does not
    /// exist the `default` preset is used and the file is only written by a
    /// `PUT /api/fuse/rules`.
    File(PathBuf),
    /// A shipped preset (`default`, `plex`, `jellyfin`); a `PUT` saves to
    /// `save_to` and the rules stay live from then on.
    Preset {
        /// The preset name.
        name: String,
        /// Where a `PUT /api/fuse/rules` writes the document.
        save_to: PathBuf,
    },
}

impl RulesSource {
    /// The file a `PUT` writes (and, for [`RulesSource::File`], that is watched).
    pub fn file_path(&self) -> &PathBuf {
        match self {
            RulesSource::File(path) => path,
            RulesSource::Preset { save_to, .. } => save_to,
        }
    }
}

/// Owner and modes reported for every node (`PUID`, `PGID`,
/// `FUSE_FILE_MODE`, `FUSE_DIR_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// Owner of every node.
    pub uid: u32,
    /// Group of every node.
    pub gid: u32,
    /// Permission bits of files.
    pub file_mode: u32,
    /// Permission bits of directories.
    pub dir_mode: u32,
}

impl Default for Ownership {
    fn default() -> Self {
        Ownership {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
        }
    }
}

/// Everything [`crate::Service::start`] needs.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Where the source is (explicit Redis URL, pinned meta-core, leader
    /// file, beacon) and `--source redis|metacore` (`forced_mode`).
    pub discovery: DiscoveryConfig,
    /// `REDIS_PREFIX` of `file:` keys.
    pub prefix: String,
    /// How to bootstrap.
    pub strategy: Strategy,
    /// Where the rules come from.
    pub rules: RulesSource,
    /// `FILES_VOLUME`: where `filePath`s are found.
    pub files_root: PathBuf,
    /// Owner and modes reported by the API.
    pub ownership: Ownership,
    /// How often the rules file is checked for edits.
    pub rules_poll_interval: Duration,
    /// How long one blocking stream read waits before it is reissued; also
    /// how quickly an outage shows in health.
    pub tail_block: Duration,
    /// `--state-dir`: where the warm-restart checkpoint is kept (the
    /// binaries default it to `CONFIG_DIR`); `None` writes and reads none.
    pub state_dir: Option<PathBuf>,
    /// How often the checkpoint is rewritten while running (also on a clean
    /// shutdown).
    pub checkpoint_interval: Duration,
    /// API mode: no byte on the event stream for this long → reconnect
    /// (meta-core sends a keep-alive every 30 s).
    pub metacore_watchdog: Duration,
}

impl ServiceConfig {
    /// A configuration with the defaults: default leader discovery, no
    /// prefix, automatic strategy, rules from `rules_file`, files under
    /// `files_root`, modes 644/755 owned by root, polling every second.
    pub fn new(rules_file: impl Into<PathBuf>, files_root: impl Into<PathBuf>) -> Self {
        ServiceConfig {
            discovery: DiscoveryConfig::default(),
            prefix: String::new(),
            strategy: Strategy::Auto,
            rules: RulesSource::File(rules_file.into()),
            files_root: files_root.into(),
            ownership: Ownership::default(),
            rules_poll_interval: Duration::from_secs(1),
            tail_block: Duration::from_secs(1),
            state_dir: None,
            checkpoint_interval: Duration::from_secs(60),
            metacore_watchdog: Duration::from_secs(60),
        }
    }
}
