//! Starting before Redis: the service waits for it instead of exiting, and a
//! Redis that can never work (a malformed URL) is an error at once.

mod support;

use std::time::Duration;

use metafuse_service::{Service, ServiceConfig};
use metafuse_testkit::RedisServer;
use support::set;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_before_its_redis_waits_for_it() {
    let scratch = tempfile::tempdir().expect("scratch");
    let mut redis = RedisServer::start_persistent().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    set(
        &mut connection,
        "feedc0de00000001",
        "filePath",
        "watch/Heat.mkv",
    );
    set(&mut connection, "feedc0de00000001", "title", "Heat");
    drop(connection);
    redis.kill();

    let mut config = ServiceConfig::new(scratch.path().join("renaming-rules.json"), scratch.path());
    config.discovery.redis_url = Some(redis.url());
    let mut starting = tokio::spawn(Service::start(config));
    // While Redis is down the start must neither fail nor finish. This bound
    // is not a speed threshold: a broken service fails at the first refused
    // connection, well inside it, whatever the machine.
    let still_waiting = tokio::time::timeout(Duration::from_millis(500), &mut starting).await;
    assert!(
        still_waiting.is_err(),
        "start ended without redis: {still_waiting:?}"
    );

    redis.restart().expect("redis again");
    let service = tokio::time::timeout(Duration::from_secs(60), starting)
        .await
        .expect("start finishes once redis is back")
        .expect("start task")
        .expect("service starts");
    assert_eq!(service.library().read().file_count(), 1);
    service.shutdown().await;
}

#[tokio::test]
async fn a_malformed_redis_url_is_an_error_at_once() {
    let scratch = tempfile::tempdir().expect("scratch");
    let mut config = ServiceConfig::new(scratch.path().join("renaming-rules.json"), scratch.path());
    config.discovery.redis_url = Some("redis://127.0.0.1:not-a-port/".to_owned());
    let error = tokio::time::timeout(Duration::from_secs(60), Service::start(config))
        .await
        .expect("no waiting on a url that can never work")
        .expect_err("a malformed url is an error");
    assert!(error.to_string().contains("invalid redis url"), "{error}");
}
