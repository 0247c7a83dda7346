//! `mount`: the real stack in-process — `metafuse-service` bootstrapping
//! from Redis and a `metafuse-fuse` mount fed by its invalidations, wired
//! as `metafuse mount` wires them — and the end-to-end figures of issue 4:
//!
//! - `find`: a full walk of a fresh mount (cold kernel caches);
//! - `latency`: from a writer's `XADD` returning to the new file being
//!   visible to `stat` through the mount;
//! - `read`: sequential `dd` of a large file directly and through the
//!   mount, with and without kernel passthrough.
//!
//! These are measurements, not tests: they print figures and the targets.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use metafuse_fuse::{MountHandle, MountOptions};
use metafuse_rules::{Metadata, Rules};
use metafuse_service::{RULES_FILE_NAME, RulesSource, Service, ServiceConfig};
use metafuse_testkit::Writer;
use parking_lot::RwLock;
use serde_json::json;
use tokio::runtime::Runtime;

/// One end-to-end measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// `find` over a fresh mount.
    Find,
    /// `XADD` to visible via `stat`.
    Latency,
    /// Sequential read directly and through the mount.
    Read,
}

/// What `metafuse-bench mount` was asked to do.
#[derive(Debug)]
pub(crate) struct MountBenchOptions {
    pub(crate) redis_url: String,
    pub(crate) prefix: String,
    pub(crate) preset: String,
    /// Source files (the big read file goes here); a temporary directory when `None`.
    pub(crate) files_root: Option<PathBuf>,
    /// A temporary directory when `None`.
    pub(crate) mountpoint: Option<PathBuf>,
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) latency_samples: usize,
    pub(crate) read_mib: u64,
    /// Timed reads of each kind; the fastest is reported.
    pub(crate) read_runs: usize,
    /// Empty the whole page cache before cold reads instead of evicting
    /// only the file read.
    pub(crate) drop_caches: bool,
    pub(crate) json: bool,
}

/// Targets of issue 4, printed next to the figures.
const TARGET_READ_RATIO: f64 = 0.90;
const TARGET_FIND_SECONDS: f64 = 2.0;
const TARGET_LATENCY_P99_MS: f64 = 10.0;

/// A probe not visible after this long counts as lost rather than hanging
/// the benchmark.
const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(10);

/// The mount currently serving the library, shared with the service's
/// invalidation sink. The sink only borrows it, so a scenario can unmount
/// and mount afresh (cold caches, other passthrough setting) while the
/// service keeps running.
pub(crate) type MountSlot = Arc<RwLock<Option<MountHandle>>>;

/// A mount that is unmounted when dropped, also on an early return after
/// Ctrl-C or an error.
pub(crate) struct LiveMount {
    slot: MountSlot,
    pub(crate) mountpoint: PathBuf,
}

impl LiveMount {
    pub(crate) fn mount(
        service: &Service,
        slot: &MountSlot,
        mountpoint: &Path,
        files_root: &Path,
        passthrough: bool,
    ) -> anyhow::Result<LiveMount> {
        let mut options = MountOptions::new(mountpoint, files_root);
        options.webdav_base_url = service.leader().webdav_url;
        options.passthrough = passthrough;
        let handle = metafuse_fuse::mount(service.library(), options)
            .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
        *slot.write() = Some(handle);
        Ok(LiveMount {
            slot: slot.clone(),
            mountpoint: mountpoint.to_owned(),
        })
    }

    fn passthrough_active(&self) -> bool {
        self.slot
            .read()
            .as_ref()
            .is_some_and(MountHandle::passthrough_active)
    }

    pub(crate) fn unmount(self) -> anyhow::Result<()> {
        self.unmount_in_place()
    }

    fn unmount_in_place(&self) -> anyhow::Result<()> {
        // Taken out first: unmounting waits for the session threads, which
        // must not find the sink blocked on this lock.
        let handle = self.slot.write().take();
        match handle {
            Some(handle) => handle
                .unmount()
                .with_context(|| format!("cannot unmount {}", self.mountpoint.display())),
            None => Ok(()),
        }
    }
}

