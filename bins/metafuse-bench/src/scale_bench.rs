//! `scale`: every figure of issue 13 in one run against one Redis, each
//! beside the physical anchor measured in the same run:
//!
//! - start → serving (bootstrap + tree) and tree µs/file;
//! - memory (VmRSS / VmHWM) at ready (and after `malloc_trim(0)` there,
//!   as the `metafuse` binary does every 10 s), after a burst of live additions,
//!   after idling, and after `malloc_trim(0)` (what the allocator kept);
//! - the burst itself (writes → applied);
//! - `XADD` → visible via `stat` while churn flows;
//! - rules changes (time until applied and the kernel told) and the longest
//!   a reader waited meanwhile, through the mount and on the tree's lock;
//! - anchors: raw pipelined `MGET` of the exact snapshot keys, raw `XRANGE`
//!   of the whole stream;
//! - the live tail draining the whole stream as a backlog;
//! - sequential reads through the mount without passthrough (cold, from a
//!   warm source, re-read) and with it, each beside a direct read of the
//!   same file (the mount bench's `read` scenario).
//!
//! The library is seeded by a child process, so the seeding's own memory
//! never counts in this process's figures.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use metafuse_rules::Rules;
use metafuse_service::{RULES_FILE_NAME, RulesSource, Service, ServiceConfig};
use metafuse_stream::{
    AnchorFigures, MetadataSource, RedisSource, Strategy, TailEvent, raw_snapshot_mget, raw_xrange,
};
use metafuse_testkit::Writer;
use serde_json::json;
use tokio::runtime::Runtime;

use crate::mount_bench::{
    Interrupted, LatencyFigures, LiveMount, MountBenchOptions, MountSlot, ReadReport,
    ScenarioContext, measure_latency, measure_read, milliseconds, now_ms, quantile, read_json,
};

/// What `metafuse-bench scale` measures.
#[derive(Debug, clap::Args)]
pub(crate) struct ScaleArgs {
    /// Redis URL; default: a private redis-server started for the run.
    #[arg(long)]
    redis_url: Option<String>,
    /// Seed a synthetic library of this many files first (FLUSHDB!); 0
    /// mounts what Redis holds.
    #[arg(long, default_value_t = 100_000)]
    files: usize,
    /// New files written live after the start (the burst).
    #[arg(long, default_value_t = 40_000)]
    burst_files: usize,
    /// Seconds of idling after the burst before memory is read again.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Churn flowing while the latency probes are written (events/s).
    #[arg(long, default_value_t = 2_000)]
    churn_rate: u64,
    /// Latency probes written one after another under churn.
    #[arg(long, default_value_t = 300)]
    latency_samples: usize,
    /// Rules presets applied in turn, each from the one before (the start
    /// preset is `default`).
    #[arg(long, value_delimiter = ',', default_values_t = ["plex".to_owned(), "default".to_owned()])]
    rule_changes: Vec<String>,
    /// Skip the tail drain (it re-reads the whole stream).
    #[arg(long)]
    no_tail_drain: bool,
    /// Size of the file read sequentially (directly and through the
    /// mount), in MiB; 0 skips the reads.
    #[arg(long, default_value_t = 1024)]
    read_mib: u64,
    /// Timed reads of each kind; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    read_runs: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// VmRSS and VmHWM of this process, in bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    rss: u64,
    hwm: u64,
}

