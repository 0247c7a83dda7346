//! Behaviour of the tree: collisions, moves, pruning, mtimes, inodes and
//! invalidations.

use proptest::prelude::*;

use crate::{FileSpec, Invalidation, NodeKind, ROOT_INODE, Tree};

fn spec<'a>(hash_id: &'a str, path: &'a str) -> FileSpec<'a> {
    FileSpec {
        hash_id,
        path,
        source_path: hash_id,
        size_bytes: 10,
        mtime_ms: 1_000,
        ctime_ms: 1_000,
    }
}

fn upsert_all(tree: &mut Tree, files: &[(&str, &str)]) -> Vec<Invalidation> {
    let mut invalidations = Vec::new();
    for (hash_id, path) in files {
        tree.upsert(spec(hash_id, path), &mut invalidations);
    }
    invalidations
}

/// Every node as `(absolute path, hashId or "/" for a directory)`, in
/// listing order: two trees with the same snapshot look the same to users.
fn snapshot(tree: &Tree) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut stack = vec![ROOT_INODE];
    while let Some(directory) = stack.pop() {
        let children: Vec<_> = tree.children(directory).expect("directory").collect();
        for child in children.iter().rev() {
            if child.kind() == NodeKind::Directory {
                stack.push(child.ino());
            }
        }
        for child in children {
            let path = tree.path_of(child.ino()).expect("path");
            entries.push((path, child.hash_id().unwrap_or("/").to_owned()));
        }
    }
    entries.sort();
    entries
}

fn files_by_path(tree: &Tree) -> Vec<(String, String)> {
    let mut files = Vec::new();
    tree.for_each_file(|path, node| {
        files.push((path.to_owned(), node.hash_id().expect("file").to_owned()))
    });
    files.sort();
    files
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(path, hash_id)| ((*path).to_owned(), (*hash_id).to_owned()))
        .collect()
}

#[test]
fn collisions_are_resolved_by_smallest_hash_id_with_spec_suffixes() {
    struct Case {
        name: &'static str,
        files: &'static [(&'static str, &'static str)],
        expected: &'static [(&'static str, &'static str)],
    }
    let cases = [
        Case {
            name: "two claimants",
            files: &[
                ("bbbb00009f3a1c2e", "Movies/Heat (1995).mkv"),
                ("aaaa000011111111", "Movies/Heat (1995).mkv"),
            ],
            expected: &[
                ("/Movies/Heat (1995) [9f3a1c2e].mkv", "bbbb00009f3a1c2e"),
                ("/Movies/Heat (1995).mkv", "aaaa000011111111"),
            ],
        },
        Case {
            name: "three claimants, suffix before the last dot",
            files: &[
                ("cccc00003333cccc", "Dark/Dark S01E01.eng.srt"),
                ("aaaa00001111aaaa", "Dark/Dark S01E01.eng.srt"),
                ("bbbb00002222bbbb", "Dark/Dark S01E01.eng.srt"),
            ],
            expected: &[
                ("/Dark/Dark S01E01.eng [2222bbbb].srt", "bbbb00002222bbbb"),
                ("/Dark/Dark S01E01.eng [3333cccc].srt", "cccc00003333cccc"),
                ("/Dark/Dark S01E01.eng.srt", "aaaa00001111aaaa"),
            ],
        },
        Case {
            name: "no extension or a leading dot only: appended",
            files: &[
                ("h2", "x/README"),
                ("h1", "x/README"),
                ("h4", "x/.hidden"),
                ("h3", "x/.hidden"),
            ],
            expected: &[
                ("/x/.hidden", "h3"),
                ("/x/.hidden [h4]", "h4"),
                ("/x/README", "h1"),
                ("/x/README [h2]", "h2"),
            ],
        },
        Case {
            name: "a file claiming a directory's path yields to it",
            files: &[
                ("aaaa0000", "Shows/Dark"),
                ("ffff0001", "Shows/Dark/S01E01.mkv"),
            ],
            expected: &[
                ("/Shows/Dark [aaaa0000]", "aaaa0000"),
                ("/Shows/Dark/S01E01.mkv", "ffff0001"),
            ],
        },
        Case {
            name: "suffixed name taken by another file's rendered name",
            files: &[
                ("z0000000aaaaaaaa", "m/a [aaaaaaaa].mkv"),
                ("b0000000aaaaaaaa", "m/a.mkv"),
                ("a0000000bbbbbbbb", "m/a.mkv"),
            ],
            expected: &[
                ("/m/a [aaaaaaaa].mkv", "z0000000aaaaaaaa"),
                ("/m/a [b0000000aaaaaaaa].mkv", "b0000000aaaaaaaa"),
                ("/m/a.mkv", "a0000000bbbbbbbb"),
            ],
        },
        Case {
            name: "two losers sharing their last 8 chars",
            files: &[
                ("c000000012345678", "m/a.mkv"),
                ("b000000012345678", "m/a.mkv"),
                ("a000000000000000", "m/a.mkv"),
            ],
            expected: &[
                ("/m/a [12345678].mkv", "b000000012345678"),
                ("/m/a [c000000012345678].mkv", "c000000012345678"),
                ("/m/a.mkv", "a000000000000000"),
            ],
        },
    ];
    for case in cases {
        let mut tree = Tree::new();
        upsert_all(&mut tree, case.files);
        assert_eq!(files_by_path(&tree), pairs(case.expected), "{}", case.name);
        assert_eq!(tree.file_count(), case.files.len(), "{}", case.name);
    }
}

