//! The `metafuse` command line: its arguments and what each subcommand runs.

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{CommonArgs, MountArgs};
use crate::exit::{CliError, ExitKind};
use crate::rules_command::{RulesCommand, run_rules};
use crate::service::run_service;

/// The `metafuse` command line.
#[derive(Debug, Parser)]
#[command(
    name = "metafuse",
    version,
    about = "Mount and serve a MetaMesh library as a virtual filesystem, check renaming rules."
)]
pub struct MetafuseCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a rules file, or render paths for files described on stdin.
    Rules(RulesCommand),
    /// Mount the library (foreground): bootstrap, mount, serve the API, follow Redis.
    Mount {
        /// Existing empty directory to mount the library on
        mountpoint: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        mount: MountArgs,
    },
    /// Serve the HTTP API and follow Redis, without a mount.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Print a shell completion script (`source <(metafuse completions bash)`).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `metafuse man | man -l -`), or write one
    /// page per subcommand into a directory.
    Man {
        /// Write `metafuse.1`, `metafuse-mount.1`, … here instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// Runs the subcommand given on the command line.
pub fn run_metafuse(cli: MetafuseCli) -> Result<(), CliError> {
    match cli.command {
        Command::Rules(command) => run_rules(command),
        Command::Mount {
            mountpoint,
            common,
            mount,
        } => run_service(&common, &mount, Some(mountpoint)),
        Command::Serve { common } => run_service(&common, &MountArgs::default(), None),
        Command::Completions { shell } => {
            let mut command = MetafuseCli::command();
            clap_complete::generate(shell, &mut command, "metafuse", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out_dir } => write_manual(out_dir),
    }
}

fn write_manual(out_dir: Option<PathBuf>) -> Result<(), CliError> {
    let command = MetafuseCli::command();
    match out_dir {
        Some(directory) => clap_mangen::generate_to(command, &directory).map_err(|error| {
            CliError::new(
                ExitKind::Failed,
                anyhow::anyhow!(
                    "cannot write manual pages to {}: {error}",
                    directory.display()
                ),
            )
        }),
        None => {
            let mut roff = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut roff)
                .and_then(|()| std::io::stdout().lock().write_all(&roff))
                .map_err(|error| {
                    CliError::new(
                        ExitKind::Failed,
                        anyhow::anyhow!("cannot print the manual page: {error}"),
                    )
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        MetafuseCli::command().debug_assert();
        crate::stats::StatsCli::command().debug_assert();
    }
}
