//! Warm restarts from the checkpoint, both modes: stop, write more, start →
//! the exact state, caught up from the checkpoint; a checkpoint of another
//! Redis, from before a trim, or truncated → a full bootstrap, still exact,
//! and a truncated one reported.

mod api_mode_support;
mod support;

use api_mode_support::{
    Dirs, api_mode_config, converge, difference, dirs, redis_mode_config, start_double,
};
use metafuse_service::{Service, ServiceConfig};
use metafuse_testkit::{Library, LibrarySpec, RedisServer, Writer};
use support::{Api, http};

const CHECKPOINT_FILE: &str = "metafuse.checkpoint";

fn write_generated(connection: &mut redis::Connection, n_files: usize, seed: u64) {
    Library::generate(&LibrarySpec {
        n_files,
        seed,
        churn: true,
    })
    .write_all(connection, "", None)
    .expect("write library");
}

/// Changes made while the service is down: an add, a move, a delete and
/// more generated files.
fn write_while_stopped(connection: &mut redis::Connection) {
    Writer::new(connection, "")
        .set_file(
            "while-stopped",
            &[
                ("filePath", "lib/stopped.mkv"),
                ("title", "Written While Stopped"),
                ("fileType", "video"),
            ],
        )
        .flush()
        .expect("write");
    write_generated(connection, 40, 99);
}

/// Starts, converges, stops cleanly (which writes the checkpoint).
async fn run_once(config: ServiceConfig, connection: &mut redis::Connection) {
    let service = Service::start(config).await.expect("service starts");
    converge(&service, connection).await;
    service.shutdown().await;
}

fn checkpoint_exists(dirs: &Dirs) -> bool {
    dirs.state_dir.join(CHECKPOINT_FILE).is_file()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mode_restarts_from_the_checkpoint_and_catches_up() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let dirs = dirs();
    write_generated(&mut connection, 200, 1);
    run_once(redis_mode_config(&dirs, &redis.url()), &mut connection).await;
    assert!(checkpoint_exists(&dirs), "a clean shutdown writes it");

    write_while_stopped(&mut connection);
    let service = Service::start(redis_mode_config(&dirs, &redis.url()))
        .await
        .expect("warm start");
    assert_eq!(service.bootstrap_method().as_deref(), Some("checkpoint"));
    assert_eq!(service.checkpoint_problem(), None);
    converge(&service, &mut connection).await;
    let api = Api::start(&service).await;
    let (_, body) = http(api.address, "GET", "/api/fuse/stats", "").await;
    let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(stats["strategy"], "checkpoint", "{body}");
    assert_eq!(stats["source"]["mode"], "redis", "{body}");
    api.stop().await;
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_mode_restarts_from_the_checkpoint_and_catches_up() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let dirs = dirs();
    write_generated(&mut connection, 200, 2);
    let double = start_double(&redis.url(), &dirs.files_root).await;
    run_once(api_mode_config(&dirs, &double.url()), &mut connection).await;
    assert!(checkpoint_exists(&dirs));

    write_while_stopped(&mut connection);
    let meta_reads_before = double
        .requests()
        .iter()
        .filter(|request| request.starts_with("GET /meta"))
        .count();
    let service = Service::start(api_mode_config(&dirs, &double.url()))
        .await
        .expect("warm start");
    assert_eq!(service.bootstrap_method().as_deref(), Some("checkpoint"));
    converge(&service, &mut connection).await;
    // Caught up from the stream, not by reading the whole library again.
    let index_reads = double
        .requests()
        .iter()
        .skip(meta_reads_before)
        .filter(|request| request.as_str() == "GET /meta")
        .count();
    assert_eq!(index_reads, 0, "no full bootstrap: {:?}", double.requests());
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_redis_or_from_before_a_trim_means_a_full_bootstrap() {
    let first = RedisServer::start().expect("redis");
    let mut first_connection = first.client().get_connection().expect("connect");
    let dirs = dirs();
    write_generated(&mut first_connection, 100, 4);
    run_once(
        redis_mode_config(&dirs, &first.url()),
        &mut first_connection,
    )
    .await;
    assert!(checkpoint_exists(&dirs));

    // Another Redis (another run_id) with other data.
    let second = RedisServer::start().expect("redis");
    let mut second_connection = second.client().get_connection().expect("connect");
    write_generated(&mut second_connection, 80, 5);
    let service = Service::start(redis_mode_config(&dirs, &second.url()))
        .await
        .expect("start");
    assert_ne!(service.bootstrap_method().as_deref(), Some("checkpoint"));
    assert_eq!(difference(&service, &mut second_connection), None);
    service.shutdown().await;

    // Back to the first, checkpointed just now against the second: foreign.
    run_once(
        redis_mode_config(&dirs, &first.url()),
        &mut first_connection,
    )
    .await;
    // A checkpoint of the first, then the stream trimmed past it.
    write_while_stopped(&mut first_connection);
    let _: u64 = redis::cmd("XTRIM")
        .arg("meta:events")
        .arg("MAXLEN")
        .arg(1)
        .query(&mut first_connection)
        .expect("trim");
    let service = Service::start(redis_mode_config(&dirs, &first.url()))
        .await
        .expect("start");
    assert_ne!(service.bootstrap_method().as_deref(), Some("checkpoint"));
    assert_eq!(difference(&service, &mut first_connection), None);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_checkpoint_is_reported_and_ignored() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let dirs = dirs();
    write_generated(&mut connection, 100, 6);
    run_once(redis_mode_config(&dirs, &redis.url()), &mut connection).await;
    let path = dirs.state_dir.join(CHECKPOINT_FILE);
    let bytes = std::fs::read(&path).expect("checkpoint");
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).expect("truncate");

    write_while_stopped(&mut connection);
    let service = Service::start(redis_mode_config(&dirs, &redis.url()))
        .await
        .expect("start");
    assert_ne!(service.bootstrap_method().as_deref(), Some("checkpoint"));
    let problem = service.checkpoint_problem().expect("reported");
    assert!(problem.contains("truncated"), "{problem}");
    assert_eq!(difference(&service, &mut connection), None);
    let api = Api::start(&service).await;
    let (_, body) = http(api.address, "GET", "/api/fuse/stats", "").await;
    let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        stats["checkpointProblem"]
            .as_str()
            .is_some_and(|problem| problem.contains("truncated")),
        "{body}"
    );
    api.stop().await;
    // The next clean stop replaces it with a good one.
    service.shutdown().await;
    let service = Service::start(redis_mode_config(&dirs, &redis.url()))
        .await
        .expect("start");
    assert_eq!(service.bootstrap_method().as_deref(), Some("checkpoint"));
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_checkpoint_serves_a_restart_after_an_unclean_stop() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    let dirs = dirs();
    write_generated(&mut connection, 100, 8);
    let mut config = redis_mode_config(&dirs, &redis.url());
    config.checkpoint_interval = std::time::Duration::from_millis(100);
    let service = Service::start(config).await.expect("start");
    converge(&service, &mut connection).await;
    let written = service.checkpoints_written();
    tokio::time::timeout(
        api_mode_support::GUARD,
        service.wait_for_checkpoint(written),
    )
    .await
    .expect("a periodic checkpoint");
    // No shutdown: as if the process were killed.
    drop(service);
    assert!(checkpoint_exists(&dirs));
    write_while_stopped(&mut connection);
    let service = Service::start(redis_mode_config(&dirs, &redis.url()))
        .await
        .expect("warm start");
    assert_eq!(service.bootstrap_method().as_deref(), Some("checkpoint"));
    converge(&service, &mut connection).await;
    service.shutdown().await;
}