impl Drop for LiveMount {
    fn drop(&mut self) {
        if let Err(error) = self.unmount_in_place() {
            eprintln!("warning: {error:#}");
        }
    }
}

/// Set by Ctrl-C; every loop checks it so the mounts are left cleanly.
#[derive(Clone, Debug, Default)]
pub(crate) struct Interrupted(pub(crate) Arc<AtomicBool>);

impl Interrupted {
    fn check(&self) -> anyhow::Result<()> {
        if self.0.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }
}

/// `find` figures.
#[derive(Debug)]
struct FindFigures {
    n_entries: usize,
    cold: Duration,
    warm: Duration,
}

/// Latency figures, sorted.
#[derive(Debug)]
pub(crate) struct LatencyFigures {
    /// From the writer's pipeline returning (the `XADD`s acknowledged).
    pub(crate) visible: Vec<Duration>,
    /// From just before the writer sent its pipeline: includes the
    /// writer's own round trip, an upper bound.
    visible_from_sent: Vec<Duration>,
    pub(crate) applied: Vec<Duration>,
    pub(crate) n_lost: usize,
}

/// The fastest of the `dd` pairs of one kind.
#[derive(Debug)]
pub(crate) struct ReadFigures {
    pub(crate) passthrough_wanted: bool,
    pub(crate) passthrough_active: bool,
    pub(crate) cache: ReadCache,
    pub(crate) direct: Duration,
    pub(crate) through_mount: Duration,
}

impl ReadFigures {
    /// GB/s (1e9 bytes) of the direct read and of the read through the mount.
    pub(crate) fn throughputs(&self, bytes: u64) -> (f64, f64) {
        (
            gigabytes_per_second(bytes, self.direct),
            gigabytes_per_second(bytes, self.through_mount),
        )
    }

    /// Throughput through the mount as a fraction of the direct read's.
    pub(crate) fn ratio(&self) -> f64 {
        self.direct.as_secs_f64() / self.through_mount.as_secs_f64().max(1e-9)
    }

    /// Whether the ratio meets issue 13's target for its kind of read.
    pub(crate) fn target_met(&self) -> bool {
        self.ratio() >= TARGET_READ_RATIO
    }
}

/// Every read figure of one run, with what they were measured on.
#[derive(Debug, Default)]
pub(crate) struct ReadReport {
    /// Size of the file read.
    pub(crate) bytes: u64,
    /// Timed reads of each kind; the fastest is kept.
    pub(crate) runs: usize,
    pub(crate) figures: Vec<ReadFigures>,
}

/// Where the bytes of a read come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadCache {
    /// Nothing cached: neither the source nor the mount's own pages.
    Cold(CacheEviction),
    /// The source in the page cache, the mount's own pages evicted: with
    /// passthrough the source's pages, without it every byte crosses FUSE.
    WarmSource,
    /// The same file read again, closed and opened in between, nothing
    /// evicted: without passthrough the mount's own pages (kept across
    /// opens of an unchanged file), with it the source's.
    Reread,
}

impl ReadCache {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            ReadCache::Cold(CacheEviction::DropCaches) => "cold (drop_caches)",
            ReadCache::Cold(CacheEviction::Fadvise) => "cold (fadvise DONTNEED)",
            ReadCache::WarmSource => "warm source",
            ReadCache::Reread => "re-read (page cache)",
        }
    }
}

/// How the page cache was emptied before a cold read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheEviction {
    /// `echo 3 > /proc/sys/vm/drop_caches`.
    DropCaches,
    /// `dd iflag=nocache count=0` (`POSIX_FADV_DONTNEED`) on the file read:
    /// the same for a sequential read of that file, without emptying the
    /// caches of everything else on a shared machine.
    Fadvise,
}

#[derive(Debug, Default)]
struct Report {
    redis_url: String,
    n_files: usize,
    n_directories: usize,
    start: Duration,
    find: Option<FindFigures>,
    latency: Option<LatencyFigures>,
    read: Option<ReadReport>,
}

