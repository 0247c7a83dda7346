//! The tree of directories and files, maintained per file.
//!
//! # Collisions
//! Each directory keeps, for every name some node wants, a [`Slot`]: the
//! directory of that name (directories always win) and the *attempts* of
//! files on that name, ordered by `(level, hashId)`. A file first attempts
//! its rendered name (level 0); when a directory or a smaller attempt holds
//! that name it attempts the next candidate (level 1: ` [last 8 of hashId]`,
//! level 2: the whole hashId, …) until it holds one. This is the result of
//! resolving level by level from the current set of files alone, so it never
//! depends on the order of upserts: adding a file can only push others up
//! (a displaced holder attempts its next level), removing one can only let
//! others come back down (the smallest remaining attempt on a freed name
//! retreats to it). Both cascades touch only the names involved.
//!
//! # Inodes
//! A file's inode follows its hashId (a file moved by a rule change keeps
//! it); a directory's inode follows its path. The number is *derived* from
//! that key (XXH3-64 cut to 53 bits: a specified algorithm, no per-process
//! seed), so a restart — a fresh build from the same files in any order —
//! gives every file and directory the number it had before (NFS exports,
//! `rsync --inplace` and media servers key on inodes). [`Tree::rebuild_from`]
//! carries both identities over from the previous tree.
//!
//! Two keys can hash to the same number (or to 0 / the root's 1): the later
//! key then *probes* its own sequence (XXH3 with seed 1, 2, …), skipping any
//! number in use in this tree or the tree it replaces. A fresh build does not
//! keep the first-come result: when any probe happened it reassigns the new
//! keys in sorted key order ([`Tree::settle_probed_inodes`]), so the numbers
//! depend on the set of files alone. While mounted a live node is never
//! renumbered, so a collision first met by a live upsert can give the two
//! keys other numbers after a restart — only on a real (53-bit) collision.
//!
//! "Never reused while mounted": a number is never given to a key while
//! another key holds it; a departed key's number can come back only for the
//! same key (the same file or directory, which is wanted) or for a key whose
//! hash collides with it (probability 2^-53 per pair). Remembering every
//! departed number would make that exact, at memory growing with churn; we
//! chose not to.

use std::borrow::Cow;
use std::ops::RangeInclusive;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use smallvec::SmallVec;

use crate::entries::{Entries, Listing};
use crate::names::{candidate_name, split_rendered_path};

/// Inode number of the root directory (FUSE's `FUSE_ROOT_ID`).
pub const ROOT_INODE: u64 = 1;

/// Something the kernel must forget after a change of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// The entry `name` of directory `parent` appeared, disappeared or now
    /// names another node.
    Entry {
        /// Inode of the directory holding the entry.
        parent: u64,
        /// Name of the entry in that directory.
        name: String,
    },
    /// The attributes, listing or contents of `ino` changed.
    Inode {
        /// Inode whose cached attributes and pages are stale.
        ino: u64,
    },
}

/// One complete file as the tree needs it: where the rules put it and the
/// attributes from the typed view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSpec<'a> {
    /// Stable identity of the file.
    pub hash_id: &'a str,
    /// Rendered relative path, `/`-separated (from the rules).
    pub path: &'a str,
    /// The file's `filePath` property: where its bytes live.
    pub source_path: &'a str,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Modification time, epoch milliseconds.
    pub mtime_ms: i64,
    /// Change time, epoch milliseconds.
    pub ctime_ms: i64,
}

/// Whether a node is a directory or a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
}

/// The tree of a library: directories and files with stable inodes.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: HashMap<u64, Node>,
    file_inodes_by_hash: HashMap<Arc<str>, u64>,
    /// Derives inode candidates; only tests replace it (to force collisions).
    inode_hash: InodeHash,
    /// Whether some key of this tree took a probed number (see the module
    /// docs): a builder then settles the new keys in sorted order.
    inode_probed: bool,
    /// How large directories' listing orders learn of new names:
    /// [`Listing::Deferred`] only inside a [`TreeBuilder`], which settles
    /// them before anybody can list.
    listing: Listing,
    n_directories: usize,
    total_size_bytes: u64,
}

/// A name of the tree. One allocation serves everywhere the same name is
/// held: a file's rendered name is also the key of its directory entry,
/// and a suffixed name a file holds is the entry's key too (clones share).
type Name = Arc<str>;

#[derive(Clone, Debug)]
struct Node {
    parent: u64,
    /// The name under which the node is visible in its parent; `None` for a
    /// file that holds its rendered name (almost all of them), which is
    /// then read from `desired_name` (see [`Node::visible_name`]), and for
    /// the root.
    name: Option<Name>,
    body: Body,
}

impl Node {
    /// The name under which the node is visible in its parent.
    fn visible_name(&self) -> &str {
        match (&self.name, &self.body) {
            (Some(name), _) => name,
            (None, Body::File(file)) => &file.desired_name,
            (None, Body::Directory(_)) => "",
        }
    }

    /// Records the name a file holds (`name`, the entry's key), keeping it
    /// only when it differs from the rendered one.
    fn set_file_name(&mut self, name: &Name) {
        self.name = match &self.body {
            Body::File(file) if *file.desired_name == **name => None,
            _ => Some(name.clone()),
        };
    }
}

#[derive(Clone, Debug)]
enum Body {
    Directory(DirectoryNode),
    File(FileNode),
}