impl Memory {
    fn now() -> Memory {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Memory {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }

    /// Resets VmHWM to the current RSS (`clear_refs` 5), so the next peak
    /// read is of what follows.
    fn reset_peak() {
        let _ = fs::write("/proc/self/clear_refs", "5");
    }
}

/// Gives the allocator's unused memory back to the system (glibc only);
/// whether it could be asked.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn malloc_trim() -> bool {
    // SAFETY: malloc_trim only walks glibc's own arenas; no pointer of ours
    // is involved.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(target_env = "gnu"))]
fn malloc_trim() -> bool {
    false
}

#[derive(Debug, Default)]
struct RuleChange {
    from: String,
    to: String,
    applied: Duration,
    /// Longest `stat`/`readdir` through the mount during the change.
    mount_reader_max: Duration,
    mount_reader_ops: u64,
    /// Longest wait for the tree's read lock during the change.
    lock_reader_max: Duration,
    lock_reader_ops: u64,
}

#[derive(Debug, Default)]
struct ScaleReport {
    redis_url: String,
    n_seeded: usize,
    n_files: usize,
    n_directories: usize,
    start: Duration,
    bootstrap: Option<Duration>,
    at_ready: Memory,
    /// At ready once glibc gave back what the start freed: what the
    /// `metafuse` binary holds within 10 s of ready (it trims periodically).
    at_ready_trimmed: Option<Memory>,
    n_burst: usize,
    burst_written: Duration,
    burst_applied: Duration,
    after_burst: Memory,
    idle_seconds: u64,
    after_idle: Memory,
    after_trim: Option<Memory>,
    churn_rate_achieved: f64,
    latency: Option<LatencyFigures>,
    rule_changes: Vec<RuleChange>,
    anchor_mget: AnchorFigures,
    anchor_xrange: AnchorFigures,
    tail_drain: Option<TailDrain>,
    tail_drain_typed: Option<TailDrain>,
    reads: Option<ReadReport>,
}

#[derive(Debug, Default)]
struct TailDrain {
    n_events: u64,
    n_relevant: u64,
    n_values: u64,
    elapsed: Duration,
}

pub(crate) fn run(runtime: &Runtime, arguments: ScaleArgs) -> anyhow::Result<()> {
    let private_redis = match &arguments.redis_url {
        Some(_) => None,
        None => Some(
            metafuse_testkit::RedisServer::start()
                .context("cannot start a private redis-server")?,
        ),
    };
    let redis_url = match (&arguments.redis_url, &private_redis) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.url(),
        (None, None) => bail!("no redis to measure against"),
    };
    if arguments.files > 0 {
        seed_in_child(&redis_url, arguments.files)?;
    }
    let mut report = ScaleReport {
        redis_url: redis_url.clone(),
        n_seeded: arguments.files,
        idle_seconds: arguments.idle_seconds,
        ..ScaleReport::default()
    };
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let files_root = scratch.path().join("files");
    let mountpoint = scratch.path().join("mnt");
    for directory in [&files_root, &mountpoint] {
        fs::create_dir_all(directory)
            .with_context(|| format!("cannot create directory {}", directory.display()))?;
    }
    let mut config = ServiceConfig::new(scratch.path().join(RULES_FILE_NAME), &files_root);
    config.rules = RulesSource::Preset {
        name: "default".to_owned(),
        save_to: scratch.path().join(RULES_FILE_NAME),
    };
    config.discovery.redis_url = Some(redis_url.clone());
    config.discovery.beacon = None;

    Memory::reset_peak();
    let started = Instant::now();
    let service = Arc::new(
        runtime
            .block_on(Service::start(config))
            .context("the service did not start")?,
    );
    report.start = started.elapsed();
    report.at_ready = Memory::now();
    report.at_ready_trimmed = malloc_trim().then(Memory::now);
    report.bootstrap = service
        .backend()
        .metrics()
        .bootstrap_seconds
        .map(Duration::from_secs_f64);
    {
        let library = service.library();
        let reader = library.read();
        report.n_files = reader.file_count();
        report.n_directories = reader.directory_count();
    }
    eprintln!(
        "serving {} files after {:.2} s",
        report.n_files,
        report.start.as_secs_f64()
    );

    let paths = Paths {
        files_root: &files_root,
        mountpoint: &mountpoint,
    };
    let outcome = measure_live(
        runtime,
        &service,
        &redis_url,
        &arguments,
        &mut report,
        &paths,
    );
    runtime.block_on(service.shutdown());
    drop(service);
    outcome?;

