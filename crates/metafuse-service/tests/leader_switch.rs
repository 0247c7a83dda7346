//! A leader switch end to end: two redis-servers holding different
//! libraries, a fake meta-core per Redis, a real `META_CORE_PATH` and a real
//! FUSE mount read continuously while `kv-leader.info` moves to the second.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use metafuse_rules::Rules;
use metafuse_service::{Service, ServiceConfig};
use metafuse_state::FetchedValue;
use metafuse_testkit::{RedisServer, Writer};

/// Failure guard only: every awaited event normally arrives in well under a second.
const GUARD: Duration = Duration::from_secs(60);

/// A meta-core stand-in answering `/urls` with one Redis.
struct FakeMetaCore {
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl FakeMetaCore {
    async fn start(redis_url: &str, hostname: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let body = serde_json::json!({
            "hostname": hostname,
            "redisUrl": redis_url,
            "isLeader": true,
        })
        .to_string();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let mut response = Response::new(Full::new(Bytes::from(body.clone())));
                        if request.uri().path() != "/urls" {
                            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                        }
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeMetaCore { url, server }
    }
}

impl Drop for FakeMetaCore {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One media file: its properties and the bytes of its source.
struct MediaFile {
    hash_id: String,
    properties: Vec<(&'static str, String)>,
    contents: String,
}

fn movie(hash_id: &str, title: &str, year: u32) -> MediaFile {
    let contents = format!("bytes of {title} ({year}) [{hash_id}]");
    MediaFile {
        hash_id: hash_id.to_owned(),
        properties: vec![
            ("title", title.to_owned()),
            ("movieYear", year.to_string()),
            ("fileType", "video".to_owned()),
            ("extension", "mkv".to_owned()),
            ("size", contents.len().to_string()),
            ("filePath", format!("downloads/{hash_id}.mkv")),
        ],
        contents,
    }
}

/// Library A: `shared` movies plus its own; library B: the same `shared`
/// movies plus different ones. A path in both trees must never fail.
fn libraries() -> (Vec<MediaFile>, Vec<MediaFile>) {
    let shared = |library: &mut Vec<MediaFile>| {
        library.push(movie("cccc0001", "Heat", 1995));
        library.push(movie("cccc0002", "Ronin", 1998));
    };
    let mut library_a = Vec::new();
    shared(&mut library_a);
    for index in 0..8 {
        library_a.push(movie(
            &format!("aaaa{index:04}"),
            &format!("Alpha {index}"),
            2001,
        ));
    }
    let mut library_b = Vec::new();
    shared(&mut library_b);
    for index in 0..11 {
        library_b.push(movie(
            &format!("bbbb{index:04}"),
            &format!("Beta {index}"),
            2002,
        ));
    }
    (library_a, library_b)
}

/// Writes a library like the MetaMesh writers and its source files.
fn seed(redis: &RedisServer, library: &[MediaFile], files_root: &Path) {
    let mut connection = redis.client().get_connection().expect("connect");
    for file in library {
        Writer::new(&mut connection, "")
            .set_file(&file.hash_id, &file.properties)
            .flush()
            .expect("write");
        let (_, file_path) = file
            .properties
            .iter()
            .find(|(property, _)| *property == "filePath")
            .expect("filePath");
        let source = files_root.join(file_path);
        std::fs::create_dir_all(source.parent().expect("parent")).expect("mkdir");
        std::fs::write(&source, &file.contents).expect("write source");
    }
}

/// The visible paths (relative, sorted) and contents the default rules give a library.
fn expected_tree(library: &[MediaFile]) -> BTreeMap<String, String> {
    let rules = Arc::new(Rules::preset("default").expect("preset"));
    let mut tree = metafuse_vfs::Library::new(rules);
    let mut contents_by_hash = BTreeMap::new();
    for file in library {
        tree.apply_batch(
            file.properties
                .iter()
                .map(|(property, value)| FetchedValue {
                    hash_id: &file.hash_id,
                    property,
                    value: Some(value),
                }),
        );
        contents_by_hash.insert(file.hash_id.clone(), file.contents.clone());
    }
    tree.file_paths()
        .into_iter()
        .map(|path| {
            let hash_id = tree
                .file_metadata(&path)
                .expect("metadata")
                .hash_id()
                .to_owned();
            (
                path.trim_start_matches('/').to_owned(),
                contents_by_hash[&hash_id].clone(),
            )
        })
        .collect()
}

fn write_leader_file(meta_core_path: &Path, meta_core_url: &str) {
    let locks = meta_core_path.join("locks");
    std::fs::create_dir_all(&locks).expect("mkdir locks");
    // Written beside and renamed, as meta-core does, so no half line is read.
    let staging = locks.join("kv-leader.info.tmp");
    std::fs::write(&staging, format!("{meta_core_url}\n")).expect("write info");
    std::fs::rename(&staging, locks.join("kv-leader.info")).expect("rename info");
}

/// Every file under `root`, relative, sorted.
fn list_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

fn relative_names(root: &Path, paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|path| {
            path.strip_prefix(root)
                .expect("under root")
                .display()
                .to_string()
        })
        .collect()
}

/// What the reader saw that it should not have.
#[derive(Debug, Default)]
struct ReaderReport {
    n_reads: u64,
    /// Old-tree-only paths gone by the time they were opened (tolerated).
    n_vanished: u64,
    errors: Vec<String>,
}

/// Lists and reads the whole mount in a loop until `stop`. A read must
/// succeed and return the bytes of the library the path belongs to. The one
/// tolerated failure is a path only the old library has, vanishing after
/// the switch was asked for (listed from the old tree, opened in the new).
fn read_continuously(
    mountpoint: PathBuf,
    old_tree: BTreeMap<String, String>,
    new_tree: BTreeMap<String, String>,
    switch_asked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    passes: mpsc::Sender<()>,
) -> ReaderReport {
    let mut report = ReaderReport::default();
    let vanished_legitimately = |name: &str, error: &std::io::Error| {
        error.kind() == std::io::ErrorKind::NotFound
            && switch_asked.load(Ordering::SeqCst)
            && !new_tree.contains_key(name)
    };
    while !stop.load(Ordering::SeqCst) {
        let paths = match list_files(&mountpoint) {
            Ok(paths) => paths,
            Err(error)
                if switch_asked.load(Ordering::SeqCst)
                    && error.kind() == std::io::ErrorKind::NotFound =>
            {
                // A directory of the old tree removed while being walked.
                continue;
            }
            Err(error) => {
                report.errors.push(format!("listing: {error}"));
                continue;
            }
        };
        for path in paths {
            let name = path
                .strip_prefix(&mountpoint)
                .expect("under mountpoint")
                .display()
                .to_string();
            report.n_reads += 1;
            match std::fs::read_to_string(&path) {
                Ok(contents) => {
                    let expected = [&old_tree, &new_tree]
                        .iter()
                        .any(|tree| tree.get(&name) == Some(&contents));
                    if !expected {
                        report
                            .errors
                            .push(format!("{name}: unexpected contents {contents:?}"));
                    }
                }
                Err(error) if vanished_legitimately(&name, &error) => report.n_vanished += 1,
                Err(error) => report.errors.push(format!("{name}: {error}")),
            }
        }
        // The test may have stopped listening; that is fine.
        let _ = passes.send(());
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mount_follows_a_new_leader_without_a_failed_read() {
    metafuse_testkit::require_fuse!();
    let (library_a, library_b) = libraries();
    let tree_a = expected_tree(&library_a);
    let tree_b = expected_tree(&library_b);
    assert_ne!(
        tree_a.keys().collect::<Vec<_>>(),
        tree_b.keys().collect::<Vec<_>>()
    );

    let directory = tempfile::tempdir().expect("tempdir");
    let files_root = directory.path().join("files");
    let mountpoint = directory.path().join("mnt");
    let meta_core_path = directory.path().join("meta-core");
    std::fs::create_dir_all(&mountpoint).expect("mkdir mnt");
    std::fs::create_dir_all(&meta_core_path).expect("mkdir meta-core");
    let redis_a = RedisServer::start().expect("redis a");
    let redis_b = RedisServer::start().expect("redis b");
    seed(&redis_a, &library_a, &files_root);
    seed(&redis_b, &library_b, &files_root);
    let meta_core_a = FakeMetaCore::start(&redis_a.url(), "core-a").await;
    let meta_core_b = FakeMetaCore::start(&redis_b.url(), "core-b").await;

    let mut config = ServiceConfig::new(
        directory.path().join("config").join("renaming-rules.json"),
        &files_root,
    );
    config.discovery.redis_url = None;
    config.discovery.meta_core_url = None;
    config.discovery.meta_core_path = meta_core_path.clone();
    config.discovery.poll_interval = Duration::from_millis(50);
    config.discovery.retry_initial_delay = Duration::from_millis(50);
    config.discovery.retry_max_delay = Duration::from_millis(200);

    // No leader yet: the service waits for one, then starts on it.
    let mut starting = tokio::spawn(Service::start(config));
    // Several discovery polls long; a start would be a bug, not a race.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut starting).await;
    assert!(early.is_err(), "the service started without a leader file");
    write_leader_file(&meta_core_path, &meta_core_a.url);
    let service = tokio::time::timeout(GUARD, starting)
        .await
        .expect("the service started once a leader appeared")
        .expect("start task")
        .expect("service starts");
    assert_eq!(service.leader().redis_url, redis_a.url());

    let guard = support::mount(&service, &mountpoint, &files_root);
    assert_eq!(
        relative_names(&mountpoint, &list_files(&mountpoint).expect("list")),
        tree_a.keys().cloned().collect::<Vec<_>>()
    );

    let switch_asked = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (pass_sender, pass_receiver) = mpsc::channel();
    let reader = {
        let (mountpoint, old_tree, new_tree) = (mountpoint.clone(), tree_a.clone(), tree_b.clone());
        let (switch_asked, stop) = (switch_asked.clone(), stop.clone());
        std::thread::spawn(move || {
            read_continuously(
                mountpoint,
                old_tree,
                new_tree,
                switch_asked,
                stop,
                pass_sender,
            )
        })
    };
    // The reader is going on the old tree before the switch.
    let pass_receiver = wait_for_passes(pass_receiver, 1).await;

    let switches = service.leader_switches();
    switch_asked.store(true, Ordering::SeqCst);
    write_leader_file(&meta_core_path, &meta_core_b.url);
    tokio::time::timeout(GUARD, service.wait_for_leader_switch(switches))
        .await
        .expect("the service switched to the new leader");
    assert_eq!(service.leader().redis_url, redis_b.url());
    // The switch delivers its invalidations before it is reported.
    assert_eq!(
        relative_names(&mountpoint, &list_files(&mountpoint).expect("list")),
        tree_b.keys().cloned().collect::<Vec<_>>()
    );
    for (name, contents) in &tree_b {
        assert_eq!(
            &std::fs::read_to_string(mountpoint.join(name)).expect("read new tree"),
            contents,
            "{name}"
        );
    }

    // And it keeps going on the new tree: two full passes after the switch.
    while pass_receiver.try_recv().is_ok() {}
    wait_for_passes(pass_receiver, 2).await;
    stop.store(true, Ordering::SeqCst);
    let report = tokio::task::spawn_blocking(move || reader.join().expect("reader thread"))
        .await
        .expect("join reader");
    assert!(report.n_reads > 0, "the reader read nothing");
    assert!(
        report.errors.is_empty(),
        "{} failed reads out of {}: {:#?}",
        report.errors.len(),
        report.n_reads,
        report.errors
    );
    eprintln!(
        "reader: {} reads, {} old-only paths gone when opened",
        report.n_reads, report.n_vanished
    );

    support::stop(service, guard).await;
}

/// Waits (off the runtime's threads) for `n_passes` more full reader passes.
async fn wait_for_passes(passes: mpsc::Receiver<()>, n_passes: usize) -> mpsc::Receiver<()> {
    tokio::task::spawn_blocking(move || {
        for _ in 0..n_passes {
            passes
                .recv_timeout(GUARD)
                .expect("the reader completed a pass");
        }
        passes
    })
    .await
    .expect("join pass waiter")
}