#[test]
fn removing_the_winner_hands_the_name_to_the_next_smallest() {
    let mut tree = Tree::new();
    upsert_all(
        &mut tree,
        &[("h3", "a/x.mkv"), ("h1", "a/x.mkv"), ("h2", "a/x.mkv")],
    );
    let mut invalidations = Vec::new();
    assert!(tree.remove("h1", &mut invalidations));
    assert_eq!(
        files_by_path(&tree),
        pairs(&[("/a/x [h3].mkv", "h3"), ("/a/x.mkv", "h2")])
    );
    let directory = tree.resolve("/a").expect("a").ino();
    for name in ["x.mkv", "x [h2].mkv"] {
        let expected = Invalidation::Entry {
            parent: directory,
            name: name.to_owned(),
        };
        assert!(
            invalidations.contains(&expected),
            "{expected:?} in {invalidations:?}"
        );
    }
    assert!(!tree.remove("h1", &mut invalidations), "already gone");
}

#[test]
fn a_pruned_directory_gives_its_name_back_to_the_file_that_yielded() {
    let mut tree = Tree::new();
    upsert_all(
        &mut tree,
        &[("h1", "Shows/Dark"), ("h2", "Shows/Dark/x.mkv")],
    );
    let mut invalidations = Vec::new();
    tree.remove("h2", &mut invalidations);
    assert_eq!(files_by_path(&tree), pairs(&[("/Shows/Dark", "h1")]));
    assert_eq!(tree.directory_count(), 1);
}

#[test]
fn moves_and_deletes_prune_empty_directories_and_keep_the_file_inode() {
    let mut tree = Tree::new();
    upsert_all(&mut tree, &[("h1", "A/B/x.mkv"), ("h2", "A/y.mkv")]);
    let file_ino = tree.file_by_hash("h1").expect("h1").ino();
    let a_ino = tree.resolve("A").expect("A").ino();
    upsert_all(&mut tree, &[("h1", "C/x.mkv")]);
    assert_eq!(
        files_by_path(&tree),
        pairs(&[("/A/y.mkv", "h2"), ("/C/x.mkv", "h1")])
    );
    assert!(tree.resolve("A/B").is_none(), "empty directory pruned");
    assert_eq!(tree.file_by_hash("h1").expect("h1").ino(), file_ino);
    assert_eq!(tree.resolve("A").expect("A").ino(), a_ino);
    assert_eq!(tree.directory_count(), 2);

    let mut invalidations = Vec::new();
    tree.remove("h2", &mut invalidations);
    assert!(tree.resolve("A").is_none());
    assert!(invalidations.contains(&Invalidation::Entry {
        parent: ROOT_INODE,
        name: "A".to_owned()
    }));
    tree.remove("h1", &mut invalidations);
    assert!(tree.children(ROOT_INODE).expect("root").next().is_none());
    assert_eq!(
        (
            tree.file_count(),
            tree.directory_count(),
            tree.total_size_bytes()
        ),
        (0, 0, 0)
    );
}

#[test]
fn a_rename_within_a_directory_keeps_that_directory() {
    let mut tree = Tree::new();
    upsert_all(&mut tree, &[("h1", "A/B/x.mkv")]);
    let b_ino = tree.resolve("A/B").expect("B").ino();
    upsert_all(&mut tree, &[("h1", "A/B/y.mkv")]);
    assert_eq!(tree.resolve("A/B").expect("B").ino(), b_ino);
    assert_eq!(files_by_path(&tree), pairs(&[("/A/B/y.mkv", "h1")]));
}