    eprintln!("anchors: raw XRANGE and raw MGET of the snapshot keys");
    let relevant = Rules::preset("default")?.relevant_properties();
    report.anchor_xrange = runtime.block_on(raw_xrange(&redis_url, 10_000))?;
    report.anchor_mget = runtime.block_on(raw_snapshot_mget(&redis_url, "", &relevant))?;
    if !arguments.no_tail_drain {
        eprintln!("tail drain of the whole stream");
        // The redis crate's parser (TLS, and the tail before raw reads)
        // and raw RESP, back to back.
        report.tail_drain_typed = Some(runtime.block_on(tail_drain(&redis_url, false))?);
        report.tail_drain = Some(runtime.block_on(tail_drain(&redis_url, true))?);
    }

    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&report))?);
    } else {
        print_report(&report);
    }
    Ok(())
}

struct Paths<'a> {
    files_root: &'a Path,
    mountpoint: &'a Path,
}

/// Runs `metafuse-bench seed` as a child process.
fn seed_in_child(redis_url: &str, n_files: usize) -> anyhow::Result<()> {
    let executable = std::env::current_exe().context("cannot find this executable")?;
    let status = std::process::Command::new(executable)
        .args(["seed", "--redis-url", redis_url, "--files"])
        .arg(n_files.to_string())
        .status()
        .context("cannot run the seeding child")?;
    if !status.success() {
        bail!("seeding failed: {status}");
    }
    Ok(())
}

fn measure_live(
    runtime: &Runtime,
    service: &Arc<Service>,
    redis_url: &str,
    arguments: &ScaleArgs,
    report: &mut ScaleReport,
    paths: &Paths<'_>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let mut connection = client.get_connection()?;

    // The burst: new files as fast as one writer pipelines them.
    eprintln!("burst of {} live additions", arguments.burst_files);
    let run = now_ms() & 0xffff_ffff;
    let started = Instant::now();
    let mut last_id = None;
    let mut writer = Writer::new(&mut connection, "").with_timestamp_ms(now_ms());
    for index in 0..arguments.burst_files {
        let name = format!("Burst.{run}.{index:07}.mkv");
        writer.set_file(
            &format!("b0257{run:08x}{index:019x}"),
            &[
                ("fileName", name.clone()),
                ("extension", "mkv".to_owned()),
                ("size", (1_000_000 + index).to_string()),
                ("mtime", "1700000000000".to_owned()),
                ("fileType", "video".to_owned()),
                ("title", format!("Burst {run} {}", index / 50)),
                ("movieYear", format!("{}", 1950 + index % 70)),
                ("filePath", format!("burst/{name}")),
            ],
        );
        if index % 500 == 499 {
            last_id = writer.flush()?.or(last_id);
        }
    }
    last_id = writer.flush()?.or(last_id);
    report.burst_written = started.elapsed();
    if let Some(last_id) = &last_id {
        runtime.block_on(service.wait_until_applied(last_id));
    }
    report.burst_applied = started.elapsed();
    report.n_burst = arguments.burst_files;
    report.after_burst = Memory::now();
    std::thread::sleep(Duration::from_secs(arguments.idle_seconds));
    report.after_idle = Memory::now();
    report.after_trim = malloc_trim().then(Memory::now);

    // Mounted from here on.
    let slot = MountSlot::default();
    let sink_slot = slot.clone();
    service.attach_invalidation_sink(Box::new(move |invalidations| {
        if let Some(handle) = sink_slot.read().as_ref() {
            handle.invalidate(invalidations);
        }
    }));
    let rules = Rules::preset("default")?;
    let interrupted = Interrupted::default();
    let options = MountBenchOptions {
        redis_url: redis_url.to_owned(),
        prefix: String::new(),
        preset: "default".to_owned(),
        files_root: Some(paths.files_root.to_owned()),
        mountpoint: Some(paths.mountpoint.to_owned()),
        scenarios: Vec::new(),
        latency_samples: arguments.latency_samples,
        read_mib: arguments.read_mib,
        read_runs: arguments.read_runs,
        drop_caches: false,
        json: false,
    };
    let context = ScenarioContext {
        runtime,
        service,
        slot: &slot,
        mountpoint: paths.mountpoint,
        files_root: paths.files_root,
        rules: &rules,
        options: &options,
        interrupted: &interrupted,
    };

    // Latency under churn.
    eprintln!(
        "XADD → stat latency, {} probes under {} events/s of churn",
        arguments.latency_samples, arguments.churn_rate
    );
    let hash_ids: Vec<String> = redis::cmd("SRANDMEMBER")
        .arg("file:__index__")
        .arg(10_000)
        .query(&mut connection)?;
    let stop_churn = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop_churn.clone();
        let rate = arguments.churn_rate;
        let mut connection = client.get_connection()?;
        std::thread::spawn(move || churn_loop(&mut connection, &hash_ids, rate, &stop))
    };
    let latency = measure_latency(&context);
    stop_churn.store(true, Ordering::Relaxed);
    let churned = churn
        .join()
        .map_err(|_| anyhow::anyhow!("the churn thread panicked"))??;
    report.churn_rate_achieved = churned;
    report.latency = Some(latency?);

    // Rules changes with readers.
    let mount = LiveMount::mount(service, &slot, paths.mountpoint, paths.files_root, true)?;
    let mut from = "default".to_owned();
    for to in &arguments.rule_changes {
        eprintln!("rules {from} → {to}");
        let change = rule_change(runtime, service, &mount, &from, to)?;
        report.rule_changes.push(change);
        from.clone_from(to);
    }
    mount.unmount()?;

    if arguments.read_mib > 0 {
        eprintln!(
            "sequential reads of {} MiB, directly and through the mount",
            arguments.read_mib
        );
        report.reads = Some(measure_read(&context)?);
    }
    Ok(())
}

