//! Notifications end to end, against small HTTP servers on 127.0.0.1 that
//! stand in for Plex, Jellyfin and Emby (speaking their documented
//! endpoints and recording every request), a webhook receiver and a real
//! program.
//!
//! The tests run on tokio's single-threaded runtime and build their batches
//! before pushing them in a tight loop: every `push` is queued (and
//! timestamped) within a millisecond, before the notifier's task first
//! runs, so how many requests the debounce produces does not depend on how
//! fast this machine is.
//! "Nothing else was sent" is checked by sending a sentinel change
//! afterwards and seeing that its request is the next one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metafuse_notify::{Notifier, NotifierHandle, NotifyConfig};
use metafuse_vfs::{ChangeBatch, ChangeCause, PathChange, PathChangeKind};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Upper bound on waiting for a request that must come (a failing test
/// fails instead of hanging); never reached when the test passes.
const PATIENCE: Duration = Duration::from_secs(30);
const DEBOUNCE: Duration = Duration::from_millis(500);
const PREFIX: &str = "/mnt/library";

#[derive(Debug)]
struct Recorded {
    method: String,
    uri: String,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

type Responder = dyn Fn(&Recorded) -> (StatusCode, String) + Send + Sync;

/// A server on a free loopback port that records every request.
struct RecordingServer {
    address: SocketAddr,
    requests: mpsc::UnboundedReceiver<Recorded>,
}

impl RecordingServer {
    async fn start(responder: Arc<Responder>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (sender, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (sender, responder) = (sender.clone(), responder.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (sender, responder) = (sender.clone(), responder.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes().to_vec();
                            let recorded = Recorded {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let (status, answer) = responder(&recorded);
                            let _ = sender.send(recorded);
                            let response = Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer)))
                                .expect("a valid response");
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RecordingServer { address, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    async fn next(&mut self) -> Recorded {
        tokio::time::timeout(PATIENCE, self.requests.recv())
            .await
            .expect("a request within the patience")
            .expect("server running")
    }

    /// The next request that is not the section discovery.
    async fn next_refresh(&mut self) -> Recorded {
        loop {
            let request = self.next().await;
            if request.uri != "/library/sections" {
                return request;
            }
        }
    }
}

/// Plex's `GET /library/sections` (JSON): Movies and TV Shows live on the
/// mount, a third library elsewhere.
const PLEX_SECTIONS: &str = r#"{"MediaContainer":{"size":3,"Directory":[
  {"key":"1","type":"movie","title":"Movies","Location":[{"id":1,"path":"/mnt/library/Movies"}]},
  {"key":"2","type":"show","title":"TV Shows","Location":[{"id":2,"path":"/mnt/library/TV Shows"}]},
  {"key":"3","type":"artist","title":"Music","Location":[{"id":3,"path":"/srv/music"}]}]}}"#;

/// A Plex double whose refreshes answer 500 `n_failures` times first.
async fn plex(n_failures: usize) -> RecordingServer {
    let failures_left = AtomicUsize::new(n_failures);
    RecordingServer::start(Arc::new(move |request: &Recorded| {
        if request.uri == "/library/sections" {
            return (StatusCode::OK, PLEX_SECTIONS.to_owned());
        }
        if request.uri.starts_with("/library/sections/")
            && failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
        }
        (StatusCode::OK, String::new())
    }))
    .await
}

async fn plain_server() -> RecordingServer {
    RecordingServer::start(Arc::new(|_: &Recorded| (StatusCode::OK, String::new()))).await
}

fn config(spec: &str) -> NotifyConfig {
    NotifyConfig {
        targets: vec![spec.parse().expect("valid spec")],
        debounce: DEBOUNCE,
        retry_initial: Duration::from_millis(10),
        ..NotifyConfig::default()
    }
}

fn change(kind: PathChangeKind, path: &str, is_directory: bool) -> PathChange {
    PathChange {
        kind,
        path: path.to_owned(),
        is_directory,
    }
}

fn batch(cause: ChangeCause, changes: Vec<PathChange>) -> Arc<ChangeBatch> {
    Arc::new(ChangeBatch {
        cause,
        changes,
        invalidations: Vec::new(),
        sequence: 0,
    })
}

/// What the tree reports when one episode of a new show appears.
fn new_show_batch() -> Arc<ChangeBatch> {
    batch(
        ChangeCause::Event,
        vec![
            change(PathChangeKind::Added, "TV Shows/Dark", true),
            change(PathChangeKind::Added, "TV Shows/Dark/S01", true),
            change(
                PathChangeKind::Added,
                "TV Shows/Dark/S01/Dark S01E01.mkv",
                false,
            ),
            change(PathChangeKind::Changed, "TV Shows", true),
        ],
    )
}

const SENTINEL_SCAN: &str = "/library/sections/1/refresh?path=%2Fmnt%2Flibrary%2FMovies%2FSentinel";

fn push_sentinel(notifier: &NotifierHandle) {
    notifier.push(batch(
        ChangeCause::Event,
        vec![change(
            PathChangeKind::Added,
            "Movies/Sentinel/Sentinel.mkv",
            false,
        )],
    ));
}

fn header<'r>(request: &'r Recorded, name: &str) -> &'r str {
    request
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn one_live_addition_is_one_partial_scan_of_its_section_after_the_debounce() {
    let mut plex = plex(0).await;
    let notifier = Notifier::spawn(
        config(&format!("plex={},token=plex-token", plex.url())),
        PREFIX,
    );
    let pushed_at = Instant::now();
    notifier.push(new_show_batch());

    let scan = plex.next_refresh().await;
    assert!(pushed_at.elapsed() >= DEBOUNCE, "sent before the debounce");
    assert_eq!(scan.method, "GET");
    assert_eq!(
        scan.uri,
        "/library/sections/2/refresh?path=%2Fmnt%2Flibrary%2FTV%20Shows%2FDark"
    );
    assert_eq!(header(&scan, "x-plex-token"), "plex-token");

    push_sentinel(&notifier);
    assert_eq!(
        plex.next_refresh().await.uri,
        SENTINEL_SCAN,
        "nothing else sent"
    );
    let metrics = notifier.metrics();
    assert!(metrics.sent >= 1 && metrics.failed == 0, "{metrics:?}");
}

