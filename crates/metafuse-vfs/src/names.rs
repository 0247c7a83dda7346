//! Name hygiene and collision suffixes.
//!
//! The rules crate already renders safe paths; the tree still refuses the few
//! components a kernel cannot serve (`""`, `.`, `..`) so that a bad rendering
//! can never break the mount.

use std::borrow::Cow;

/// Longest name component Linux accepts (`NAME_MAX`); a longer one could be
/// listed but never looked up.
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// Splits a rendered path into its directory components and its file name.
///
/// Empty components collapse, `.`/`..` become `_`, and an empty path falls
/// back to the hashId so that every file still gets a name.
pub(crate) fn split_rendered_path<'p>(
    path: &'p str,
    hash_id: &'p str,
) -> (Vec<Cow<'p, str>>, Cow<'p, str>) {
    let mut components: Vec<Cow<'p, str>> = path
        .split('/')
        .filter(|component| !component.is_empty())
        .map(|component| match component {
            "." | ".." => Cow::Borrowed("_"),
            other => Cow::Borrowed(other),
        })
        .collect();
    let file_name = components
        .pop()
        .unwrap_or(Cow::Borrowed(if hash_id.is_empty() {
            "_"
        } else {
            hash_id
        }));
    (components, file_name)
}

/// The name a file tries at a given collision level.
///
/// Level 0 is the rendered name; level 1 inserts ` [last 8 chars of hashId]`
/// (the spec's form); level 2 uses the whole hashId, which only matters when
/// two hashIds share their last 8 chars or a suffixed name is itself taken;
/// deeper levels add a counter so a free name always exists.
pub(crate) fn candidate_name<'n>(desired_name: &'n str, hash_id: &str, level: u32) -> Cow<'n, str> {
    match level {
        0 => Cow::Borrowed(desired_name),
        1 => Cow::Owned(insert_tag(desired_name, last_chars(hash_id, 8))),
        2 => Cow::Owned(insert_tag(desired_name, hash_id)),
        deeper => Cow::Owned(insert_tag(
            desired_name,
            &format!("{hash_id} {}", deeper - 1),
        )),
    }
}

fn last_chars(text: &str, n_chars: usize) -> &str {
    let start = text
        .char_indices()
        .rev()
        .nth(n_chars - 1)
        .map_or(0, |(index, _)| index);
    &text[start..]
}

/// Inserts ` [tag]` before the last `.` of the name, or appends it when the
/// name has no `.` or only a leading one; the stem is shortened (on a UTF-8
/// boundary) when the result would exceed `NAME_MAX`.
fn insert_tag(name: &str, tag: &str) -> String {
    let split_at = match name.rfind('.') {
        None | Some(0) => name.len(),
        Some(index) => index,
    };
    let (stem, extension) = name.split_at(split_at);
    let suffix_bytes = tag.len() + 3;
    let stem_budget = MAX_NAME_BYTES.saturating_sub(suffix_bytes + extension.len());
    let mut tagged = String::with_capacity(name.len() + suffix_bytes);
    tagged.push_str(truncate_on_char_boundary(stem, stem_budget));
    tagged.push_str(" [");
    tagged.push_str(tag);
    tagged.push(']');
    tagged.push_str(extension);
    if tagged.len() > MAX_NAME_BYTES {
        let keep = truncate_on_char_boundary(&tagged, MAX_NAME_BYTES).len();
        tagged.truncate(keep);
    }
    tagged
}

fn truncate_on_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_goes_before_the_last_dot_or_at_the_end() {
        let cases = [
            ("Heat (1995).mkv", "Heat (1995) [9f3a1c2e].mkv"),
            ("Dark S01E01.eng.srt", "Dark S01E01.eng [9f3a1c2e].srt"),
            ("README", "README [9f3a1c2e]"),
            (".hidden", ".hidden [9f3a1c2e]"),
            (".hidden.mkv", ".hidden [9f3a1c2e].mkv"),
        ];
        for (name, expected) in cases {
            assert_eq!(
                candidate_name(name, "00000000009f3a1c2e", 1),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn deeper_levels_use_the_whole_hash_then_a_counter() {
        assert_eq!(candidate_name("a.mkv", "h123456789", 0), "a.mkv");
        assert_eq!(candidate_name("a.mkv", "h123456789", 1), "a [23456789].mkv");
        assert_eq!(
            candidate_name("a.mkv", "h123456789", 2),
            "a [h123456789].mkv"
        );
        assert_eq!(
            candidate_name("a.mkv", "h123456789", 3),
            "a [h123456789 2].mkv"
        );
        assert_eq!(candidate_name("a.mkv", "short", 1), "a [short].mkv");
    }

    #[test]
    fn suffixed_names_stay_within_name_max_on_a_char_boundary() {
        let long_stem = "é".repeat(125);
        let name = format!("{long_stem}.mkv");
        assert!(name.len() <= MAX_NAME_BYTES);
        let tagged = candidate_name(&name, "0123456789abcdef", 1);
        assert!(tagged.len() <= MAX_NAME_BYTES, "{}", tagged.len());
        assert!(tagged.ends_with(" [89abcdef].mkv"), "{tagged}");
    }

    #[test]
    fn rendered_paths_are_split_defensively() {
        let (directories, name) = split_rendered_path("/TV Shows//../Dark/./x.mkv", "h");
        assert_eq!(directories, ["TV Shows", "_", "Dark", "_"]);
        assert_eq!(name, "x.mkv");
        let (directories, name) = split_rendered_path("//", "hash1");
        assert!(directories.is_empty());
        assert_eq!(name, "hash1");
    }
}