/// Sets `mtime` of random existing files at `rate` events/s (a pipeline
/// every 10 ms) until `stop`; returns the rate achieved.
fn churn_loop(
    connection: &mut redis::Connection,
    hash_ids: &[String],
    rate: u64,
    stop: &AtomicBool,
) -> anyhow::Result<f64> {
    if hash_ids.is_empty() || rate == 0 {
        return Ok(0.0);
    }
    let per_tick = (rate / 100).max(1);
    let started = Instant::now();
    let mut n_written = 0_u64;
    let mut next_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut writer = Writer::new(connection, "").with_timestamp_ms(now_ms());
        for _ in 0..per_tick {
            let hash_id = &hash_ids[(n_written as usize) % hash_ids.len()];
            writer.set(
                hash_id,
                "mtime",
                &(1_700_000_000_000 + n_written).to_string(),
            );
            n_written += 1;
        }
        writer.flush()?;
        next_tick += Duration::from_millis(10);
        if let Some(wait) = next_tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(n_written as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Applies preset `to` through the backend (as `PUT /api/rules` does)
/// while one thread walks the mount (`readdir` of the root and `stat` of
/// its entries) and another takes the tree's read lock, each recording its
/// longest operation.
fn rule_change(
    runtime: &Runtime,
    service: &Arc<Service>,
    mount: &LiveMount,
    from: &str,
    to: &str,
) -> anyhow::Result<RuleChange> {
    let document = serde_json::to_value(Rules::preset(to)?.document())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mount_reader = {
        let stop = stop.clone();
        let root = mount.mountpoint.clone();
        std::thread::spawn(move || mount_reader(&root, &stop))
    };
    let lock_reader = {
        let stop = stop.clone();
        let library = service.library();
        std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            let mut n_ops = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let n_files = library.read().file_count();
                longest = longest.max(started.elapsed());
                n_ops += 1;
                std::hint::black_box(n_files);
                std::thread::sleep(Duration::from_micros(200));
            }
            (longest, n_ops)
        })
    };
    // Readers running before the change starts.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let applied = runtime.block_on(service.backend().put_rules(document));
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (mount_reader_max, mount_reader_ops) = mount_reader
        .join()
        .map_err(|_| anyhow::anyhow!("the mount reader panicked"))?;
    let (lock_reader_max, lock_reader_ops) = lock_reader
        .join()
        .map_err(|_| anyhow::anyhow!("the lock reader panicked"))?;
    applied.map_err(|error| anyhow::anyhow!("rules {to} not applied: {error:?}"))?;
    Ok(RuleChange {
        from: from.to_owned(),
        to: to.to_owned(),
        applied: elapsed,
        mount_reader_max,
        mount_reader_ops,
        lock_reader_max,
        lock_reader_ops,
    })
}