#[derive(Clone, Debug, Default)]
struct DirectoryNode {
    /// Sorted by name bytes, which is the listing order.
    names: Entries<Slot>,
    newest_mtime_ms: i64,
    n_subdirectories: usize,
}

#[derive(Clone, Debug)]
struct FileNode {
    hash_id: Arc<str>,
    desired_name: Name,
    /// Index of the candidate name the file holds (0 = its rendered name).
    level: u32,
    /// XXH3-64 of the file's `filePath`: enough to notice that it changed
    /// (its pages are then stale); the path itself is the projection's
    /// (see `Library::source_path`), so it is not stored twice.
    source_path_hash: u64,
    size_bytes: u64,
    mtime_ms: i64,
    ctime_ms: i64,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    directory: Option<u64>,
    /// Sorted by `(level, hash_id)`; the first one holds the name unless a
    /// directory does.
    /// Inline for the first one: most names have exactly one claimant,
    /// which then costs no allocation of its own (a `Vec` of one: 48 B of
    /// heap and a `malloc` per name).
    attempts: SmallVec<[Attempt; 1]>,
}

#[derive(Clone, Debug)]
struct Attempt {
    level: u32,
    hash_id: Arc<str>,
    ino: u64,
}

impl Slot {
    fn visible(&self) -> Option<u64> {
        self.directory
            .or_else(|| self.attempts.first().map(|attempt| attempt.ino))
    }

    fn file_holder(&self) -> Option<u64> {
        match self.directory {
            Some(_) => None,
            None => self.attempts.first().map(|attempt| attempt.ino),
        }
    }

    fn is_empty(&self) -> bool {
        self.directory.is_none() && self.attempts.is_empty()
    }

    /// Inserts in `(level, hash_id)` order and returns the position.
    fn insert_attempt(&mut self, attempt: Attempt) -> usize {
        let key = (attempt.level, &*attempt.hash_id);
        let position = self
            .attempts
            .partition_point(|existing| (existing.level, &*existing.hash_id) < key);
        self.attempts.insert(position, attempt);
        position
    }

    /// Removes the attempt of `ino` (whose hashId is `hash_id`) at `level`;
    /// returns whether it held the name. A binary search: `(level, hashId)`
    /// is unique and the attempts are sorted by it, so a name with many
    /// claimants costs O(log n) to find, not a scan.
    fn remove_attempt(&mut self, ino: u64, hash_id: &str, level: u32) -> bool {
        let key = (level, hash_id);
        let position = self
            .attempts
            .binary_search_by(|existing| (existing.level, &*existing.hash_id).cmp(&key))
            .ok()
            .filter(|&position| self.attempts[position].ino == ino);
        match position {
            Some(position) => {
                self.attempts.remove(position);
                position == 0 && self.directory.is_none()
            }
            None => false,
        }
    }
}

/// Inode numbers stay below 2^53 so that tools holding them in an IEEE
/// double (JavaScript's `fs.stat`) still tell files apart; 53 bits keep
/// collisions rare (about 1 in 18,000 for a million nodes) and they are
/// probed anyway.
const LARGEST_INODE: u64 = (1 << 53) - 1;

/// `(key bytes, probe) -> candidate inode`.
type InodeHash = fn(&[u8], u64) -> u64;

/// XXH3-64 of the key, seeded with the probe index and the key's kind, so
/// files and directories never share a sequence. Specified and stable across
/// versions and processes, unlike `std`'s `DefaultHasher`.
fn xxh3_inode_hash(key: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, seed)
}

fn source_path_hash(source_path: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(source_path.as_bytes())
}

/// What an inode number is derived from. Ordered (directories first, then
/// by text) for the deterministic settling of collisions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum InodeKey {
    /// The directory's path, relative, `/`-separated (`TV/Dark`).
    Directory(String),
    /// The file's hashId.
    File(Arc<str>),
}

impl InodeKey {
    fn text(&self) -> &[u8] {
        match self {
            InodeKey::Directory(path) => path.as_bytes(),
            InodeKey::File(hash_id) => hash_id.as_bytes(),
        }
    }

    /// The candidate of `probe` (0 = the key's own number); 0 and the root
    /// are never candidates, so they come back as `None`.
    fn candidate(&self, hash: InodeHash, probe: u64) -> Option<u64> {
        let kind = match self {
            InodeKey::Directory(_) => 0,
            InodeKey::File(_) => 1,
        };
        let ino = hash(self.text(), probe << 1 | kind) & LARGEST_INODE;
        (ino > ROOT_INODE).then_some(ino)
    }
}

/// Where invalidations go: a caller's Vec, or nowhere during a fresh build.
struct Sink<'v> {
    out: Option<&'v mut Vec<Invalidation>>,
}

impl<'v> Sink<'v> {
    fn recording(out: &'v mut Vec<Invalidation>) -> Self {
        Sink { out: Some(out) }
    }

    fn discarding() -> Self {
        Sink { out: None }
    }

    fn entry(&mut self, parent: u64, name: &str) {
        if let Some(out) = self.out.as_deref_mut() {
            out.push(Invalidation::Entry {
                parent,
                name: name.to_owned(),
            });
        }
    }

    fn inode(&mut self, ino: u64) {
        if let Some(out) = self.out.as_deref_mut() {
            out.push(Invalidation::Inode { ino });
        }
    }
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// An empty tree: only the root directory.
    pub fn new() -> Self {
        Self::with_inode_hash(xxh3_inode_hash)
    }

