//! The HTTP API's view of the service: quick reads of the live tree, and
//! changes handed to the state task.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use metafuse_api::{
    ApiError, Attr, Backend, BoxFuture, EntryKind, Health, HealthStatus, MetricsSnapshot, Preview,
    PreviewEntry, ReadInfo, RulesSnapshot, StateBuilderStats, Stats, StreamHealth,
    TemplateVariable, Validation,
};
use metafuse_rules::{Metadata, Rule, Rules, RulesDocument, Severity};
use metafuse_source::FetchedValues;
use metafuse_state::FetchPlan;
use metafuse_vfs::{Library, NodeRef};
use serde_json::{Map, Value, json};

use crate::inner::Inner;
use crate::rules_file::{compile_document, save_atomically};
use crate::status::Phase;

pub(crate) struct ServiceBackend {
    pub(crate) inner: Arc<Inner>,
}

fn seconds(milliseconds: i64) -> f64 {
    milliseconds as f64 / 1000.0
}

impl ServiceBackend {
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
        Health {
            // A rules file we could not apply is reported as degraded too:
            // the tree is not what the operator asked for.
            status: if redis_connected && not_live.is_none() && rules_error.is_none() {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            redis_connected,
            stream: self.stream_health(),
            rules_error,
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
        Stats {
            file_count: library.file_count() as u64,
            // The API counts the root; the tree does not.
            directory_count: library.directory_count() as u64 + 1,
            total_size: library.total_size_bytes(),
            last_refresh: moments.last_refresh,
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
        let file_path = node.source_path().unwrap_or_default();
        let relative = file_path.trim_start_matches('/');
        let webdav_url = self
            .inner
            .leader
            .lock()
            .webdav_url
            .as_ref()
            .map(|base| format!("{}/{relative}", base.trim_end_matches('/')));
        Ok(ReadInfo {
            // An absolute filePath is taken under the files volume (spec §6).
            source_path: Some(
                self.inner
                    .config
                    .files_root
                    .join(relative)
                    .display()
                    .to_string(),
            ),
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
            // Applied first: if Redis cannot give what the rules need,
            // nothing changes, not even the file.
            self.inner
                .apply_rules(rules)
                .await
                .map_err(ApiError::Unavailable)?;
            *self.inner.last_rules_text.lock() = Some(text.clone());
            let path = self.inner.config.rules.file_path().clone();
            tokio::task::spawn_blocking(move || save_atomically(&path, &text))
                .await
                .map_err(|error| ApiError::Internal(format!("saving rules: {error}")))?
                .map_err(|error| {
                    ApiError::Internal(format!(
                        "rules applied but saving {} failed: {error}",
                        self.inner.config.rules.file_path().display()
                    ))
                })?;
            self.inner.set_rules_error(None);
            tracing::info!(path = %self.inner.config.rules.file_path().display(), "rules saved and applied");
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
                    let document = draft_document(rules);
                    let compiled = compile_document(document).map_err(ApiError::InvalidRules)?;
                    Arc::new(compiled)
                }
            };
            // A draft may use properties the live rules do not track: fetch
            // them for the files previewed, as a rules change would.
            let plan = {
                let library = self.inner.library.read();
                let projection = library.projection();
                FetchPlan {
                    hash_ids: projection
                        .complete_files()
                        .take(limit)
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
            Ok(preview(&library, &candidate, limit, &extra))
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
            .map(|(name, description, example, modifiers)| TemplateVariable {
                name: (*name).to_owned(),
                description: (*description).to_owned(),
                example: (*example).to_owned(),
                modifiers: modifiers
                    .iter()
                    .map(|modifier| (*modifier).to_owned())
                    .collect(),
            })
            .collect()
    }

    fn services(&self) -> Value {
        let leader = self.inner.leader.lock().clone();
        // The reference's shape (`current`, `isLeader`, `leader.redisUrl`), so
        // its dashboard keeps working; metafuse never leads, it follows.
        json!({
            "leader": {
                "hostname": leader.hostname,
                "apiUrl": leader.api_url,
                "redisUrl": metafuse_source::redact_url(&leader.redis_url),
                "webdavUrl": leader.webdav_url,
                "source": leader.source.to_string(),
            },
            "services": [],
            "current": "meta-fuse",
            "isLeader": false,
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
        }
    }
}

/// `(name, description, example, modifiers)` of the variables templates use.
const TEMPLATE_VARIABLES: &[(&str, &str, &str, &[&str])] = &[
    ("title", "Title of the movie or series", "Breaking Bad", &[]),
    (
        "originalTitle",
        "Title in the original language",
        "Dark",
        &[],
    ),
    ("season", "Season number", "1", &["pad2"]),
    ("episode", "Episode number", "2", &["pad2"]),
    ("movieYear", "Release year of a movie", "1995", &[]),
    ("year", "Year", "2008", &[]),
    (
        "extension",
        "File extension without the dot",
        "mkv",
        &["upper", "lower"],
    ),
    ("fileName", "Original file name", "heat.1995.mkv", &[]),
    (
        "fileType",
        "video, subtitle, image, document, torrent, ...",
        "video",
        &[],
    ),
    (
        "subtitleLanguage",
        "Language of a subtitle file",
        "eng",
        &[],
    ),
    ("version", "Edition or version label", "Director's Cut", &[]),
    ("extra", "Whether the file is an extra", "true", &[]),
];

/// Renders the first `limit` visible files with `rules`, from their tracked
/// properties plus `extra` values fetched for the draft.
fn preview(library: &Library, rules: &Rules, limit: usize, extra: &FetchedValues) -> Preview {
    let mut extra_by_file: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for fetched in extra.iter() {
        if let Some(value) = fetched.value {
            extra_by_file
                .entry(fetched.hash_id)
                .or_default()
                .push((fetched.property, value));
        }
    }
    let tree = library.tree();
    let mut previews = Vec::new();
    let mut total = 0u64;
    for (hash_id, file) in library.projection().complete_files() {
        total += 1;
        if previews.len() >= limit {
            continue;
        }
        let extra = extra_by_file
            .get(hash_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let metadata = Metadata::new(file.properties().chain(extra.iter().copied()));
        let rendered = rules.render(hash_id, &metadata);
        let current_path = tree
            .file_by_hash(hash_id)
            .and_then(|node| tree.path_of(node.ino()))
            .map(|path| absolute(&path));
        let rule_name = rendered.rule_id.map(|rule_id| {
            let document = rules.document();
            document
                .rules
                .iter()
                .chain(document.default_rule.iter())
                .find(|rule| rule.id == rule_id)
                .map_or_else(|| rule_id.to_owned(), |rule| rule.name.clone())
        });
        let matched = rule_name.is_some();
        previews.push(PreviewEntry {
            hash_id: hash_id.to_owned(),
            current_path,
            new_path: matched.then(|| absolute(&rendered.path)),
            rule_name,
            reason: (!matched).then(|| "no matching rule".to_owned()),
        });
    }
    let sampled = previews.len() as u64;
    Preview {
        previews,
        total,
        sampled,
    }
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
