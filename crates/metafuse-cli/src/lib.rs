//! What the metafuse binaries share, so that each `main` only parses its
//! arguments, calls one function here and maps the outcome to an exit code:
//!
//! - configuration layering, flags > environment (the reference's names) >
//!   TOML file (`--config`) > defaults, for every binary;
//! - logging set-up (text or JSON lines on stderr);
//! - the command runners: `metafuse mount|serve|rules|completions|man` and
//!   `metafuse-stats`;
//! - the one table from failures to exit codes ([`ExitKind`]) and the one
//!   reporter ([`exit_code`]);
//! - systemd readiness notification (`Type=notify`).

#![warn(missing_docs)]

mod config;
mod exit;
mod logging;
mod metafuse_command;
mod rules_command;
mod sd_notify;
mod service;
mod stats;

pub use config::{
    CommonArgs, DEFAULT_API_HOST, DEFAULT_API_PORT, DEFAULT_CONFIG_DIR, DEFAULT_FILES_VOLUME,
    FileConfig, MountArgs, Settings, StatsRules, StatsSettings, StatsSourceArgs, parse_mode,
    resolve, resolve_stats,
};
pub use exit::{CliError, ExitKind, exit_code};
pub use logging::{LogFormat, init_logging};
pub use metafuse_command::{MetafuseCli, run_metafuse};
pub use rules_command::{RulesCommand, run_rules};
pub use sd_notify::{ServiceState, notify_service_manager};
pub use service::run_service;
pub use stats::{StatsCli, run_stats};