#[test]
fn directory_mtime_is_the_newest_descendant_file_mtime() {
    let mut tree = Tree::new();
    let mut invalidations = Vec::new();
    let file = |hash_id, path, mtime_ms| FileSpec {
        mtime_ms,
        ..spec(hash_id, path)
    };
    tree.upsert(file("h1", "A/B/x.mkv", 5_000), &mut invalidations);
    tree.upsert(file("h2", "A/y.mkv", 3_000), &mut invalidations);
    let mtime = |tree: &Tree, path| tree.resolve(path).expect(path).mtime_ms();
    assert_eq!(
        (mtime(&tree, "A"), mtime(&tree, "A/B"), mtime(&tree, "/")),
        (5_000, 5_000, 5_000)
    );

    tree.upsert(file("h1", "A/B/x.mkv", 2_000), &mut invalidations);
    assert_eq!((mtime(&tree, "A"), mtime(&tree, "A/B")), (3_000, 2_000));

    invalidations.clear();
    tree.remove("h2", &mut invalidations);
    assert_eq!(mtime(&tree, "A"), 2_000);
    let a_ino = tree.resolve("A").expect("A").ino();
    assert!(invalidations.contains(&Invalidation::Inode { ino: a_ino }));

    tree.upsert(file("h3", "A/z.mkv", 9_000), &mut invalidations);
    assert_eq!((mtime(&tree, "A"), mtime(&tree, "/")), (9_000, 9_000));
}

#[test]
fn attribute_changes_report_the_inode_and_nothing_else_moves() {
    let mut tree = Tree::new();
    upsert_all(&mut tree, &[("h1", "A/x.mkv")]);
    let ino = tree.file_by_hash("h1").expect("h1").ino();
    let mut invalidations = Vec::new();
    tree.upsert(
        FileSpec {
            size_bytes: 99,
            ..spec("h1", "A/x.mkv")
        },
        &mut invalidations,
    );
    assert_eq!(invalidations, vec![Invalidation::Inode { ino }]);
    assert_eq!(tree.total_size_bytes(), 99);
    invalidations.clear();
    tree.upsert(
        FileSpec {
            size_bytes: 99,
            ..spec("h1", "A/x.mkv")
        },
        &mut invalidations,
    );
    assert!(invalidations.is_empty(), "no change, nothing to forget");
}

#[test]
fn new_entries_report_their_parent_entry_and_listing() {
    let mut tree = Tree::new();
    let invalidations = upsert_all(&mut tree, &[("h1", "A/x.mkv")]);
    let a_ino = tree.resolve("A").expect("A").ino();
    for expected in [
        Invalidation::Entry {
            parent: ROOT_INODE,
            name: "A".to_owned(),
        },
        Invalidation::Inode { ino: ROOT_INODE },
        Invalidation::Entry {
            parent: a_ino,
            name: "x.mkv".to_owned(),
        },
    ] {
        assert!(
            invalidations.contains(&expected),
            "{expected:?} in {invalidations:?}"
        );
    }
}

#[test]
fn rebuild_keeps_inodes_of_paths_that_still_exist_and_reports_the_rest() {
    let mut old = Tree::new();
    upsert_all(
        &mut old,
        &[
            ("h1", "TV/Dark/x.mkv"),
            ("h2", "TV/Dark/y.mkv"),
            ("h3", "Movies/m.mkv"),
        ],
    );
    let ino = |tree: &Tree, path| tree.resolve(path).expect(path).ino();
    let mut invalidations = Vec::new();
    let new = Tree::rebuild_from(
        &old,
        [
            spec("h1", "TV/Dark/x.mkv"),
            spec("h2", "TV/Other/y.mkv"),
            spec("h4", "New/n.mkv"),
        ],
        &mut invalidations,
    );
    assert_eq!(ino(&new, "TV"), ino(&old, "TV"));
    assert_eq!(ino(&new, "TV/Dark"), ino(&old, "TV/Dark"));
    assert_eq!(ino(&new, "TV/Dark/x.mkv"), ino(&old, "TV/Dark/x.mkv"));
    assert_eq!(
        ino(&new, "TV/Other/y.mkv"),
        ino(&old, "TV/Dark/y.mkv"),
        "file keeps its inode"
    );
    let old_inodes: Vec<u64> = ["TV", "TV/Dark", "Movies", "Movies/m.mkv", "TV/Dark/y.mkv"]
        .iter()
        .map(|path| ino(&old, path))
        .collect();
    for fresh in ["New", "New/n.mkv", "TV/Other"] {
        assert!(
            !old_inodes.contains(&ino(&new, fresh)),
            "{fresh} gets a fresh inode"
        );
    }
    let expected = [
        Invalidation::Entry {
            parent: ROOT_INODE,
            name: "Movies".to_owned(),
        },
        Invalidation::Entry {
            parent: ROOT_INODE,
            name: "New".to_owned(),
        },
        Invalidation::Entry {
            parent: ino(&new, "TV"),
            name: "Other".to_owned(),
        },
        Invalidation::Entry {
            parent: ino(&new, "TV/Dark"),
            name: "y.mkv".to_owned(),
        },
    ];
    for expected in expected {
        assert!(
            invalidations.contains(&expected),
            "{expected:?} in {invalidations:?}"
        );
    }
    assert!(!invalidations.contains(&Invalidation::Entry {
        parent: ino(&new, "TV/Dark"),
        name: "x.mkv".to_owned()
    }));
    assert_eq!(
        snapshot(&new),
        snapshot(&Tree::build([
            spec("h1", "TV/Dark/x.mkv"),
            spec("h2", "TV/Other/y.mkv"),
            spec("h4", "New/n.mkv"),
        ]))
    );
}

