//! The `metafuse-bench` command line and what each subcommand runs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use metafuse_testkit::LibrarySpec;

use crate::{mount_bench, replay, sample, seed};

#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Warm restarts from a checkpoint and the API-mode cold bootstrap
    /// against the meta-core double, beside the old design's approach.
    Warm(crate::warm_bench::WarmArgs),
    /// Every figure of issue 13 in one run against one Redis (a private
    /// one by default): start, memory, burst, latency under churn, rules
    /// changes with reader stalls, tail drain, beside the raw `MGET` and
    /// `XRANGE` anchors, and sequential reads through the mount beside a
    /// direct read (needs root and /dev/fuse).
    Scale(crate::scale_bench::ScaleArgs),
    /// The tail drain of `scale` alone, against a Redis already seeded
    /// (`seed`): a fresh tail from the start of the stream to its end,
    /// `--runs` times, one line per run.
    TailDrain {
        /// Redis URL.
        #[arg(long)]
        redis_url: String,
        /// How many drains.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Read with the redis crate's parser instead of the raw RESP reads.
        #[arg(long)]
        typed: bool,
    },
    /// Write a synthetic library to Redis (after FLUSHDB).
    Seed {
        /// Redis URL.
        #[arg(long)]
        redis_url: String,
        /// Number of files.
        #[arg(long, default_value_t = 10_000)]
        files: usize,
        /// Add updates, moves, property deletions and file deletions.
        #[arg(long)]
        churn: bool,
        /// Trim the stream to about this many entries while writing.
        #[arg(long)]
        maxlen: Option<usize>,
        /// RNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Prefix of the `file:` keys.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Write a JSON-lines sample library writer-style (SET, SADD, XADD) and
    /// create a small real source file for each under `--files-root`, with
    /// `size` set to its byte length. Rerunning overwrites.
    SeedSample {
        /// Redis URL.
        #[arg(long)]
        redis_url: String,
        /// JSON lines of flat property maps with a `hashId`.
        #[arg(long, default_value = "fixtures/library/sample.jsonl")]
        jsonl: std::path::PathBuf,
        /// Directory under which `{filePath}` source files are created.
        #[arg(long)]
        files_root: std::path::PathBuf,
        /// Prefix of the `file:` keys.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Time every strategy and the old design on what Redis holds.
    Replay {
        /// Redis URL.
        #[arg(long)]
        redis_url: String,
        /// Rules preset whose relevant properties to use.
        #[arg(long, default_value = "default")]
        preset: String,
        /// Prefix of the `file:` keys.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Stop the old design after this many events and extrapolate
        /// (it fetches one key per round trip: minutes for 100k files).
        #[arg(long, default_value_t = 200_000)]
        baseline_limit: u64,
        /// Runs of each strategy; the fastest is reported.
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// Start the real service and FUSE mount in-process and measure them
    /// end to end: `find` over a fresh mount, XADD-to-`stat` latency, and
    /// sequential reads directly vs through the mount (needs root and
    /// /dev/fuse).
    Mount {
        /// Redis URL; default: a private redis-server started for the run.
        #[arg(long)]
        redis_url: Option<String>,
        /// Seed a synthetic library of this many files first (FLUSHDB!);
        /// without it, what Redis holds is mounted.
        #[arg(long)]
        files: Option<usize>,
        /// Where the source files are (the large read file is created
        /// here); default: a temporary directory.
        #[arg(long)]
        files_root: Option<std::path::PathBuf>,
        /// Empty directory to mount on; default: a temporary directory.
        #[arg(long)]
        mountpoint: Option<std::path::PathBuf>,
        /// Rules preset.
        #[arg(long, default_value = "default")]
        preset: String,
        /// Prefix of the `file:` keys.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Scenarios to run (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [
            mount_bench::Scenario::Find,
            mount_bench::Scenario::Latency,
            mount_bench::Scenario::Read,
        ])]
        scenarios: Vec<mount_bench::Scenario>,
        /// New files written one after another for the latency figures.
        #[arg(long, default_value_t = 500)]
        latency_samples: usize,
        /// Size of the file read sequentially, in MiB.
        #[arg(long, default_value_t = 1024)]
        read_mib: u64,
        /// Timed reads of each kind; the fastest is reported.
        #[arg(long, default_value_t = 3)]
        read_runs: usize,
        /// Empty the whole page cache (`drop_caches`, root) before cold
        /// reads; by default only the file read is evicted (fadvise), which
        /// spares everything else on a shared machine.
        #[arg(long)]
        drop_caches: bool,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the subcommand given on the command line.
pub(crate) fn run(arguments: Arguments) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match arguments.command {
        Command::Warm(warm_arguments) => crate::warm_bench::run(&runtime, warm_arguments),
        Command::Scale(scale_arguments) => crate::scale_bench::run(&runtime, scale_arguments),
        Command::TailDrain {
            redis_url,
            runs,
            typed,
        } => crate::scale_bench::print_tail_drains(&runtime, &redis_url, runs, !typed),
        Command::Seed {
            redis_url,
            files,
            churn,
            maxlen,
            seed,
            prefix,
        } => seed::seed_library(
            &redis_url,
            &LibrarySpec {
                n_files: files,
                seed,
                churn,
            },
            maxlen,
            &prefix,
        ),
        Command::SeedSample {
            redis_url,
            jsonl,
            files_root,
            prefix,
        } => {
            let summary = sample::seed_sample(&redis_url, &jsonl, &files_root, &prefix)?;
            println!(
                "seeded {} files ({} properties) from {}; {} source files under {}",
                summary.n_files,
                summary.n_properties,
                jsonl.display(),
                summary.n_source_files,
                files_root.display()
            );
            Ok(())
        }
        Command::Replay {
            redis_url,
            preset,
            prefix,
            baseline_limit,
            runs,
        } => runtime.block_on(replay::compare(
            &redis_url,
            &preset,
            &prefix,
            baseline_limit,
            runs.max(1),
        )),
        Command::Mount {
            redis_url,
            files,
            files_root,
            mountpoint,
            preset,
            prefix,
            scenarios,
            latency_samples,
            read_mib,
            read_runs,
            drop_caches,
            json,
        } => {
            // Kept alive (and stopped when dropped) for the whole run.
            let private_redis = match &redis_url {
                Some(_) => None,
                None => Some(
                    metafuse_testkit::RedisServer::start()
                        .context("cannot start a private redis-server")?,
                ),
            };
            let redis_url = match (redis_url, &private_redis) {
                (Some(url), _) => url,
                (None, Some(server)) => server.url(),
                (None, None) => anyhow::bail!("no redis to measure against"),
            };
            if let Some(n_files) = files {
                seed::seed_library(&redis_url, &LibrarySpec::new(n_files), None, &prefix)?;
            }
            mount_bench::run(
                &runtime,
                mount_bench::MountBenchOptions {
                    redis_url,
                    prefix,
                    preset,
                    files_root,
                    mountpoint,
                    scenarios,
                    latency_samples,
                    read_mib,
                    read_runs,
                    drop_caches,
                    json,
                },
            )
        }
    }
}