/// `readdir` of the root, then `stat` of each entry and `readdir` of it,
/// round and round; returns the longest single operation and the count.
fn mount_reader(root: &Path, stop: &AtomicBool) -> (Duration, u64) {
    let mut longest = Duration::ZERO;
    let mut n_ops = 0_u64;
    // Paced (1 ms between operations) like a user's tools, not a busy
    // loop: on two cores a busy reader through FUSE would take a core from
    // the change it is meant to observe.
    let mut timed = |operation: &mut dyn FnMut()| {
        let started = Instant::now();
        operation();
        longest = longest.max(started.elapsed());
        n_ops += 1;
        std::thread::sleep(Duration::from_millis(1));
    };
    while !stop.load(Ordering::Relaxed) {
        let mut entries: Vec<PathBuf> = Vec::new();
        timed(&mut || {
            entries = fs::read_dir(root)
                .map(|entries| {
                    entries
                        .filter_map(|entry| entry.ok().map(|e| e.path()))
                        .collect()
                })
                .unwrap_or_default();
        });
        for entry in entries.iter().take(64) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            timed(&mut || {
                let _ = fs::metadata(entry);
            });
            timed(&mut || {
                if let Ok(children) = fs::read_dir(entry) {
                    for child in children.take(8).flatten() {
                        let _ = child.metadata();
                    }
                }
            });
        }
    }
    (longest, n_ops)
}

/// `metafuse-bench tail-drain`: [`tail_drain`] alone, `runs` times.
pub(crate) fn print_tail_drains(
    runtime: &Runtime,
    redis_url: &str,
    runs: usize,
    raw: bool,
) -> anyhow::Result<()> {
    for _ in 0..runs {
        let drain = runtime.block_on(tail_drain(redis_url, raw))?;
        let elapsed = seconds(drain.elapsed).max(1e-9);
        println!(
            "{} events in {elapsed:.3} s: {:.0}k events/s, {:.0}k relevant/s, {} values",
            drain.n_events,
            drain.n_events as f64 / elapsed / 1e3,
            drain.n_relevant as f64 / elapsed / 1e3,
            drain.n_values,
        );
    }
    Ok(())
}