    /// An empty tree deriving inodes with `inode_hash` (tests force
    /// collisions with it; builders inherit it from the previous tree).
    pub(crate) fn with_inode_hash(inode_hash: InodeHash) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INODE,
            Node {
                parent: ROOT_INODE,
                name: None,
                body: Body::Directory(DirectoryNode::default()),
            },
        );
        Tree {
            nodes,
            file_inodes_by_hash: HashMap::new(),
            inode_hash,
            inode_probed: false,
            listing: Listing::Ordered,
            n_directories: 0,
            total_size_bytes: 0,
        }
    }

    /// Builds a tree from scratch (bootstrap).
    pub fn build<'f>(files: impl IntoIterator<Item = FileSpec<'f>>) -> Self {
        Self::rebuild_from(&Tree::new(), files, &mut Vec::new())
    }

    /// Builds a new tree for `files` (after a rules change or a leader
    /// switch) that keeps the inode of every file (by hashId) and every
    /// directory (by path) that `previous` already had; pushes what the
    /// kernel must forget when the new tree replaces `previous`.
    pub fn rebuild_from<'f>(
        previous: &Tree,
        files: impl IntoIterator<Item = FileSpec<'f>>,
        invalidations: &mut Vec<Invalidation>,
    ) -> Self {
        let mut builder = TreeBuilder::new(previous);
        for file in files {
            builder.insert(file);
        }
        builder.finish(invalidations)
    }

    /// Adds a file or updates it (new path or new attributes).
    pub fn upsert(&mut self, file: FileSpec<'_>, invalidations: &mut Vec<Invalidation>) {
        self.upsert_with(file, None, &mut Sink::recording(invalidations));
    }

    /// Removes a file; returns whether it was present.
    pub fn remove(&mut self, hash_id: &str, invalidations: &mut Vec<Invalidation>) -> bool {
        let Some(ino) = self.file_inodes_by_hash.remove(hash_id) else {
            return false;
        };
        let mut sink = Sink::recording(invalidations);
        let (old_parent, old_mtime_ms) = self.detach_file(ino, &mut sink);
        self.nodes.remove(&ino);
        self.after_detach(old_parent, old_mtime_ms, &mut sink);
        true
    }

    fn upsert_with(&mut self, file: FileSpec<'_>, previous: Option<&Tree>, sink: &mut Sink<'_>) {
        let (directories, name) = split_rendered_path(file.path, file.hash_id);
        let Some(&ino) = self.file_inodes_by_hash.get(file.hash_id) else {
            let hash_id: Arc<str> = file.hash_id.into();
            let ino = previous
                .and_then(|old| old.file_inodes_by_hash.get(file.hash_id).copied())
                .unwrap_or_else(|| self.allocate_ino(&InodeKey::File(hash_id.clone()), previous));
            self.file_inodes_by_hash.insert(hash_id.clone(), ino);
            self.nodes.insert(
                ino,
                Node {
                    parent: ROOT_INODE,
                    name: None,
                    body: Body::File(FileNode {
                        hash_id,
                        desired_name: Name::default(),
                        level: 0,
                        source_path_hash: 0,
                        size_bytes: 0,
                        mtime_ms: 0,
                        ctime_ms: 0,
                    }),
                },
            );
            let parent = self.ensure_directories(&directories, previous, sink);
            self.attach_file(ino, parent, &name, file, sink);
            return;
        };
        if self.existing_directory(&directories) == Some(self.node(ino).parent)
            && *self.file(ino).desired_name == *name
        {
            self.update_file_attributes(ino, file, sink);
            return;
        }
        // Detach first, attach, then prune: a directory the file leaves and
        // comes back to (or passes through) keeps its inode.
        let (old_parent, old_mtime_ms) = self.detach_file(ino, sink);
        let parent = self.ensure_directories(&directories, previous, sink);
        self.attach_file(ino, parent, &name, file, sink);
        self.after_detach(old_parent, old_mtime_ms, sink);
    }

    /// The first candidate of `key` that is used neither here nor in the
    /// tree being replaced (whose keys may still arrive and keep theirs).
    fn allocate_ino(&mut self, key: &InodeKey, previous: Option<&Tree>) -> u64 {
        for probe in 0.. {
            let Some(ino) = key.candidate(self.inode_hash, probe) else {
                continue;
            };
            let in_use = self.nodes.contains_key(&ino)
                || previous.is_some_and(|old| old.nodes.contains_key(&ino));
            if !in_use {
                self.inode_probed |= probe > 0;
                return ino;
            }
        }
        unreachable!("a 64-bit probe sequence always finds a free number")
    }

    /// The key an existing node's number derives from.
    fn inode_key(&self, ino: u64) -> InodeKey {
        match &self.node(ino).body {
            Body::File(file) => InodeKey::File(file.hash_id.clone()),
            Body::Directory(_) => InodeKey::Directory(self.relative_path_of(ino)),
        }
    }

    fn relative_path_of(&self, ino: u64) -> String {
        let path = self.path_of(ino).unwrap_or_default();
        path.strip_prefix('/').unwrap_or(&path).to_owned()
    }

    /// After a build in which some key probed: reassigns the keys new in
    /// this tree (not carried over from `previous`) in sorted key order,
    /// each taking its first candidate not used by `previous` or by a
    /// smaller key, so the result depends on the set of keys, never on the
    /// order they were inserted in. Carried-over numbers stay.
    fn settle_probed_inodes(&mut self, previous: &Tree) {
        let mut new_keys: Vec<(InodeKey, u64)> = self
            .nodes
            .keys()
            .filter(|&&ino| ino != ROOT_INODE && !previous.nodes.contains_key(&ino))
            .map(|&ino| (self.inode_key(ino), ino))
            .collect();
        new_keys.sort_unstable();
        let mut assigned = HashSet::with_capacity(new_keys.len());
        let mut moves = HashMap::new();
        for (key, ino) in new_keys {
            let settled = (0..)
                .filter_map(|probe| key.candidate(self.inode_hash, probe))
                .find(|candidate| {
                    !previous.nodes.contains_key(candidate) && !assigned.contains(candidate)
                })
                .expect("a 64-bit probe sequence always finds a free number");
            assigned.insert(settled);
            if settled != ino {
                moves.insert(ino, settled);
            }
        }
        if !moves.is_empty() {
            self.renumber(&moves);
        }
        self.inode_probed = false;
    }

    /// Gives nodes new numbers (`old -> new`; the new ones free or vacated
    /// by this same call) and rewrites every reference to them.
    fn renumber(&mut self, moves: &HashMap<u64, u64>) {
        let translate = |ino: u64| moves.get(&ino).copied().unwrap_or(ino);
        let moved: Vec<(u64, Node)> = moves
            .iter()
            .map(|(old, &new)| {
                let node = self
                    .nodes
                    .remove(old)
                    .expect("tree invariant: renumbered inode is in the node table");
                (new, node)
            })
            .collect();
        let mut affected_directories = HashSet::new();
        for (new, mut node) in moved {
            node.parent = translate(node.parent);
            affected_directories.insert(node.parent);
            match &node.body {
                Body::Directory(_) => {
                    affected_directories.insert(new);
                }
                Body::File(file) => {
                    if let Some(ino) = self.file_inodes_by_hash.get_mut(&file.hash_id) {
                        *ino = new;
                    }
                }
            }
            self.nodes.insert(new, node);
        }
        for directory in affected_directories {
            let mut children = Vec::new();
            for slot in self.directory_mut(directory).names.values_mut() {
                if let Some(child) = &mut slot.directory {
                    *child = translate(*child);
                    children.push(*child);
                }
                for attempt in &mut slot.attempts {
                    attempt.ino = translate(attempt.ino);
                    children.push(attempt.ino);
                }
            }
            for child in children {
                self.nodes
                    .get_mut(&child)
                    .expect("tree invariant: a listed child is in the node table")
                    .parent = directory;
            }
        }
    }

    fn node(&self, ino: u64) -> &Node {
        self.nodes
            .get(&ino)
            .expect("tree invariant: inode is in the node table")
    }

    fn file(&self, ino: u64) -> &FileNode {
        match &self.node(ino).body {
            Body::File(file) => file,
            Body::Directory(_) => panic!("tree invariant: inode {ino} is a file"),
        }
    }

    fn file_mut(&mut self, ino: u64) -> &mut FileNode {
        match self.nodes.get_mut(&ino).map(|node| &mut node.body) {
            Some(Body::File(file)) => file,
            _ => panic!("tree invariant: inode {ino} is a file"),
        }
    }

    fn directory(&self, ino: u64) -> &DirectoryNode {
        match &self.node(ino).body {
            Body::Directory(directory) => directory,
            Body::File(_) => panic!("tree invariant: inode {ino} is a directory"),
        }
    }

    fn directory_mut(&mut self, ino: u64) -> &mut DirectoryNode {
        match self.nodes.get_mut(&ino).map(|node| &mut node.body) {
            Some(Body::Directory(directory)) => directory,
            _ => panic!("tree invariant: inode {ino} is a directory"),
        }
    }

    /// The directory at these components, if it exists.
    fn existing_directory(&self, components: &[Cow<'_, str>]) -> Option<u64> {
        components.iter().try_fold(ROOT_INODE, |parent, component| {
            self.child_directory(parent, component)
        })
    }

    /// Walks (and creates) the directories of a path; returns the last one.
    fn ensure_directories(
        &mut self,
        components: &[Cow<'_, str>],
        previous: Option<&Tree>,
        sink: &mut Sink<'_>,
    ) -> u64 {
        let mut parent = ROOT_INODE;
        for (depth, component) in components.iter().enumerate() {
            parent = match self.child_directory(parent, component) {
                Some(directory) => directory,
                None => self.create_directory(parent, &components[..=depth], previous, sink),
            };
        }
        parent
    }

    /// Creates the directory at `path` (its components from the root; the
    /// last one is its name) in `parent`, the directory of the others.
    fn create_directory(
        &mut self,
        parent: u64,
        path: &[Cow<'_, str>],
        previous: Option<&Tree>,
        sink: &mut Sink<'_>,
    ) -> u64 {
        let name: &str = path.last().expect("a directory path has a name");
        let ino = match previous.and_then(|old| old.child_directory(parent, name)) {
            Some(ino) => ino,
            None => {
                // The components are the directories' names (a directory
                // always holds its name), so this is `relative_path_of`
                // without walking up the tree.
                let relative_path = path.join("/");
                self.allocate_ino(&InodeKey::Directory(relative_path), previous)
            }
        };
        self.n_directories += 1;
        let listing = self.listing;
        let directory = self.directory_mut(parent);
        directory.n_subdirectories += 1;
        let (key, slot) = directory.names.entry(Name::from(name), listing);
        let displaced_file = slot.file_holder();
        slot.directory = Some(ino);
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: Some(key),
                body: Body::Directory(DirectoryNode::default()),
            },
        );
        sink.entry(parent, name);
        sink.inode(parent);
        if let Some(displaced) = displaced_file {
            // A file that claims a directory's path yields to the directory.
            let next_level = self.file(displaced).level + 1;
            self.place(parent, displaced, next_level, sink);
        }
        ino
    }

    /// The inode of directory `name` in directory `parent`, in this tree.
    fn child_directory(&self, parent: u64, name: &str) -> Option<u64> {
        match &self.nodes.get(&parent)?.body {
            Body::Directory(directory) => directory.names.get(name)?.directory,
            Body::File(_) => None,
        }
    }

    fn attach_file(
        &mut self,
        ino: u64,
        parent: u64,
        desired_name: &str,
        file: FileSpec<'_>,
        sink: &mut Sink<'_>,
    ) {
        self.nodes
            .get_mut(&ino)
            .expect("tree invariant: attached file is in the node table")
            .parent = parent;
        let node = self.file_mut(ino);
        if *node.desired_name != *desired_name {
            node.desired_name = desired_name.into();
        }
        node.level = 0;
        node.source_path_hash = source_path_hash(file.source_path);
        node.size_bytes = file.size_bytes;
        node.mtime_ms = file.mtime_ms;
        node.ctime_ms = file.ctime_ms;
        self.total_size_bytes += file.size_bytes;
        sink.inode(ino);
        sink.inode(parent);
        self.place(parent, ino, 0, sink);
        self.raise_mtime(parent, file.mtime_ms, sink);
    }

    /// Makes `ino` attempt candidate `level` in `directory`, then settles
    /// every file that this displaces (each one attempting its next level).
    fn place(&mut self, directory: u64, ino: u64, level: u32, sink: &mut Sink<'_>) {
        // Almost always one placement and no displacement: no allocation.
        let mut pending: SmallVec<[(u64, u32); 4]> = SmallVec::new();
        pending.push((ino, level));
        while let Some((ino, level)) = pending.pop() {
            let file = self.file_mut(ino);
            file.level = level;
            let hash_id = file.hash_id.clone();
            let desired_name = file.desired_name.clone();
            // The rendered name's key is the file's own desired name (shared,
            // no allocation); a suffixed one is made once.
            let candidate = match candidate_name(&desired_name, &hash_id, level) {
                Cow::Borrowed(_) => desired_name.clone(),
                Cow::Owned(owned) => Name::from(owned),
            };
            let listing = self.listing;
            let (key, slot) = self
                .directory_mut(directory)
                .names
                .entry(candidate, listing);
            let name = key.clone();
            let previous_holder = slot.file_holder();
            let position = slot.insert_attempt(Attempt {
                level,
                hash_id,
                ino,
            });
            if position == 0 && slot.directory.is_none() {
                if let Some(displaced) = previous_holder {
                    let displaced_level = self.file(displaced).level;
                    pending.push((displaced, displaced_level + 1));
                }
                self.nodes
                    .get_mut(&ino)
                    .expect("tree invariant: placed file is in the node table")
                    .set_file_name(&name);
                sink.entry(directory, &name);
            } else {
                pending.push((ino, level + 1));
            }
        }
    }

    /// Gives each freed name to its smallest remaining attempt, which
    /// retreats to it and frees the name it held (and so on).
    fn hand_over(&mut self, directory: u64, mut freed_names: Vec<String>, sink: &mut Sink<'_>) {
        while let Some(freed_name) = freed_names.pop() {
            let names = &mut self.directory_mut(directory).names;
            let Some(slot) = names.get(freed_name.as_str()) else {
                continue;
            };
            if slot.is_empty() {
                names.remove(freed_name.as_str());
                continue;
            }
            let Some(first) = slot.attempts.first() else {
                continue;
            };
            if slot.directory.is_some() {
                continue;
            }
            let (ino, retreat_level) = (first.ino, first.level);
            let key = names
                .get_key_value(freed_name.as_str())
                .map(|(key, _)| key.clone())
                .expect("tree invariant: the freed name is still listed");
            let held_level = self.file(ino).level;
            if held_level == retreat_level {
                continue;
            }
            self.withdraw_attempts(
                directory,
                ino,
                retreat_level + 1..=held_level,
                &mut freed_names,
                sink,
            );
            self.file_mut(ino).level = retreat_level;
            self.nodes
                .get_mut(&ino)
                .expect("tree invariant: retreating file is in the node table")
                .set_file_name(&key);
            sink.entry(directory, &freed_name);
        }
    }

    /// Withdraws the attempts of file `ino` at `levels` in `directory`;
    /// each name it held is invalidated and pushed to `freed_names`, for
    /// [`Self::hand_over`] to give to the next claimant.
    fn withdraw_attempts(
        &mut self,
        directory: u64,
        ino: u64,
        levels: RangeInclusive<u32>,
        freed_names: &mut Vec<String>,
        sink: &mut Sink<'_>,
    ) {
        let file = self.file(ino);
        // Cloned so the directory can be borrowed mutably below.
        let (hash_id, desired_name) = (file.hash_id.clone(), file.desired_name.clone());
        for level in levels {
            let name = candidate_name(&desired_name, &hash_id, level);
            let names = &mut self.directory_mut(directory).names;
            let Some(slot) = names.get_mut(&name) else {
                continue;
            };
            let was_holder = slot.remove_attempt(ino, &hash_id, level);
            if slot.is_empty() {
                names.remove(&name);
            }
            if was_holder {
                sink.entry(directory, &name);
                freed_names.push(name.into_owned());
            }
        }
    }

    /// Takes a file out of its directory (its names go to the next
    /// claimants); returns its directory and mtime for [`Self::after_detach`].
    fn detach_file(&mut self, ino: u64, sink: &mut Sink<'_>) -> (u64, i64) {
        let parent = self.node(ino).parent;
        let file = self.file(ino);
        let (held_level, size_bytes, mtime_ms) = (file.level, file.size_bytes, file.mtime_ms);
        let mut freed_names = Vec::new();
        self.withdraw_attempts(parent, ino, 0..=held_level, &mut freed_names, sink);
        self.total_size_bytes -= size_bytes;
        sink.inode(parent);
        self.hand_over(parent, freed_names, sink);
        (parent, mtime_ms)
    }

    /// Prunes directories left empty and lowers directory mtimes that
    /// depended on what left.
    fn after_detach(&mut self, mut directory: u64, removed_mtime_ms: i64, sink: &mut Sink<'_>) {
        while directory != ROOT_INODE && self.directory(directory).names.is_empty() {
            let Node { parent, name, .. } = self
                .nodes
                .remove(&directory)
                .expect("tree invariant: pruned directory is in the node table");
            let name = name.expect("tree invariant: a directory below the root has a name");
            self.n_directories -= 1;
            let parent_directory = self.directory_mut(parent);
            parent_directory.n_subdirectories -= 1;
            let slot = parent_directory
                .names
                .get_mut(&name)
                .expect("tree invariant: a directory is listed in its parent");
            slot.directory = None;
            if slot.is_empty() {
                parent_directory.names.remove(&name);
            }
            sink.entry(parent, &name);
            sink.inode(parent);
            // A file that yielded to this directory gets its name back.
            self.hand_over(parent, vec![name.to_string()], sink);
            directory = parent;
        }
        self.refresh_mtime_upwards(directory, removed_mtime_ms, sink);
    }

    fn raise_mtime(&mut self, mut directory: u64, mtime_ms: i64, sink: &mut Sink<'_>) {
        loop {
            let node = self.directory_mut(directory);
            if node.newest_mtime_ms >= mtime_ms {
                return;
            }
            node.newest_mtime_ms = mtime_ms;
            sink.inode(directory);
            if directory == ROOT_INODE {
                return;
            }
            directory = self.node(directory).parent;
        }
    }

    /// Recomputes directory mtimes from the children, from `directory` up,
    /// as long as the removed mtime could have been the newest.
    fn refresh_mtime_upwards(
        &mut self,
        mut directory: u64,
        removed_mtime_ms: i64,
        sink: &mut Sink<'_>,
    ) {
        loop {
            let current = self.directory(directory).newest_mtime_ms;
            if removed_mtime_ms < current {
                return;
            }
            let newest = self.newest_child_mtime(directory);
            if newest == current {
                return;
            }
            self.directory_mut(directory).newest_mtime_ms = newest;
            sink.inode(directory);
            if directory == ROOT_INODE {
                return;
            }
            directory = self.node(directory).parent;
        }
    }

    fn newest_child_mtime(&self, directory: u64) -> i64 {
        self.directory(directory)
            .names
            .values_unordered()
            .filter_map(Slot::visible)
            .map(|child| match &self.node(child).body {
                Body::Directory(directory) => directory.newest_mtime_ms,
                Body::File(file) => file.mtime_ms,
            })
            .max()
            .unwrap_or(0)
    }

    fn update_file_attributes(&mut self, ino: u64, file: FileSpec<'_>, sink: &mut Sink<'_>) {
        let parent = self.node(ino).parent;
        let new_source_path_hash = source_path_hash(file.source_path);
        let node = self.file_mut(ino);
        if node.source_path_hash == new_source_path_hash
            && node.size_bytes == file.size_bytes
            && node.mtime_ms == file.mtime_ms
            && node.ctime_ms == file.ctime_ms
        {
            return;
        }
        let (old_size_bytes, old_mtime_ms) = (node.size_bytes, node.mtime_ms);
        node.source_path_hash = new_source_path_hash;
        node.size_bytes = file.size_bytes;
        node.mtime_ms = file.mtime_ms;
        node.ctime_ms = file.ctime_ms;
        self.total_size_bytes = self.total_size_bytes - old_size_bytes + file.size_bytes;
        sink.inode(ino);
        if file.mtime_ms > old_mtime_ms {
            self.raise_mtime(parent, file.mtime_ms, sink);
        } else if file.mtime_ms < old_mtime_ms {
            self.refresh_mtime_upwards(parent, old_mtime_ms, sink);
        }
    }

    /// Pushes what differs between `previous` and this tree for nodes that
    /// exist in both (same inode): changed entries and changed attributes.
    fn report_differences_from(&self, previous: &Tree, sink: &mut Sink<'_>) {
        for (&ino, node) in &self.nodes {
            match (&node.body, previous.nodes.get(&ino).map(|old| &old.body)) {
                (Body::Directory(new), Some(Body::Directory(old))) => {
                    let n_before = sink.out.as_ref().map_or(0, |out| out.len());
                    report_entry_differences(ino, &old.names, &new.names, sink);
                    let entries_changed = sink.out.as_ref().map_or(0, |out| out.len()) != n_before;
                    if entries_changed
                        || old.newest_mtime_ms != new.newest_mtime_ms
                        || old.n_subdirectories != new.n_subdirectories
                    {
                        sink.inode(ino);
                    }
                }
                (Body::File(new), Some(Body::File(old)))
                    if old.source_path_hash != new.source_path_hash
                        || old.size_bytes != new.size_bytes
                        || old.mtime_ms != new.mtime_ms
                        || old.ctime_ms != new.ctime_ms =>
                {
                    sink.inode(ino);
                }
                _ => {}
            }
        }
    }

    // ----- queries -----

    /// The node with this inode, if it is in the tree.
    pub fn get(&self, ino: u64) -> Option<NodeRef<'_>> {
        self.nodes.get(&ino).map(|node| NodeRef { ino, node })
    }

    /// The visible entry `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<NodeRef<'_>> {
        let Body::Directory(directory) = &self.nodes.get(&parent)?.body else {
            return None;
        };
        let ino = directory.names.get(name)?.visible()?;
        self.get(ino)
    }

    /// The entries of a directory, sorted by name bytes; `None` when `ino`
    /// is not a directory.
    pub fn children(&self, ino: u64) -> Option<impl Iterator<Item = NodeRef<'_>> + '_> {
        let Body::Directory(directory) = &self.nodes.get(&ino)?.body else {
            return None;
        };
        Some(
            directory
                .names
                .values()
                .filter_map(Slot::visible)
                .filter_map(|child| self.get(child)),
        )
    }

    /// The node at an absolute or relative `/`-separated path (`""` and `"/"`
    /// are the root).
    pub fn resolve(&self, path: &str) -> Option<NodeRef<'_>> {
        path.split('/')
            .filter(|component| !component.is_empty())
            .try_fold(self.get(ROOT_INODE)?, |node, component| {
                self.lookup(node.ino, component)
            })
    }

    /// The file with this hashId.
    pub fn file_by_hash(&self, hash_id: &str) -> Option<NodeRef<'_>> {
        self.get(*self.file_inodes_by_hash.get(hash_id)?)
    }

    /// The absolute path of a node (`/` for the root).
    pub fn path_of(&self, ino: u64) -> Option<String> {
        let mut names = Vec::new();
        let mut current = ino;
        while current != ROOT_INODE {
            let node = self.nodes.get(&current)?;
            names.push(node.visible_name());
            current = node.parent;
        }
        if names.is_empty() {
            return Some("/".to_owned());
        }
        let mut path = String::new();
        for name in names.iter().rev() {
            path.push('/');
            path.push_str(name);
        }
        Some(path)
    }

    /// Visits every file with its absolute path, depth first in listing order.
    pub fn for_each_file(&self, mut visit: impl FnMut(&str, NodeRef<'_>)) {
        let mut path = String::new();
        self.visit_files_under(ROOT_INODE, &mut path, &mut visit);
    }

    fn visit_files_under(
        &self,
        directory: u64,
        path: &mut String,
        visit: &mut impl FnMut(&str, NodeRef<'_>),
    ) {
        let Some(children) = self.children(directory) else {
            return;
        };
        for child in children {
            let length_before = path.len();
            path.push('/');
            path.push_str(child.name());
            match child.kind() {
                NodeKind::Directory => self.visit_files_under(child.ino, path, visit),
                NodeKind::File => visit(path, child),
            }
            path.truncate(length_before);
        }
    }

    /// Absolute paths of every file, depth first in listing order.
    pub fn file_paths(&self) -> Vec<String> {
        let mut paths = Vec::with_capacity(self.file_inodes_by_hash.len());
        self.for_each_file(|path, _| paths.push(path.to_owned()));
        paths
    }

    /// Number of files.
    pub fn file_count(&self) -> usize {
        self.file_inodes_by_hash.len()
    }

    /// Number of directories, the root excluded.
    pub fn directory_count(&self) -> usize {
        self.n_directories
    }

    /// Sum of the sizes of all files.
    pub fn total_size_bytes(&self) -> u64 {
        self.total_size_bytes
    }
}

/// Builds a replacement for a tree one file at a time (see
/// [`Tree::rebuild_from`]), for callers whose file specs borrow from
/// temporaries such as a freshly rendered path.
#[derive(Debug)]
pub struct TreeBuilder<'p> {
    previous: &'p Tree,
    tree: Tree,
}

