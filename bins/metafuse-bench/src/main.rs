//! `metafuse-bench`: seeds synthetic libraries, times every bootstrap
//! strategy against the old design on the same data, and measures the
//! mount end to end (`find`, change latency, sequential reads).

mod baseline;
mod commands;
mod mount_bench;
mod replay;
mod sample;
mod scale_bench;
mod seed;
mod warm_bench;

use std::process::ExitCode;

use clap::Parser;
use metafuse_cli::{CliError, ExitKind, exit_code};

fn main() -> ExitCode {
    let arguments = commands::Arguments::parse();
    exit_code(commands::run(arguments).map_err(CliError::of(ExitKind::Failed)))
}
