//! Real FUSE mounts of a library built from real source files (run as root
//! with /dev/fuse). Every mount is unmounted by `MountHandle`'s Drop, even
//! when an assertion fails.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

use metafuse_testkit::is_mounted;
use support::{
    Fixture, SourceFile, apply, contents, library_files, movie, names_in, values_of, walk,
    write_source,
};

#[test]
fn the_mount_lists_exactly_the_library_and_reads_every_byte() {
    metafuse_testkit::require_fuse!();
    let fixture = Fixture::new(&library_files());
    for passthrough in [false, true] {
        let handle = fixture.mount(passthrough);
        let expected: BTreeSet<String> = fixture.library.read().file_paths().into_iter().collect();
        assert_eq!(walk(fixture.mountpoint.path()), expected);
        for path in [
            "/Movies/Heat (1995)/Heat (1995).mkv",
            "/Movies/Heat (1995)/Heat (1995) [9f3a1c2e].mkv",
            "/Movies/Amélie 東京 (2001)/Amélie 東京 (2001).mkv",
            "/Movies/Face-Off (1997)/Face-Off (1997).mkv",
            "/TV Shows/Dark/S01/Dark S01E01.mkv",
        ] {
            assert!(expected.contains(path), "{path} in {expected:?}");
        }
        assert!(expected.iter().all(|path| {
            path.split('/')
                .all(|name| name.len() <= 255 && name != "..")
        }));

        for file in library_files() {
            let visible = fixture
                .library
                .read()
                .tree()
                .file_by_hash(file.hash_id)
                .map(|node| node.ino());
            let path = fixture
                .library
                .read()
                .tree()
                .path_of(visible.expect("visible"))
                .expect("path");
            let source = file.contents.expect("contents");
            let mounted = fixture.at(&path);
            assert_eq!(fs::read(&mounted).expect("read"), source, "{path}");
            let opened = fs::File::open(&mounted).expect("open");
            let offsets = [
                0,
                1,
                4095,
                4096,
                131_071,
                source.len() / 2,
                source.len() - 1,
            ];
            for offset in offsets.into_iter().filter(|offset| *offset < source.len()) {
                let mut buffer = vec![0; 10_000];
                let n_read = opened.read_at(&mut buffer, offset as u64).expect("pread");
                let end = (offset + 10_000).min(source.len());
                assert_eq!(
                    &buffer[..n_read],
                    &source[offset..end],
                    "{path} at {offset}"
                );
            }
            let metadata = fs::metadata(&mounted).expect("stat");
            assert_eq!(metadata.len(), source.len() as u64);
            assert_eq!(metadata.mtime(), 1_700_000_000);
            assert_eq!((metadata.uid(), metadata.gid()), (1234, 5678));
            assert_eq!(metadata.mode() & 0o7777, 0o644);
        }
        let directory = fs::metadata(fixture.at("/Movies")).expect("stat dir");
        assert_eq!(directory.mode() & 0o7777, 0o755);
        assert_eq!(
            directory.mtime(),
            1_700_000_000,
            "newest file below, never now"
        );
        eprintln!(
            "passthrough requested {passthrough}, active {}",
            handle.passthrough_active()
        );
        handle.unmount().expect("unmount");
    }
}

/// Without passthrough every byte is read into a session thread's reused
/// buffer: reads of any size (up to a whole 1 MiB request, which the
/// raised read-ahead makes the kernel send), at any offset, of two files
/// read at once by two threads, return exactly the source's bytes, and a
/// re-read (from the kernel's cached pages) too.
#[test]
fn large_reads_without_passthrough_are_exact_at_every_size() {
    metafuse_testkit::require_fuse!();
    let big = movie("1111000088888888", "Big", "2020", 9, (3 << 20) + 12_345);
    let other = movie("2222000099999999", "Other", "2021", 10, (2 << 20) + 777);
    let fixture = Fixture::new(&[big, other]);
    let handle = fixture.mount(false);
    assert!(!handle.passthrough_active());
    let files = [
        (
            fixture.at("/Movies/Big (2020)/Big (2020).mkv"),
            contents(9, (3 << 20) + 12_345),
        ),
        (
            fixture.at("/Movies/Other (2021)/Other (2021).mkv"),
            contents(10, (2 << 20) + 777),
        ),
    ];
    std::thread::scope(|scope| {
        for (path, expected) in &files {
            scope.spawn(move || {
                for pass in ["first read", "re-read"] {
                    assert!(fs::read(path).expect("read") == *expected, "{pass}");
                }
                let opened = fs::File::open(path).expect("open");
                let sizes = [1, 4095, 4096, 131_075, (1 << 20) + 1, 3 << 20];
                let offsets = [0, 1, 4097, 1 << 20, expected.len() - 5];
                for size in sizes {
                    for offset in offsets {
                        let mut buffer = vec![0; size];
                        let n_read = opened.read_at(&mut buffer, offset as u64).expect("pread");
                        let end = (offset + size).min(expected.len());
                        assert!(
                            buffer[..n_read] == expected[offset..end],
                            "{} bytes at {offset}: read {n_read}",
                            size
                        );
                    }
                }
            });
        }
    });
    handle.unmount().expect("unmount");
}