#[test]
fn lookups_and_listing_order_follow_name_bytes() {
    let mut tree = Tree::new();
    upsert_all(
        &mut tree,
        &[
            ("h1", "b.mkv"),
            ("h2", "B.mkv"),
            ("h3", "a/é.mkv"),
            ("h4", "a/z.mkv"),
        ],
    );
    let names: Vec<&str> = tree
        .children(ROOT_INODE)
        .expect("root")
        .map(|node| node.name())
        .collect();
    assert_eq!(names, ["B.mkv", "a", "b.mkv"]);
    let a = tree.lookup(ROOT_INODE, "a").expect("a");
    assert!(a.is_directory());
    assert_eq!(a.n_subdirectories(), 0);
    assert_eq!(
        tree.lookup(a.ino(), "é.mkv").expect("é").hash_id(),
        Some("h3")
    );
    assert!(tree.lookup(a.ino(), "missing").is_none());
    assert!(
        tree.lookup(tree.resolve("b.mkv").expect("b").ino(), "x")
            .is_none(),
        "not a directory"
    );
    assert_eq!(
        tree.file_paths(),
        ["/B.mkv", "/a/z.mkv", "/a/é.mkv", "/b.mkv"]
    );
    assert_eq!(tree.get(ROOT_INODE).expect("root").n_subdirectories(), 1);
}

#[derive(Clone, Debug)]
enum Operation {
    Upsert(usize, usize),
    Remove(usize),
}

const HASH_IDS: [&str; 8] = [
    "a000000012345678",
    "b000000012345678",
    "c0000000aaaaaaaa",
    "d000000000000001",
    "e000000000000002",
    "f0000000ffffffff",
    "g0000000ffffffff",
    "h",
];

/// Paths chosen to collide every way: same name, a suffixed name that is
/// another file's rendered name, files claiming directory paths.
const PATHS: [&str; 10] = [
    "M/a.mkv",
    "M/a [12345678].mkv",
    "M/a [aaaaaaaa].mkv",
    "M/a",
    "M/a/x.mkv",
    "M/a [12345678].mkv/y",
    "M",
    "N/a.mkv",
    "M/a.mkv/z.mkv",
    "M/a [b000000012345678].mkv",
];

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        3 => (0..HASH_IDS.len(), 0..PATHS.len()).prop_map(|(file, path)| Operation::Upsert(file, path)),
        1 => (0..HASH_IDS.len()).prop_map(Operation::Remove),
    ]
}

