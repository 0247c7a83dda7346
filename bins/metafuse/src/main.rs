//! `metafuse`: mount and serve a MetaMesh library as a virtual filesystem,
//! and check or try out renaming rules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod config;
mod mount_command;
mod rules_command;
mod run_service;
mod serve_command;

#[derive(Debug, Parser)]
#[command(name = "metafuse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a rules file, or render paths for files described on stdin.
    Rules(rules_command::RulesCommand),
    /// Mount the library (foreground): bootstrap, mount, serve the API, follow Redis.
    Mount(mount_command::MountCommand),
    /// Serve the HTTP API and follow Redis, without a mount.
    Serve(serve_command::ServeCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Rules(command) => rules_command::run(command),
        Command::Mount(command) => {
            init_logging();
            mount_command::execute(command)
        }
        Command::Serve(command) => {
            init_logging();
            serve_command::execute(command)
        }
    }
}

/// Info by default; `RUST_LOG` overrides.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