#[tokio::test]
async fn a_thousand_changes_in_one_directory_are_one_request() {
    let mut plex = plex(0).await;
    let notifier = Notifier::spawn(config(&format!("plex={},token=t", plex.url())), PREFIX);
    let batches: Vec<_> = (0..1_000)
        .map(|episode| {
            batch(
                ChangeCause::Event,
                vec![
                    change(
                        PathChangeKind::Added,
                        &format!("TV Shows/Dark/S01/Dark S01E{episode:04}.mkv"),
                        false,
                    ),
                    change(PathChangeKind::Changed, "TV Shows/Dark/S01", true),
                ],
            )
        })
        .collect();
    for batch in batches {
        notifier.push(batch);
    }
    assert_eq!(
        plex.next_refresh().await.uri,
        "/library/sections/2/refresh?path=%2Fmnt%2Flibrary%2FTV%20Shows%2FDark%2FS01"
    );
    push_sentinel(&notifier);
    assert_eq!(plex.next_refresh().await.uri, SENTINEL_SCAN);
    assert!(
        notifier.metrics().coalesced >= 999,
        "{:?}",
        notifier.metrics()
    );
}

#[tokio::test]
async fn ten_thousand_changes_across_500_directories_are_one_section_refresh() {
    let mut plex = plex(0).await;
    let notifier = Notifier::spawn(config(&format!("plex={},token=t", plex.url())), PREFIX);
    let batches: Vec<_> = (0..500)
        .map(|show| {
            let changes = (0..20)
                .map(|episode| {
                    change(
                        PathChangeKind::Added,
                        &format!("TV Shows/Show {show}/S01/E{episode}.mkv"),
                        false,
                    )
                })
                .collect();
            batch(ChangeCause::Event, changes)
        })
        .collect();
    for batch in batches {
        notifier.push(batch);
    }
    // 500 directories in one section, more than max_directories (50).
    assert_eq!(plex.next_refresh().await.uri, "/library/sections/2/refresh");
    push_sentinel(&notifier);
    assert_eq!(plex.next_refresh().await.uri, SENTINEL_SCAN);
}

