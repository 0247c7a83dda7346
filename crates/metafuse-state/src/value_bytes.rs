//! Values that are not UTF-8. Redis values are bytes; the projection keeps
//! text. A value used in names (a Latin-1 title) is decoded lossily — never
//! dropped — so the file keeps its place under the rules. A `filePath` is
//! different: it names the bytes to read, so its exact bytes must survive.
//! [`stored_value`] turns any value into the text the projection keeps, and
//! [`file_path_bytes`] gives a stored `filePath`'s exact bytes back: the
//! byte reader (local file, upstream WebDAV) must open
//! `file_path_bytes(stored)`, never the stored text itself.
//!
//! The representation: a UTF-8 value is stored as it is. A non-UTF-8
//! `filePath` is stored as `\0` followed by its bytes with every invalid
//! byte written `\xHH` and every backslash `\\`; so is a UTF-8 `filePath`
//! that starts with a NUL byte. No real path holds a NUL byte, so the
//! marker cannot collide with a stored UTF-8 path, and the
//! name shown (`caf\xe9.mkv`) keeps every byte visible and distinct.

use std::borrow::Cow;

/// The property whose exact bytes are kept.
pub const FILE_PATH_PROPERTY: &str = "filePath";

/// Starts a `filePath` stored escaped.
const ESCAPED_MARKER: char = '\0';

/// The text the projection stores for `property`'s value `bytes`: the
/// value itself when it is UTF-8; otherwise a lossless escape for
/// `filePath` and a lossy decoding (U+FFFD for invalid bytes) for anything
/// else.
pub fn stored_value<'bytes>(property: &str, bytes: &'bytes [u8]) -> Cow<'bytes, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        // A UTF-8 `filePath` that itself starts with the marker (hostile
        // input: no real path holds a NUL) is escaped too, or it would
        // read back without its first byte.
        if property != FILE_PATH_PROPERTY || !text.starts_with(ESCAPED_MARKER) {
            return Cow::Borrowed(text);
        }
    }
    if property != FILE_PATH_PROPERTY {
        return String::from_utf8_lossy(bytes);
    }
    let mut escaped = String::with_capacity(bytes.len() + 8);
    escaped.push(ESCAPED_MARKER);
    for chunk in bytes.utf8_chunks() {
        for character in chunk.valid().chars() {
            if character == '\\' {
                escaped.push_str("\\\\");
            } else {
                escaped.push(character);
            }
        }
        for byte in chunk.invalid() {
            escaped.push_str(&format!("\\x{byte:02x}"));
        }
    }
    Cow::Owned(escaped)
}

/// The exact bytes of a `filePath` as [`stored_value`] stored it: what the
/// byte reader must open.
pub fn file_path_bytes(stored: &str) -> Cow<'_, [u8]> {
    let Some(escaped) = stored.strip_prefix(ESCAPED_MARKER) else {
        return Cow::Borrowed(stored.as_bytes());
    };
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match (first, tail) {
            (b'\\', [b'\\', after @ ..]) => {
                bytes.push(b'\\');
                rest = after;
            }
            (b'\\', [b'x', high, low, after @ ..]) => match hex_byte(*high, *low) {
                Some(byte) => {
                    bytes.push(byte);
                    rest = after;
                }
                None => {
                    bytes.push(first);
                    rest = tail;
                }
            },
            _ => {
                bytes.push(first);
                rest = tail;
            }
        }
    }
    Cow::Owned(bytes)
}

fn hex_byte(high: u8, low: u8) -> Option<u8> {
    let digit = |digit: u8| (digit as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utf8_values_are_kept_as_they_are() {
        assert_eq!(stored_value("title", "Amélie".as_bytes()), "Amélie");
        assert_eq!(stored_value("filePath", b"a\\b/c.mkv"), "a\\b/c.mkv");
        assert_eq!(&*file_path_bytes("a\\b/c.mkv"), b"a\\b/c.mkv");
    }

    #[test]
    fn non_utf8_names_are_decoded_lossily_and_paths_escaped() {
        assert_eq!(stored_value("title", b"Am\xe9lie"), "Am\u{fffd}lie");
        let stored = stored_value("filePath", b"films/caf\xe9\\x.mkv");
        assert_eq!(stored, "\0films/caf\\xe9\\\\x.mkv");
        assert_eq!(&*file_path_bytes(&stored), b"films/caf\xe9\\x.mkv");
    }

    #[test]
    fn a_utf8_path_starting_with_nul_round_trips() {
        for bytes in [&b"\0"[..], b"\0a\\b", b"\0\0"] {
            let stored = stored_value(FILE_PATH_PROPERTY, bytes);
            assert_eq!(&*file_path_bytes(&stored), bytes);
        }
    }

    proptest! {
        #[test]
        fn every_file_path_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let stored = stored_value(FILE_PATH_PROPERTY, &bytes);
            prop_assert_eq!(&*file_path_bytes(&stored), &bytes[..]);
        }
    }
}
