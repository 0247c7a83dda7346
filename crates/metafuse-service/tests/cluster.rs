//! The service on a real Redis Cluster (3 masters with a replica each, a
//! password) started on loopback: it bootstraps, shows live changes and
//! survives a failover of the master serving `meta:events` with its tree
//! exactly what the cluster holds; health, stats and `/metrics` name the
//! cluster's masters and what was fetched from each. Where FUSE works, the
//! mount shows the same tree.

mod support;

use std::collections::BTreeSet;

use metafuse_api::TopologyState;
use metafuse_service::{Service, ServiceConfig};
use metafuse_testkit::{Library, LibrarySpec, RedisCluster, write_library_to_cluster};
use support::{Api, MountGuard, expected_paths, http, mounted_paths, service_paths};

/// The cluster's masters as health reports them, and whether each was
/// fetched from.
fn reported_masters(topology: &TopologyState) -> BTreeSet<(String, bool)> {
    topology
        .nodes
        .iter()
        .filter(|node| node.role == "master")
        .map(|node| {
            (
                node.address.clone(),
                node.fetched_keys.is_some_and(|n| n > 0),
            )
        })
        .collect()
}

fn master_addresses(cluster: &RedisCluster) -> BTreeSet<String> {
    cluster
        .master_ports()
        .expect("masters")
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_follows_a_cluster_through_a_failover_with_an_exact_tree() {
    let mount_unavailable = metafuse_testkit::fuse_unavailable();
    if let Some(reason) = &mount_unavailable {
        assert!(!metafuse_testkit::fuse_required(), "{reason}");
        metafuse_testkit::report_fuse_skip(&format!("the mount part: {reason}"));
    }
    let cluster = RedisCluster::start(3, 1, Some("s3cret")).expect("cluster");
    let library = Library::generate(&LibrarySpec {
        churn: true,
        ..LibrarySpec::new(400)
    });
    let n_writes = library.writes.len();
    let (first, second) = (n_writes / 2, n_writes * 3 / 4);
    let mut writer = cluster.connection().expect("cluster connection");
    write_library_to_cluster(&mut writer, &library, "", 0..first).expect("write");

    let directory = tempfile::tempdir().expect("tempdir");
    let files_root = directory.path().join("files");
    let mountpoint = directory.path().join("mnt");
    std::fs::create_dir_all(&files_root).expect("mkdir files");
    std::fs::create_dir_all(&mountpoint).expect("mkdir mnt");
    let mut config = ServiceConfig::new(directory.path().join("rules.json"), &files_root);
    config.discovery.redis_url = Some(cluster.url());
    let service = Service::start(config).await.expect("service starts");
    let guard: Option<MountGuard> = mount_unavailable
        .is_none()
        .then(|| support::mount(&service, &mountpoint, &files_root));
    let check_tree = |service: &Service, cluster: &RedisCluster| {
        let want = expected_paths(&cluster.read_truth("").expect("truth"));
        assert!(want.len() > 100, "{} files", want.len());
        assert_eq!(service_paths(service), want);
        if guard.is_some() {
            assert_eq!(mounted_paths(&mountpoint), want);
        }
    };

    // Bootstrap: exactly what the cluster holds, fetched from every master.
    check_tree(&service, &cluster);
    let backend = service.backend();
    let topology = backend.health().source.topology.expect("a topology");
    assert_eq!(topology.mode, "cluster");
    let masters = master_addresses(&cluster);
    assert_eq!(
        reported_masters(&topology),
        masters
            .iter()
            .map(|address| (address.clone(), true))
            .collect(),
        "{topology:?}"
    );
    assert_eq!(backend.stats().source.topology, Some(topology));
    let api = Api::start(&service).await;
    let (status, metrics) = http(api.address, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("metafuse_redis_mode{mode=\"cluster\"} 1\n"),
        "{metrics}"
    );
    for address in &masters {
        let sample = format!("metafuse_redis_node_fetched_keys_total{{node=\"{address}\"}} ");
        assert!(metrics.contains(&sample), "no {sample:?} in {metrics}");
    }

    // Live: writes after the bootstrap show.
    let last = write_library_to_cluster(&mut writer, &library, "", first..second)
        .expect("write")
        .expect("an entry");
    service.wait_until_applied(&last).await;
    check_tree(&service, &cluster);

    // The master serving the stream fails over and is killed; the service
    // follows the new one and converges on what the cluster holds.
    let old_master = cluster.master_of("meta:events").expect("owner");
    let (cluster, new_master) = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let new_master = cluster
            .fail_over_master_of("meta:events")
            .expect("failover");
        (cluster, new_master)
    })
    .await
    .expect("failover task");
    assert_ne!(old_master, new_master);
    let mut writer = cluster.connection().expect("cluster connection");
    let last = write_library_to_cluster(&mut writer, &library, "", second..n_writes)
        .expect("write")
        .expect("an entry");
    service.wait_until_applied(&last).await;
    service.wait_for_liveness(|reason| reason.is_none()).await;
    check_tree(&service, &cluster);
    let topology = backend.health().source.topology.expect("a topology");
    let serving: BTreeSet<String> = reported_masters(&topology)
        .into_iter()
        .map(|(address, _)| address)
        .collect();
    assert_eq!(serving, master_addresses(&cluster), "{topology:?}");
    assert!(
        serving.contains(&format!("127.0.0.1:{new_master}")),
        "{topology:?}"
    );

    api.stop().await;
    match guard {
        Some(guard) => support::stop(service, guard).await,
        None => service.shutdown().await,
    }
}