#[tokio::test]
async fn a_failing_server_is_retried_counted_failed_then_sent() {
    let mut plex = plex(2).await;
    let notifier = Notifier::spawn(config(&format!("plex={},token=t", plex.url())), PREFIX);
    notifier.push(new_show_batch());
    let expected = "/library/sections/2/refresh?path=%2Fmnt%2Flibrary%2FTV%20Shows%2FDark";
    for attempt in 1..=3 {
        assert_eq!(plex.next_refresh().await.uri, expected, "attempt {attempt}");
    }
    push_sentinel(&notifier);
    assert_eq!(plex.next_refresh().await.uri, SENTINEL_SCAN);
    let metrics = notifier.metrics();
    assert_eq!((metrics.failed, metrics.abandoned), (2, 0), "{metrics:?}");
    assert!(metrics.sent >= 1, "{metrics:?}");
}

#[tokio::test]
async fn a_bootstrap_is_one_refresh_per_section_on_the_mount() {
    let mut plex = plex(0).await;
    let notifier = Notifier::spawn(config(&format!("plex={},token=t", plex.url())), PREFIX);
    let changes = (0..5_000)
        .map(|n| {
            change(
                PathChangeKind::Added,
                &format!("Movies/M{n}/M{n}.mkv"),
                false,
            )
        })
        .collect();
    notifier.push(batch(ChangeCause::Bootstrap, changes));
    assert_eq!(plex.next_refresh().await.uri, "/library/sections/1/refresh");
    assert_eq!(plex.next_refresh().await.uri, "/library/sections/2/refresh");
    push_sentinel(&notifier);
    assert_eq!(
        plex.next_refresh().await.uri,
        SENTINEL_SCAN,
        "music untouched"
    );
}

#[tokio::test]
async fn push_never_waits_and_a_flood_becomes_one_library_refresh() {
    let mut plex = plex(0).await;
    let notifier = Notifier::spawn(config(&format!("plex={},token=t", plex.url())), PREFIX);
    // More batches than the queue holds, all before the notifier runs.
    for n in 0..3_000 {
        notifier.push(batch(
            ChangeCause::Event,
            vec![change(
                PathChangeKind::Added,
                &format!("Movies/M{n}/m.mkv"),
                false,
            )],
        ));
    }
    assert_eq!(plex.next_refresh().await.uri, "/library/sections/1/refresh");
    assert_eq!(plex.next_refresh().await.uri, "/library/sections/2/refresh");
    push_sentinel(&notifier);
    assert_eq!(plex.next_refresh().await.uri, SENTINEL_SCAN);
}

#[tokio::test]
async fn following_a_feed_turns_missed_batches_into_one_library_refresh() {
    let mut plex = plex(0).await;
    let notifier = Notifier::spawn(config(&format!("plex={},token=t", plex.url())), PREFIX);
    let metrics = notifier.metrics_source();
    let (feed, receiver) = tokio::sync::broadcast::channel(2);
    let follower = notifier.follow(receiver);
    // Five batches into a feed of two before the follower runs: it lags.
    for n in 0..5 {
        feed.send(batch(
            ChangeCause::Event,
            vec![change(
                PathChangeKind::Added,
                &format!("Movies/M{n}/m.mkv"),
                false,
            )],
        ))
        .expect("a receiver");
    }
    assert_eq!(plex.next_refresh().await.uri, "/library/sections/1/refresh");
    assert_eq!(plex.next_refresh().await.uri, "/library/sections/2/refresh");
    // Closing the feed shuts the notifier down, sending what is pending.
    feed.send(batch(
        ChangeCause::Event,
        vec![change(
            PathChangeKind::Added,
            "Movies/Sentinel/Sentinel.mkv",
            false,
        )],
    ))
    .expect("a receiver");
    drop(feed);
    assert_eq!(plex.next_refresh().await.uri, SENTINEL_SCAN);
    follower.await.expect("follower");
    assert!(
        metrics.snapshot().coalesced >= 3,
        "{:?}",
        metrics.snapshot()
    );
}

