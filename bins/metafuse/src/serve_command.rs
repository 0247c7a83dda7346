//! `metafuse serve`: the HTTP API and the live tree, without a mount.

use std::process::ExitCode;

use clap::Args;

use crate::config::{CommonArgs, MountArgs};
use crate::run_service::{Failure, run, settings};

#[derive(Debug, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn execute(command: ServeCommand) -> ExitCode {
    match settings(&command.common, &MountArgs::default()) {
        Ok(settings) => run(settings, None),
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}
