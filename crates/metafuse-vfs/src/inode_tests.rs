//! Inode numbers derived from hashIds and paths: equal after a restart (a
//! fresh build in any order), collisions settled by sorted key.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::{FileSpec, ROOT_INODE, Tree, TreeBuilder};

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

/// Every node as `key -> inode`, the key being `f:hashId` for a file and
/// `d:path` for a directory; also checks the tree is consistent: each
/// node's path resolves back to it, each number is unique and not 0 or 1.
fn inodes_by_key(tree: &Tree) -> BTreeMap<String, u64> {
    let mut inodes = BTreeMap::new();
    let mut stack = vec![ROOT_INODE];
    while let Some(directory) = stack.pop() {
        for child in tree.children(directory).expect("directory") {
            let ino = child.ino();
            assert!(ino > ROOT_INODE, "inode {ino} is reserved");
            assert!(ino < 1 << 53, "inode {ino} fits a double");
            assert_eq!(child.parent_ino(), directory, "parent of {ino}");
            let path = tree.path_of(ino).expect("path");
            assert_eq!(tree.resolve(&path).map(|node| node.ino()), Some(ino));
            let key = match child.hash_id() {
                Some(hash_id) => format!("f:{hash_id}"),
                None => {
                    stack.push(ino);
                    format!("d:{path}")
                }
            };
            assert!(inodes.insert(key, ino).is_none());
        }
    }
    let mut numbers: Vec<u64> = inodes.values().copied().collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), inodes.len(), "inode numbers are unique");
    inodes
}

const LIBRARY: [(&str, &str); 8] = [
    ("h-dark-1", "TV Shows/Dark/S01/Dark S01E01.mkv"),
    ("h-dark-2", "TV Shows/Dark/S01/Dark S01E02.mkv"),
    ("h-dark-3", "TV Shows/Dark/S02/Dark S02E01.mkv"),
    ("h-dup", "TV Shows/Dark/S01/Dark S01E01.mkv"),
    ("h-movie", "Movies/Heat (1995)/Heat.mkv"),
    ("h-other", "Movies/Heat (1995)/Heat.en.srt"),
    ("h-root", "loose.mkv"),
    ("h-dir-claim", "Movies"),
];

#[test]
fn a_restart_gives_every_file_and_directory_its_inode_again() {
    // The running process: files arrive one by one, some move and go.
    let mut running = Tree::new();
    let mut invalidations = Vec::new();
    running.upsert(spec("h-gone", "Old/Show/x.mkv"), &mut invalidations);
    for (hash_id, path) in LIBRARY {
        running.upsert(spec(hash_id, "Staging/incoming.mkv"), &mut invalidations);
        running.upsert(spec(hash_id, path), &mut invalidations);
    }
    running.remove("h-gone", &mut invalidations);
    let before = inodes_by_key(&running);
    assert_eq!(before.len(), LIBRARY.len() + 6, "8 files, 6 directories");

    // A new process image: a fresh tree from the same files, in another order.
    let restarted = Tree::build(
        LIBRARY
            .iter()
            .rev()
            .map(|(hash_id, path)| spec(hash_id, path)),
    );
    assert_eq!(inodes_by_key(&restarted), before);
}

/// Every key's first candidate is 42 (and the second of every directory
/// 0, a reserved number): every insertion collides.
fn colliding_hash(key: &[u8], seed: u64) -> u64 {
    match seed {
        0 | 1 => 42,
        2 => 0,
        _ => xxhash_rust::xxh3::xxh3_64_with_seed(key, seed),
    }
}

fn build_colliding<'f>(files: impl IntoIterator<Item = FileSpec<'f>>) -> Tree {
    let empty = Tree::with_inode_hash(colliding_hash);
    let mut builder = TreeBuilder::new(&empty);
    for file in files {
        builder.insert(file);
    }
    builder.finish(&mut Vec::new())
}