proptest! {
    /// Any sequence of changes ends in the tree a fresh build of the final
    /// state gives, whatever the order: a restart renames nothing.
    #[test]
    fn any_order_of_changes_gives_the_tree_of_the_final_state(
        operations in proptest::collection::vec(operation(), 1..40),
    ) {
        let mut tree = Tree::new();
        let mut final_state = std::collections::BTreeMap::new();
        let mut invalidations = Vec::new();
        for operation in &operations {
            match *operation {
                Operation::Upsert(file, path) => {
                    tree.upsert(spec(HASH_IDS[file], PATHS[path]), &mut invalidations);
                    final_state.insert(file, path);
                }
                Operation::Remove(file) => {
                    tree.remove(HASH_IDS[file], &mut invalidations);
                    final_state.remove(&file);
                }
            }
        }
        let forward = Tree::build(final_state.iter().map(|(&file, &path)| spec(HASH_IDS[file], PATHS[path])));
        let backward = Tree::build(final_state.iter().rev().map(|(&file, &path)| spec(HASH_IDS[file], PATHS[path])));
        prop_assert_eq!(snapshot(&tree), snapshot(&forward));
        prop_assert_eq!(snapshot(&backward), snapshot(&forward));
        prop_assert_eq!(tree.file_count(), final_state.len());
        prop_assert_eq!(files_by_path(&tree).len(), final_state.len(), "every file visible once");
        prop_assert_eq!(tree.directory_count(), forward.directory_count());
        prop_assert_eq!(tree.total_size_bytes(), 10 * final_state.len() as u64);
        // The smallest claimant of a rendered name that is no directory holds it.
        for (&file, &path) in &final_state {
            let smallest = final_state.iter().filter(|(_, other)| PATHS[**other] == PATHS[path]).map(|(f, _)| HASH_IDS[*f]).min();
            if let Some(node) = tree.resolve(PATHS[path])
                && !node.is_directory()
            {
                prop_assert_eq!(node.hash_id(), smallest, "{} holds {}", HASH_IDS[file], PATHS[path]);
            }
        }
    }

    /// A rebuild from any tree gives the same tree as a fresh build, keeps
    /// every surviving file's inode, and reports no entry that did not change.
    #[test]
    fn rebuild_matches_a_fresh_build(
        before in proptest::collection::btree_map(0..HASH_IDS.len(), 0..PATHS.len(), 0..8),
        after in proptest::collection::btree_map(0..HASH_IDS.len(), 0..PATHS.len(), 0..8),
    ) {
        let old = Tree::build(before.iter().map(|(&file, &path)| spec(HASH_IDS[file], PATHS[path])));
        let mut invalidations = Vec::new();
        let new = Tree::rebuild_from(&old, after.iter().map(|(&file, &path)| spec(HASH_IDS[file], PATHS[path])), &mut invalidations);
        let fresh = Tree::build(after.iter().map(|(&file, &path)| spec(HASH_IDS[file], PATHS[path])));
        prop_assert_eq!(snapshot(&new), snapshot(&fresh));
        for file in after.keys() {
            if let Some(old_node) = old.file_by_hash(HASH_IDS[*file]) {
                prop_assert_eq!(new.file_by_hash(HASH_IDS[*file]).map(|node| node.ino()), Some(old_node.ino()));
            }
        }
        if before == after {
            prop_assert!(invalidations.is_empty(), "{:?}", invalidations);
        }
    }
}

/// Hash ids for the big-directory test: distinct, and sharing their last 8
/// characters in pairs, so level-2 suffixes are exercised too.
fn big_hash_id(index: usize) -> String {
    format!("h{:03}{:08}", index, index / 2)
}

/// Paths for the big-directory test: one directory, few rendered names, so
/// names collide heavily and the directory holds far more entries than a
/// small directory's inline list.
fn big_path(path: usize) -> String {
    match path % 5 {
        0 => format!("D/n{}.mkv", path % 7),
        1 => format!("D/n{} [{:08}].mkv", path % 7, path),
        2 => format!("D/d{}/x.mkv", path % 3),
        3 => format!("D/n{}.mkv/y.mkv", path % 7),
        _ => format!("D/e{path}.mkv"),
    }
}

proptest! {
    /// Directories past the inline size (dozens of entries, heavy
    /// collisions): any order of changes ends in the fresh build's tree.
    #[test]
    fn big_directories_give_the_tree_of_the_final_state(
        operations in proptest::collection::vec((0..120usize, 0..60usize, 0..5u8), 1..300),
    ) {
        let mut tree = Tree::new();
        let mut final_state = std::collections::BTreeMap::new();
        let mut invalidations = Vec::new();
        let hash_ids: Vec<String> = (0..120).map(big_hash_id).collect();
        let paths: Vec<String> = (0..60).map(big_path).collect();
        for &(file, path, kind) in &operations {
            if kind == 0 {
                tree.remove(&hash_ids[file], &mut invalidations);
                final_state.remove(&file);
            } else {
                tree.upsert(spec(&hash_ids[file], &paths[path]), &mut invalidations);
                final_state.insert(file, path);
            }
        }
        let forward = Tree::build(final_state.iter().map(|(&file, &path)| spec(&hash_ids[file], &paths[path])));
        let backward = Tree::build(final_state.iter().rev().map(|(&file, &path)| spec(&hash_ids[file], &paths[path])));
        prop_assert_eq!(snapshot(&tree), snapshot(&forward));
        prop_assert_eq!(snapshot(&backward), snapshot(&forward));
        prop_assert_eq!(files_by_path(&tree).len(), final_state.len(), "every file visible once");
        for &file in final_state.keys() {
            let node = tree.file_by_hash(&hash_ids[file]).expect("every file is in the tree");
            prop_assert_eq!(tree.lookup(node.parent_ino(), node.name()).map(|found| found.ino()), Some(node.ino()));
        }
    }
}
