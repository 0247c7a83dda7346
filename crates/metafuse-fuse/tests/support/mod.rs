//! Test helpers shared by the mount tests: a library built from real
//! source files, mounted on a temporary directory.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metafuse_fuse::{MountHandle, MountOptions, mount};
use metafuse_rules::Rules;
use metafuse_state::FetchedValue;
use metafuse_vfs::{Library, SharedLibrary};

pub struct Fixture {
    pub source_root: tempfile::TempDir,
    pub mountpoint: tempfile::TempDir,
    pub library: SharedLibrary,
}

/// One file's properties as MetaMesh writers store them.
pub struct SourceFile {
    pub hash_id: &'static str,
    pub file_path: String,
    pub properties: Vec<(&'static str, String)>,
    pub contents: Option<Vec<u8>>,
}

pub fn contents(seed: u8, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| (index as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

pub fn movie(
    hash_id: &'static str,
    title: &str,
    year: &str,
    seed: u8,
    length: usize,
) -> SourceFile {
    SourceFile {
        hash_id,
        file_path: format!("incoming/{hash_id}.mkv"),
        properties: vec![("title", title.to_owned()), ("movieYear", year.to_owned())],
        contents: Some(contents(seed, length)),
    }
}

pub fn values_of(file: &SourceFile) -> Vec<(String, String, Option<String>)> {
    let length = file.contents.as_ref().map_or(1234, Vec::len);
    let mut values = vec![
        (
            file.hash_id.to_owned(),
            "filePath".to_owned(),
            Some(file.file_path.clone()),
        ),
        (
            file.hash_id.to_owned(),
            "size".to_owned(),
            Some(length.to_string()),
        ),
        (
            file.hash_id.to_owned(),
            "mtime".to_owned(),
            Some("1700000000000".to_owned()),
        ),
    ];
    for (property, value) in &file.properties {
        values.push((
            file.hash_id.to_owned(),
            (*property).to_owned(),
            Some(value.clone()),
        ));
    }
    values
}

pub fn apply(
    library: &SharedLibrary,
    values: &[(String, String, Option<String>)],
) -> Vec<metafuse_vfs::Invalidation> {
    library.apply_batch(
        values
            .iter()
            .map(|(hash_id, property, value)| FetchedValue {
                hash_id,
                property,
                value: value.as_deref(),
            }),
    )
}

impl Fixture {
    pub fn new(files: &[SourceFile]) -> Self {
        let source_root = tempfile::tempdir().expect("source root");
        let mountpoint = tempfile::tempdir().expect("mountpoint");
        let rules = Arc::new(Rules::preset("default").expect("default preset"));
        let library = SharedLibrary::new(Library::new(rules));
        for file in files {
            write_source(source_root.path(), file);
            apply(&library, &values_of(file));
        }
        Fixture {
            source_root,
            mountpoint,
            library,
        }
    }

    pub fn mount(&self, passthrough: bool) -> MountHandle {
        self.mount_with(|options| options.passthrough = passthrough)
    }

    /// Mounts with the test defaults changed by `configure`.
    pub fn mount_with(&self, configure: impl FnOnce(&mut MountOptions)) -> MountHandle {
        let mut options = MountOptions::new(self.mountpoint.path(), self.source_root.path());
        options.uid = Some(1234);
        options.gid = Some(5678);
        configure(&mut options);
        mount(self.library.clone(), options).expect("mount")
    }

    pub fn at(&self, relative: &str) -> PathBuf {
        self.mountpoint
            .path()
            .join(relative.trim_start_matches('/'))
    }
}

pub fn write_source(root: &Path, file: &SourceFile) {
    if let Some(bytes) = &file.contents {
        let path = root.join(&file.file_path);
        fs::create_dir_all(path.parent().expect("parent")).expect("source dir");
        fs::write(path, bytes).expect("source file");
    }
}

/// Every file below `root`, as `/relative/path`, found by a `find`-like walk.
pub fn walk(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in fs::read_dir(&directory).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                found.insert(format!("/{}", relative.to_str().expect("utf-8")));
            }
        }
    }
    found
}

pub fn library_files() -> Vec<SourceFile> {
    let long_title = "Long".repeat(80);
    vec![
        movie("aaaa000011111111", "Heat", "1995", 1, 300_000),
        // Same title and year: a collision, resolved by hashId.
        movie("bbbb00009f3a1c2e", "Heat", "1995", 2, 5_000),
        movie("cccc000022222222", "Amélie 東京", "2001", 3, 70_000),
        movie("dddd000033333333", "Face/Off", "1997", 4, 1_000),
        movie("eeee000044444444", "..", "2000", 5, 10),
        movie("ffff000055555555", &long_title, "2010", 6, 100),
        SourceFile {
            hash_id: "abab000066666666",
            file_path: "tv/dark-s01e01.mkv".to_owned(),
            properties: vec![
                ("title", "Dark".to_owned()),
                ("season", "1".to_owned()),
                ("episode", "01".to_owned()),
            ],
            contents: Some(contents(7, 200_000)),
        },
    ]
}

/// The names in `directory`, in listing order.
pub fn names_in(directory: &Path) -> Vec<String> {
    fs::read_dir(directory)
        .expect("read_dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect()
}
