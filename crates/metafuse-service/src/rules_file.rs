//! The rules file on disk: parsing with every error reported, and saving
//! atomically with rotating backups. A file we cannot use is never
//! overwritten by us except by an explicit, validated save.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use metafuse_rules::{Rules, RulesDocument, Severity};

/// The reference's file name inside `CONFIG_DIR`.
pub const RULES_FILE_NAME: &str = "renaming-rules.json";

/// How many previous versions a save keeps (`.bak.1` newest … `.bak.5` oldest).
pub const MAX_RULES_BACKUPS: usize = 5;

/// `renaming-rules.json.bak.{generation}`: where a save keeps the previous
/// version of `path` (generation 1 is the newest).
pub fn backup_path(path: &Path, generation: usize) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push(format!(".bak.{generation}"));
    path.with_file_name(name)
}

/// Parses and compiles a rules document; the error lists every problem.
pub(crate) fn compile_text(text: &str) -> Result<Rules, Vec<String>> {
    let document = RulesDocument::parse_auto(text).map_err(|error| vec![error.to_string()])?;
    compile_document(document)
}

pub(crate) fn compile_document(document: RulesDocument) -> Result<Rules, Vec<String>> {
    Rules::compile(document).map_err(|invalid| {
        invalid
            .diagnostics
            .iter()
            .filter(|diagnostic| diagnostic.severity == Severity::Error)
            .map(ToString::to_string)
            .collect()
    })
}

/// Writes `text` to `path` atomically (temporary file in the same directory,
/// synced, renamed over) after rotating the current version into the
/// backups. Blocking: call from `spawn_blocking`.
pub(crate) fn save_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&directory)?;
    if path.exists() {
        for generation in (1..MAX_RULES_BACKUPS).rev() {
            let older = backup_path(path, generation);
            if older.exists() {
                std::fs::rename(&older, backup_path(path, generation + 1))?;
            }
        }
        // A copy, not a rename: the file must exist at every moment for
        // readers (and for the old system sharing the volume).
        std::fs::copy(path, backup_path(path, 1))?;
    }
    let mut temporary_name = path
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    temporary_name.push(format!(".tmp.{}", std::process::id()));
    let temporary = directory.join(temporary_name);
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        // Best effort: a stray temporary file is harmless but untidy.
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saving_keeps_the_last_five_versions_newest_first() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join(RULES_FILE_NAME);
        for version in 0..8 {
            save_atomically(&path, &format!("version {version}")).expect("save");
        }
        assert_eq!(
            std::fs::read_to_string(&path).expect("current"),
            "version 7"
        );
        for generation in 1..=MAX_RULES_BACKUPS {
            let backup = std::fs::read_to_string(backup_path(&path, generation)).expect("backup");
            assert_eq!(backup, format!("version {}", 7 - generation));
        }
        assert!(!backup_path(&path, MAX_RULES_BACKUPS + 1).exists());
        let leftovers: Vec<_> = std::fs::read_dir(directory.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_broken_document_reports_what_is_wrong() {
        let errors = compile_text("{ not json").expect_err("must fail");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("invalid json rules document"),
            "{errors:?}"
        );
    }
}