#[test]
fn colliding_numbers_are_settled_by_sorted_key_whatever_the_order() {
    let forward = build_colliding(LIBRARY.iter().map(|(hash_id, path)| spec(hash_id, path)));
    let backward = build_colliding(
        LIBRARY
            .iter()
            .rev()
            .map(|(hash_id, path)| spec(hash_id, path)),
    );
    let inodes = inodes_by_key(&forward);
    assert_eq!(inodes_by_key(&backward), inodes);
    // The smallest key (directories sort first, then by path) holds 42.
    assert_eq!(inodes["d:/Movies"], 42);
    assert_eq!(
        inodes.values().filter(|&&ino| ino == 42).count(),
        1,
        "{inodes:?}"
    );
    // The tree itself is unaffected by the renumbering.
    let normal = Tree::build(LIBRARY.iter().map(|(hash_id, path)| spec(hash_id, path)));
    assert_eq!(forward.file_paths(), normal.file_paths());
    assert_eq!(forward.directory_count(), normal.directory_count());
}

#[test]
fn a_live_collision_probes_and_never_renumbers_a_live_node() {
    let mut tree = Tree::with_inode_hash(colliding_hash);
    let mut invalidations = Vec::new();
    tree.upsert(spec("zz", "z.mkv"), &mut invalidations);
    let first = tree.file_by_hash("zz").expect("zz").ino();
    assert_eq!(first, 42);
    tree.upsert(spec("aa", "a.mkv"), &mut invalidations);
    assert_eq!(
        tree.file_by_hash("zz").expect("zz").ino(),
        first,
        "live node keeps its number"
    );
    let second = tree.file_by_hash("aa").expect("aa").ino();
    assert!(second != first && second > ROOT_INODE);
    // A rebuild carries both over, whatever their order.
    let rebuilt = Tree::rebuild_from(
        &tree,
        [spec("aa", "b/a.mkv"), spec("zz", "z.mkv")],
        &mut invalidations,
    );
    assert_eq!(rebuilt.file_by_hash("zz").expect("zz").ino(), first);
    assert_eq!(rebuilt.file_by_hash("aa").expect("aa").ino(), second);
    let b = rebuilt.resolve("b").expect("b").ino();
    assert!(![0, ROOT_INODE, first, second].contains(&b));
    inodes_by_key(&rebuilt);
}

const HASH_IDS: [&str; 6] = ["a1", "b2", "c3", "d4", "e5", "f6"];
const PATHS: [&str; 7] = [
    "M/a.mkv",
    "M/a",
    "M/a/x.mkv",
    "M",
    "N/S1/a.mkv",
    "N/S2/a.mkv",
    "a.mkv",
];

#[derive(Clone, Debug)]
enum Operation {
    Upsert(usize, usize),
    Remove(usize),
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        3 => (0..HASH_IDS.len(), 0..PATHS.len()).prop_map(|(file, path)| Operation::Upsert(file, path)),
        1 => (0..HASH_IDS.len()).prop_map(Operation::Remove),
    ]
}

proptest! {
    /// Whatever a running tree went through, a fresh build of its final
    /// files (forward or backward) gives every node the same number.
    #[test]
    fn any_history_keeps_its_inodes_across_a_restart(
        operations in proptest::collection::vec(operation(), 1..40),
        colliding in any::<bool>(),
    ) {
        let hash = if colliding { colliding_hash } else { xxhash_rust::xxh3::xxh3_64_with_seed };
        let mut tree = Tree::with_inode_hash(hash);
        let mut final_state = BTreeMap::new();
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
        let build = |reverse: bool| {
            let empty = Tree::with_inode_hash(hash);
            let mut builder = TreeBuilder::new(&empty);
            let files: Vec<_> = final_state.iter().collect();
            let ordered: Box<dyn Iterator<Item = _>> = if reverse { Box::new(files.into_iter().rev()) } else { Box::new(files.into_iter()) };
            for (&file, &path) in ordered {
                builder.insert(spec(HASH_IDS[file], PATHS[path]));
            }
            builder.finish(&mut Vec::new())
        };
        let forward = inodes_by_key(&build(false));
        prop_assert_eq!(&inodes_by_key(&build(true)), &forward);
        let live = inodes_by_key(&tree);
        if !colliding {
            // Without a collision the running tree already has the numbers a restart gives.
            prop_assert_eq!(&live, &forward);
        } else {
            prop_assert_eq!(live.keys().collect::<Vec<_>>(), forward.keys().collect::<Vec<_>>());
        }
    }
}
