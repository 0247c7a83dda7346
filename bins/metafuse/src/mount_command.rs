//! `metafuse mount`: bootstrap, mount, serve the API, follow Redis.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::{CommonArgs, MountArgs};
use crate::run_service::{Failure, run, settings};

#[derive(Debug, Args)]
pub struct MountCommand {
    /// Existing empty directory to mount the library on
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub mount: MountArgs,
}

pub fn execute(command: MountCommand) -> ExitCode {
    match settings(&command.common, &command.mount) {
        Ok(settings) => run(settings, Some(command.mountpoint)),
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}