pub(crate) fn run(runtime: &Runtime, options: MountBenchOptions) -> anyhow::Result<()> {
    let interrupted = Interrupted::default();
    let (stop_sender, mut stop_receiver) = tokio::sync::watch::channel(false);
    {
        let interrupted = interrupted.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping and unmounting");
                interrupted.0.store(true, Ordering::Relaxed);
                let _ = stop_sender.send(true);
            }
        });
    }

    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let files_root = match &options.files_root {
        Some(files_root) => files_root.clone(),
        None => scratch.path().join("files"),
    };
    let mountpoint = match &options.mountpoint {
        Some(mountpoint) => mountpoint.clone(),
        None => scratch.path().join("mnt"),
    };
    for directory in [&files_root, &mountpoint] {
        fs::create_dir_all(directory)
            .with_context(|| format!("cannot create directory {}", directory.display()))?;
    }

    let mut config = ServiceConfig::new(scratch.path().join(RULES_FILE_NAME), &files_root);
    config.rules = RulesSource::Preset {
        name: options.preset.clone(),
        save_to: scratch.path().join(RULES_FILE_NAME),
    };
    config.discovery.redis_url = Some(options.redis_url.clone());
    config.prefix = options.prefix.clone();
    let rules = Rules::preset(&options.preset)?;

    let started = Instant::now();
    let service = runtime.block_on(async {
        tokio::select! {
            started = Service::start(config) => started.context("the service did not start"),
            _ = stop_receiver.wait_for(|stopped| *stopped) => Err(anyhow::anyhow!("interrupted")),
        }
    })?;
    let service = Arc::new(service);
    let mut report = Report {
        redis_url: options.redis_url.clone(),
        start: started.elapsed(),
        ..Report::default()
    };
    {
        let library = service.library();
        let reader = library.read();
        report.n_files = reader.file_count();
        report.n_directories = reader.directory_count();
    }
    eprintln!(
        "service started in {:.2} s: {} files, {} directories",
        report.start.as_secs_f64(),
        report.n_files,
        report.n_directories
    );

    let slot = MountSlot::default();
    let sink_slot = slot.clone();
    service.attach_invalidation_sink(Box::new(move |invalidations| {
        if let Some(handle) = sink_slot.read().as_ref() {
            handle.invalidate(invalidations);
        }
    }));

    let context = ScenarioContext {
        runtime,
        service: &service,
        slot: &slot,
        mountpoint: &mountpoint,
        files_root: &files_root,
        rules: &rules,
        options: &options,
        interrupted: &interrupted,
    };
    let mut scenarios = options.scenarios.clone();
    scenarios.sort_unstable();
    scenarios.dedup();
    let mut outcome = Ok(());
    // Find first: the probes of the other scenarios would add to the walk.
    for scenario in scenarios {
        let result = match scenario {
            Scenario::Find => measure_find(&context).map(|figures| report.find = Some(figures)),
            Scenario::Latency => {
                measure_latency(&context).map(|figures| report.latency = Some(figures))
            }
            Scenario::Read => measure_read(&context).map(|figures| report.read = Some(figures)),
        };
        if let Err(error) = result {
            // Ctrl-C also reaches `find` and `dd`: their failure is not news.
            outcome = Err(if interrupted.0.load(Ordering::Relaxed) {
                anyhow::anyhow!("interrupted during the {scenario:?} scenario")
            } else {
                error.context(format!("the {scenario:?} scenario failed"))
            });
            break;
        }
    }
    runtime.block_on(service.shutdown());
    outcome?;

    if options.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&report))?);
    } else {
        print_report(&report);
    }
    Ok(())
}

pub(crate) struct ScenarioContext<'a> {
    pub(crate) runtime: &'a Runtime,
    pub(crate) service: &'a Arc<Service>,
    pub(crate) slot: &'a MountSlot,
    pub(crate) mountpoint: &'a Path,
    pub(crate) files_root: &'a Path,
    pub(crate) rules: &'a Rules,
    pub(crate) options: &'a MountBenchOptions,
    pub(crate) interrupted: &'a Interrupted,
}

