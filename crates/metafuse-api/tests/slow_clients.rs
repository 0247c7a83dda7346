//! Slow-body clients cannot take the API's memory or its connections: 300
//! of them each announce a large body and send all of it but the last byte.
//! Memory stays bounded (the figures are printed), other requests are
//! answered or refused with 503 while they hold on, and the API answers
//! again once they go. A body that never completes is cut off.

mod support;

use std::sync::Arc;
use std::time::Duration;

use metafuse_api::{ApiConfig, serve_with};
use support::FixedTree;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Failure guard only.
const GUARD: Duration = Duration::from_secs(60);
const N_CLIENTS: usize = 300;

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

async fn start(config: ApiConfig) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_with(
        listener,
        Arc::new(FixedTree::new()),
        config,
        async {
            let _ = stopped.await;
        },
    ));
    (address, stop)
}

/// `GET /api/fuse/stats`'s status code, or `None` when the connection was
/// closed without an answer.
async fn stats_status(address: std::net::SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    stream
        .write_all(b"GET /api/fuse/stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    String::from_utf8_lossy(&response)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Announces `length` bytes and sends all but the last; returns the
/// connection while the server still holds it open.
async fn slow_client(
    address: std::net::SocketAddr,
    length: usize,
    body: Arc<Vec<u8>>,
) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    let head = format!(
        "PUT /api/fuse/rules HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    // A refused client's writes fail once the server closes: that is the point.
    stream.write_all(&body[..length - 1]).await.ok()?;
    Some(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_slow_body_clients_stay_bounded_and_the_api_recovers() {
    let (address, stop) = start(ApiConfig::default()).await;
    assert_eq!(stats_status(address).await, Some(200));
    let before = resident_bytes();

    // Half announce 4 MB minus one byte (the report's attack), half just
    // under the body limit (admitted until the shared budget is used up).
    let body = Arc::new(vec![b' '; 4_000_000]);
    let mut clients = Vec::new();
    for index in 0..N_CLIENTS {
        let length = if index % 2 == 0 { 4_000_000 } else { 2_000_000 };
        clients.push(tokio::spawn(slow_client(address, length, body.clone())));
    }
    let mut held = Vec::new();
    tokio::time::timeout(GUARD, async {
        for client in clients {
            if let Some(stream) = client.await.expect("client task") {
                held.push(stream);
            }
        }
    })
    .await
    .expect("every client sent what it could");
    let during = resident_bytes();
    let growth = during.saturating_sub(before);
    eprintln!(
        "slow clients: rss before {} MiB, with {N_CLIENTS} slow clients {} MiB (+{} MiB); {} connections still held",
        before / (1 << 20),
        during / (1 << 20),
        growth / (1 << 20),
        held.len()
    );
    // Unbounded, 300 × ~3 MB would be ~900 MB; the budget is 32 MiB.
    assert!(
        growth < 160 * 1024 * 1024,
        "rss grew by {} MiB",
        growth / (1 << 20)
    );
    // Meanwhile: an answer or a clear 503, never a hang.
    let status = tokio::time::timeout(GUARD, stats_status(address))
        .await
        .expect("answered while slow clients hold on");
    assert!(matches!(status, Some(200 | 503)), "{status:?}");

    // They go; the API answers again.
    drop(held);
    tokio::time::timeout(GUARD, async {
        loop {
            if stats_status(address).await == Some(200) {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the api recovered");
    let _ = stop.send(());
}

#[tokio::test]
async fn a_body_that_never_completes_is_cut_off() {
    let (address, stop) = start(ApiConfig {
        body_read_timeout: Duration::from_millis(200),
        ..ApiConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(b"PUT /api/fuse/rules HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"conf")
        .await
        .expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut response))
        .await
        .expect("the server gave up on the body")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let _ = stop.send(());
}

#[tokio::test]
async fn connections_over_the_cap_get_503_at_once() {
    let (address, stop) = start(ApiConfig {
        max_connections: 4,
        ..ApiConfig::default()
    })
    .await;
    // Four idle connections take every slot (they have sent nothing yet).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(address).await.expect("connect"));
    }
    // The listener accepts in order: a fifth connection is over the cap
    // once the four are accepted, which a served request proves.
    let mut first = idle.remove(0);
    first
        .write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("send");
    let mut buffer = [0u8; 12];
    first.read_exact(&mut buffer).await.expect("answer");
    idle.insert(0, first);
    assert_eq!(stats_status(address).await, Some(503));
    drop(idle);
    tokio::time::timeout(GUARD, async {
        while stats_status(address).await != Some(200) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("slots freed");
    let _ = stop.send(());
}
