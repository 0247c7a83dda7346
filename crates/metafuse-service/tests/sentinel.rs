//! The service on a real Redis Sentinel deployment (one master, one replica,
//! three sentinels, a password) started on loopback, through a
//! `redis+sentinel://` URL: it bootstraps, shows live changes and follows a
//! `SENTINEL FAILOVER` during the tail, writes made on the new master
//! included, with its tree exactly what the master holds; health names the
//! deployment and its current master. Where FUSE works, the mount shows the
//! same tree.

mod support;

use metafuse_api::TopologyState;
use metafuse_service::{Service, ServiceConfig};
use metafuse_testkit::{Library, LibrarySpec, RedisSentinels, Writer, read_truth};
use support::{MountGuard, expected_paths, mounted_paths, service_paths};

/// Writes `library.writes[range]` to the current master, then one more
/// film titled `marker` (which the default rules show under that title),
/// and returns the event id of that last write.
fn write_phase(
    sentinels: &RedisSentinels,
    library: &Library,
    range: std::ops::Range<usize>,
    marker: &str,
) -> String {
    let mut writer = sentinels.master_connection().expect("master connection");
    library
        .write_range(&mut writer, "", range, None)
        .expect("write");
    let hash_id = marker.to_lowercase().replace(' ', "-");
    let file_path = format!("downloads/{hash_id}.mkv");
    Writer::new(&mut writer, "")
        .set_file(
            &hash_id,
            &[
                ("title", marker),
                ("fileType", "video"),
                ("extension", "mkv"),
                ("size", "1"),
                ("filePath", &file_path),
            ],
        )
        .flush()
        .expect("write")
        .expect("event id")
}

/// The deployment's mode and its nodes, `(address, role)`, as health
/// reports them.
fn reported(topology: &TopologyState) -> (&str, Vec<(&str, &str)>) {
    let nodes = topology
        .nodes
        .iter()
        .map(|node| (node.address.as_str(), node.role.as_str()))
        .collect();
    (topology.mode.as_str(), nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_follows_a_sentinel_failover_with_an_exact_tree() {
    let mount_unavailable = metafuse_testkit::fuse_unavailable();
    if let Some(reason) = &mount_unavailable {
        assert!(!metafuse_testkit::fuse_required(), "{reason}");
        metafuse_testkit::report_fuse_skip(&format!("the mount part: {reason}"));
    }
    let sentinels = RedisSentinels::start(Some("s3cret")).expect("sentinels");
    let library = Library::generate(&LibrarySpec {
        churn: true,
        ..LibrarySpec::new(400)
    });
    let n_writes = library.writes.len();
    let (first, second) = (n_writes / 2, n_writes * 3 / 4);
    write_phase(&sentinels, &library, 0..first, "Sentinel Marker Start");

    let directory = tempfile::tempdir().expect("tempdir");
    let files_root = directory.path().join("files");
    let mountpoint = directory.path().join("mnt");
    std::fs::create_dir_all(&files_root).expect("mkdir files");
    std::fs::create_dir_all(&mountpoint).expect("mkdir mnt");
    let mut config = ServiceConfig::new(directory.path().join("rules.json"), &files_root);
    config.discovery.redis_url = Some(sentinels.url());
    let service = Service::start(config).await.expect("service starts");
    let guard: Option<MountGuard> = mount_unavailable
        .is_none()
        .then(|| support::mount(&service, &mountpoint, &files_root));
    // The truth is what the current master holds, read independently.
    let check_tree = |service: &Service, sentinels: &RedisSentinels, marker: &str| {
        let mut reader = sentinels.master_connection().expect("master connection");
        let want = expected_paths(&read_truth(&mut reader, "").expect("truth"));
        assert!(want.len() > 100, "{} files", want.len());
        assert!(
            want.iter().any(|path| path.contains(marker)),
            "no {marker} in {want:?}"
        );
        assert_eq!(service_paths(service), want);
        if guard.is_some() {
            assert_eq!(mounted_paths(&mountpoint), want);
        }
    };
    let master_address = |sentinels: &RedisSentinels| {
        format!("127.0.0.1:{}", sentinels.master_port().expect("master"))
    };

    // Bootstrap: exactly what the master holds; health names the sentinel
    // deployment and its master.
    check_tree(&service, &sentinels, "Sentinel Marker Start");
    let backend = service.backend();
    let topology = backend.health().source.topology.expect("a topology");
    assert_eq!(
        reported(&topology),
        (
            "sentinel",
            vec![(master_address(&sentinels).as_str(), "master")]
        ),
        "{topology:?}"
    );

    // Live: writes after the bootstrap show.
    let last = write_phase(&sentinels, &library, first..second, "Sentinel Marker Live");
    service.wait_until_applied(&last).await;
    check_tree(&service, &sentinels, "Sentinel Marker Live");

    // The replica holds every write the service applied (a forced failover
    // would lose what it had not received, which the service could not
    // know): `WAIT 1 0` blocks until it acknowledged them.
    let mut master = sentinels.master_connection().expect("master connection");
    let acknowledged: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(0)
        .query(&mut master)
        .expect("WAIT");
    assert_eq!(acknowledged, 1);
    drop(master);

    // `SENTINEL FAILOVER` during the tail: the service follows the new
    // master and shows the writes made on it.
    let old_master = master_address(&sentinels);
    let sentinels = tokio::task::spawn_blocking(move || {
        sentinels.fail_over().expect("failover");
        sentinels
    })
    .await
    .expect("failover task");
    let new_master = master_address(&sentinels);
    assert_ne!(old_master, new_master);
    let last = write_phase(
        &sentinels,
        &library,
        second..n_writes,
        "Sentinel Marker Switch",
    );
    service.wait_until_applied(&last).await;
    service.wait_for_liveness(|reason| reason.is_none()).await;
    check_tree(&service, &sentinels, "Sentinel Marker Switch");
    let topology = backend.health().source.topology.expect("a topology");
    assert_eq!(
        reported(&topology),
        ("sentinel", vec![(new_master.as_str(), "master")]),
        "{topology:?}"
    );

    match guard {
        Some(guard) => support::stop(service, guard).await,
        None => service.shutdown().await,
    }
}
