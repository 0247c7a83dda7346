/// Why a stream entry's key is not a file property key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key does not start with `{prefix}file:`.
    #[error("key {key:?} is not a file key (expected \"{prefix}file:{{hashId}}/{{property}}\")")]
    NotAFileKey {
        /// The offending key.
        key: String,
        /// The key prefix in force.
        prefix: String,
    },
    /// The key is the file index, whose changes carry no property.
    #[error("key {key:?} is the file index, not a property")]
    IndexKey {
        /// The offending key.
        key: String,
    },
    /// `file:{hashId}` without `/{property}`, or an empty hashId or property.
    #[error("key {key:?} lacks a hashId or a property")]
    MissingPart {
        /// The offending key.
        key: String,
    },
}

/// The stream every MetaMesh writer appends to. It is *not* prefixed: the
/// writers use `meta:events` whatever `REDIS_PREFIX` is (the prefix applies
/// to `file:` keys only).
pub const EVENTS_STREAM: &str = "meta:events";

/// What follows the key prefix in every file key:
/// `{prefix}file:{hashId}/{property}`.
pub const FILE_KEY_PREFIX: &str = "file:";

/// The hashId of the file index set (`{prefix}file:__index__`).
pub const INDEX_HASH_ID: &str = "__index__";

/// `{prefix}file:{hashId}/{property}`.
pub fn file_key(prefix: &str, hash_id: &str, property: &str) -> String {
    format!("{prefix}{FILE_KEY_PREFIX}{hash_id}/{property}")
}

/// `{prefix}file:__index__`, the set of every file's hashId.
pub fn index_key(prefix: &str) -> String {
    format!("{prefix}{FILE_KEY_PREFIX}{INDEX_HASH_ID}")
}

/// `text` with the glob characters of Redis `SCAN MATCH` (`* ? [ ] \`)
/// escaped, so a key prefix or property name is matched literally.
pub fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Splits `{prefix}file:{hashId}/{property}` into `(hashId, property)`.
///
/// The hashId is everything between `file:` and the first `/`; the property
/// is the rest and may itself contain `/` (`titles/eng`, `audio/0/codec`).
pub fn parse_event_key<'k>(key: &'k str, prefix: &str) -> Result<(&'k str, &'k str), KeyError> {
    let Some(rest) = key
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(FILE_KEY_PREFIX))
    else {
        return Err(KeyError::NotAFileKey {
            key: key.to_owned(),
            prefix: prefix.to_owned(),
        });
    };
    let Some((hash_id, property)) = rest.split_once('/') else {
        if rest == INDEX_HASH_ID {
            return Err(KeyError::IndexKey {
                key: key.to_owned(),
            });
        }
        return Err(KeyError::MissingPart {
            key: key.to_owned(),
        });
    };
    if hash_id == INDEX_HASH_ID {
        return Err(KeyError::IndexKey {
            key: key.to_owned(),
        });
    }
    if hash_id.is_empty() || property.is_empty() {
        return Err(KeyError::MissingPart {
            key: key.to_owned(),
        });
    }
    Ok((hash_id, property))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_hash_id_at_the_first_slash() {
        assert_eq!(
            parse_event_key("file:abc/titles/eng", ""),
            Ok(("abc", "titles/eng"))
        );
        assert_eq!(
            parse_event_key("mm:file:abc/filePath", "mm:"),
            Ok(("abc", "filePath"))
        );
    }

    #[test]
    fn rejects_index_foreign_and_partial_keys() {
        assert!(matches!(
            parse_event_key("file:__index__", ""),
            Err(KeyError::IndexKey { .. })
        ));
        assert!(matches!(
            parse_event_key("file:__index__/x", ""),
            Err(KeyError::IndexKey { .. })
        ));
        assert!(matches!(
            parse_event_key("other:abc/x", ""),
            Err(KeyError::NotAFileKey { .. })
        ));
        assert!(matches!(
            parse_event_key("file:abc/x", "mm:"),
            Err(KeyError::NotAFileKey { .. })
        ));
        assert!(matches!(
            parse_event_key("file:abc", ""),
            Err(KeyError::MissingPart { .. })
        ));
        assert!(matches!(
            parse_event_key("file:/x", ""),
            Err(KeyError::MissingPart { .. })
        ));
        assert!(matches!(
            parse_event_key("file:abc/", ""),
            Err(KeyError::MissingPart { .. })
        ));
    }

    #[test]
    fn keys_are_built_as_the_writers_name_them() {
        assert_eq!(
            file_key("mm:", "abc", "titles/eng"),
            "mm:file:abc/titles/eng"
        );
        assert_eq!(index_key(""), "file:__index__");
        assert_eq!(
            parse_event_key(&file_key("p:", "a", "b/c"), "p:"),
            Ok(("a", "b/c"))
        );
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(escape_glob("mm:file:"), "mm:file:");
    }

    #[test]
    fn error_messages_name_the_key() {
        let error = parse_event_key("junk", "").unwrap_err();
        assert!(error.to_string().contains("\"junk\""), "{error}");
    }
}
