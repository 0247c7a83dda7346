//! The set of properties worth fetching: everything else is skipped.

use std::cmp::Ordering;

use crate::metadata::{CORE_PROPERTIES, is_separator, normalize_property_name};

/// Property names that matter to the rules, in `/` form, sorted.
///
/// Matching treats `/` and `.` alike and covers whole subtrees both ways:
/// tracking `titles` makes `titles/eng` relevant, and tracking `titles.eng`
/// makes a change of `titles` relevant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelevantProperties {
    names: Vec<String>,
}

/// Compares a stored name (already in `/` form) with a probe whose
/// separators may be `.`, optionally as if the probe ended with `/`.
fn compare_with_probe(name: &[u8], probe: &[u8], probe_has_trailing_separator: bool) -> Ordering {
    let normalized_probe = probe
        .iter()
        .map(|byte| if is_separator(*byte) { b'/' } else { *byte });
    let trailing = probe_has_trailing_separator.then_some(b'/');
    name.iter().copied().cmp(normalized_probe.chain(trailing))
}

impl RelevantProperties {
    /// The given names (either separator) plus the core set.
    pub fn from_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut names: Vec<String> = names
            .into_iter()
            .map(|name| normalize_property_name(name.as_ref()))
            .map(|name| name.trim_matches('/').to_owned())
            .filter(|name| !name.is_empty())
            .chain(CORE_PROPERTIES.iter().map(|name| (*name).to_owned()))
            .collect();
        names.sort_unstable();
        names.dedup();
        RelevantProperties { names }
    }

    fn contains_exactly(&self, probe: &[u8]) -> bool {
        self.names
            .binary_search_by(|name| compare_with_probe(name.as_bytes(), probe, false))
            .is_ok()
    }

    /// Whether a change of `property` (as stored, `titles/eng`, or dotted)
    /// matters. Called for every stream event: binary searches, no allocation.
    pub fn is_relevant(&self, property: &str) -> bool {
        let probe = property.as_bytes();
        if probe.is_empty() {
            return false;
        }
        if self.contains_exactly(probe) {
            return true;
        }
        // A tracked ancestor: `titles` covers `titles/eng`.
        for (position, byte) in probe.iter().enumerate() {
            if is_separator(*byte) && self.contains_exactly(&probe[..position]) {
                return true;
            }
        }
        // A tracked descendant: `titles/eng` makes `titles` relevant. Every
        // name starting with `property/` sorts at or after `property/`.
        let first_candidate = self.names.partition_point(|name| {
            compare_with_probe(name.as_bytes(), probe, true) == Ordering::Less
        });
        self.names.get(first_candidate).is_some_and(|name| {
            name.len() > probe.len()
                && compare_with_probe(&name.as_bytes()[..=probe.len()], probe, true)
                    == Ordering::Equal
        })
    }

    /// Every tracked name, sorted, in `/` form.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Names tracked here whose values `older` did not fetch (neither the
    /// name nor an ancestor of it was tracked there): what must be fetched
    /// for every known file when the rules change.
    pub fn added_since(&self, older: &RelevantProperties) -> Vec<String> {
        self.names
            .iter()
            .filter(|name| {
                let bytes = name.as_bytes();
                let covered_by_ancestor = bytes.iter().enumerate().any(|(position, byte)| {
                    *byte == b'/' && older.contains_exactly(&bytes[..position])
                });
                !older.contains_exactly(bytes) && !covered_by_ancestor
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use metafuse_testkit::TableCheck;

    use super::*;

    #[test]
    fn matching_treats_separators_alike_and_covers_subtrees() {
        let relevant = RelevantProperties::from_names(["titles", "audio.0.codec", "genre"]);
        let cases = [
            ("titles", true),
            ("titles/eng", true),
            ("titles.eng", true),
            ("titlesx", false),
            ("title", false),
            ("audio/0/codec", true),
            ("audio/0", true),
            ("audio", true),
            ("audio/1/codec", false),
            ("audio/0/codecs", false),
            ("genre", true),
            ("genres", false),
            ("filePath", true),
            ("", false),
        ];
        let mut table = TableCheck::new();
        for (property, expected) in cases {
            table.check_eq(relevant.is_relevant(property), expected, property);
        }
    }

    #[test]
    fn a_descendant_is_found_past_names_that_sort_between() {
        // '-' and '!' sort before '/', so these sit between `titles` and `titles/eng`.
        let relevant = RelevantProperties::from_names(["titles-x", "titles!", "titles/eng"]);
        assert!(relevant.is_relevant("titles"));
        assert!(!relevant.is_relevant("titles-"));
    }

    #[test]
    fn added_since_ignores_names_an_ancestor_already_covered() {
        let older = RelevantProperties::from_names(["titles", "genre"]);
        let newer = RelevantProperties::from_names(["titles/eng", "genre", "season"]);
        assert_eq!(newer.added_since(&older), vec!["season".to_owned()]);
        assert_eq!(older.added_since(&newer), vec!["titles".to_owned()]);
    }
}
