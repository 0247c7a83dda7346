//! The meta-core double against spec §9, row by row, over a real redis-server.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hyper::Method;
use metafuse_http::{HttpClient, HttpClientConfig, StreamingResponse};
use metafuse_testkit::{DoubleMode, MetaCoreDouble, MetaCoreDoubleConfig, RedisServer, Writer};

/// Failure guard only: awaited events normally arrive in milliseconds.
const GUARD: Duration = Duration::from_secs(30);

fn client() -> HttpClient {
    HttpClient::new(HttpClientConfig::default())
}

fn fast(redis: &RedisServer) -> MetaCoreDoubleConfig {
    MetaCoreDoubleConfig {
        read_block: Duration::from_millis(50),
        ..MetaCoreDoubleConfig::new(redis.url())
    }
}

/// Reads the stream until its text contains `needle`; returns all text read.
async fn read_until(stream: &mut StreamingResponse, text: &mut String, needle: &str) {
    tokio::time::timeout(GUARD, async {
        while !text.contains(needle) {
            let chunk = stream
                .next_chunk()
                .await
                .unwrap()
                .expect("stream still open");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in {text:?}"));
}

async fn open_events(double: &MetaCoreDouble, last_event_id: Option<&str>) -> StreamingResponse {
    let headers: Vec<(&str, &str)> = last_event_id
        .map(|id| vec![("last-event-id", id)])
        .unwrap_or_default();
    client()
        .open(
            Method::GET,
            &format!("{}/api/events/meta", double.url()),
            &headers,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn urls_health_and_the_meta_routes() {
    let redis = RedisServer::start().unwrap();
    let mut connection = redis.client().get_connection().unwrap();
    Writer::new(&mut connection, "")
        .set_file(
            "h1",
            &[
                ("filePath", "a/b.mkv"),
                ("title", "Heat"),
                ("titles/eng", "Heat EN"),
            ],
        )
        .set("h1", "genre", "")
        .set("h2", "title", "Up")
        .flush()
        .unwrap();
    let double = MetaCoreDouble::start(fast(&redis)).await.unwrap();
    let client = client();
    let base = double.url();

    let urls: serde_json::Value = client.get_json(&format!("{base}/urls")).await.unwrap();
    assert_eq!(urls["redisUrl"], "");
    assert_eq!(urls["apiUrl"], base);
    assert_eq!(urls["webdavUrlInternal"], format!("{base}/webdav"));
    let health: serde_json::Value = client.get_json(&format!("{base}/health")).await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["redis"], true);

    let meta: serde_json::Value = client.get_json(&format!("{base}/meta")).await.unwrap();
    let mut hash_ids: Vec<String> = serde_json::from_value(meta["hashIds"].clone()).unwrap();
    hash_ids.sort();
    assert_eq!(hash_ids, ["h1", "h2"]);
    assert_eq!(meta["count"], 2);

    let document: serde_json::Value = client.get_json(&format!("{base}/meta/h1")).await.unwrap();
    assert_eq!(document["hashId"], "h1");
    assert_eq!(document["metadata"]["titles/eng"], "Heat EN");
    assert_eq!(document["metadata"]["filePath"], "a/b.mkv");

    let unknown = client.get(&format!("{base}/meta/nope"), &[]).await.unwrap();
    assert_eq!(unknown.status, 404);
    let envelope: serde_json::Value = serde_json::from_slice(&unknown.body).unwrap();
    assert_eq!(envelope["error"], "unknown_root");

    let title = client
        .get(&format!("{base}/meta/h1/title"), &[])
        .await
        .unwrap();
    assert_eq!((title.status, &title.body[..]), (200, &b"Heat"[..]));
    assert!(
        title
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let nested = client
        .get(&format!("{base}/meta/h1/titles/eng"), &[])
        .await
        .unwrap();
    assert_eq!(&nested.body[..], b"Heat EN");
    // 404 both for a missing key and for an empty value.
    for missing in ["h1/genre", "h1/nothing", "h9/title"] {
        let reply = client
            .get(&format!("{base}/meta/{missing}"), &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 404, "{missing}");
    }
}

#[tokio::test]
async fn events_are_framed_as_meta_core_frames_them_and_resume_strictly_after() {
    let redis = RedisServer::start().unwrap();
    let mut connection = redis.client().get_connection().unwrap();
    let first = Writer::new(&mut connection, "")
        .with_timestamp_ms(1747999999999)
        .set("h1", "title", "A")
        .flush()
        .unwrap()
        .unwrap();
    let second = Writer::new(&mut connection, "")
        .with_timestamp_ms(1747999999999)
        .del("h1", "title")
        .flush()
        .unwrap()
        .unwrap();
    let double = MetaCoreDouble::start(fast(&redis)).await.unwrap();

    let mut stream = open_events(&double, Some(&first)).await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.headers.get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut text = String::new();
    read_until(&mut stream, &mut text, "\n\n").await;
    assert_eq!(
        text,
        format!(
            "id: {second}\nevent: del\ndata: {{\"key\":\"file:h1/title\",\"ts\":\"1747999999999\"}}\n\n"
        )
    );

    // Without Last-Event-ID: only what is added after the server's first
    // read. Write until something arrives; nothing written before the
    // stream opened may appear.
    let mut live = open_events(&double, None).await;
    let mut live_text = String::new();
    tokio::time::timeout(GUARD, async {
        let mut n = 0;
        while !live_text.contains("event: set") {
            n += 1;
            Writer::new(&mut connection, "")
                .set("h2", "title", &format!("v{n}"))
                .flush()
                .unwrap();
            if let Ok(Ok(Some(chunk))) =
                tokio::time::timeout(Duration::from_millis(200), live.next_chunk()).await
            {
                live_text.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        }
    })
    .await
    .unwrap();
    assert!(
        !live_text.contains(&first) && !live_text.contains(&second),
        "{live_text}"
    );
}

#[tokio::test]
async fn a_trimmed_or_unparsable_cursor_gets_a_gap_without_id_then_everything_retained() {
    let redis = RedisServer::start().unwrap();
    let mut connection = redis.client().get_connection().unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            Writer::new(&mut connection, "")
                .set("h1", "title", &format!("v{n}"))
                .flush()
                .unwrap()
                .unwrap(),
        );
    }
    let _: u64 = redis::cmd("XTRIM")
        .arg("meta:events")
        .arg("MAXLEN")
        .arg(2)
        .query(&mut connection)
        .unwrap();
    let double = MetaCoreDouble::start(fast(&redis)).await.unwrap();
    for cursor in [ids[0].as_str(), "0-0", "not-an-id"] {
        let mut stream = open_events(&double, Some(cursor)).await;
        let mut text = String::new();
        read_until(&mut stream, &mut text, &format!("id: {}\n", ids[4])).await;
        let expected_gap = format!(
            "event: gap\ndata: {{\"reason\":\"retention\",\"requested\":\"{cursor}\",\"resumeFrom\":\"{}\"}}\n\n",
            ids[3]
        );
        let gap: serde_json::Value = serde_json::from_str(
            text.strip_prefix("event: gap\ndata: ")
                .and_then(|rest| rest.split_once("\n\n"))
                .map(|(data, _)| data)
                .unwrap_or_else(|| panic!("no gap first in {text:?}")),
        )
        .unwrap();
        let expected: serde_json::Value = serde_json::from_str(
            expected_gap
                .strip_prefix("event: gap\ndata: ")
                .unwrap()
                .trim_end(),
        )
        .unwrap();
        assert_eq!(gap, expected);
        let after_gap = text.split_once("\n\n").unwrap().1;
        assert!(
            after_gap.starts_with(&format!("id: {}\n", ids[3])),
            "{text}"
        );
    }
}

#[tokio::test]
async fn silence_sends_a_keep_alive_comment() {
    let redis = RedisServer::start().unwrap();
    let double = MetaCoreDouble::start(MetaCoreDoubleConfig {
        keep_alive_after: Duration::from_millis(100),
        ..fast(&redis)
    })
    .await
    .unwrap();
    let mut stream = open_events(&double, None).await;
    let mut text = String::new();
    read_until(&mut stream, &mut text, ":keep-alive\n\n").await;
    assert_eq!(text, ":keep-alive\n\n");
}

#[tokio::test]
async fn storage_down_is_503_with_retry_after_and_closes_open_streams() {
    let mut redis = RedisServer::start().unwrap();
    let double = MetaCoreDouble::start(fast(&redis)).await.unwrap();
    let mut stream = open_events(&double, None).await;
    assert_eq!(stream.status, 200);
    redis.kill();
    let end = tokio::time::timeout(GUARD, async {
        loop {
            match stream.next_chunk().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "the stream closed");

    let refused = open_events(&double, None).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.retry_after, Some(Duration::from_secs(5)));
    let meta = client()
        .get(&format!("{}/meta", double.url()), &[])
        .await
        .unwrap();
    assert_eq!(meta.status, 503);
    let envelope: serde_json::Value = serde_json::from_slice(&meta.body).unwrap();
    assert_eq!(envelope["error"], "storage_unavailable");
    assert_eq!(envelope["retryable"], true);
    let health: serde_json::Value = client()
        .get_json(&format!("{}/health", double.url()))
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");
}

#[tokio::test]
async fn switches_answer_503_hang_stop_and_restart() {
    let redis = RedisServer::start().unwrap();
    let mut double = MetaCoreDouble::start(fast(&redis)).await.unwrap();
    let meta_url = format!("{}/meta", double.url());
    double.set_mode(DoubleMode::Unavailable);
    assert_eq!(client().get(&meta_url, &[]).await.unwrap().status, 503);

    double.set_mode(DoubleMode::Hang);
    let impatient = HttpClient::new(HttpClientConfig {
        response_timeout: Duration::from_millis(300),
        ..HttpClientConfig::default()
    });
    assert!(matches!(
        impatient.get(&meta_url, &[]).await,
        Err(metafuse_http::HttpError::TimedOut { .. })
    ));

    double.set_mode(DoubleMode::Normal);
    assert_eq!(client().get(&meta_url, &[]).await.unwrap().status, 200);
    double.stop();
    assert!(matches!(
        client().get(&meta_url, &[]).await,
        Err(metafuse_http::HttpError::Unreachable { .. })
    ));
    double.restart().await.unwrap();
    assert_eq!(client().get(&meta_url, &[]).await.unwrap().status, 200);
}

#[tokio::test]
async fn webdav_serves_ranges_of_the_files_directory() {
    let redis = RedisServer::start().unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("TV Shows")).unwrap();
    std::fs::write(files.path().join("TV Shows/a b.mkv"), b"0123456789").unwrap();
    let double = MetaCoreDouble::start(MetaCoreDoubleConfig {
        files_dir: Some(files.path().to_owned()),
        ..fast(&redis)
    })
    .await
    .unwrap();
    let url = format!("{}/webdav/TV%20Shows/a%20b.mkv", double.url());
    let client = client();
    let whole = client.get(&url, &[]).await.unwrap();
    assert_eq!((whole.status, &whole.body[..]), (200, &b"0123456789"[..]));
    let part = client.get(&url, &[("range", "bytes=2-4")]).await.unwrap();
    assert_eq!((part.status, &part.body[..]), (206, &b"234"[..]));
    assert_eq!(part.header("content-range"), Some("bytes 2-4/10"));
    let head = client.open(Method::HEAD, &url, &[]).await.unwrap();
    assert_eq!(head.headers.get("content-length").unwrap(), "10");
    let beyond = client.get(&url, &[("range", "bytes=10-")]).await.unwrap();
    assert_eq!(beyond.status, 416);
    let escape = client
        .get(&format!("{}/webdav/..%2Fetc%2Fpasswd", double.url()), &[])
        .await
        .unwrap();
    assert_ne!(escape.status, 200);
}