impl<'p> TreeBuilder<'p> {
    /// Starts a tree that will replace `previous` (use `&Tree::new()` for
    /// a first build).
    pub fn new(previous: &'p Tree) -> Self {
        let mut tree = Tree::with_inode_hash(previous.inode_hash);
        tree.listing = Listing::Deferred;
        TreeBuilder { previous, tree }
    }

    /// Makes room for `n_files` more files at once (the node tables then
    /// grow once, not by repeated doubling and rehashing).
    pub fn reserve(&mut self, n_files: usize) {
        // The tree being replaced tells how many directories come with the
        // files (as many again in a library of one folder per movie): a
        // rebuild then never grows its node table halfway through.
        let n_nodes = n_files.max(self.previous.nodes.len());
        self.tree.nodes.reserve(n_nodes);
        self.tree.file_inodes_by_hash.reserve(n_files);
    }

    /// Adds one file (a second spec for the same hashId replaces the first).
    pub fn insert(&mut self, file: FileSpec<'_>) {
        self.tree
            .upsert_with(file, Some(self.previous), &mut Sink::discarding());
    }

    /// The finished tree; pushes what the kernel must forget when it
    /// replaces the previous one.
    pub fn finish(mut self, invalidations: &mut Vec<Invalidation>) -> Tree {
        for node in self.tree.nodes.values_mut() {
            if let Body::Directory(directory) = &mut node.body {
                directory.names.settle_order();
            }
        }
        self.tree.listing = Listing::Ordered;
        if self.tree.inode_probed {
            self.tree.settle_probed_inodes(self.previous);
        }
        self.tree
            .report_differences_from(self.previous, &mut Sink::recording(invalidations));
        self.tree
    }
}

