//! What tools other than plain reads do with the mount: listings while the
//! tree changes, `df`, extended attributes, odd reads, permissions.

mod support;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use support::{Fixture, apply, library_files, names_in};

/// Values making movie `index` of a numbered series visible.
fn numbered_movie(prefix: &str, index: usize) -> Vec<(String, String, Option<String>)> {
    let hash_id = format!("{prefix}{index:012}");
    [
        ("filePath", Some(format!("numbered/{hash_id}.mkv"))),
        ("size", Some("1000".to_owned())),
        ("mtime", Some("1700000000000".to_owned())),
        ("title", Some(format!("{prefix} Movie {index:04}"))),
        ("movieYear", Some("2000".to_owned())),
    ]
    .into_iter()
    .map(|(property, value)| (hash_id.clone(), property.to_owned(), value))
    .collect()
}

fn movie_directory(prefix: &str, index: usize) -> String {
    format!("{prefix} Movie {index:04} (2000)")
}

#[test]
fn a_listing_in_progress_neither_skips_nor_repeats_while_the_tree_changes() {
    metafuse_testkit::require_fuse!();
    let fixture = Fixture::new(&[]);
    let n_movies = 2_000;
    let values: Vec<_> = (0..n_movies)
        .flat_map(|index| numbered_movie("aaaa", index))
        .collect();
    apply(&fixture.library, &values);
    let handle = fixture.mount(false);
    let movies = fixture.at("/Movies");
    let before = names_in(&movies);
    assert_eq!(before.len(), n_movies);

    // One getdents call fetches far fewer entries than 2000 (glibc asks
    // for 32 KiB): after the first entry, most of the listing is still to
    // be fetched from the mount.
    let mut listing = fs::read_dir(&movies).expect("read_dir");
    let first = listing.next().expect("one entry").expect("entry");
    let mut listed = vec![first.file_name().into_string().expect("utf-8")];

    // Far down the list: movies 1000..1800 leave, 100 new ones arrive.
    let removed: BTreeSet<String> = (1_000..1_800)
        .map(|index| movie_directory("aaaa", index))
        .collect();
    let mut change: Vec<_> = (1_000..1_800)
        .map(|index| (format!("aaaa{index:012}"), "filePath".to_owned(), None))
        .collect();
    change.extend((0..100).flat_map(|index| numbered_movie("bbbb", index)));
    handle.invalidate(&apply(&fixture.library, &change));

    listed.extend(listing.map(|entry| {
        entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8")
    }));
    let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(listed_set.len(), listed.len(), "no name listed twice");
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|name| !removed.contains(*name))
        .cloned()
        .collect();
    assert_eq!(
        listed_set, expected,
        "the names at opendir, less those removed since"
    );
    for name in &removed {
        assert!(
            !movies.join(name).exists(),
            "{name} removed, not cached from the listing"
        );
    }
    for name in listed.iter().take(20).chain(listed.iter().rev().take(20)) {
        assert!(movies.join(name).is_dir(), "{name} listed and there");
    }

    let after: BTreeSet<String> = names_in(&movies).into_iter().collect();
    let expected_after: BTreeSet<String> = expected
        .into_iter()
        .chain((0..100).map(|index| movie_directory("bbbb", index)))
        .collect();
    assert_eq!(after, expected_after, "a new listing shows the new tree");
}

#[test]
fn df_reports_the_library_size_and_node_count() {
    metafuse_testkit::require_fuse!();
    let fixture = Fixture::new(&library_files());
    let _handle = fixture.mount(false);
    let (total_bytes, n_nodes) = {
        let library = fixture.library.read();
        (
            library.total_size_bytes(),
            library.file_count() + library.directory_count() + 1,
        )
    };
    let df = Command::new("df")
        .arg(fixture.mountpoint.path())
        .output()
        .expect("df");
    assert!(
        df.status.success(),
        "df: {}",
        String::from_utf8_lossy(&df.stderr)
    );
    assert!(String::from_utf8_lossy(&df.stdout).contains("metafuse"));

    let stat = Command::new("stat")
        .args(["--file-system", "--format=%b %S %c %l"])
        .arg(fixture.mountpoint.path())
        .output()
        .expect("stat -f");
    assert!(
        stat.status.success(),
        "stat -f: {}",
        String::from_utf8_lossy(&stat.stderr)
    );
    let figures: Vec<u64> = String::from_utf8_lossy(&stat.stdout)
        .split_whitespace()
        .map(|figure| figure.parse().expect("number"))
        .collect();
    assert_eq!(
        figures,
        [total_bytes.div_ceil(4096), 4096, n_nodes as u64, 255]
    );
}

