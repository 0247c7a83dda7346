//! The HTTP API's view of the service: quick reads of the live tree, and
//! changes handed to the state task.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use metafuse_api::{
    ApiError, Attr, Backend, BoxFuture, EntryKind, Health, HealthStatus, MetricsSnapshot,
    NodeState, Preview, PreviewEntry, ReadInfo, RulesSnapshot, ServiceList, SourceState,
    StateBuilderStats, Stats, StreamHealth, TemplateVariable, TopologyState, Validation,
    VariableType,
};
use metafuse_bytes::SourceLocation;
use metafuse_rules::{Metadata, Rule, Rules, RulesDocument, Severity};
use metafuse_source::FetchedValues;
use metafuse_state::FetchPlan;
use metafuse_vfs::{FileSpec, Library, NodeRef, Tree};
use serde_json::{Map, Value, json};

use crate::inner::Inner;
use crate::rules_file::{compile_document, save_atomically};
use crate::services::ServicesCache;
use crate::status::Phase;

pub(crate) struct ServiceBackend {
    pub(crate) inner: Arc<Inner>,
    pub(crate) services: ServicesCache,
}

fn seconds(milliseconds: i64) -> f64 {
    milliseconds as f64 / 1000.0
}

impl ServiceBackend {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        ServiceBackend {
            inner,
            services: ServicesCache::default(),
        }
    }

    fn attr(&self, node: NodeRef<'_>) -> Attr {
        let ownership = self.inner.config.ownership;
        let directory = node.is_directory();
        Attr {
            kind: if directory {
                EntryKind::Directory
            } else {
                EntryKind::File
            },
            size: if directory { 4096 } else { node.size_bytes() },
            permissions: if directory {
                ownership.dir_mode
            } else {
                ownership.file_mode
            },
            mtime: seconds(node.mtime_ms()),
            ctime: seconds(node.ctime_ms()),
            nlink: if directory {
                2 + node.n_subdirectories() as u32
            } else {
                1
            },
            uid: ownership.uid,
            gid: ownership.gid,
        }
    }

    /// The projection's own figures: they follow every batch, rules change
    /// and rebuild (a rebuild starts a fresh projection, so they restart
    /// with it).
    fn state_builder(&self, library: &Library) -> StateBuilderStats {
        let stats = library.projection().stats();
        StateBuilderStats {
            events_processed: stats.events_processed,
            properties_fetched: stats.properties_fetched,
            properties_skipped: stats.properties_skipped,
            files_complete: stats.files_complete as u64,
            last_event_id: stats.last_event_id,
            state_size: stats.file_count as u64,
        }
    }

    /// The source in use (`redis` or `metacore`, as discovery or
    /// `--source` chose), whether it answers (the tail's own report) and
    /// where it is.
    fn source_state(&self) -> SourceState {
        let leader = self.inner.leader.lock();
        SourceState {
            mode: leader.mode.as_str().to_owned(),
            connected: self.inner.tail_status.is_connected(),
            url: Some(leader.location()),
            topology: self.topology(),
        }
    }

    /// How the source in use is deployed and what each node served, when
    /// it says (a Redis source does).
    fn topology(&self) -> Option<TopologyState> {
        let topology = (self.inner.source_topology.read().as_ref()?)();
        Some(TopologyState {
            mode: topology.mode.to_owned(),
            nodes: topology
                .nodes
                .into_iter()
                .map(|node| NodeState {
                    address: node.address,
                    role: node.role.to_owned(),
                    fetched_keys: node.fetched_keys,
                })
                .collect(),
        })
    }

    fn stream_health(&self) -> StreamHealth {
        let tail = &self.inner.tail_status;
        let phase = self.inner.status.moments.lock().phase;
        // The tail only notices a lost Redis while it is the one reading;
        // during a rebuild the phase says more.
        let phase_name = if phase == Phase::Tailing && !tail.is_connected() {
            "disconnected"
        } else {
            phase.name()
        };
        let applied = self.inner.applied_event_id();
        StreamHealth {
            phase: phase_name.to_owned(),
            last_event_id: (!applied.is_empty()).then_some(applied),
            seconds_since_last_event: seconds_since_last_entry(tail.last_entry_at()),
            lag_entries: tail.lag_entries(),
        }
    }
}

fn seconds_since_last_entry(last_entry_at: Option<SystemTime>) -> Option<f64> {
    // A clock stepped backwards reads as "just now", never as negative.
    last_entry_at.map(|at| at.elapsed().map_or(0.0, |elapsed| elapsed.as_secs_f64()))
}