/// A fresh tail from the start of the stream, drained to its end: the
/// whole stream as a backlog.
async fn tail_drain(redis_url: &str, raw: bool) -> anyhow::Result<TailDrain> {
    let relevant = Rules::preset("default")?.relevant_properties();
    let mut admin = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(metafuse_stream::EVENTS_STREAM)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut admin)
        .await?;
    let Some((end_id, _)) = last.into_iter().next() else {
        bail!("the stream is empty");
    };
    let mut source = RedisSource::connect(redis_url, "", Strategy::Auto).await?;
    source.set_raw_tail_reads(raw);
    source.resume_from("0-0");
    let mut drain = TailDrain::default();
    let started = Instant::now();
    loop {
        match source.next_batch(&relevant).await? {
            TailEvent::Batch(batch) => {
                drain.n_events += batch.counts.n_events;
                drain.n_relevant +=
                    batch.counts.n_events - batch.counts.n_skipped - batch.counts.n_malformed;
                drain.n_values += batch.fetched().count() as u64;
                if batch.last_event_id == end_id {
                    break;
                }
            }
            TailEvent::Resync { .. } => bail!("the tail asked for a resync while draining"),
        }
    }
    drain.elapsed = started.elapsed();
    Ok(drain)
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn print_report(report: &ScaleReport) {
    let n = report.n_files.max(1) as f64;
    println!(
        "metafuse-bench scale — {} files ({} seeded), {} directories, {}",
        report.n_files, report.n_seeded, report.n_directories, report.redis_url
    );
    println!();
    println!("{:<48} {:>14}  anchor / ratio", "figure", "value");
    let mget = &report.anchor_mget;
    let start_line = format!("{:.2} s", seconds(report.start));
    println!(
        "{:<48} {:>14}  raw MGET of {} snapshot keys: {:.2} s ({:.0} keys/s)",
        "start → serving (bootstrap + tree)",
        start_line,
        mget.n_items,
        seconds(mget.elapsed),
        mget.rate()
    );
    if let Some(bootstrap) = report.bootstrap {
        println!(
            "{:<48} {:>14}  {:.2}× the raw MGET",
            "  bootstrap",
            format!("{:.2} s", seconds(bootstrap)),
            seconds(bootstrap) / seconds(mget.elapsed).max(1e-9)
        );
        let tree = report.start.saturating_sub(bootstrap);
        println!(
            "{:<48} {:>14}  {:.2} µs/file",
            "  tree (and discovery)",
            format!("{:.2} s", seconds(tree)),
            seconds(tree) * 1e6 / n
        );
    }
    let memory_line = |label: &str, memory: &Memory| {
        println!(
            "{label:<48} {:>14}  VmHWM {:.0} MB, {:.0} B/file",
            format!("{:.0} MB", mb(memory.rss)),
            mb(memory.hwm),
            memory.rss as f64 / n
        );
    };
    memory_line("VmRSS at ready", &report.at_ready);
    if let Some(trimmed) = &report.at_ready_trimmed {
        memory_line("  after malloc_trim(0), as metafuse runs", trimmed);
    }
    println!(
        "{:<48} {:>14}  written in {:.2} s; {:.0} events/s applied",
        format!("burst of {} live additions → applied", report.n_burst),
        format!("{:.2} s", seconds(report.burst_applied)),
        seconds(report.burst_written),
        (report.n_burst * 8) as f64 / seconds(report.burst_applied).max(1e-9)
    );
    memory_line("VmRSS after the burst", &report.after_burst);
    memory_line(
        &format!("VmRSS after {} s idle", report.idle_seconds),
        &report.after_idle,
    );
    if let Some(trimmed) = &report.after_trim {
        memory_line("VmRSS after malloc_trim(0)", trimmed);
    }
    if let Some(latency) = &report.latency {
        println!(
            "{:<48} {:>14}  p50 {:.2} ms, max {:.2} ms, {} samples, {} lost; churn {:.0} events/s",
            "XADD → visible via stat, p99",
            format!("{:.2} ms", milliseconds(quantile(&latency.visible, 0.99))),
            milliseconds(quantile(&latency.visible, 0.5)),
            milliseconds(latency.visible.last().copied().unwrap_or_default()),
            latency.visible.len(),
            latency.n_lost,
            report.churn_rate_achieved
        );
    }
    for change in &report.rule_changes {
        println!(
            "{:<48} {:>14}  readers' longest wait: mount {:.1} ms ({} ops), tree lock {:.1} ms ({} ops)",
            format!("rules {} → {} applied", change.from, change.to),
            format!("{:.2} s", seconds(change.applied)),
            milliseconds(change.mount_reader_max),
            change.mount_reader_ops,
            milliseconds(change.lock_reader_max),
            change.lock_reader_ops
        );
    }
    let xrange = &report.anchor_xrange;
    println!(
        "{:<48} {:>14}  {} entries in {:.2} s",
        "raw XRANGE (anchor)",
        format!("{:.0}/s", xrange.rate()),
        xrange.n_items,
        seconds(xrange.elapsed)
    );
    for (label, drain) in [
        (
            "tail drain of the whole stream (raw RESP)",
            &report.tail_drain,
        ),
        ("tail drain (redis crate parser)", &report.tail_drain_typed),
    ] {
        let Some(drain) = drain else { continue };
        let rate = drain.n_events as f64 / seconds(drain.elapsed).max(1e-9);
        println!(
            "{:<48} {:>14}  {} events ({} relevant, {} values) in {:.2} s; {:.0} relevant/s; {:.2}× raw XRANGE",
            label,
            format!("{rate:.0}/s"),
            drain.n_events,
            drain.n_relevant,
            drain.n_values,
            seconds(drain.elapsed),
            drain.n_relevant as f64 / seconds(drain.elapsed).max(1e-9),
            rate / xrange.rate().max(1e-9)
        );
    }
    if let Some(reads) = &report.reads {
        for figures in &reads.figures {
            let (direct, through) = figures.throughputs(reads.bytes);
            let passthrough = if figures.passthrough_active {
                "passthrough"
            } else {
                "no passthrough"
            };
            println!(
                "{:<48} {:>14}  direct read {direct:.2} GB/s: {:.0}% of it",
                format!("read {}, {}", passthrough, figures.cache.describe()),
                format!("{through:.2} GB/s"),
                figures.ratio() * 100.0
            );
        }
    }
}

