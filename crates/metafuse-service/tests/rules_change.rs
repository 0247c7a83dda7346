//! A rules change as `PUT /api/rules` makes it: what the new rules need is
//! fetched, the tree and the projection switch together, and nested keys
//! under a newly relevant name arrive right after.

mod support;

use metafuse_service::{Service, ServiceConfig};
use metafuse_testkit::RedisServer;
use serde_json::json;
use support::set;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newly_relevant_names_and_their_nested_keys_are_fetched_and_dropped_ones_forgotten() {
    let redis = RedisServer::start().expect("redis");
    let mut connection = redis.client().get_connection().expect("connect");
    for (property, value) in [
        ("title", "Heat"),
        ("movieYear", "1995"),
        ("fileType", "video"),
        ("extension", "mkv"),
        ("genre", "Crime"),
        ("genre/second", "Thriller"),
        ("filePath", "watch/Heat.mkv"),
    ] {
        set(&mut connection, "aaaa0001", property, value);
    }
    let directory = tempfile::tempdir().expect("tempdir");
    let rules_file = directory.path().join("renaming-rules.json");
    let mut config = ServiceConfig::new(&rules_file, directory.path().join("files"));
    config.discovery.redis_url = Some(redis.url());
    let service = Service::start(config).await.expect("service starts");
    let library = service.library();
    {
        let library = library.read();
        let file = library.projection().file("aaaa0001").expect("known");
        assert_eq!(file.get("genre"), None, "not relevant to the default rules");
        assert_eq!(file.get("movieYear"), Some("1995"));
    }

    let document = json!({"version": 1, "rules": [{"id": "by-genre", "name": "By genre",
        "enabled": true, "priority": 10, "conditions": {"operator": "AND", "conditions": []},
        "template": "Genres/{genre}/{title}.{extension}", "fallbackToUnsorted": true}]});
    service
        .backend()
        .put_rules(document)
        .await
        .expect("rules applied");
    {
        // In force together: the new tree and the properties it was built from.
        let library = library.read();
        assert_eq!(library.file_paths(), vec!["/Genres/Crime/Heat.mkv"]);
        let file = library.projection().file("aaaa0001").expect("known");
        assert_eq!(file.get("genre"), Some("Crime"));
        assert_eq!(file.get("movieYear"), None, "only the old rules needed it");
        assert_eq!(file.get("title"), Some("Heat"));
    }
    // Commands run in order on the state task: once this one is answered,
    // the nested keys fetched after the rules change are applied.
    let _ = service.write_checkpoint().await;
    let library_now = library.read();
    let file = library_now.projection().file("aaaa0001").expect("known");
    assert_eq!(file.get("genre/second"), Some("Thriller"));
    assert_eq!(library_now.file_paths(), vec!["/Genres/Crime/Heat.mkv"]);
    drop(library_now);
    service.shutdown().await;
}
