//! Table tests that check every row: a failing row is recorded, the rest
//! still run, and all failures are reported together at the end.

use std::fmt::{Debug, Display};

/// Collects the failing rows of a table test; when dropped (at the end of
/// the test) it fails the test listing every one of them.
///
/// ```
/// let mut table = metafuse_testkit::TableCheck::new();
/// for (text, expected) in [("1", Some(1)), ("x", None)] {
///     table.check_eq(text.parse::<i32>().ok(), expected, text);
/// }
/// // dropped here: panics with every failing row, if any
/// ```
#[derive(Debug, Default)]
pub struct TableCheck {
    rows: usize,
    failures: Vec<String>,
}

impl TableCheck {
    /// An empty check.
    pub fn new() -> Self {
        TableCheck::default()
    }

    /// Records a row whose `actual` must equal `expected`; `row` names it in
    /// the report.
    pub fn check_eq<Actual, Expected>(
        &mut self,
        actual: Actual,
        expected: Expected,
        row: impl Display,
    ) where
        Actual: Debug + PartialEq<Expected>,
        Expected: Debug,
    {
        self.rows += 1;
        if actual != expected {
            self.failures.push(format!(
                "{row}\n    got:      {actual:?}\n    expected: {expected:?}"
            ));
        }
    }

    /// Records a row that holds when `holds` is true; `row` says what was expected.
    pub fn check(&mut self, holds: bool, row: impl Display) {
        self.rows += 1;
        if !holds {
            self.failures.push(row.to_string());
        }
    }

    /// The failures recorded so far, one text per failing row.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }
}

impl Drop for TableCheck {
    fn drop(&mut self) {
        // A panic while already unwinding would abort the test binary.
        if !self.failures.is_empty() && !std::thread::panicking() {
            panic!(
                "{} of {} rows failed:\n  {}",
                self.failures.len(),
                self.rows,
                self.failures.join("\n  ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TableCheck;

    #[test]
    fn every_failing_row_is_reported_not_only_the_first() {
        let outcome = std::panic::catch_unwind(|| {
            let mut table = TableCheck::new();
            for (number, expected) in [(1, 1), (2, 20), (3, 3), (4, 40)] {
                table.check_eq(number, expected, format!("row {number}"));
            }
        });
        let payload = outcome.expect_err("two rows fail");
        let message = payload
            .downcast_ref::<String>()
            .expect("formatted panic message");
        assert!(message.starts_with("2 of 4 rows failed"), "{message}");
        assert!(
            message.contains("row 2") && message.contains("row 4"),
            "{message}"
        );
        assert!(
            !message.contains("row 1") && !message.contains("row 3"),
            "{message}"
        );
    }

    #[test]
    fn a_table_without_failures_passes() {
        let mut table = TableCheck::new();
        table.check(true, "holds");
        table.check_eq("a", "a", "equal");
        assert!(table.failures().is_empty());
    }
}