impl ScenarioContext<'_> {
    fn mount(&self, passthrough: bool) -> anyhow::Result<LiveMount> {
        LiveMount::mount(
            self.service,
            self.slot,
            self.mountpoint,
            self.files_root,
            passthrough,
        )
    }

    fn redis(&self) -> anyhow::Result<redis::Connection> {
        redis::Client::open(self.options.redis_url.as_str())
            .with_context(|| format!("invalid redis url {:?}", self.options.redis_url))?
            .get_connection()
            .with_context(|| format!("cannot connect to redis at {}", self.options.redis_url))
    }
}

/// A walk of the whole mount with `find`, on a fresh mount (nothing in the
/// kernel's dentry and attribute caches) and then again warm.
fn measure_find(context: &ScenarioContext<'_>) -> anyhow::Result<FindFigures> {
    let mount = context.mount(true)?;
    let mut figures = FindFigures {
        n_entries: 0,
        cold: Duration::ZERO,
        warm: Duration::ZERO,
    };
    for cold in [true, false] {
        context.interrupted.check()?;
        let started = Instant::now();
        let output = Command::new("find")
            .arg(&mount.mountpoint)
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run find")?;
        let elapsed = started.elapsed();
        context.interrupted.check()?;
        if !output.status.success() {
            bail!(
                "find over {} failed: {}",
                mount.mountpoint.display(),
                output.status
            );
        }
        figures.n_entries = output.stdout.iter().filter(|byte| **byte == b'\n').count();
        if cold {
            figures.cold = elapsed;
        } else {
            figures.warm = elapsed;
        }
    }
    mount.unmount()?;
    Ok(figures)
}

/// A new file written the way a MetaMesh writer writes it.
struct ProbeFile {
    hash_id: String,
    /// `filePath` last: the file is complete (visible) only once every
    /// other property is in Redis, so its first visible path is its final one.
    properties: Vec<(&'static str, String)>,
}

impl ProbeFile {
    fn expected_path(&self, rules: &Rules) -> String {
        let metadata = Metadata::new(
            self.properties
                .iter()
                .map(|(name, value)| (*name, value.as_str())),
        );
        rules.render(&self.hash_id, &metadata).path
    }