fn drain_json(drain: &TailDrain) -> serde_json::Value {
    json!({
        "events": drain.n_events,
        "relevant": drain.n_relevant,
        "values": drain.n_values,
        "seconds": seconds(drain.elapsed),
        "events_per_second": drain.n_events as f64 / seconds(drain.elapsed).max(1e-9),
        "relevant_per_second": drain.n_relevant as f64 / seconds(drain.elapsed).max(1e-9),
    })
}

fn report_json(report: &ScaleReport) -> serde_json::Value {
    let memory = |memory: &Memory| json!({"rss_bytes": memory.rss, "hwm_bytes": memory.hwm});
    let anchor = |figures: &AnchorFigures| {
        json!({
            "items": figures.n_items,
            "present": figures.n_present,
            "seconds": seconds(figures.elapsed),
            "per_second": figures.rate(),
        })
    };
    json!({
        "redis_url": report.redis_url,
        "files": report.n_files,
        "directories": report.n_directories,
        "start_seconds": seconds(report.start),
        "bootstrap_seconds": report.bootstrap.map(seconds),
        "memory_at_ready": memory(&report.at_ready),
        "memory_at_ready_after_malloc_trim": report.at_ready_trimmed.as_ref().map(memory),
        "burst": {
            "files": report.n_burst,
            "written_seconds": seconds(report.burst_written),
            "applied_seconds": seconds(report.burst_applied),
        },
        "memory_after_burst": memory(&report.after_burst),
        "memory_after_idle": memory(&report.after_idle),
        "idle_seconds": report.idle_seconds,
        "memory_after_malloc_trim": report.after_trim.as_ref().map(memory),
        "latency_under_churn": report.latency.as_ref().map(|latency| json!({
            "samples": latency.visible.len(),
            "lost": latency.n_lost,
            "p50_ms": milliseconds(quantile(&latency.visible, 0.5)),
            "p99_ms": milliseconds(quantile(&latency.visible, 0.99)),
            "max_ms": milliseconds(latency.visible.last().copied().unwrap_or_default()),
            "churn_events_per_second": report.churn_rate_achieved,
        })),
        "rule_changes": report.rule_changes.iter().map(|change| json!({
            "from": change.from,
            "to": change.to,
            "applied_seconds": seconds(change.applied),
            "mount_reader_max_ms": milliseconds(change.mount_reader_max),
            "mount_reader_ops": change.mount_reader_ops,
            "lock_reader_max_ms": milliseconds(change.lock_reader_max),
            "lock_reader_ops": change.lock_reader_ops,
        })).collect::<Vec<_>>(),
        "anchor_raw_mget_snapshot_keys": anchor(&report.anchor_mget),
        "anchor_raw_xrange": anchor(&report.anchor_xrange),
        "tail_drain_raw": report.tail_drain.as_ref().map(drain_json),
        "tail_drain_redis_crate": report.tail_drain_typed.as_ref().map(drain_json),
        "reads": report.reads.as_ref().map(|reads| read_json(reads, false)),
        "rereads": report.reads.as_ref().map(|reads| read_json(reads, true)),
    })
}