fn not_found(path: &str) -> ApiError {
    ApiError::NotFound {
        path: path.to_owned(),
    }
}

/// Metadata values as the rules see them: strings (numbers and booleans in
/// their JSON spelling).
fn metadata_pairs(sample: &Map<String, Value>) -> Vec<(String, String)> {
    sample
        .iter()
        .filter_map(|(name, value)| match value {
            Value::String(text) => Some((name.clone(), text.clone())),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
            other => Some((name.clone(), other.to_string())),
        })
        .collect()
}

impl Backend for ServiceBackend {
    fn health(&self) -> Health {
        let redis_connected = self.inner.tail_status.is_connected();
        let rules_error = self.inner.status.moments.lock().rules_error.clone();
        // Connected is not enough: a frozen peer or a stream that lost
        // entries leaves the tree stale (status.rs says why).
        let not_live = self.inner.status.not_live_reason(&self.inner.tail_status);
        // A rules file we could not apply is reported as degraded too: the
        // tree is not what the operator asked for.
        let reason = not_live
            .or_else(|| (!redis_connected).then(|| "disconnected from the source".to_owned()))
            .or_else(|| rules_error.clone());
        Health {
            status: if reason.is_none() {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            redis_connected,
            stream: self.stream_health(),
            rules_error,
            reason,
            source: self.source_state(),
        }
    }

    fn stats(&self) -> Stats {
        let library = self.inner.library.read();
        let state_builder = self.state_builder(&library);
        let moments = self.inner.status.moments.lock();
        let mut extra = Map::new();
        if let Some(strategy) = &moments.strategy {
            extra.insert("strategy".to_owned(), json!(strategy));
        }
        if let Some(bootstrap_seconds) = moments.bootstrap_seconds {
            extra.insert(
                "bootstrapMs".to_owned(),
                json!((bootstrap_seconds * 1000.0).round() as u64),
            );
        }
        extra.insert("rulesError".to_owned(), json!(moments.rules_error));
        extra.insert("unindexedFiles".to_owned(), json!(moments.unindexed_files));
        extra.insert(
            "checkpointProblem".to_owned(),
            json!(*self.inner.checkpoint_problem.lock()),
        );
        Stats {
            file_count: library.file_count() as u64,
            // The API counts the root; the tree does not.
            directory_count: library.directory_count() as u64 + 1,
            total_size: library.total_size_bytes(),
            last_refresh: moments.last_refresh,
            redis_connected: self.inner.tail_status.is_connected(),
            source: self.source_state(),
            state_builder,
            extra,
        }
    }

    fn readdir(&self, path: &str) -> Result<Vec<String>, ApiError> {
        let library = self.inner.library.read();
        let node = library.resolve(path).ok_or_else(|| not_found(path))?;
        if !node.is_directory() {
            return Err(ApiError::NotADirectory {
                path: path.to_owned(),
            });
        }
        let children = library
            .children(node.ino())
            .ok_or_else(|| not_found(path))?;
        Ok(children.map(|child| child.name().to_owned()).collect())
    }

    fn getattr(&self, path: &str) -> Result<Attr, ApiError> {
        let library = self.inner.library.read();
        let node = library.resolve(path).ok_or_else(|| not_found(path))?;
        Ok(self.attr(node))
    }

    fn exists(&self, path: &str) -> bool {
        self.inner.library.read().resolve(path).is_some()
    }

    fn read(&self, path: &str) -> Result<ReadInfo, ApiError> {
        let library = self.inner.library.read();
        let node = library.resolve(path).ok_or_else(|| not_found(path))?;
        if node.is_directory() {
            return Err(ApiError::NotAFile {
                path: path.to_owned(),
            });
        }
        let file_path = library.source_path(node).unwrap_or_default();
        // The mount's path rule (metafuse-bytes) decides; a refused
        // `filePath` (`..`) reports no path at all.
        let location =
            SourceLocation::resolve_stored(&self.inner.config.files_root, file_path).ok();
        let webdav_url = match (&self.inner.leader.lock().webdav_url, &location) {
            (Some(base), Some(location)) => Some(format!(
                "{}/{}",
                base.trim_end_matches('/'),
                location.percent_encoded()
            )),
            _ => None,
        };
        Ok(ReadInfo {
            source_path: location.map(|location| location.local_path().display().to_string()),
            size: node.size_bytes(),
            webdav_url,
        })
    }

    fn metadata(&self, path: &str) -> Result<Map<String, Value>, ApiError> {
        let library = self.inner.library.read();
        let node = library.resolve(path).ok_or_else(|| not_found(path))?;
        if node.is_directory() {
            return Err(ApiError::NotAFile {
                path: path.to_owned(),
            });
        }
        // The node is resolved already: no second walk down the path.
        let file = node
            .hash_id()
            .and_then(|hash_id| library.projection().file(hash_id))
            .ok_or_else(|| not_found(path))?;
        let mut properties = Map::new();
        properties.insert("hashId".to_owned(), json!(file.hash_id()));
        for (name, value) in file.properties() {
            properties.insert(name.to_owned(), json!(value));
        }
        Ok(properties)
    }

    fn files(&self) -> Vec<String> {
        self.inner.library.read().file_paths()
    }

    fn directories(&self) -> Vec<String> {
        let files = self.files();
        // The root is a directory too, listed first as the reference did.
        let mut directories = BTreeSet::from(["/".to_owned()]);
        for file in &files {
            let mut rest = file.as_str();
            while let Some((parent, _)) = rest.rsplit_once('/') {
                if parent.is_empty() || !directories.insert(parent.to_owned()) {
                    break;
                }
                rest = parent;
            }
        }
        directories.into_iter().collect()
    }

    fn refresh(&self) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move { self.inner.refresh().await.map_err(ApiError::Unavailable) })
    }

    fn rules(&self) -> Result<RulesSnapshot, ApiError> {
        let document = self.inner.library.read().rules().document().clone();
        let config = serde_json::to_value(&document)
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        let last_modified = std::fs::metadata(self.inner.config.rules.file_path())
            .and_then(|metadata| metadata.modified())
            .ok();
        Ok(RulesSnapshot {
            config,
            last_modified,
        })
    }

    fn put_rules(&self, document: Value) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            let document: RulesDocument = serde_json::from_value(document).map_err(|error| {
                ApiError::InvalidRules(vec![format!("invalid rules document: {error}")])
            })?;
            let rules = compile_document(document).map_err(ApiError::InvalidRules)?;
            let text = rules.document().to_json_pretty();
            let path = self.inner.config.rules.file_path().clone();
            // Claimed before the file changes, so the rules file poller
            // takes our own save for known and does not apply it twice.
            let previous_text = self.inner.last_rules_text.lock().replace(text.clone());
            let saving = path.clone();
            let saved = tokio::task::spawn_blocking(move || save_atomically(&saving, &text))
                .await
                .map_err(|error| error.to_string())
                .and_then(|result| result.map_err(|error| error.to_string()));
            if let Err(error) = saved {
                *self.inner.last_rules_text.lock() = previous_text;
                return Err(ApiError::Internal(format!(
                    "saving rules to {} failed: {error}; nothing changed (file, backups and rules in force are as before)",
                    path.display()
                )));
            }
            // Applied only once saved: what is in force is always on disk.
            if let Err(error) = self.inner.apply_rules(rules).await {
                let message = format!(
                    "rules saved to {} but not applied yet: {error}",
                    path.display()
                );
                self.inner.set_rules_error(Some(message.clone()));
                // Forgotten so the rules file poller applies it when it can.
                *self.inner.last_rules_text.lock() = None;
                return Err(ApiError::Unavailable(message));
            }
            self.inner.set_rules_error(None);
            tracing::info!(path = %path.display(), "rules saved and applied");
            Ok(())
        })
    }

    fn preview(
        &self,
        rules: Option<Value>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Preview, ApiError>> {
        Box::pin(async move {
            let candidate = match rules {
                None => self.inner.library.read().rules().clone(),
                Some(rules) => {
                    let rules: Vec<Rule> = serde_json::from_value(rules).map_err(|error| {
                        ApiError::BadRequest(format!("invalid \"rules\": {error}"))
                    })?;
                    // The dashboard previews `config.rules` and saves the
                    // whole config: the live document with these rules is
                    // what a save would put in force.
                    let mut document = self.inner.library.read().rules().document().clone();
                    document.rules = rules;
                    let compiled = compile_document(document).map_err(ApiError::InvalidRules)?;
                    Arc::new(compiled)
                }
            };
            // A draft may use properties the live rules do not track: fetch
            // them, as a rules change would, for every file (collisions
            // depend on all of them).
            let plan = {
                let library = self.inner.library.read();
                let projection = library.projection();
                FetchPlan {
                    hash_ids: projection
                        .complete_files()
                        .map(|(hash_id, _)| hash_id.to_owned())
                        .collect(),
                    properties: candidate
                        .relevant_properties()
                        .added_since(projection.relevant()),
                    nested_prefixes: Vec::new(),
                }
            };
            let extra = if plan.is_empty() {
                FetchedValues::default()
            } else {
                self.inner
                    .fetch_plan(plan)
                    .await
                    .map_err(ApiError::Unavailable)?
            };
            let library = self.inner.library.read();
            Ok(preview(
                &library,
                &candidate,
                limit,
                &extra,
                &self.inner.config.files_root,
            ))
        })
    }

    fn validate(&self, rule: &Value, sample_metadata: Option<&Map<String, Value>>) -> Validation {
        let rule: Rule = match serde_json::from_value::<Rule>(rule.clone()) {
            // A rule being drafted in an editor has no id yet (the reference's
            // documented example sends none); only a saved document needs one.
            Ok(rule) if rule.id.trim().is_empty() => Rule {
                id: DRAFT_RULE_ID.to_owned(),
                ..rule
            },
            Ok(rule) => rule,
            Err(error) => {
                return Validation {
                    valid: false,
                    errors: vec![format!("invalid rule: {error}")],
                    ..Validation::default()
                };
            }
        };
        let document = draft_document(vec![rule]);
        let diagnostics = metafuse_rules::validate(&document);
        let errors: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        let warnings: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .map(ToString::to_string)
            .collect();
        let sample_output = match (errors.is_empty(), sample_metadata) {
            (true, Some(sample)) => Rules::compile(document).ok().map(|rules| {
                let pairs = metadata_pairs(sample);
                let metadata = Metadata::new(
                    pairs
                        .iter()
                        .map(|(name, value)| (name.as_str(), value.as_str())),
                );
                rules.render("sample", &metadata).path
            }),
            _ => None,
        };
        Validation {
            valid: errors.is_empty(),
            errors,
            warnings,
            sample_output,
        }
    }

    fn variables(&self) -> Vec<TemplateVariable> {
        TEMPLATE_VARIABLES
            .iter()
            .map(
                |(name, path, value_type, description, example, modifiers)| TemplateVariable {
                    name: (*name).to_owned(),
                    path: (*path).to_owned(),
                    value_type: *value_type,
                    description: (*description).to_owned(),
                    example: (*example).to_owned(),
                    modifiers: modifiers
                        .iter()
                        .map(|modifier| (*modifier).to_owned())
                        .collect(),
                },
            )
            .collect()
    }

    fn services(&self) -> BoxFuture<'_, ServiceList> {
        Box::pin(async move {
            let leader = self.inner.leader.lock().clone();
            let mut list = self.services.list(leader.api_url.as_deref()).await;
            // The old `leader` field; metafuse never leads, it follows.
            list.leader = Some(json!({
                "hostname": leader.hostname,
                "apiUrl": leader.api_url,
                "redisUrl": metafuse_source::redact_url(&leader.redis_url),
                "webdavUrl": leader.webdav_url,
                "source": leader.source.to_string(),
            }));
            list
        })
    }

    fn metrics(&self) -> MetricsSnapshot {
        let tail = &self.inner.tail_status;
        let library = self.inner.library.read();
        let stats = library.projection().stats();
        let moments = self.inner.status.moments.lock();
        MetricsSnapshot {
            files: library.file_count() as u64,
            directories: library.directory_count() as u64 + 1,
            total_size_bytes: library.total_size_bytes(),
            events_processed: stats.events_processed,
            properties_fetched: stats.properties_fetched,
            properties_skipped: stats.properties_skipped,
            malformed_entries_skipped: stats.malformed_entries,
            tail_lag_entries: tail.lag_entries(),
            seconds_since_last_event: seconds_since_last_entry(tail.last_entry_at()),
            redis_connected: tail.is_connected(),
            redis_reconnects: tail.reconnects(),
            bootstrap_seconds: moments.bootstrap_seconds,
            strategy: moments.strategy.clone(),
            source: Some(self.inner.leader.lock().mode.as_str().to_owned()),
            topology: self.topology(),
            notifications: self
                .inner
                .notification_counts
                .read()
                .as_ref()
                .map(|counts| counts()),
        }
    }
}