/// `getxattr(2)` and `listxattr(2)` results (length or -errno), which std
/// does not wrap.
#[allow(unsafe_code)]
fn xattr_results(path: &Path) -> (isize, isize) {
    let path = CString::new(path.as_os_str().as_bytes()).expect("no nul");
    let name = CString::new("user.comment").expect("no nul");
    let mut buffer = [0u8; 256];
    let errno = || -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as isize);
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let got = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    let got = if got < 0 { errno() } else { got };
    // SAFETY: as above.
    let listed =
        unsafe { libc::listxattr(path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
    let listed = if listed < 0 { errno() } else { listed };
    (got, listed)
}

#[test]
fn extended_attributes_links_and_directories_give_sane_errors() {
    metafuse_testkit::require_fuse!();
    let fixture = Fixture::new(&library_files());
    let _handle = fixture.mount(false);
    let file = fixture.at("/Movies/Heat (1995)/Heat (1995).mkv");
    let directory = fixture.at("/Movies");
    for path in [&file, &directory] {
        assert_eq!(
            xattr_results(path),
            (-(libc::ENODATA as isize), 0),
            "{path:?}: no attribute, empty list"
        );
    }
    let error = fs::read_link(&file).expect_err("not a link");
    assert_eq!(error.raw_os_error(), Some(libc::EINVAL), "{error}");
    let error = fs::File::open(&directory)
        .expect("a directory opens for reading")
        .read(&mut [0; 16])
        .expect_err("but has no bytes");
    assert_eq!(error.raw_os_error(), Some(libc::EISDIR), "{error}");
    let error = fs::read_dir(&file).expect_err("not a directory");
    assert_eq!(error.raw_os_error(), Some(libc::ENOTDIR), "{error}");
}

#[test]
fn reads_at_and_past_the_end_are_short_or_empty() {
    metafuse_testkit::require_fuse!();
    let fixture = Fixture::new(&library_files());
    for passthrough in [false, true] {
        let _handle = fixture.mount(passthrough);
        let file = fs::File::open(fixture.at("/Movies/Heat (1995)/Heat (1995).mkv")).expect("open");
        let length = 300_000;
        let mut buffer = vec![0; 10_000];
        assert_eq!(file.read_at(&mut buffer, length - 100).expect("tail"), 100);
        let mut table = metafuse_testkit::TableCheck::new();
        for offset in [
            length,
            length + 1,
            length + (1 << 20),
            i64::MAX as u64 - 10_000,
        ] {
            table.check_eq(
                file.read_at(&mut buffer, offset)
                    .map_err(|error| error.to_string()),
                Ok(0),
                format!("passthrough {passthrough}, read at {offset}"),
            );
        }
    }
}

#[test]
fn configured_modes_are_enforced_for_other_users() {
    metafuse_testkit::require_fuse!();
    let fixture = Fixture::new(&library_files());
    let file = fixture.at("/Movies/Heat (1995)/Heat (1995).mkv");
    let read_as_nobody = |path: &Path| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(path)
            .output()
            .expect("setpriv")
    };
    {
        let _handle = fixture.mount_with(|options| options.file_mode = 0o600);
        let output = read_as_nobody(&file);
        assert!(
            !output.status.success(),
            "mode 600 of another owner refuses nobody"
        );
        assert!(String::from_utf8_lossy(&output.stderr).contains("Permission denied"));
    }
    let _handle = fixture.mount_with(|options| options.file_mode = 0o644);
    let output = read_as_nobody(&file);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout.len(), 300_000);
}
