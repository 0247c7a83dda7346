//! `metafuse-stats`: statistics of a MetaMesh library, offline from its
//! Redis or from a running instance's API. Everything but the parsing lives
//! in `metafuse-cli`.

use std::process::ExitCode;

use clap::Parser;
use metafuse_cli::{StatsCli, exit_code, run_stats};

fn main() -> ExitCode {
    exit_code(run_stats(StatsCli::parse()))
}
