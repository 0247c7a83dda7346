//! Registration with meta-core's service registry, so the other MetaMesh
//! dashboards list metafuse: a heartbeat file
//! `{META_CORE_PATH}/services/meta-fuse-<hostname>.json`, rewritten
//! atomically every 30 s and removed on shutdown (spec §9, older
//! meta-cores; they call an entry stale after 60 s).
//!
//! The newest meta-cores discover services by beacon v2 instead; the
//! advertisement belongs with the beacon code and is started beside this
//! (`--no-register` turns both off).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metafuse_api::rfc3339_millis;
use parking_lot::Mutex;
use serde_json::json;
use tokio::task::JoinHandle;

/// How often the heartbeat is rewritten (meta-core's own rhythm).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// What the heartbeat says about us.
#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    /// `META_CORE_PATH`: the registry is its `services/` directory.
    pub meta_core_path: PathBuf,
    /// Our host name (the file name and the `hostname` field).
    pub hostname: String,
    /// Where our API and dashboard are reached (`http://host:3000`).
    pub base_url: String,
    /// How often the file is rewritten ([`HEARTBEAT_INTERVAL`]).
    pub interval: Duration,
}

impl RegistrationConfig {
    /// Registration under `meta_core_path` for this host, heartbeat every 30 s.
    pub fn new(meta_core_path: impl Into<PathBuf>, base_url: impl Into<String>) -> Self {
        RegistrationConfig {
            meta_core_path: meta_core_path.into(),
            hostname: local_hostname(),
            base_url: base_url.into(),
            interval: HEARTBEAT_INTERVAL,
        }
    }

    /// `{META_CORE_PATH}/services/meta-fuse-<hostname>.json`.
    pub fn heartbeat_path(&self) -> PathBuf {
        self.meta_core_path
            .join("services")
            .join(format!("meta-fuse-{}.json", file_name_safe(&self.hostname)))
    }
}

/// A running registration: the heartbeat task and its file.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
    task: Option<JoinHandle<()>>,
    /// Set on stop, under the lock every write takes: a write still in
    /// flight on a blocking thread cannot bring the file back afterwards.
    stopped: Arc<Mutex<bool>>,
}

impl Registration {
    /// Writes the first heartbeat and keeps it fresh, when the registry
    /// directory exists; `None` (and a debug line) when it does not, since
    /// then no meta-core reads it.
    pub fn start(config: RegistrationConfig) -> Option<Registration> {
        let directory = config.meta_core_path.join("services");
        if !directory.is_dir() {
            tracing::debug!(directory = %directory.display(), "no meta-core service registry here; not registering");
            return None;
        }
        let path = config.heartbeat_path();
        let started_at = SystemTime::now();
        write_heartbeat(&path, &config, started_at);
        tracing::info!(path = %path.display(), "registered with meta-core's service registry");
        let task_path = path.clone();
        let stopped = Arc::new(Mutex::new(false));
        let task_stopped = stopped.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(config.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate and the file was just written.
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let (path, config, stopped) =
                    (task_path.clone(), config.clone(), task_stopped.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let stopped = stopped.lock();
                    if !*stopped {
                        write_heartbeat(&path, &config, started_at);
                    }
                })
                .await;
            }
        });
        Some(Registration {
            path,
            task: Some(task),
            stopped,
        })
    }

    /// The heartbeat file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the heartbeat and removes the file (on shutdown).
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.unregister();
    }

    fn unregister(&self) {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            *stopped = true;
            remove_heartbeat(&self.path);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.unregister();
    }
}

fn remove_heartbeat(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "unregistered from meta-core's service registry")
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot remove the heartbeat file")
        }
    }
}

/// Atomic: a reader sees the old heartbeat or the new one, never half.
fn write_heartbeat(path: &Path, config: &RegistrationConfig, started_at: SystemTime) {
    let body = json!({
        "name": "meta-fuse",
        "hostname": config.hostname,
        "baseUrl": config.base_url,
        "apiUrl": config.base_url,
        "status": "running",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "startedAt": rfc3339_millis(started_at),
        "lastHeartbeat": rfc3339_millis(SystemTime::now()),
        "capabilities": ["vfs", "fuse", "rules"],
        "endpoints": {"dashboard": "/", "health": "/health", "api": "/api/fuse"},
    });
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp.{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = std::fs::write(&temporary, body.to_string())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        tracing::warn!(path = %path.display(), %error, "cannot write the heartbeat file");
    }
}

/// This machine's host name (`HOSTNAME`, else the kernel's), `localhost`
/// when neither is known.
pub fn local_hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A host name as one file-name component: nothing but `[A-Za-z0-9._-]`.
fn file_name_safe(hostname: &str) -> String {
    let safe: String = hostname
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || matches!(character, '.' | '-' | '_') {
                character
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|character| character == '.') {
        "localhost".to_owned()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_cannot_leave_the_registry() {
        assert_eq!(file_name_safe("nas-1.local"), "nas-1.local");
        assert_eq!(file_name_safe("../../etc"), ".._.._etc");
        assert_eq!(file_name_safe(".."), "localhost");
    }
}