#[tokio::test]
async fn a_configured_plex_section_needs_no_discovery() {
    let mut plex = plex(0).await;
    let notifier = Notifier::spawn(
        config(&format!("plex={},token=t,section=9", plex.url())),
        PREFIX,
    );
    notifier.push(new_show_batch());
    assert_eq!(
        plex.next().await.uri,
        "/library/sections/9/refresh?path=%2Fmnt%2Flibrary%2FTV%20Shows%2FDark"
    );
}

#[tokio::test]
async fn jellyfin_gets_the_documented_body_and_header() {
    let mut jellyfin = plain_server().await;
    let notifier = Notifier::spawn(
        config(&format!("jellyfin={},key=jf-key", jellyfin.url())),
        PREFIX,
    );
    notifier.push(new_show_batch());
    notifier.push(batch(
        ChangeCause::Event,
        vec![change(
            PathChangeKind::Removed,
            "Movies/Heat (1995)/Heat.mkv",
            false,
        )],
    ));
    let update = jellyfin.next().await;
    assert_eq!(update.method, "POST");
    assert_eq!(update.uri, "/Library/Media/Updated");
    assert_eq!(
        header(&update, "authorization"),
        r#"MediaBrowser Token="jf-key""#
    );
    assert_eq!(header(&update, "content-type"), "application/json");
    assert_eq!(
        String::from_utf8(update.body).expect("utf-8"),
        r#"{"Updates":[{"Path":"/mnt/library/Movies/Heat (1995)","UpdateType":"Modified"},{"Path":"/mnt/library/TV Shows/Dark","UpdateType":"Created"}]}"#
    );

    notifier.push(batch(ChangeCause::Rules, vec![]));
    let refresh = jellyfin.next().await;
    assert_eq!(
        (refresh.method.as_str(), refresh.uri.as_str()),
        ("POST", "/Library/Refresh")
    );
    assert_eq!(
        header(&refresh, "authorization"),
        r#"MediaBrowser Token="jf-key""#
    );
}

#[tokio::test]
async fn emby_gets_its_token_header() {
    let mut emby = plain_server().await;
    let notifier = Notifier::spawn(config(&format!("emby={},key=emby-key", emby.url())), PREFIX);
    notifier.push(new_show_batch());
    let update = emby.next().await;
    assert_eq!(update.uri, "/Library/Media/Updated");
    assert_eq!(header(&update, "x-emby-token"), "emby-key");
    assert_eq!(header(&update, "authorization"), "");
}

#[tokio::test]
async fn a_webhook_gets_the_documented_json() {
    let mut hook = plain_server().await;
    let notifier = Notifier::spawn(config(&format!("webhook={}/hook?x=1", hook.url())), PREFIX);
    notifier.push(new_show_batch());
    let request = hook.next().await;
    assert_eq!(
        (request.method.as_str(), request.uri.as_str()),
        ("POST", "/hook?x=1")
    );
    assert_eq!(header(&request, "content-type"), "application/json");
    assert_eq!(
        String::from_utf8(request.body).expect("utf-8"),
        r#"{"scope":"directories","mediaPathPrefix":"/mnt/library","directories":[{"path":"TV Shows/Dark","mediaPath":"/mnt/library/TV Shows/Dark","change":"created"}]}"#
    );
    notifier.push(batch(ChangeCause::Resync, vec![]));
    assert_eq!(
        String::from_utf8(hook.next().await.body).expect("utf-8"),
        r#"{"scope":"all","mediaPathPrefix":"/mnt/library","directories":[]}"#
    );
}

