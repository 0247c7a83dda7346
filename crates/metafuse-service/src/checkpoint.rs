//! The warm-restart checkpoint on disk: written atomically (temporary file,
//! fsync, rename, fsync of the directory) and read back with every problem
//! reported, never trusted blindly. The bytes are `metafuse_state`'s.

use std::io::Write;
use std::path::{Path, PathBuf};

use metafuse_state::{Checkpoint, decode_checkpoint};

/// The checkpoint's file name inside the state directory.
pub(crate) const CHECKPOINT_FILE_NAME: &str = "metafuse.checkpoint";

/// Where the checkpoint lives in `state_dir`.
pub(crate) fn checkpoint_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CHECKPOINT_FILE_NAME)
}

/// What was found where the checkpoint should be.
#[derive(Debug)]
pub(crate) enum LoadedCheckpoint {
    /// No file: a first start.
    Absent,
    /// A file that is not a usable checkpoint (truncated, corrupt, foreign,
    /// unreadable): reported and ignored.
    Unusable(String),
    /// An intact checkpoint (whether it fits the source is decided later).
    Intact(Box<Checkpoint>),
}

/// Reads and decodes the checkpoint at `path`.
pub(crate) fn load_checkpoint(path: &Path) -> LoadedCheckpoint {
    match std::fs::read(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => LoadedCheckpoint::Absent,
        Err(error) => LoadedCheckpoint::Unusable(format!(
            "cannot read checkpoint {}: {error}",
            path.display()
        )),
        Ok(bytes) => match decode_checkpoint(&bytes) {
            Ok(checkpoint) => LoadedCheckpoint::Intact(Box::new(checkpoint)),
            Err(error) => LoadedCheckpoint::Unusable(format!(
                "checkpoint {} ignored: {error}",
                path.display()
            )),
        },
    }
}

/// Replaces the file at `path` with `bytes` so that a crash at any moment
/// leaves either the old or the new checkpoint, never a torn one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(directory)?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| CHECKPOINT_FILE_NAME.to_owned());
    let temporary = directory.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename itself must survive a power cut.
        std::fs::File::open(directory)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use metafuse_rules::RelevantProperties;
    use metafuse_state::{Projection, encode_checkpoint};

    fn sample(n_files: usize) -> Projection {
        let mut projection = Projection::new(RelevantProperties::from_names(["title"]));
        for index in 0..n_files {
            let hash_id = format!("{index:032x}");
            projection.apply(&hash_id, "filePath", Some(&format!("/m/{index}.mkv")));
            projection.apply(&hash_id, "title", Some("A title"));
        }
        projection
    }

    #[test]
    fn a_written_checkpoint_reads_back_and_a_truncated_one_is_unusable() {
        let directory = tempfile::tempdir().unwrap();
        let path = checkpoint_path(directory.path());
        assert!(matches!(load_checkpoint(&path), LoadedCheckpoint::Absent));
        let bytes = encode_checkpoint(&sample(10), "5-0", "redis run_id=x");
        write_atomically(&path, &bytes).unwrap();
        let LoadedCheckpoint::Intact(checkpoint) = load_checkpoint(&path) else {
            panic!("intact checkpoint expected");
        };
        assert_eq!(checkpoint.event_id, "5-0");
        assert_eq!(checkpoint.projection.file_count(), 10);
        // Only the checkpoint remains: no temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CHECKPOINT_FILE_NAME)]);

        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let LoadedCheckpoint::Unusable(reason) = load_checkpoint(&path) else {
            panic!("a truncated checkpoint must be unusable");
        };
        assert!(reason.contains("truncated"), "{reason}");
        std::fs::write(&path, b"{\"not\": \"a checkpoint\"}").unwrap();
        assert!(matches!(
            load_checkpoint(&path),
            LoadedCheckpoint::Unusable(_)
        ));
    }

    #[test]
    fn a_checkpoint_of_100k_files_is_written_and_read_back_whole() {
        let projection = sample(100_000);
        let directory = tempfile::tempdir().unwrap();
        let path = checkpoint_path(directory.path());
        let started = std::time::Instant::now();
        let bytes = encode_checkpoint(&projection, "1-0", "id");
        write_atomically(&path, &bytes).unwrap();
        let written = started.elapsed();
        let started = std::time::Instant::now();
        let LoadedCheckpoint::Intact(checkpoint) = load_checkpoint(&path) else {
            panic!("intact checkpoint expected");
        };
        let read = started.elapsed();
        // A figure for the report, not a threshold.
        eprintln!(
            "checkpoint of 100k files: {} bytes, written in {written:?}, read in {read:?}",
            bytes.len()
        );
        assert_eq!(checkpoint.projection.file_count(), 100_000);
    }
}
