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
    /// Other MetaMesh services, as the meta-core in use lists them (`GET
    /// /api/services`). Never fails: when they cannot be listed the list is
    /// empty and [`ServiceList::warning`] says why.
    fn services(&self) -> BoxFuture<'_, ServiceList>;
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
    /// Why the status is `degraded` (the tail disconnected or not verified
    /// live, a resynchronisation or leader switch running, the rules file
    /// not in force); the body's `reason`, left out when `None`.
    pub reason: Option<String>,
    /// Where metadata comes from and whether it is reachable.
    pub source: SourceState,
}

/// The metadata source in use: Redis directly, or meta-core's HTTP API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceState {
    /// `redis` or `meta-core`.
    pub mode: String,
    /// Whether the source answers (the dashboard's `redisConnected`).
    pub connected: bool,
    /// Where it is, passwords masked.
    pub url: Option<String>,
    /// How a Redis source is deployed and what each node served (left out
    /// when the source does not say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<TopologyState>,
}

/// `source.topology` of health and stats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyState {
    /// `single`, `cluster` or `sentinel`.
    pub mode: String,
    /// The nodes known now: a cluster's masters (and nodes fetched from
    /// earlier that serve no more), a sentinel's current master, the one
    /// node.
    pub nodes: Vec<NodeState>,
}

/// One node of a [`TopologyState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// `host:port`.
    pub address: String,
    /// `master` while it serves, `gone` once it serves no more.
    pub role: String,
    /// Values fetched from it since the start, where counted per node (a
    /// cluster's masters); left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched_keys: Option<u64>,
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
    /// Whether the source is connected, in either mode (the old code's
    /// field, which its dashboard shows as "Connected"/"Disconnected").
    pub redis_connected: bool,
    /// The source in use.
    pub source: SourceState,
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

/// `POST /api/fuse/rules/preview`: the old code's `{previews, total,
/// limited}`, plus `sampled` (the old docs' name for the count returned).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// One entry per previewed file.
    pub previews: Vec<PreviewEntry>,
    /// Files considered (every visible file).
    pub total: u64,
    /// Whether `previews` stops short of `total`.
    pub limited: bool,
    /// Entries returned.
    pub sampled: u64,
}

/// One file of a [`Preview`], in the old code's shape (`sourcePath`,
/// `currentVirtualPath`, `newVirtualPath`, `matchedRule`, `error?`), plus
/// `hashId`, `ruleName` and the old docs' `currentPath`/`newPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewEntry {
    /// The file.
    pub hash_id: String,
    /// Where its bytes are (absolute, under the files volume).
    pub source_path: String,
    /// Its virtual path now (`/`-rooted).
    pub current_virtual_path: String,
    /// Its virtual path once the previewed rules are saved: collisions
    /// (` [hash8]`) and `Unsorted/` included.
    pub new_virtual_path: Option<String>,
    /// Id of the rule that placed it (`null`: the built-in `Unsorted/`).
    pub matched_rule: Option<String>,
    /// Name of that rule.
    pub rule_name: Option<String>,
    /// Why the file did not get the path its rule meant to give it.
    pub error: Option<String>,
}

impl Serialize for PreviewEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entry = serde_json::json!({
            "sourcePath": self.source_path,
            "currentVirtualPath": self.current_virtual_path,
            "newVirtualPath": self.new_virtual_path,
            "matchedRule": self.matched_rule,
            "hashId": self.hash_id,
            "ruleName": self.rule_name,
            "currentPath": self.current_virtual_path,
            "newPath": self.new_virtual_path,
        });
        if let (Some(error), Value::Object(fields)) = (&self.error, &mut entry) {
            fields.insert("error".to_owned(), Value::String(error.clone()));
        }
        entry.serialize(serializer)
    }
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

/// `GET /api/fuse/rules/variables`: the old code's `{name, path, type,
/// description, example}`, plus the formats that apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateVariable {
    /// Display name (`Season`).
    pub name: String,
    /// The field as written in templates (`season`).
    pub path: String,
    /// How the rules engine reads it.
    #[serde(rename = "type")]
    pub value_type: VariableType,
    /// What it holds.
    pub description: String,
    /// A typical value.
    pub example: String,
    /// Formats that apply (`pad2`, `upper`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modifiers: Vec<String>,
}

/// The `type` of a [`TemplateVariable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    /// Text.
    String,
    /// An integer (compared numerically, padded by `pad2`...).
    Number,
    /// `true`/`false`.
    Boolean,
}

/// `GET /api/services`: other MetaMesh services.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceList {
    /// The services meta-core lists.
    pub services: Vec<ServiceEntry>,
    /// Why the list may be incomplete (meta-core unreachable, ...).
    pub warning: Option<String>,
    /// The leader in use, for the old `leader` field.
    pub leader: Option<Value>,
}

/// One service of a [`ServiceList`], in the old shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    /// `meta-sort`, `meta-core`, ...
    pub name: String,
    /// Host it runs on.
    pub hostname: String,
    /// Where its dashboard and API are.
    pub base_url: String,
    /// `running`, `online`, ... as reported.
    pub status: String,
    /// When it was last heard of (RFC 3339), when known.
    pub last_heartbeat: Option<String>,
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
    /// The kind of source in use (`redis`, `metacore`).
    pub source: Option<String>,
    /// How a Redis source is deployed and what each node served, when the
    /// source says.
    pub topology: Option<TopologyState>,
    /// Change notifications to media servers and programs, when any are
    /// configured.
    pub notifications: Option<NotificationCounts>,
}

/// Change notifications since start (`--notify`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationCounts {
    /// Requests or program runs that succeeded.
    pub sent: u64,
    /// Attempts that failed (each retry counts).
    pub failed: u64,
    /// Changes merged into another notification instead of sent alone.
    pub coalesced: u64,
    /// Notifications given up after the last retry.
    pub abandoned: u64,
}
