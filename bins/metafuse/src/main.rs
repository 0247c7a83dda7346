//! `metafuse`: mount and serve a MetaMesh library as a virtual filesystem,
//! check or try out renaming rules, print completions and the manual.
//! Everything but the parsing lives in `metafuse-cli`.

use std::process::ExitCode;

use clap::Parser;
use metafuse_cli::{MetafuseCli, exit_code, run_metafuse};

mod allocator;

fn main() -> ExitCode {
    allocator::give_back_memory_when_idle();
    exit_code(run_metafuse(MetafuseCli::parse()))
}
