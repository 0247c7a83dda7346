//! A fixed-tree backend shared by the API tests.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use metafuse_api::{
    ApiError, Attr, Backend, BoxFuture, EntryKind, Health, HealthStatus, MetricsSnapshot, Preview,
    PreviewEntry, ReadInfo, RulesSnapshot, ServiceEntry, ServiceList, SourceState,
    StateBuilderStats, Stats, StreamHealth, TemplateVariable, Validation, VariableType,
};
use serde_json::{Map, Value, json};

pub const MOVIE: &str = "/Movies/Heat (1995)/Heat (1995).mkv";

/// A fixed tree: `/Movies/Heat (1995)/Heat (1995).mkv` and an empty `/TV Shows`.
pub struct FixedTree {
    pub directories: BTreeMap<&'static str, Vec<&'static str>>,
    pub refreshes: AtomicUsize,
    pub rules: Mutex<Value>,
}

impl FixedTree {
    pub fn new() -> Self {
        let directories = BTreeMap::from([
            ("/", vec!["Movies", "TV Shows"]),
            ("/Movies", vec!["Heat (1995)"]),
            ("/Movies/Heat (1995)", vec!["Heat (1995).mkv"]),
            ("/TV Shows", vec![]),
        ]);
        Self {
            directories,
            refreshes: AtomicUsize::new(0),
            rules: Mutex::new(
                json!({"version": 1, "rules": [], "lastModified": "2024-01-15T10:30:00Z"}),
            ),
        }
    }
}

impl Backend for FixedTree {
    fn health(&self) -> Health {
        Health {
            status: HealthStatus::Ok,
            redis_connected: true,
            stream: StreamHealth {
                phase: "tailing".into(),
                last_event_id: Some("1703808000000-0".into()),
                seconds_since_last_event: Some(1.5),
                lag_entries: Some(0),
            },
            rules_error: None,
            reason: None,
            source: SourceState {
                mode: "redis".into(),
                connected: true,
                url: Some("redis://core:6379".into()),
                topology: None,
            },
        }
    }

    fn stats(&self) -> Stats {
        let mut extra = Map::new();
        extra.insert("strategy".into(), json!("replay"));
        Stats {
            file_count: 1,
            directory_count: 4,
            total_size: 1_500_000_000,
            last_refresh: Some(UNIX_EPOCH + Duration::from_secs(1_705_314_600)),
            redis_connected: true,
            source: SourceState {
                mode: "redis".into(),
                connected: true,
                url: Some("redis://core:6379".into()),
                topology: None,
            },
            state_builder: StateBuilderStats {
                events_processed: 15,
                properties_fetched: 9,
                properties_skipped: 6,
                files_complete: 1,
                last_event_id: Some("1703808000000-0".into()),
                state_size: 2,
            },
            extra,
        }
    }

    fn readdir(&self, path: &str) -> Result<Vec<String>, ApiError> {
        match self.directories.get(path) {
            Some(entries) => Ok(entries.iter().map(|name| (*name).to_owned()).collect()),
            None if path == MOVIE => Err(ApiError::NotADirectory { path: path.into() }),
            None => Err(ApiError::NotFound { path: path.into() }),
        }
    }

    fn getattr(&self, path: &str) -> Result<Attr, ApiError> {
        let file = path == MOVIE;
        if !file && !self.directories.contains_key(path) {
            return Err(ApiError::NotFound { path: path.into() });
        }
        Ok(Attr {
            kind: if file {
                EntryKind::File
            } else {
                EntryKind::Directory
            },
            size: if file { 1_500_000_000 } else { 4096 },
            permissions: if file { 0o644 } else { 0o755 },
            mtime: 1_705_314_600.5,
            ctime: 1_705_314_600.0,
            nlink: if file { 1 } else { 2 },
            uid: 1000,
            gid: 1000,
        })
    }

    fn exists(&self, path: &str) -> bool {
        path == MOVIE || self.directories.contains_key(path)
    }

    fn read(&self, path: &str) -> Result<ReadInfo, ApiError> {
        if self.directories.contains_key(path) {
            return Err(ApiError::NotAFile { path: path.into() });
        }
        if path != MOVIE {
            return Err(ApiError::NotFound { path: path.into() });
        }
        Ok(ReadInfo {
            source_path: Some("/files/watch/Heat.1995.mkv".into()),
            size: 1_500_000_000,
            webdav_url: Some("http://core/webdav/watch/Heat.1995.mkv".into()),
        })
    }

