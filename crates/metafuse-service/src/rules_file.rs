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

/// Saves `text` as the rules file at `path`, keeping the last
/// [`MAX_RULES_BACKUPS`] versions. Blocking: call from `spawn_blocking`.
///
/// The new version is written in full first (temporary file in the same
/// directory, synced), and only once that succeeded does anything existing
/// change: the current file is kept under a second name (a hard link, which
/// needs no data blocks), the new one renamed over it, and the backups
/// rotated by renames. So a full disk or any write error leaves the file and
/// its backups exactly as they were, and the file exists at every moment
/// for readers (and for the old system sharing the volume).
pub(crate) fn save_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&directory)?;
    let temporary = sibling(path, &format!("tmp.{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    if let Err(error) = written {
        // Best effort: a stray temporary file is harmless but untidy.
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    let previous = sibling(path, &format!("previous.{}", std::process::id()));
    // Left over by a crash between link and rotation: it is a copy of some
    // older version, not needed any more.
    let _ = std::fs::remove_file(&previous);
    let had_previous = match std::fs::hard_link(path, &previous) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
    };
    if let Err(error) = std::fs::rename(&temporary, path) {
        let _ = std::fs::remove_file(&temporary);
        if had_previous {
            let _ = std::fs::remove_file(&previous);
        }
        return Err(error);
    }
    if had_previous {
        for generation in (1..MAX_RULES_BACKUPS).rev() {
            let older = backup_path(path, generation);
            if older.exists() {
                std::fs::rename(&older, backup_path(path, generation + 1))?;
            }
        }
        std::fs::rename(&previous, backup_path(path, 1))?;
    }
    // The renames are durable once the directory is synced; failing to
    // sync it (some file systems refuse) does not undo the save.
    if let Ok(directory) = std::fs::File::open(&directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// `renaming-rules.json.{suffix}` beside `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
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
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.contains(".tmp.") || name.contains(".previous.")
            })
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_save_that_cannot_write_changes_nothing() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join(RULES_FILE_NAME);
        save_atomically(&path, "version 0").expect("save");
        save_atomically(&path, "version 1").expect("save");
        // A directory where the temporary file must go: creating it fails
        // like a full disk does, before anything existing is touched.
        let blocker = sibling(&path, &format!("tmp.{}", std::process::id()));
        std::fs::create_dir(&blocker).expect("blocker");
        std::fs::write(blocker.join("x"), "x").expect("fill blocker");
        assert!(save_atomically(&path, "version 2").is_err());
        assert_eq!(
            std::fs::read_to_string(&path).expect("current"),
            "version 1"
        );
        assert_eq!(
            std::fs::read_to_string(backup_path(&path, 1)).expect("backup"),
            "version 0"
        );
        assert!(!backup_path(&path, 2).exists());
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
