//! `metafuse-stats`: statistics of a MetaMesh library.
//!
//! Modes live in their own modules: `offline` bootstraps a projection
//! straight from Redis, as the service would, and reports on it (or lists
//! the virtual paths); `api` asks a running instance over HTTP.

mod api;
mod offline;

use std::process::ExitCode;

use clap::Parser;
use metafuse_stream::Strategy;

/// Statistics of a MetaMesh library, computed offline from its Redis, or
/// read from a running metafuse instance (`--api`).
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Arguments {
    /// Redis URL (`redis://` or `rediss://`, password in the URL).
    #[arg(long, env = "REDIS_URL", required_unless_present = "api")]
    redis_url: Option<String>,
    /// Prefix of the `file:` keys.
    #[arg(long, env = "REDIS_PREFIX", default_value = "")]
    prefix: String,
    /// Rules file (JSON or TOML) whose relevant properties to load.
    #[arg(long, conflicts_with = "preset")]
    rules: Option<std::path::PathBuf>,
    /// Shipped rules preset (default, plex, jellyfin).
    #[arg(long, default_value = "default")]
    preset: String,
    /// Bootstrap strategy: auto, replay or snapshot.
    #[arg(long, default_value = "auto")]
    strategy: Strategy,
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
}

/// Exit codes: 1 when Redis (or the API) fails, 2 when the input (rules) is invalid.
pub(crate) enum Failure {
    Redis(anyhow::Error),
    Input(anyhow::Error),
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match &arguments.api {
        Some(base_url) => runtime
            .block_on(api::run(base_url, arguments.json))
            .map_err(Failure::Redis),
        None => runtime.block_on(offline::run(&arguments)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Redis(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
        Err(Failure::Input(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