fn report_entry_differences(
    directory: u64,
    old: &Entries<Slot>,
    new: &Entries<Slot>,
    sink: &mut Sink<'_>,
) {
    let mut old_entries = old
        .iter()
        .filter_map(|(name, slot)| Some((name, slot.visible()?)));
    let mut new_entries = new
        .iter()
        .filter_map(|(name, slot)| Some((name, slot.visible()?)));
    let (mut old_next, mut new_next) = (old_entries.next(), new_entries.next());
    loop {
        match (old_next, new_next) {
            (None, None) => return,
            (Some((name, _)), None) => {
                sink.entry(directory, name);
                old_next = old_entries.next();
            }
            (None, Some((name, _))) => {
                sink.entry(directory, name);
                new_next = new_entries.next();
            }
            (Some((old_name, old_ino)), Some((new_name, new_ino))) => {
                match old_name.cmp(new_name) {
                    std::cmp::Ordering::Less => {
                        sink.entry(directory, old_name);
                        old_next = old_entries.next();
                    }
                    std::cmp::Ordering::Greater => {
                        sink.entry(directory, new_name);
                        new_next = new_entries.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if old_ino != new_ino {
                            sink.entry(directory, new_name);
                        }
                        old_next = old_entries.next();
                        new_next = new_entries.next();
                    }
                }
            }
        }
    }
}

