//! Path hygiene (spec §5): whatever a template and the metadata produce, the
//! result is a safe relative path.

/// Longest component Linux file systems accept, in bytes.
const MAX_COMPONENT_BYTES: usize = 255;

/// An "extension" longer than this is more likely the tail of a title with
/// a dot in it, and is not worth keeping when a component is cut.
const MAX_KEPT_EXTENSION_BYTES: usize = 32;

/// Characters the reference stripped from every path (Windows-hostile).
fn is_stripped(character: char) -> bool {
    matches!(character, '<' | '>' | ':' | '"' | '|' | '?' | '*') || character.is_control()
}

/// Template literal text: stripped characters removed, `\` becomes `/`
/// (the reference's sanitation). Done once, at compile time.
pub(crate) fn sanitize_literal(text: &str) -> String {
    text.chars()
        .filter(|character| !is_stripped(*character))
        .map(|character| if character == '\\' { '/' } else { character })
        .collect()
}

/// Whether `byte` may need work in a value; bytes >= 0x80 are checked per
/// character because C1 control characters (U+0080..U+009F) start with 0xC2.
fn byte_needs_care(byte: u8) -> bool {
    byte < 0x20
        || byte == 0x7f
        || byte == 0xc2
        || matches!(
            byte,
            b'<' | b'>' | b':' | b'"' | b'|' | b'?' | b'*' | b'/' | b'\\'
        )
}

/// Appends an interpolated value: a value never creates directories, so
/// `/` and `\` become `-`; stripped characters are dropped.
pub(crate) fn push_value(output: &mut String, value: &str) {
    if !value.bytes().any(byte_needs_care) {
        output.push_str(value);
        return;
    }
    for character in value.chars() {
        push_value_char(output, character);
    }
}

/// One character of an interpolated value (see [`push_value`]).
pub(crate) fn push_value_char(output: &mut String, character: char) {
    match character {
        '/' | '\\' => output.push('-'),
        character if is_stripped(character) => {}
        character => output.push(character),
    }
}

/// Turns the raw rendering (where only `/` separates components) into the
/// final path: empty components collapse, `.`/`..` become `_`, long
/// components are cut keeping their extension, and a missing file name
/// becomes the hashId. Works in place: one allocation per render overall.
pub(crate) fn finish_path(mut raw: String, hash_id: &str) -> String {
    if raw.is_empty() || raw.ends_with('/') {
        push_value(&mut raw, hash_id);
    }
    let mut bytes = raw.into_bytes();
    let length = bytes.len();
    let mut write = 0;
    let mut read = 0;
    // Invariant: write <= read, so copying a component left never
    // overwrites bytes not yet read.
    while read < length {
        let end = bytes[read..]
            .iter()
            .position(|byte| *byte == b'/')
            .map_or(length, |offset| read + offset);
        if end > read {
            if write > 0 {
                bytes[write] = b'/';
                write += 1;
            }
            let component = &bytes[read..end];
            if component == b"." || component == b".." {
                bytes[write] = b'_';
                write += 1;
            } else if component.len() > MAX_COMPONENT_BYTES {
                let (stem_end, extension_start) = cut_points(component);
                bytes.copy_within(read..read + stem_end, write);
                write += stem_end;
                bytes.copy_within(read + extension_start..end, write);
                write += end - read - extension_start;
            } else {
                bytes.copy_within(read..end, write);
                write += end - read;
            }
        }
        read = end + 1;
    }
    bytes.truncate(write);
    if bytes.is_empty() {
        // Only possible when the hashId itself sanitizes to nothing.
        bytes.push(b'_');
    }
    // Cuts are made on character boundaries, so this never fails; the
    // lossy branch only keeps the function total.
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// For a component over the limit: where its kept stem ends and where its
/// kept extension (with the dot) starts.
fn cut_points(component: &[u8]) -> (usize, usize) {
    let extension_start = component
        .iter()
        .rposition(|byte| *byte == b'.')
        .filter(|dot| *dot > 0 && component.len() - dot <= MAX_KEPT_EXTENSION_BYTES)
        .unwrap_or(component.len());
    let budget = MAX_COMPONENT_BYTES - (component.len() - extension_start);
    let mut stem_end = budget.min(extension_start);
    // Back up to a UTF-8 character boundary (continuation bytes are 0b10xxxxxx).
    while stem_end > 0 && (component[stem_end] & 0xc0) == 0x80 {
        stem_end -= 1;
    }
    (stem_end, extension_start)
}

#[cfg(test)]
mod tests {
    use metafuse_testkit::TableCheck;

    use super::*;

    #[test]
    fn finishing_collapses_empty_components_and_neutralises_dots() {
        let cases = [
            ("a//b/", "h", "a/b/h"),
            ("/a/b", "h", "a/b"),
            ("", "h", "h"),
            ("../x/./y", "h", "_/x/_/y"),
            ("a/../..", "h", "a/_/_"),
            ("///", "", "_"),
        ];
        let mut table = TableCheck::new();
        for (raw, hash, expected) in cases {
            table.check_eq(finish_path(raw.to_owned(), hash), expected, raw);
        }
    }

    #[test]
    fn long_components_are_cut_on_a_character_boundary_keeping_the_extension() {
        let long = format!("dir/{}.mkv", "é".repeat(200));
        let finished = finish_path(long, "h");
        let name = finished.strip_prefix("dir/").expect("directory kept");
        assert!(name.len() <= 255, "{}", name.len());
        assert!(name.ends_with("é.mkv"));
        let no_extension = finish_path("x".repeat(300), "h");
        assert_eq!(no_extension.len(), 255);
    }

    #[test]
    fn values_never_create_directories() {
        let mut output = String::new();
        push_value(&mut output, "AC/DC\\x<y>:\"|?*\u{0}\u{85}z");
        assert_eq!(output, "AC-DC-xyz");
        assert_eq!(sanitize_literal("a\\b<c>\u{1}"), "a/bc");
    }
}
