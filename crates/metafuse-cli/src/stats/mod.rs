//! `metafuse-stats`: offline mode bootstraps a projection straight from
//! Redis, as the service would, and reports on it (or lists the virtual
//! paths); `--api` mode asks a running instance over HTTP.

mod api;
mod offline;

use clap::Parser;

use crate::config::{StatsSourceArgs, load_file_config, resolve_stats};
use crate::exit::{CliError, ExitKind};
use crate::logging::{LogFormat, init_logging};

/// The `metafuse-stats` command line.
#[derive(Debug, Parser)]
#[command(
    name = "metafuse-stats",
    version,
    about = "Statistics of a MetaMesh library, computed offline from its Redis, or read from a running metafuse instance (--api)."
)]
pub struct StatsCli {
    #[command(flatten)]
    source: StatsSourceArgs,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    /// Print one JSON line per visible file with its relevant properties.
    #[arg(long, conflicts_with_all = ["json", "list"])]
    dump: bool,
    /// Print every virtual file path, one per line, sorted, as the mount
    /// shows them (rules and collision suffixes applied).
    #[arg(long, conflicts_with = "json")]
    list: bool,
    /// Read the statistics of a running instance at this base URL
    /// (`http://127.0.0.1:3000`) instead of bootstrapping from Redis.
    #[arg(long, value_name = "URL", conflicts_with_all = ["dump", "list", "rules"])]
    api: Option<String>,
    /// Log lines as text or JSON.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// What offline mode prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Summary,
    Json,
    Dump,
    List,
}

/// Runs `metafuse-stats`.
pub fn run_stats(cli: StatsCli) -> Result<(), CliError> {
    init_logging(cli.log_format, "warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            CliError::new(
                ExitKind::Failed,
                anyhow::anyhow!("cannot start the async runtime: {error}"),
            )
        })?;
    if let Some(base_url) = &cli.api {
        return runtime.block_on(api::run(base_url, cli.json));
    }
    let file =
        load_file_config(cli.source.config.as_deref()).map_err(CliError::of(ExitKind::Config))?;
    let settings = resolve_stats(&cli.source, |name| std::env::var(name).ok(), &file)
        .map_err(CliError::of(ExitKind::Config))?;
    let output = if cli.list {
        Output::List
    } else if cli.dump {
        Output::Dump
    } else if cli.json {
        Output::Json
    } else {
        Output::Summary
    };
    runtime.block_on(offline::run(&settings, output))
}
