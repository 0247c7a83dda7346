//! `metafuse-stats`: statistics of a MetaMesh library.
//!
//! Modes live in their own modules; `offline` bootstraps a projection
//! straight from Redis, as the service would, and reports on it.

mod offline;

use std::process::ExitCode;

use clap::Parser;
use metafuse_stream::Strategy;

/// Statistics of a MetaMesh library, computed offline from its Redis.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Arguments {
    /// Redis URL (`redis://` or `rediss://`, password in the URL).
    #[arg(long, env = "REDIS_URL")]
    redis_url: String,
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
    #[arg(long)]
    dump: bool,
}

/// Exit codes: 1 when Redis fails, 2 when the input (rules) is invalid.
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
    match runtime.block_on(offline::run(&arguments)) {
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