/// A node of the tree, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct NodeRef<'t> {
    ino: u64,
    node: &'t Node,
}

impl<'t> NodeRef<'t> {
    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Inode of the parent directory (the root is its own parent).
    pub fn parent_ino(&self) -> u64 {
        self.node.parent
    }

    /// The visible name (after collision suffixes); empty for the root.
    pub fn name(&self) -> &'t str {
        self.node.visible_name()
    }

    /// Directory or file.
    pub fn kind(&self) -> NodeKind {
        match self.node.body {
            Body::Directory(_) => NodeKind::Directory,
            Body::File(_) => NodeKind::File,
        }
    }

    /// Whether this is a directory.
    pub fn is_directory(&self) -> bool {
        self.kind() == NodeKind::Directory
    }

    /// File size in bytes; 0 for a directory.
    pub fn size_bytes(&self) -> u64 {
        match &self.node.body {
            Body::File(file) => file.size_bytes,
            Body::Directory(_) => 0,
        }
    }

    /// Modification time (epoch ms); for a directory, the newest mtime of
    /// the files below it.
    pub fn mtime_ms(&self) -> i64 {
        match &self.node.body {
            Body::File(file) => file.mtime_ms,
            Body::Directory(directory) => directory.newest_mtime_ms,
        }
    }

    /// Change time (epoch ms); a directory reports its mtime.
    pub fn ctime_ms(&self) -> i64 {
        match &self.node.body {
            Body::File(file) => file.ctime_ms,
            Body::Directory(directory) => directory.newest_mtime_ms,
        }
    }

    /// The file's hashId; `None` for a directory.
    pub fn hash_id(&self) -> Option<&'t str> {
        match &self.node.body {
            Body::File(file) => Some(&file.hash_id),
            Body::Directory(_) => None,
        }
    }

    /// Number of subdirectories (for a directory's link count); 0 for a file.
    pub fn n_subdirectories(&self) -> usize {
        match &self.node.body {
            Body::Directory(directory) => directory.n_subdirectories,
            Body::File(_) => 0,
        }
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    /// Every file of a library costs one node (in a hash map, so its size
    /// counts again divided by the load factor) and one slot per name it
    /// tries: the layouts are part of the memory budget (docs/BENCHMARKS.md).
    /// A field added to either should be a decision, not an accident.
    #[test]
    fn nodes_and_slots_keep_their_size() {
        println!(
            "Node {} B, Body {} B, FileNode {} B, DirectoryNode {} B, Slot {} B, Attempt {} B",
            size_of::<Node>(),
            size_of::<Body>(),
            size_of::<FileNode>(),
            size_of::<DirectoryNode>(),
            size_of::<Slot>(),
            size_of::<Attempt>(),
        );
        assert!(size_of::<Node>() <= 96, "Node is {} B", size_of::<Node>());
        assert!(size_of::<Slot>() <= 56, "Slot is {} B", size_of::<Slot>());
    }
}