#[test]
fn live_changes_are_visible_right_after_invalidate() {
    metafuse_testkit::require_fuse!();
    let fixture = Fixture::new(&library_files());
    let handle = fixture.mount(false);
    let heat = fixture.at("/Movies/Heat (1995)/Heat (1995).mkv");
    let heat_other = fixture.at("/Movies/Heat (1995)/Heat (1995) [9f3a1c2e].mkv");
    // Fill the kernel caches (entries, attributes, listings, pages).
    walk(fixture.mountpoint.path());
    assert_eq!(fs::metadata(&heat).expect("stat").len(), 300_000);
    fs::read(&heat_other).expect("read");

    // The winner leaves: the other Heat gets the name back; a new movie
    // appears; the Dark episode is deleted.
    let new_movie = movie("0000000077777777", "Ronin", "1998", 8, 4_321);
    write_source(fixture.source_root.path(), &new_movie);
    let mut values = values_of(&new_movie);
    values.push(("aaaa000011111111".to_owned(), "filePath".to_owned(), None));
    values.push(("abab000066666666".to_owned(), "filePath".to_owned(), None));
    let invalidations = apply(&fixture.library, &values);
    handle.invalidate(&invalidations);

    assert_eq!(
        fs::metadata(&heat).expect("stat").len(),
        5_000,
        "name handed over"
    );
    assert_eq!(fs::read(&heat).expect("read"), contents(2, 5_000));
    assert!(!heat_other.exists(), "suffixed name gone");
    assert!(
        !fixture.at("/TV Shows").exists(),
        "empty directories pruned"
    );
    let ronin = fixture.at("/Movies/Ronin (1998)/Ronin (1998).mkv");
    assert_eq!(fs::read(&ronin).expect("read"), contents(8, 4_321));
    let listing = names_in(&fixture.at("/Movies/Heat (1995)"));
    assert_eq!(listing, ["Heat (1995).mkv"]);

    // Attributes change in place.
    let resized = vec![(
        "bbbb00009f3a1c2e".to_owned(),
        "size".to_owned(),
        Some("4000".to_owned()),
    )];
    handle.invalidate(&apply(&fixture.library, &resized));
    assert_eq!(fs::metadata(&heat).expect("stat").len(), 4_000);
    assert_eq!(
        walk(fixture.mountpoint.path()),
        fixture.library.read().file_paths().into_iter().collect()
    );
}

#[test]
fn every_write_attempt_is_refused_as_read_only() {
    metafuse_testkit::require_fuse!();
    let fixture = Fixture::new(&library_files());
    let _handle = fixture.mount(true);
    let existing = fixture.at("/Movies/Heat (1995)/Heat (1995).mkv");
    let attempts: Vec<(&str, io::Result<()>)> = vec![
        ("create", fs::File::create(fixture.at("/new.txt")).map(drop)),
        (
            "open for write",
            fs::OpenOptions::new().write(true).open(&existing).map(drop),
        ),
        (
            "append",
            fs::OpenOptions::new()
                .append(true)
                .open(&existing)
                .and_then(|mut file| file.write_all(b"x")),
        ),
        ("mkdir", fs::create_dir(fixture.at("/Movies/new"))),
        ("unlink", fs::remove_file(&existing)),
        ("rmdir", fs::remove_dir(fixture.at("/Movies/Heat (1995)"))),
        ("rename", fs::rename(&existing, fixture.at("/Movies/x.mkv"))),
        (
            "chmod",
            fs::set_permissions(
                &existing,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            ),
        ),
    ];
    for (what, result) in attempts {
        let error = result.expect_err(what);
        assert_eq!(error.raw_os_error(), Some(libc::EROFS), "{what}: {error}");
    }
    assert_eq!(fs::read(&existing).expect("still readable").len(), 300_000);
}

#[test]
fn a_missing_source_stays_listed_and_reads_give_eio() {
    metafuse_testkit::require_fuse!();
    let mut files = library_files();
    files.push(SourceFile {
        hash_id: "9999000088888888",
        file_path: "gone/away.mkv".to_owned(),
        properties: vec![
            ("title", "Ghost".to_owned()),
            ("movieYear", "1990".to_owned()),
        ],
        contents: None,
    });
    let fixture = Fixture::new(&files);
    for passthrough in [false, true] {
        let _handle = fixture.mount(passthrough);
        let ghost = fixture.at("/Movies/Ghost (1990)/Ghost (1990).mkv");
        assert!(walk(fixture.mountpoint.path()).contains("/Movies/Ghost (1990)/Ghost (1990).mkv"));
        assert_eq!(fs::metadata(&ghost).expect("stat").len(), 1234);
        let error = fs::File::open(&ghost)
            .and_then(|mut file| file.read_to_end(&mut Vec::new()))
            .expect_err("no source");
        assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    }
}

#[test]
fn unmount_leaves_no_mount_behind() {
    metafuse_testkit::require_fuse!();
    let fixture = Fixture::new(&library_files());
    let handle = fixture.mount(true);
    assert!(is_mounted(fixture.mountpoint.path()));
    eprintln!("auto unmount: {}", handle.auto_unmount());
    handle.unmount().expect("unmount");
    assert!(!is_mounted(fixture.mountpoint.path()));
    assert_eq!(
        fs::read_dir(fixture.mountpoint.path())
            .expect("plain dir")
            .count(),
        0
    );
}
