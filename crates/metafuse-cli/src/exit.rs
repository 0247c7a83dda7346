//! The one table from failures to exit codes, and the one place that
//! reports a failure (docs/configuration.md, "Exit codes").

use std::fmt;

/// Why a command failed; each kind has one exit code, whichever binary
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// 1: the command ran and its answer is "no" (a rules file with errors,
    /// lines that could not be rendered), or a one-shot command could not
    /// reach what it asks (Redis for `metafuse-stats`, a running instance's
    /// API). Long-running commands wait for Redis instead.
    Failed,
    /// 2: bad invocation or configuration: a flag, setting or config file,
    /// an unknown preset, an unreadable rules file, a missing mountpoint.
    Config,
    /// 3: the source (Redis, leader discovery) failed for a reason waiting
    /// cannot mend: a malformed URL, an unexpected reply.
    Source,
    /// 4: mounting or unmounting failed.
    Mount,
    /// 5: the API address could not be bound.
    Api,
}

impl ExitKind {
    /// The process exit code of this kind.
    pub fn code(self) -> u8 {
        match self {
            ExitKind::Failed => 1,
            ExitKind::Config => 2,
            ExitKind::Source => 3,
            ExitKind::Mount => 4,
            ExitKind::Api => 5,
        }
    }
}

/// A failure of a command: its kind (hence its exit code) and, unless it
/// was already shown to the user, the error to print.
pub struct CliError {
    kind: ExitKind,
    error: Option<anyhow::Error>,
}

impl CliError {
    /// A failure to report as `error: {error:#}`.
    pub fn new(kind: ExitKind, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            kind,
            error: Some(error.into()),
        }
    }

    /// A failure whose explanation was already printed (`rules check`
    /// lists every problem on stdout).
    pub fn already_reported(kind: ExitKind) -> Self {
        CliError { kind, error: None }
    }

    /// Maps any error to `kind`, for `map_err`.
    pub fn of<E: Into<anyhow::Error>>(kind: ExitKind) -> impl FnOnce(E) -> CliError {
        move |error| CliError::new(kind, error)
    }

    /// What the exit code is.
    pub fn kind(&self) -> ExitKind {
        self.kind
    }
}

impl fmt::Debug for CliError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}: {self}", self.kind)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Some(error) => write!(formatter, "{error:#}"),
            None => write!(formatter, "failed (reported above)"),
        }
    }
}

/// Prints the failure, if not yet shown, and turns the outcome into the
/// process exit code: what every `main` returns.
pub fn exit_code(outcome: Result<(), CliError>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(error) = &failure.error {
                eprintln!("error: {error:#}");
            }
            std::process::ExitCode::from(failure.kind.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code() {
        let kinds = [
            ExitKind::Failed,
            ExitKind::Config,
            ExitKind::Source,
            ExitKind::Mount,
            ExitKind::Api,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|kind| kind.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn the_message_carries_the_whole_chain() {
        let error = anyhow::anyhow!("connection refused").context("cannot reach x");
        let failure = CliError::new(ExitKind::Failed, error);
        assert_eq!(failure.to_string(), "cannot reach x: connection refused");
    }
}