    fn size(&self) -> Option<u64> {
        self.properties
            .iter()
            .find(|(name, _)| *name == "size")
            .and_then(|(_, value)| value.parse().ok())
    }
}

/// Writes every property (`SET`, `SADD file:__index__`, `XADD set`) in one
/// pipeline, in order; returns the id of the last `XADD`.
fn write_probe(
    connection: &mut redis::Connection,
    prefix: &str,
    probe: &ProbeFile,
) -> anyhow::Result<String> {
    Writer::new(connection, prefix)
        .with_timestamp_ms(now_ms())
        .set_file(&probe.hash_id, &probe.properties)
        .flush()
        .with_context(|| format!("writing probe file {} failed", probe.hash_id))?
        .with_context(|| format!("probe file {} has no properties", probe.hash_id))
}

/// Deletes a probe writer-style (`DEL`, `XADD del`, `SREM`), so reruns do
/// not grow the library.
fn remove_probes(
    connection: &mut redis::Connection,
    prefix: &str,
    probes: &[ProbeFile],
) -> anyhow::Result<()> {
    let mut writer = Writer::new(connection, prefix).with_timestamp_ms(now_ms());
    for chunk in probes.chunks(100) {
        for probe in chunk {
            for (property, _) in &probe.properties {
                writer.del(&probe.hash_id, property);
            }
            writer.remove_from_index(&probe.hash_id);
        }
        writer.flush().context("removing the probe files failed")?;
    }
    Ok(())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// `n` new episodes of one show, distinct per run so reruns against the
/// same Redis never find a probe already there.
fn latency_probes(n_probes: usize) -> Vec<ProbeFile> {
    let run = now_ms() & 0xffff_ffff_ffff;
    (0..n_probes)
        .map(|sample| {
            let season = sample / 100 + 1;
            let episode = sample % 100 + 1;
            let file_name = format!("Metafuse.Latency.{run}.S{season:02}E{episode:02}.mkv");
            ProbeFile {
                hash_id: format!("1a7e{run:012x}{sample:016x}"),
                properties: vec![
                    ("fileName", file_name.clone()),
                    ("extension", "mkv".to_owned()),
                    ("size", (1_000_000 + sample).to_string()),
                    ("mtime", "1700000000000".to_owned()),
                    ("fileType", "video".to_owned()),
                    ("title", format!("Metafuse Latency {run}")),
                    ("season", format!("{season:02}")),
                    ("episode", format!("{episode:02}")),
                    ("filePath", format!("metafuse-bench/latency/{file_name}")),
                ],
            }
        })
        .collect()
}

/// For each probe: write it, then spin on `stat` of its expected path
/// through the mount until it answers with the written size. Also records
/// when the service reported the entry applied (invalidations delivered).
pub(crate) fn measure_latency(context: &ScenarioContext<'_>) -> anyhow::Result<LatencyFigures> {
    let mount = context.mount(true)?;
    let mut connection = context.redis()?;
    let probes = latency_probes(context.options.latency_samples);
    let mut figures = LatencyFigures {
        visible: Vec::with_capacity(probes.len()),
        visible_from_sent: Vec::with_capacity(probes.len()),
        applied: Vec::with_capacity(probes.len()),
        n_lost: 0,
    };
    let outcome = (|| {
        for probe in &probes {
            context.interrupted.check()?;
            let expected = mount.mountpoint.join(probe.expected_path(context.rules));
            let expected_size = probe.size();
            let sent = Instant::now();
            let event_id = write_probe(&mut connection, &context.options.prefix, probe)?;
            let written = Instant::now();
            let service = context.service.clone();
            // Spawned after the XADD returned (its id is needed): if the entry
            // is already applied this resolves at once, so `applied` is when we
            // learned it, an upper bound.
            let applied = context.runtime.spawn(async move {
                service.wait_until_applied(&event_id).await;
                Instant::now()
            });
            let visible = loop {
                if let Ok(metadata) = fs::metadata(&expected)
                    && Some(metadata.len()) == expected_size
                {
                    break Some(Instant::now());
                }
                if written.elapsed() > VISIBILITY_TIMEOUT
                    || context.interrupted.0.load(Ordering::Relaxed)
                {
                    break None;
                }
                // Yield rather than sleep: the point is to notice at once, but
                // the service shares the (two) cores with this loop.
                std::thread::yield_now();
            };
            let applied = context
                .runtime
                .block_on(applied)
                .context("the applied-waiter task failed")?;
            match visible {
                Some(visible) => {
                    figures.visible.push(visible - written);
                    figures.visible_from_sent.push(visible - sent);
                }
                None if context.interrupted.0.load(Ordering::Relaxed) => {}
                None => {
                    figures.n_lost += 1;
                    eprintln!(
                        "probe {} not visible at {}",
                        probe.hash_id,
                        expected.display()
                    );
                }
            }
            figures
                .applied
                .push(applied.saturating_duration_since(written));
        }
        anyhow::Ok(())
    })();
    // After Ctrl-C the private redis-server may be gone already: the
    // interruption is the error worth reporting.
    let removed = remove_probes(&mut connection, &context.options.prefix, &probes);
    outcome?;
    removed?;
    mount.unmount()?;
    figures.visible.sort_unstable();
    figures.visible_from_sent.sort_unstable();
    figures.applied.sort_unstable();
    Ok(figures)
}

/// A source file of `read_mib` MiB of real (non-sparse, non-zero) bytes
/// under the files root; reused when already there with that size.
fn ensure_big_file(files_root: &Path, read_mib: u64) -> anyhow::Result<(String, PathBuf)> {
    let relative = format!("metafuse-bench/read-{read_mib}MiB.mkv");
    let path = files_root.join(&relative);
    let wanted = read_mib << 20;
    if fs::metadata(&path).is_ok_and(|metadata| metadata.len() == wanted) {
        return Ok((relative, path));
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;
    }
    let chunk: Vec<u8> = (0..1u32 << 20).map(|index| (index % 251) as u8).collect();
    let mut file =
        fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    for _ in 0..read_mib {
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok((relative, path))
}

/// Evicts `paths` from the page cache: with `drop_caches` when asked and
/// permitted (root outside a container), else each file's own pages, which
/// every user may do.
fn evict(paths: &[&Path], drop_caches: bool) -> anyhow::Result<CacheEviction> {
    if drop_caches && fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok() {
        return Ok(CacheEviction::DropCaches);
    }
    for path in paths {
        evict_file(path)?;
    }
    Ok(CacheEviction::Fadvise)
}

fn evict_file(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .context("cannot run dd")?;
    if !status.success() {
        bail!(
            "evicting {} from the page cache failed: {status}",
            path.display()
        );
    }
    Ok(())
}

/// Runs `dd if=path of=/dev/null bs=1M`; returns how long it took and
/// checks it read `expected_bytes`.
fn timed_dd(path: &Path, expected_bytes: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["of=/dev/null", "bs=1M"])
        .output()
        .context("cannot run dd")?;
    let elapsed = started.elapsed();
    let summary = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("dd of {} failed: {}", path.display(), summary.trim());
    }
    // "1073741824 bytes (1.1 GB, 1.0 GiB) copied, ..."
    let copied = summary
        .lines()
        .last()
        .and_then(|line| line.split_whitespace().next())
        .and_then(|bytes| bytes.parse::<u64>().ok());
    if copied != Some(expected_bytes) {
        bail!(
            "dd of {} read {copied:?} bytes, expected {expected_bytes}: {}",
            path.display(),
            summary.trim()
        );
    }
    Ok(elapsed)
}

/// Sequential reads of a `read_mib` MiB file, directly and through the
/// mount, with and without passthrough: cold, from a warm source, and
/// re-read (see `ReadCache`). The file is added to the library for the
/// measurement and removed after it.
pub(crate) fn measure_read(context: &ScenarioContext<'_>) -> anyhow::Result<ReadReport> {
    let read_bytes = context.options.read_mib << 20;
    let (relative, source_path) = ensure_big_file(context.files_root, context.options.read_mib)?;
    context.interrupted.check()?;
    let file_name = relative.rsplit('/').next().unwrap_or(&relative).to_owned();
    let probe = ProbeFile {
        hash_id: format!("b16f11e{:025x}", context.options.read_mib),
        properties: vec![
            ("fileName", file_name),
            ("extension", "mkv".to_owned()),
            ("size", read_bytes.to_string()),
            ("mtime", "1700000000000".to_owned()),
            ("fileType", "video".to_owned()),
            ("title", "Metafuse Read Bench".to_owned()),
            ("movieYear", "2024".to_owned()),
            ("filePath", relative),
        ],
    };
    let mut connection = context.redis()?;
    let event_id = write_probe(&mut connection, &context.options.prefix, &probe)?;
    context
        .runtime
        .block_on(context.service.wait_until_applied(&event_id));
    let virtual_path = {
        let library = context.service.library();
        let reader = library.read();
        let tree = reader.tree();
        tree.file_by_hash(&probe.hash_id)
            .and_then(|node| tree.path_of(node.ino()))
            .with_context(|| format!("the read file {} is not in the tree", probe.hash_id))?
    };
    let mut report = ReadReport {
        bytes: read_bytes,
        runs: context.options.read_runs.max(1),
        figures: Vec::new(),
    };
    let outcome = (|| {
        for passthrough in [true, false] {
            let mount = context.mount(passthrough)?;
            let through_mount = mount.mountpoint.join(virtual_path.trim_start_matches('/'));
            for cache in [
                ReadCache::Cold(CacheEviction::Fadvise),
                ReadCache::WarmSource,
                ReadCache::Reread,
            ] {
                let (direct, through, cache) = timed_read_pairs(
                    context,
                    &source_path,
                    &through_mount,
                    read_bytes,
                    report.runs,
                    cache,
                )?;
                report.figures.push(ReadFigures {
                    passthrough_wanted: passthrough,
                    passthrough_active: mount.passthrough_active(),
                    cache,
                    direct,
                    through_mount: through,
                });
            }
            mount.unmount()?;
        }
        anyhow::Ok(())
    })();
    let removed = remove_probes(&mut connection, &context.options.prefix, &[probe]);
    outcome?;
    removed?;
    Ok(report)
}

/// The fastest of `runs` reads of the source and of the same file through
/// the mount, alternated so that a disturbance on the shared machine does
/// not hit only one side, with the caches prepared as `cache` says.
/// Returns the eviction actually used for cold reads.
fn timed_read_pairs(
    context: &ScenarioContext<'_>,
    source_path: &Path,
    through_mount: &Path,
    read_bytes: u64,
    runs: usize,
    cache: ReadCache,
) -> anyhow::Result<(Duration, Duration, ReadCache)> {
    let drop_caches = context.options.drop_caches;
    let mut cache_used = cache;
    match cache {
        ReadCache::Cold(_) => {}
        // Untimed: the source in the page cache.
        ReadCache::WarmSource => {
            timed_dd(source_path, read_bytes)?;
        }
        // Untimed: both in the page cache (what a first read leaves).
        ReadCache::Reread => {
            timed_dd(source_path, read_bytes)?;
            timed_dd(through_mount, read_bytes)?;
        }
    }
    let mut best_direct = Duration::MAX;
    let mut best_through_mount = Duration::MAX;
    for _ in 0..runs {
        context.interrupted.check()?;
        if let ReadCache::Cold(_) = cache {
            cache_used = ReadCache::Cold(evict(&[source_path], drop_caches)?);
        }
        best_direct = best_direct.min(timed_dd(source_path, read_bytes)?);
        context.interrupted.check()?;
        match cache {
            // The mount's own page cache (without passthrough) and the
            // source it reads from.
            ReadCache::Cold(_) => {
                evict(&[source_path, through_mount], drop_caches)?;
            }
            // Without passthrough the kernel keeps the mount's own copy
            // of the pages: evicted, every byte crosses FUSE from a warm
            // source.
            ReadCache::WarmSource => evict_file(through_mount)?,
            ReadCache::Reread => {}
        }
        best_through_mount = best_through_mount.min(timed_dd(through_mount, read_bytes)?);
    }
    Ok((best_direct, best_through_mount, cache_used))
}

/// The `quantile` (0..=1) of sorted durations, nearest rank.
pub(crate) fn quantile(sorted: &[Duration], quantile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn gigabytes_per_second(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e9 / elapsed.as_secs_f64().max(1e-9)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn print_report(report: &Report) {
    println!(
        "metafuse-bench mount — {} files, {} directories from {}; service start (bootstrap + tree) {:.2} s",
        report.n_files,
        report.n_directories,
        report.redis_url,
        report.start.as_secs_f64()
    );
    if let Some(find) = &report.find {
        println!();
        println!(
            "find over the mount          entries    seconds    entries/s   target (cold <= {TARGET_FIND_SECONDS} s)"
        );
        for (label, elapsed) in [
            ("cold (fresh mount)", find.cold),
            ("warm (second walk)", find.warm),
        ] {
            let seconds = elapsed.as_secs_f64();
            let target = if label.starts_with("cold") {
                verdict(seconds <= TARGET_FIND_SECONDS)
            } else {
                ""
            };
            println!(
                "  {label:<26} {:>7} {seconds:>10.3} {:>12.0}   {target}",
                find.n_entries,
                find.n_entries as f64 / seconds.max(1e-9)
            );
        }
    }
    if let Some(latency) = &report.latency {
        println!();
        println!(
            "latency from XADD returned   samples     p50 ms     p90 ms     p99 ms     max ms   target (p99 <= {TARGET_LATENCY_P99_MS} ms)"
        );
        for (label, sorted, with_target) in [
            ("to visible via stat", &latency.visible, true),
            ("to applied (service)", &latency.applied, false),
            (
                "(from write sent) visible",
                &latency.visible_from_sent,
                false,
            ),
        ] {
            let p99 = milliseconds(quantile(sorted, 0.99));
            let target = if with_target {
                verdict(p99 <= TARGET_LATENCY_P99_MS && latency.n_lost == 0)
            } else {
                ""
            };
            println!(
                "  {label:<26} {:>7} {:>10.2} {:>10.2} {p99:>10.2} {:>10.2}   {target}",
                sorted.len(),
                milliseconds(quantile(sorted, 0.5)),
                milliseconds(quantile(sorted, 0.9)),
                milliseconds(sorted.last().copied().unwrap_or_default()),
            );
        }
        if latency.n_lost > 0 {
            println!(
                "  {} probes NOT visible within {} s",
                latency.n_lost,
                VISIBILITY_TIMEOUT.as_secs()
            );
        }
    }
    if let Some(read) = &report.read {
        println!();
        println!(
            "sequential read of {} MiB with dd bs=1M, fastest of {} runs (GB = 1e9 bytes)",
            read.bytes >> 20,
            read.runs
        );
        println!(
            "  passthrough asked/active  page cache                   direct GB/s  mount GB/s    ratio   target (>= {:.0}%)",
            TARGET_READ_RATIO * 100.0
        );
        for figures in &read.figures {
            let (direct, through) = figures.throughputs(read.bytes);
            println!(
                "  {:<25} {:<28} {direct:>11.2} {through:>11.2} {:>7.0}%   {}",
                format!(
                    "{} / {}",
                    figures.passthrough_wanted, figures.passthrough_active
                ),
                figures.cache.describe(),
                figures.ratio() * 100.0,
                verdict(figures.target_met())
            );
        }
    }
}

fn report_json(report: &Report) -> serde_json::Value {
    let latency_json = |sorted: &[Duration]| {
        json!({
            "samples": sorted.len(),
            "p50_ms": milliseconds(quantile(sorted, 0.5)),
            "p90_ms": milliseconds(quantile(sorted, 0.9)),
            "p99_ms": milliseconds(quantile(sorted, 0.99)),
            "max_ms": milliseconds(sorted.last().copied().unwrap_or_default()),
        })
    };
    json!({
        "redis_url": report.redis_url,
        "n_files": report.n_files,
        "n_directories": report.n_directories,
        "service_start_seconds": report.start.as_secs_f64(),
        "find": report.find.as_ref().map(|find| json!({
            "entries": find.n_entries,
            "cold_seconds": find.cold.as_secs_f64(),
            "warm_seconds": find.warm.as_secs_f64(),
            "cold_entries_per_second": find.n_entries as f64 / find.cold.as_secs_f64().max(1e-9),
        })),
        "latency": report.latency.as_ref().map(|latency| json!({
            "to_visible_via_stat": latency_json(&latency.visible),
            "to_applied": latency_json(&latency.applied),
            "to_visible_from_write_sent": latency_json(&latency.visible_from_sent),
            "lost": latency.n_lost,
        })),
        "read": report.read.as_ref().map(|read| read_json(read, false)),
        "reread": report.read.as_ref().map(|read| read_json(read, true)),
    })
}

/// The read figures as JSON (shared with `scale`): the re-reads when
/// `rereads`, else the others (cold and warm source, one list since
/// before re-reads were measured).
pub(crate) fn read_json(read: &ReadReport, rereads: bool) -> serde_json::Value {
    read.figures
        .iter()
        .filter(|figures| (figures.cache == ReadCache::Reread) == rereads)
        .map(|figures| {
            let (direct, through) = figures.throughputs(read.bytes);
            json!({
                "bytes": read.bytes,
                "passthrough_wanted": figures.passthrough_wanted,
                "passthrough_active": figures.passthrough_active,
                "direct_gb_per_second": direct,
                "mount_gb_per_second": through,
                "ratio": figures.ratio(),
                "page_cache": figures.cache.describe(),
                "runs": read.runs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&sorted, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&sorted[..1], 0.99), Duration::from_millis(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn latency_probes_are_complete_only_with_their_last_write_and_render_distinct_paths() {
        let rules = Rules::preset("default").expect("the default preset loads");
        let probes = latency_probes(150);
        let mut paths: Vec<String> = probes
            .iter()
            .map(|probe| probe.expected_path(&rules))
            .collect();
        assert!(
            probes
                .iter()
                .all(|probe| probe.properties.last().map(|(name, _)| *name) == Some("filePath"))
        );
        assert!(
            paths.iter().all(|path| !path.starts_with("Unsorted/")),
            "{paths:?}"
        );
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), 150);
    }
}
