//! The boundary between the HTTP API and the service state.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::timestamp::serialize_optional_time;

/// A boxed, sendable future: the return type of the [`Backend`] methods that do IO.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the HTTP API needs from the running service.
///
/// Virtual paths passed in are normalised: they start with `/`, have no
/// trailing `/` (except the root `/`) and no empty components. Synchronous
/// methods are called on the server's tasks and must be quick (read a
/// snapshot, never wait for Redis); methods that do IO or heavy work return a
/// [`BoxFuture`].
pub trait Backend: Send + Sync + 'static {
    /// The real Redis and stream state (`GET /health` and aliases).
    fn health(&self) -> Health;
    /// Tree and state builder statistics (`GET /api/fuse/stats`).
    fn stats(&self) -> Stats;
    /// Names in a directory, in the stable listing order.
    fn readdir(&self, path: &str) -> Result<Vec<String>, ApiError>;
    /// Attributes of a file or directory.
    fn getattr(&self, path: &str) -> Result<Attr, ApiError>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &str) -> bool;
    /// Where a file's bytes come from.
    fn read(&self, path: &str) -> Result<ReadInfo, ApiError>;
    /// The file's properties as stored (`{"hashId": ..., "filePath": ..., "titles/eng": ...}`).
    fn metadata(&self, path: &str) -> Result<Map<String, Value>, ApiError>;
    /// Every virtual file path.
    fn files(&self) -> Vec<String>;
    /// Every virtual directory path.
    fn directories(&self) -> Vec<String>;
    /// Rebuilds the state from Redis; resolves when done.
    fn refresh(&self) -> BoxFuture<'_, Result<(), ApiError>>;
    /// The rules document in force, as JSON (`renaming-rules.json` shape).
    fn rules(&self) -> Result<RulesSnapshot, ApiError>;
    /// Validates, saves and applies a rules document; invalid documents are
    /// rejected with [`ApiError::InvalidRules`] and change nothing.
    fn put_rules(&self, document: Value) -> BoxFuture<'_, Result<(), ApiError>>;
    /// Paths the live files would get under `rules` (a list of rules; `None`:
    /// the rules in force), for at most `limit` files.
    fn preview(
        &self,
        rules: Option<Value>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Preview, ApiError>>;
    /// Checks one rule; renders it for `sample_metadata` when given and valid.
    fn validate(&self, rule: &Value, sample_metadata: Option<&Map<String, Value>>) -> Validation;
    /// Variables templates can use.
    fn variables(&self) -> Vec<TemplateVariable>;
    /// Other MetaMesh services and the leader (`GET /api/services`), passed through as is.
    fn services(&self) -> Value;
    /// Figures for `GET /metrics`.
    fn metrics(&self) -> MetricsSnapshot;
}

/// Overall state reported by the health routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Connected and following the stream.
    Ok,
    /// Serving the last good tree while Redis or the stream is unavailable.
    Degraded,
    /// Bootstrapping: no complete tree yet.
    Starting,
}

/// Health report: the reference's `{status, timestamp, service}` plus the
/// real Redis and stream state (spec §6 fix).
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Overall state.
    pub status: HealthStatus,
    /// Whether the Redis connection is up.
    pub redis_connected: bool,
    /// Stream consumption state.
    pub stream: StreamHealth,
    /// Why the rules file on disk is not in force, while it is not (the
    /// body's `rulesError`, left out when `None`).
    pub rules_error: Option<String>,
}

/// The stream part of [`Health`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamHealth {
    /// What the consumer is doing: `bootstrapping`, `tailing`, `resyncing`,
    /// `switching-leader`, `disconnected` or `stopped`.
    pub phase: String,
    /// Id of the last applied stream entry.
    pub last_event_id: Option<String>,
    /// Seconds since the last entry was applied.
    pub seconds_since_last_event: Option<f64>,
    /// Entries in the stream after `last_event_id`, when known.
    pub lag_entries: Option<u64>,
}

