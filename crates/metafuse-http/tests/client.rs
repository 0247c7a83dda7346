//! The client against small raw-TCP HTTP servers on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::Method;
use metafuse_http::{HttpClient, HttpClientConfig, HttpError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Serves every request on every connection with `answer(path)`; counts
/// accepted connections.
async fn serve(
    answer: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(request_line)) = lines.next_line().await {
                    let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.is_empty() {
                            break;
                        }
                    }
                    // None: accept and never answer (a hung server).
                    let Some(reply) = answer(&path) else {
                        std::future::pending::<()>().await;
                        return;
                    };
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, connections)
}

fn reply(status: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

fn client(response_timeout: Duration) -> HttpClient {
    HttpClient::new(HttpClientConfig {
        response_timeout,
        ..HttpClientConfig::default()
    })
}

#[tokio::test]
async fn json_gets_reuse_one_keep_alive_connection() {
    let (url, connections) = serve(|_| Some(reply("200 OK", "", r#"{"count":2}"#))).await;
    let client = client(Duration::from_secs(30));
    for _ in 0..5 {
        let value: serde_json::Value = client.get_json(&format!("{url}/meta")).await.expect("json");
        assert_eq!(value["count"], 2);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_503_carries_status_and_retry_after() {
    let (url, _) =
        serve(|_| Some(reply("503 Service Unavailable", "retry-after: 5\r\n", "{}"))).await;
    let error = client(Duration::from_secs(30))
        .get_json::<serde_json::Value>(&format!("{url}/meta"))
        .await
        .expect_err("503");
    assert_eq!(error.status(), Some(503));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    assert!(
        error.to_string().contains(&format!("{url}/meta")),
        "{error}"
    );
}

#[tokio::test]
async fn bad_json_and_refused_connections_are_typed_errors() {
    let (url, _) = serve(|_| Some(reply("200 OK", "", "not json"))).await;
    let client = client(Duration::from_secs(30));
    assert!(matches!(
        client.get_json::<serde_json::Value>(&url).await,
        Err(HttpError::BadBody { .. })
    ));
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_url = format!(
        "http://user:secret@{}/x",
        closed.local_addr().expect("addr")
    );
    drop(closed);
    let error = client.get(&closed_url, &[]).await.expect_err("refused");
    assert!(matches!(error, HttpError::Unreachable { .. }), "{error}");
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let (url, _) = serve(|_| None).await;
    let error = client(Duration::from_millis(200))
        .get(&url, &[])
        .await
        .expect_err("hung");
    assert!(matches!(error, HttpError::TimedOut { .. }), "{error}");
}

#[tokio::test]
async fn a_streamed_body_arrives_chunk_by_chunk_with_headers_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    let (send_chunk, mut chunks_to_send) = mpsc::channel::<String>(4);
    let (request_headers, mut seen_headers) = mpsc::channel::<Vec<String>>(1);
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut headers = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.is_empty() {
                break;
            }
            headers.push(line.to_ascii_lowercase());
        }
        request_headers.send(headers).await.expect("headers");
        write
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n")
            .await
            .expect("head");
        while let Some(chunk) = chunks_to_send.recv().await {
            let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
            write.write_all(framed.as_bytes()).await.expect("chunk");
        }
        write.write_all(b"0\r\n\r\n").await.expect("end");
    });
    let client = client(Duration::from_secs(30));
    let mut response = client
        .open(Method::GET, &url, &[("last-event-id", "5-0")])
        .await
        .expect("open");
    assert_eq!(response.status, 200);
    assert!(
        seen_headers
            .recv()
            .await
            .expect("headers")
            .contains(&"last-event-id: 5-0".to_owned())
    );
    for text in ["id: 1\n", "data: {}\n\n"] {
        send_chunk.send(text.to_owned()).await.expect("send");
        let chunk = response.next_chunk().await.expect("chunk").expect("some");
        assert_eq!(chunk, text.as_bytes());
    }
    drop(send_chunk);
    assert_eq!(response.next_chunk().await.expect("end"), None);
}