#[tokio::test]
async fn a_program_receives_the_directories_as_arguments_and_on_stdin() {
    let directory = tempfile::tempdir().expect("tempdir");
    let done = directory.path().join("done");
    let output = directory.path().join("output");
    let status = std::process::Command::new("mkfifo")
        .arg(&done)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let script = directory.path().join("on-change.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ echo \"scope=$METAFUSE_NOTIFY_SCOPE\"; for a in \"$@\"; do echo \"arg=$a\"; done; \
             while IFS= read -r line; do echo \"stdin=$line\"; done; }} > '{output}'\necho done > '{done}'\n",
            output = output.display(),
            done = done.display(),
        ),
    )
    .expect("script");
    let status = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    assert!(status.success());

    let notifier = Notifier::spawn(config(&format!("exec={}", script.display())), PREFIX);
    notifier.push(new_show_batch());
    notifier.push(batch(
        ChangeCause::Event,
        vec![change(
            PathChangeKind::Added,
            "Movies/Heat (1995)/Heat.mkv",
            false,
        )],
    ));
    // Opening the FIFO waits for the program to write to it.
    let signal = tokio::time::timeout(PATIENCE, tokio::fs::read(&done))
        .await
        .expect("the program ran")
        .expect("fifo");
    assert_eq!(signal, b"done\n");
    assert_eq!(
        std::fs::read_to_string(&output).expect("output"),
        "scope=directories\n\
         arg=/mnt/library/Movies/Heat (1995)\n\
         arg=/mnt/library/TV Shows/Dark\n\
         stdin=/mnt/library/Movies/Heat (1995)\n\
         stdin=/mnt/library/TV Shows/Dark\n"
    );
    let metrics = notifier.metrics();
    assert_eq!(metrics.failed, 0, "{metrics:?}");
}

#[tokio::test]
async fn shutdown_sends_what_is_pending_at_once() {
    let mut hook = plain_server().await;
    let mut config = config(&format!("webhook={}", hook.url()));
    config.debounce = Duration::from_secs(3_600);
    let notifier = Notifier::spawn(config, PREFIX);
    notifier.push(new_show_batch());
    let shutdown = tokio::spawn(notifier.shutdown());
    let request = hook.next().await;
    assert!(String::from_utf8_lossy(&request.body).contains("TV Shows/Dark"));
    shutdown.await.expect("shutdown");
}

#[tokio::test]
async fn without_targets_nothing_runs() {
    let notifier = Notifier::spawn(NotifyConfig::default(), PREFIX);
    assert!(!notifier.is_enabled());
    notifier.push(new_show_batch());
    assert_eq!(notifier.metrics(), Default::default());
}

#[test]
fn the_toml_form_takes_strings_and_tables() {
    #[derive(serde::Deserialize)]
    struct File {
        notify: NotifyConfig,
    }
    let file: File = toml::from_str(
        r#"
        [notify]
        targets = [
            "plex=http://plex:32400,token=T",
            { kind = "jellyfin", url = "http://jf:8096", key = "K" },
            { kind = "exec", program = "/usr/local/bin/on-change" },
        ]
        debounce_ms = 2000
        max_directories = 10
        "#,
    )
    .expect("valid toml");
    assert_eq!(file.notify.targets.len(), 3);
    assert_eq!(file.notify.debounce, Duration::from_secs(2));
    assert_eq!(file.notify.max_directories, 10);
    assert_eq!(
        file.notify.max_attempts,
        NotifyConfig::default().max_attempts
    );

    let error = toml::from_str::<File>(
        r#"
        [notify]
        targets = [{ kind = "plex", url = "https://plex", token = "T" }]
        "#,
    )
    .err()
    .expect("https refused");
    assert!(error.to_string().contains("https"), "{error}");
}
