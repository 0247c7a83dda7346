//! What validation reports: shared by the template and condition compilers,
//! which say how bad a problem is, and by validation, which says where it is.
//! Its own module so that none of them depends on another for these types.

use std::fmt;

/// How bad a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The document cannot be loaded.
    Error,
    /// The document loads, but probably does not do what was meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in a rules document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The rule's id, when it has one.
    pub rule_id: Option<String>,
    /// The rule's name, when it has one.
    pub rule_name: Option<String>,
    /// Where in the rule (or document): `template offset 17`, `conditions[0].conditions[2]`, `id`.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: ", self.severity)?;
        if let Some(rule_id) = &self.rule_id {
            write!(formatter, "rule \"{rule_id}\"")?;
            if let Some(rule_name) = &self.rule_name {
                write!(formatter, " ({rule_name})")?;
            }
            formatter.write_str(", ")?;
        }
        write!(formatter, "{}: {}", self.place, self.message)
    }
}