/// `GET /api/fuse/stats`: the reference's shape plus our fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Visible files.
    pub file_count: u64,
    /// Directories, the root included.
    pub directory_count: u64,
    /// Sum of file sizes in bytes.
    pub total_size: u64,
    /// When the tree was last rebuilt (RFC 3339 on the wire).
    #[serde(serialize_with = "serialize_optional_time")]
    pub last_refresh: Option<SystemTime>,
    /// Projection statistics.
    pub state_builder: StateBuilderStats,
    /// Further top-level fields (`strategy`, `bootstrapMs`, ...), merged into the object.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stateBuilder` of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateBuilderStats {
    /// Stream entries applied.
    pub events_processed: u64,
    /// Property values fetched from Redis.
    pub properties_fetched: u64,
    /// Events skipped because their property is not relevant.
    pub properties_skipped: u64,
    /// Files with a non-empty `filePath`.
    pub files_complete: u64,
    /// Id of the last applied stream entry.
    pub last_event_id: Option<String>,
    /// Files known to the projection, complete or not.
    pub state_size: u64,
}

/// Whether a path is a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
}

/// Attributes of a virtual path. On the wire this is the reference's
/// `{size, mode, mtime, atime, ctime, nlink, uid, gid}`, with `mode` holding
/// the file type bits and times in (fractional) epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attr {
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits, e.g. `0o644`.
    pub permissions: u32,
    /// Modification time, epoch seconds.
    pub mtime: f64,
    /// Change time, epoch seconds.
    pub ctime: f64,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Serialize for Attr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        const S_IFREG: u32 = 0o100_000;
        const S_IFDIR: u32 = 0o040_000;
        let type_bits = match self.kind {
            EntryKind::File => S_IFREG,
            EntryKind::Directory => S_IFDIR,
        };
        serde_json::json!({
            "size": self.size,
            "mode": type_bits | (self.permissions & 0o7777),
            "mtime": self.mtime,
            // Access times are not tracked; the reference reported mtime.
            "atime": self.mtime,
            "ctime": self.ctime,
            "nlink": self.nlink,
            "uid": self.uid,
            "gid": self.gid,
        })
        .serialize(serializer)
    }
}

/// `POST /api/fuse/read`: where the file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadInfo {
    /// Absolute path under the files volume.
    pub source_path: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// WebDAV URL of the same file on the leader, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webdav_url: Option<String>,
}

/// `GET /api/fuse/rules`.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesSnapshot {
    /// The rules document as JSON.
    pub config: Value,
    /// When it was last saved, if known.
    pub last_modified: Option<SystemTime>,
}

/// `POST /api/fuse/rules/preview`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// One entry per sampled file.
    pub previews: Vec<PreviewEntry>,
    /// Files considered.
    pub total: u64,
    /// Entries returned.
    pub sampled: u64,
}

/// One file of a [`Preview`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewEntry {
    /// The file.
    pub hash_id: String,
    /// Its path now.
    pub current_path: Option<String>,
    /// Its path under the previewed rules.
    pub new_path: Option<String>,
    /// Name of the rule that gave `new_path`.
    pub rule_name: Option<String>,
    /// Why no rule applied, when none did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/fuse/rules/validate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    /// No errors.
    pub valid: bool,
    /// Problems that make the rule unusable.
    pub errors: Vec<String>,
    /// Suspicious but usable (e.g. an unquoted fallback that is no known property).
    pub warnings: Vec<String>,
    /// The rule rendered for the sample metadata.
    pub sample_output: Option<String>,
}

/// `GET /api/fuse/rules/variables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateVariable {
    /// Field name as used in templates.
    pub name: String,
    /// What it holds.
    pub description: String,
    /// A typical value.
    pub example: String,
    /// Formats that apply (`pad2`, `upper`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modifiers: Vec<String>,
}

/// Figures exported at `GET /metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Visible files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Sum of file sizes in bytes.
    pub total_size_bytes: u64,
    /// Stream entries applied since start.
    pub events_processed: u64,
    /// Property values fetched since start.
    pub properties_fetched: u64,
    /// Irrelevant events skipped since start.
    pub properties_skipped: u64,
    /// Malformed stream entries skipped since start.
    pub malformed_entries_skipped: u64,
    /// Stream entries not yet applied, when known.
    pub tail_lag_entries: Option<u64>,
    /// Seconds since the last applied entry, when any.
    pub seconds_since_last_event: Option<f64>,
    /// Whether Redis is connected.
    pub redis_connected: bool,
    /// Redis reconnections since start.
    pub redis_reconnects: u64,
    /// Duration of the last bootstrap in seconds, once done.
    pub bootstrap_seconds: Option<f64>,
    /// Bootstrap strategy used (`replay`, `snapshot`, ...), once chosen.
    pub strategy: Option<String>,
}
