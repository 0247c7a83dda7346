//! Start-up shared by the service tests: writer-style writes, the service
//! mounted with its invalidation sink attached, the HTTP API on a free port.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metafuse_fuse::{MountHandle, MountOptions};
use metafuse_service::Service;
use metafuse_testkit::Writer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sets a property like a MetaMesh writer (SET, SADD, XADD); returns the
/// event id.
pub fn set(
    connection: &mut redis::Connection,
    hash_id: &str,
    property: &str,
    value: &str,
) -> String {
    Writer::new(connection, "")
        .set(hash_id, property, value)
        .flush()
        .expect("write")
        .expect("event id")
}

/// Deletes a property like a MetaMesh writer (DEL, XADD); returns the event id.
pub fn delete(connection: &mut redis::Connection, hash_id: &str, property: &str) -> String {
    Writer::new(connection, "")
        .del(hash_id, property)
        .flush()
        .expect("write")
        .expect("event id")
}

/// A mount of the service's library; unmounts on drop even when the test
/// failed half way.
pub struct MountGuard {
    handle: Option<Arc<MountHandle>>,
    mountpoint: PathBuf,
}

impl MountGuard {
    pub fn path(&self, relative: &str) -> PathBuf {
        self.mountpoint.join(relative)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            match Arc::try_unwrap(handle) {
                Ok(handle) => {
                    let _ = handle.unmount();
                }
                Err(_) => metafuse_testkit::lazy_unmount(&self.mountpoint),
            }
        }
    }
}

/// Mounts the service's library on `mountpoint` (two FUSE threads) and
/// sends the service's invalidations to the mount.
pub fn mount(service: &Service, mountpoint: &Path, files_root: &Path) -> MountGuard {
    let mut options = MountOptions::new(mountpoint, files_root);
    options.n_threads = 2;
    let handle = Arc::new(metafuse_fuse::mount(service.library(), options).expect("mount"));
    let sink = handle.clone();
    service.attach_invalidation_sink(Box::new(move |invalidations| {
        sink.invalidate(invalidations)
    }));
    MountGuard {
        handle: Some(handle),
        mountpoint: mountpoint.to_path_buf(),
    }
}

/// Stops the service (drops its sink) and unmounts.
pub async fn stop(service: Service, mut guard: MountGuard) {
    service.shutdown().await;
    if let Some(handle) = guard.handle.take() {
        let handle = Arc::try_unwrap(handle).expect("the service released the mount");
        handle.unmount().expect("unmount");
    }
}

/// `metafuse_api::serve` on a free loopback port, until [`Api::stop`].
pub struct Api {
    pub address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Api {
    pub async fn start(service: &Service) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(metafuse_api::serve(
            listener,
            service.backend(),
            async move {
                let _ = stopped.await;
            },
        ));
        Api {
            address,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("api task");
    }
}

/// One HTTP/1.1 request; returns the status code and the body.
pub async fn http(address: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect api");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("receive");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The paths the default rules give `truth` (a Redis deployment's values),
/// computed without any Redis code under test.
pub fn expected_paths(truth: &metafuse_testkit::Files) -> std::collections::BTreeSet<String> {
    let rules = metafuse_rules::Rules::preset("default").expect("default preset");
    let mut projection = metafuse_state::Projection::new(rules.relevant_properties());
    let mut values = metafuse_source::FetchedValues::default();
    for (hash_id, properties) in truth {
        for (name, value) in properties {
            values.push(hash_id, name, Some(value));
        }
    }
    projection.apply_batch(values.iter());
    metafuse_vfs::Library::from_projection(projection, Arc::new(rules))
        .file_paths()
        .into_iter()
        .collect()
}

pub fn service_paths(service: &Service) -> std::collections::BTreeSet<String> {
    service.library().read().file_paths().into_iter().collect()
}

/// Every file under `root` (a mount), relative, sorted.
pub fn list_files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory).expect("readdir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if entry.file_type().expect("type").is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                found.push(relative.display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// Every file under the mount, as `/relative/path`.
pub fn mounted_paths(root: &Path) -> std::collections::BTreeSet<String> {
    list_files(root)
        .into_iter()
        .map(|relative| format!("/{relative}"))
        .collect()
}
