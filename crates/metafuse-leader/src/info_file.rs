//! Reading `kv-leader.info`: the meta-core API base URL of the current leader.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why the info file gave no meta-core URL. Each is a normal "no leader yet"
/// state, never a fatal error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InfoFileProblem {
    #[error("leader info directory {} does not exist (is the meta-core volume mounted?)", .path.display())]
    LocksDirectoryMissing { path: PathBuf },
    #[error("leader info file {} does not exist yet", .path.display())]
    FileMissing { path: PathBuf },
    #[error("leader info file {} is empty", .path.display())]
    FileEmpty { path: PathBuf },
    #[error("leader info file {} is unreadable: {reason}", .path.display())]
    FileUnreadable { path: PathBuf, reason: String },
}

/// What the info file said, with its mtime so a rewrite with the same content
/// (a re-elected leader) is still noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InfoFileContent {
    pub(crate) meta_core_url: String,
    pub(crate) modified: Option<SystemTime>,
}

pub(crate) async fn read_info_file(path: &Path) -> Result<InfoFileContent, InfoFileProblem> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            let locks_directory = path.parent().unwrap_or(path);
            return Err(if tokio::fs::metadata(locks_directory).await.is_ok() {
                InfoFileProblem::FileMissing {
                    path: path.to_owned(),
                }
            } else {
                InfoFileProblem::LocksDirectoryMissing {
                    path: locks_directory.to_owned(),
                }
            });
        }
        Err(error) => {
            return Err(InfoFileProblem::FileUnreadable {
                path: path.to_owned(),
                reason: error.to_string(),
            });
        }
    };
    let modified = tokio::fs::metadata(path)
        .await
        .ok()
        .and_then(|metadata| metadata.modified().ok());
    match parse_info_file(&text) {
        Ok(Some(meta_core_url)) => Ok(InfoFileContent {
            meta_core_url,
            modified,
        }),
        Ok(None) => Err(InfoFileProblem::FileEmpty {
            path: path.to_owned(),
        }),
        Err(reason) => Err(InfoFileProblem::FileUnreadable {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// The meta-core API base URL named by the info file, `None` when it is blank.
///
/// The current format is one line holding the URL. Older meta-core releases
/// wrote a JSON object (`{"hostname", "baseUrl", "apiUrl", "redisUrl", ...}`);
/// that is accepted too, taking `apiUrl` (else `baseUrl`), so a mixed
/// deployment keeps working.
pub(crate) fn parse_info_file(text: &str) -> Result<Option<String>, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.starts_with('{') {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(trimmed)
            .map_err(|error| format!("neither a url nor leader json: {error}"))?;
        let url = ["apiUrl", "baseUrl"]
            .iter()
            .filter_map(|field| object.get(*field).and_then(|value| value.as_str()))
            .map(str::trim)
            .find(|url| !url.is_empty());
        return url
            .map(|url| Some(url.to_owned()))
            .ok_or_else(|| "leader json has no apiUrl nor baseUrl".to_owned());
    }
    Ok(trimmed
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_trailing_newline_is_the_url() {
        assert_eq!(
            parse_info_file("http://meta-core:9000\n"),
            Ok(Some("http://meta-core:9000".to_owned()))
        );
    }

    #[test]
    fn the_shipped_fixtures_name_the_same_meta_core() {
        let expected = Ok(Some("http://meta-core:9000".to_owned()));
        assert_eq!(
            parse_info_file(include_str!("../../../fixtures/leader/kv-leader.info")),
            expected
        );
        assert_eq!(
            parse_info_file(include_str!(
                "../../../fixtures/leader/kv-leader.legacy.json"
            )),
            expected
        );
    }

    #[test]
    fn blank_file_names_no_leader() {
        assert_eq!(parse_info_file(" \n\n"), Ok(None));
    }

    #[test]
    fn legacy_json_form_yields_api_url_then_base_url() {
        let legacy = r#"{"hostname":"core-1","apiUrl":"http://10.0.0.1:9000","redisUrl":"redis://10.0.0.1:6379"}"#;
        assert_eq!(
            parse_info_file(legacy),
            Ok(Some("http://10.0.0.1:9000".to_owned()))
        );
        assert_eq!(
            parse_info_file(r#"{"baseUrl":"http://core:8180","apiUrl":""}"#),
            Ok(Some("http://core:8180".to_owned()))
        );
    }

    #[test]
    fn broken_json_is_reported_not_taken_as_a_url() {
        let error = parse_info_file("{\"apiUrl\": ").unwrap_err();
        assert!(error.contains("neither a url nor leader json"), "{error}");
        let error = parse_info_file(r#"{"hostname":"x"}"#).unwrap_err();
        assert!(error.contains("no apiUrl"), "{error}");
    }

    #[tokio::test]
    async fn missing_directory_and_missing_file_are_told_apart() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("locks").join("kv-leader.info");
        assert!(matches!(
            read_info_file(&path).await,
            Err(InfoFileProblem::LocksDirectoryMissing { .. })
        ));
        std::fs::create_dir(root.path().join("locks")).expect("mkdir");
        assert!(matches!(
            read_info_file(&path).await,
            Err(InfoFileProblem::FileMissing { .. })
        ));
        std::fs::write(&path, "http://core:9000\n").expect("write");
        let content = read_info_file(&path).await.expect("readable");
        assert_eq!(content.meta_core_url, "http://core:9000");
    }
}
