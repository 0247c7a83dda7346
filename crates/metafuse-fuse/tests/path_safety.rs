//! Nothing outside the files root is ever served: symlinks that lead out
//! of it (a directory on the way, or a source replaced by a link) give
//! EACCES through the real mount; links that stay inside still read.

mod support;

use std::fs;
use std::os::unix::fs::symlink;

use support::{Fixture, SourceFile, contents, movie};

fn file_at(hash_id: &'static str, title: &str, file_path: &str) -> SourceFile {
    SourceFile {
        hash_id,
        file_path: file_path.to_owned(),
        properties: vec![
            ("title", title.to_owned()),
            ("movieYear", "2000".to_owned()),
        ],
        contents: None,
    }
}

fn mounted_path(fixture: &Fixture, hash_id: &str) -> std::path::PathBuf {
    let library = fixture.library.read();
    let ino = library.tree().file_by_hash(hash_id).expect("visible").ino();
    fixture.at(&library.tree().path_of(ino).expect("path"))
}

#[test]
fn symlinks_out_of_the_root_are_refused_and_inside_ones_read() {
    let outside = tempfile::tempdir().expect("outside");
    let secret = b"root:$6$secret-hash:19000:0:99999:7:::\n".to_vec();
    fs::write(outside.path().join("shadow"), &secret).expect("secret");

    let real = movie("aaaa000011111111", "Heat", "1995", 1, 70_000);
    let replaced = movie("bbbb000022222222", "Replaced", "1996", 2, 1_000);
    let files = [real, replaced];
    let fixture = Fixture::new(&files);
    let root = fixture.source_root.path();
    // `ROOT/evil -> outside` with filePath `evil/shadow`.
    symlink(outside.path(), root.join("evil")).expect("evil link");
    // A real source replaced by a link to an outside file, Redis untouched.
    let replaced_path = root.join(&files[1].file_path);
    fs::remove_file(&replaced_path).expect("remove source");
    symlink(outside.path().join("shadow"), &replaced_path).expect("replaced link");
    // A link that stays inside the root.
    symlink(&files[0].file_path, root.join("inside.mkv")).expect("inside link");
    support::apply(
        &fixture.library,
        &[
            file_at("cccc000033333333", "Evil", "evil/shadow"),
            SourceFile {
                // Only its size is used: the metadata must match the link's target.
                contents: Some(contents(1, 70_000)),
                ..file_at("dddd000044444444", "Inside", "inside.mkv")
            },
        ]
        .iter()
        .flat_map(support::values_of)
        .collect::<Vec<_>>(),
    );

    for passthrough in [false, true] {
        let handle = fixture.mount(passthrough);
        for hash_id in ["cccc000033333333", "bbbb000022222222"] {
            let path = mounted_path(&fixture, hash_id);
            let error = fs::read(&path).expect_err("escaping source read");
            assert_eq!(
                error.raw_os_error(),
                Some(libc::EACCES),
                "{path:?} (passthrough {passthrough}): {error}"
            );
        }
        let inside = fs::read(mounted_path(&fixture, "dddd000044444444")).expect("inside link");
        assert!(
            inside == contents(1, 70_000),
            "inside link read {} bytes, not the source's (passthrough {passthrough})",
            inside.len()
        );
        handle.unmount().expect("unmount");
    }
}