/// `(name, path, type, description, example, modifiers)` of the variables
/// templates use: the old code's 13 first, in its order and words, then
/// every other field the rules engine reads.
type VariableRow = (
    &'static str,
    &'static str,
    VariableType,
    &'static str,
    &'static str,
    &'static [&'static str],
);
const TEMPLATE_VARIABLES: &[VariableRow] = &[
    (
        "English Title",
        "titles.eng",
        VariableType::String,
        "English title from metadata",
        "Breaking Bad",
        &[],
    ),
    (
        "Original Title",
        "originalTitle",
        VariableType::String,
        "Original/native title",
        "Breaking Bad",
        &[],
    ),
    (
        "Title",
        "title",
        VariableType::String,
        "Simple title field",
        "Breaking Bad",
        &[],
    ),
    (
        "Season",
        "season",
        VariableType::Number,
        "Season number",
        "1",
        &["pad2", "pad3", "pad4"],
    ),
    (
        "Episode",
        "episode",
        VariableType::Number,
        "Episode number",
        "1",
        &["pad2", "pad3", "pad4"],
    ),
    (
        "Is Extra",
        "extra",
        VariableType::Boolean,
        "Whether this is a special/extra",
        "false",
        &[],
    ),
    (
        "Movie Year",
        "movieYear",
        VariableType::Number,
        "Movie release year",
        "2010",
        &[],
    ),
    (
        "Year",
        "year",
        VariableType::Number,
        "General year field (the movie year when absent)",
        "2010",
        &[],
    ),
    (
        "File Type",
        "fileType",
        VariableType::String,
        "Type: video, subtitle, torrent, image, document",
        "video",
        &[],
    ),
    (
        "Extension",
        "extension",
        VariableType::String,
        "File extension",
        "mkv",
        &["upper", "lower"],
    ),
    (
        "Version",
        "version",
        VariableType::String,
        "Quality/release version",
        "1080p BluRay",
        &[],
    ),
    (
        "Subtitle Language",
        "subtitleLanguage",
        VariableType::String,
        "Language code for subtitles",
        "eng",
        &[],
    ),
    (
        "File Name",
        "fileName",
        VariableType::String,
        "Original filename",
        "Breaking.Bad.S01E01.mkv",
        &[],
    ),
    (
        "File Path",
        "filePath",
        VariableType::String,
        "Where the file is, under the files volume",
        "watch/Breaking.Bad.S01E01.mkv",
        &[],
    ),
    (
        "Size",
        "size",
        VariableType::Number,
        "Size in bytes",
        "1500000000",
        &[],
    ),
    (
        "Modified",
        "mtime",
        VariableType::Number,
        "Modification time, epoch milliseconds",
        "1705314600000",
        &[],
    ),
    (
        "Changed",
        "ctime",
        VariableType::Number,
        "Change time, epoch milliseconds",
        "1705314600000",
        &[],
    ),
    (
        "Episode Title",
        "episodeTitle",
        VariableType::String,
        "Title of the episode",
        "Pilot",
        &[],
    ),
    (
        "Audio Language",
        "audioLanguage",
        VariableType::String,
        "Language of the audio track",
        "eng",
        &[],
    ),
    (
        "Language",
        "language",
        VariableType::String,
        "Language of the file",
        "eng",
        &[],
    ),
    (
        "Resolution",
        "resolution",
        VariableType::String,
        "Video resolution",
        "1080p",
        &[],
    ),
    (
        "Genre",
        "genre",
        VariableType::String,
        "Genre",
        "Drama",
        &[],
    ),
    (
        "IMDb Id",
        "imdbId",
        VariableType::String,
        "IMDb identifier",
        "tt0903747",
        &[],
    ),
    (
        "TMDB Id",
        "tmdbId",
        VariableType::String,
        "TMDB identifier",
        "1396",
        &[],
    ),
    (
        "TVDB Id",
        "tvdbId",
        VariableType::String,
        "TVDB identifier",
        "81189",
        &[],
    ),
    (
        "MIME Type",
        "mimeType",
        VariableType::String,
        "MIME type of the file",
        "video/x-matroska",
        &[],
    ),
];