    fn metadata(&self, path: &str) -> Result<Map<String, Value>, ApiError> {
        if path != MOVIE {
            return Err(ApiError::NotFound { path: path.into() });
        }
        let mut metadata = Map::new();
        metadata.insert("hashId".into(), json!("bafkrei9f3a1c2e"));
        metadata.insert("filePath".into(), json!("watch/Heat.1995.mkv"));
        metadata.insert("titles/eng".into(), json!("Heat"));
        Ok(metadata)
    }

    fn files(&self) -> Vec<String> {
        vec![MOVIE.into()]
    }

    fn directories(&self) -> Vec<String> {
        self.directories
            .keys()
            .map(|path| (*path).to_owned())
            .collect()
    }

    fn refresh(&self) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn rules(&self) -> Result<RulesSnapshot, ApiError> {
        Ok(RulesSnapshot {
            config: self.rules.lock().expect("rules lock").clone(),
            last_modified: None,
        })
    }

    fn put_rules(&self, document: Value) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            let empty_templates: Vec<String> = document["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|rule| rule["template"] == "")
                .map(|rule| format!("rule {}: empty template", rule["id"]))
                .collect();
            if !empty_templates.is_empty() {
                return Err(ApiError::InvalidRules(empty_templates));
            }
            *self.rules.lock().expect("rules lock") = document;
            Ok(())
        })
    }

    fn preview(
        &self,
        rules: Option<Value>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Preview, ApiError>> {
        Box::pin(async move {
            let rule_name = rules
                .as_ref()
                .and_then(|rules| rules[0]["name"].as_str())
                .unwrap_or("in force")
                .to_owned();
            Ok(Preview {
                previews: vec![PreviewEntry {
                    hash_id: "bafkrei9f3a1c2e".into(),
                    source_path: "/files/watch/Heat.1995.mkv".into(),
                    current_virtual_path: MOVIE.into(),
                    new_virtual_path: Some(format!("/limit {limit}/Heat.mkv")),
                    matched_rule: Some("movies".into()),
                    rule_name: Some(rule_name),
                    error: None,
                }],
                total: 1,
                limited: false,
                sampled: 1,
            })
        })
    }

    fn validate(&self, rule: &Value, sample_metadata: Option<&Map<String, Value>>) -> Validation {
        let template = rule["template"].as_str().unwrap_or_default();
        let valid = !template.is_empty();
        Validation {
            valid,
            errors: if valid {
                vec![]
            } else {
                vec!["empty template".into()]
            },
            warnings: vec![],
            sample_output: sample_metadata
                .filter(|_| valid)
                .and_then(|sample| sample.get("title"))
                .and_then(Value::as_str)
                .map(|title| template.replace("{title}", title)),
        }
    }

    fn variables(&self) -> Vec<TemplateVariable> {
        vec![TemplateVariable {
            name: "Season".into(),
            path: "season".into(),
            value_type: VariableType::Number,
            description: "Season number".into(),
            example: "1".into(),
            modifiers: vec!["pad2".into()],
        }]
    }

    fn services(&self) -> BoxFuture<'_, ServiceList> {
        Box::pin(async move {
            ServiceList {
                services: vec![ServiceEntry {
                    name: "meta-sort".into(),
                    hostname: "nas".into(),
                    base_url: "http://nas:8180".into(),
                    status: "running".into(),
                    last_heartbeat: Some("2024-01-15T10:30:00.000Z".into()),
                }],
                warning: None,
                leader: None,
            }
        })
    }

    fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            files: 1,
            directories: 4,
            total_size_bytes: 1_500_000_000,
            events_processed: 15,
            properties_fetched: 9,
            properties_skipped: 6,
            malformed_entries_skipped: 1,
            tail_lag_entries: Some(0),
            seconds_since_last_event: Some(1.5),
            redis_connected: true,
            redis_reconnects: 2,
            bootstrap_seconds: Some(0.25),
            strategy: Some("replay".into()),
            source: Some("redis".into()),
            topology: None,
            notifications: None,
        }
    }
}