/// What saving `rules` would show, for the first `limit` visible files:
/// every file is rendered (tracked properties plus `extra` values fetched
/// for the draft) and the whole candidate tree is built with the tree's own
/// builder, so collisions (` [hash8]`) and `Unsorted/` come out exactly as
/// a save would give them.
fn preview(
    library: &Library,
    rules: &Rules,
    limit: usize,
    extra: &FetchedValues,
    files_root: &Path,
) -> Preview {
    let mut extra_by_file: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for fetched in extra.iter() {
        if let Some(value) = fetched.value {
            extra_by_file
                .entry(fetched.hash_id)
                .or_default()
                .push((fetched.property, value));
        }
    }
    // The same rules with every template replaced by a constant: rendering
    // with them names the first rule whose conditions match, which tells a
    // file whose rule failed to render from one no rule wanted.
    let conditions_only = conditions_only(rules);
    struct Rendered<'l> {
        hash_id: &'l str,
        path: String,
        source_path: &'l str,
        size_bytes: u64,
        mtime_ms: i64,
        ctime_ms: i64,
        rule_id: Option<String>,
        error: Option<String>,
    }
    let mut rendered_files = Vec::new();
    for (hash_id, file) in library.projection().complete_files() {
        let extra = extra_by_file
            .get(hash_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let metadata = Metadata::new(file.properties().chain(extra.iter().copied()));
        let Some(source_path) = metadata.file_path() else {
            continue;
        };
        let rendered = rules.render(hash_id, &metadata);
        let mut rule_id = rendered.rule_id.map(str::to_owned);
        let mut error = None;
        if rule_id.is_none()
            && let Some(wanted) = conditions_only
                .as_ref()
                .and_then(|only| only.render(hash_id, &metadata).rule_id.map(str::to_owned))
        {
            error = Some(format!(
                "rule \"{wanted}\" matches but its template could not be rendered (a field it needs is missing); the file goes to {}",
                absolute(&rendered.path)
            ));
            rule_id = Some(wanted);
        }
        let mtime_ms = metadata.mtime_ms().unwrap_or(0);
        rendered_files.push(Rendered {
            hash_id,
            path: rendered.path,
            source_path,
            size_bytes: metadata.size_bytes().unwrap_or(0),
            mtime_ms,
            ctime_ms: metadata.ctime_ms().unwrap_or(mtime_ms),
            rule_id,
            error,
        });
    }
    let candidate = Tree::build(rendered_files.iter().map(|file| FileSpec {
        hash_id: file.hash_id,
        path: &file.path,
        source_path: file.source_path,
        size_bytes: file.size_bytes,
        mtime_ms: file.mtime_ms,
        ctime_ms: file.ctime_ms,
    }));
    let path_in = |tree: &Tree, hash_id: &str| {
        tree.file_by_hash(hash_id)
            .and_then(|node| tree.path_of(node.ino()))
            .map(|path| absolute(&path))
    };
    let document = rules.document();
    let rule_name = |rule_id: &str| {
        document
            .rules
            .iter()
            .chain(document.default_rule.iter())
            .find(|rule| rule.id == rule_id)
            .map(|rule| rule.name.clone())
    };
    let total = rendered_files.len() as u64;
    let previews: Vec<PreviewEntry> = rendered_files
        .into_iter()
        .take(limit)
        .map(|file| PreviewEntry {
            hash_id: file.hash_id.to_owned(),
            source_path: files_root
                .join(file.source_path.trim_start_matches('/'))
                .display()
                .to_string(),
            // Every complete file is in the live tree; "Unknown" is the
            // old code's word should one not be (the dashboard needs a string).
            current_virtual_path: path_in(library.tree(), file.hash_id)
                .unwrap_or_else(|| "Unknown".to_owned()),
            new_virtual_path: path_in(&candidate, file.hash_id),
            rule_name: file.rule_id.as_deref().and_then(rule_name),
            matched_rule: file.rule_id,
            error: file.error,
        })
        .collect();
    let sampled = previews.len() as u64;
    Preview {
        previews,
        total,
        limited: total > sampled,
        sampled,
    }
}

/// `rules` with each template replaced by a constant (see [`preview`]);
/// `None` if that does not compile, which only a document already invalid
/// could cause.
fn conditions_only(rules: &Rules) -> Option<Rules> {
    let mut document = rules.document().clone();
    for rule in document
        .rules
        .iter_mut()
        .chain(document.default_rule.iter_mut())
    {
        rule.template = "matched".to_owned();
    }
    Rules::compile(document).ok()
}

fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// The id a rule sent to `POST /api/fuse/rules/validate` without one is checked under.
const DRAFT_RULE_ID: &str = "draft";

/// A document holding only `rules` (preview and validation of drafts).
fn draft_document(rules: Vec<Rule>) -> RulesDocument {
    RulesDocument {
        version: 1,
        rules,
        default_rule: None,
        last_modified: None,
        is_default: None,
        extra_fields: Map::new(),
    }
}
