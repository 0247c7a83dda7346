//! The change feed's data: which *virtual paths* a change added, removed or
//! altered. The tree reports kernel [`Invalidation`](crate::Invalidation)s
//! in inode terms; subscribers that are not the kernel (media-server
//! notifications, WebDAV caches, webhooks) need paths, and a removed
//! directory can no longer be resolved from its inode once it is gone, so
//! the path is recorded when the change happens.

use std::collections::BTreeSet;

use hashbrown::{HashMap, HashSet};

use crate::names::split_rendered_path;
use crate::tree::{Invalidation, ROOT_INODE, Tree};

/// What happened at one virtual path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathChangeKind {
    /// The path appeared.
    Added,
    /// The path disappeared.
    Removed,
    /// The path still exists; its attributes, contents or listing changed.
    Changed,
}

/// One changed virtual path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathChange {
    /// What happened.
    pub kind: PathChangeKind,
    /// The virtual path, `/`-separated, relative to the root, without a
    /// leading `/` (the root itself is `""`).
    pub path: String,
    /// Whether the path is (or was) a directory.
    pub is_directory: bool,
}

/// Why a batch of changes happened. Subscribers treat the bulk causes
/// (everything but [`ChangeCause::Event`]) as "the whole library may have
/// changed" rather than reacting path by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeCause {
    /// Events from the live tail.
    Event,
    /// The first complete tree after start-up.
    Bootstrap,
    /// New rules rebuilt the tree.
    Rules,
    /// A resynchronisation (stream trimmed, gap, refresh) swapped the tree.
    Resync,
    /// Another metadata source (a new leader or meta-core) swapped the tree.
    SourceSwitch,
}

impl ChangeCause {
    /// Whether this cause rebuilds the whole tree at once.
    pub fn is_bulk(self) -> bool {
        !matches!(self, ChangeCause::Event)
    }
}

/// The changes one update of the tree made, in one message of the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeBatch {
    /// Why the tree changed.
    pub cause: ChangeCause,
    /// Every path that changed (directories included), in no promised order.
    pub changes: Vec<PathChange>,
    /// What the kernel must forget for this change, in inode terms.
    pub invalidations: Vec<Invalidation>,
    /// Position of this batch in the feed (1, 2, 3, ...): a gap tells a
    /// subscriber it missed batches.
    pub sequence: u64,
}

/// What one update of the tree did: what the kernel must forget, and which
/// virtual paths changed (for the change feed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeChanges {
    /// Kernel invalidations, in inode terms.
    pub invalidations: Vec<Invalidation>,
    /// Changed virtual paths, directories included, in path order.
    pub paths: Vec<PathChange>,
}

impl TreeChanges {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.invalidations.is_empty() && self.paths.is_empty()
    }
}

/// `/a/b` → `a/b`, `/` → `` (the feed's paths are relative to the root).
fn relative(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

/// `parent` joined with `name`, both in the tree's absolute form.
fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The paths a live batch may touch, and what was at each before the tree
/// changed: recorded before the change, so a directory the change removes
/// is still known by its path.
#[derive(Debug, Default)]
pub(crate) struct PathsBefore {
    /// Absolute path → `Some(is_directory)` if something was there, `None`
    /// if nothing was.
    states: HashMap<String, Option<bool>>,
    /// The files of the batch, by hashId.
    hash_ids: Vec<String>,
}

impl PathsBefore {
    /// Notes file `hash_id` before the tree changes: where it is now (and
    /// its directories), and where the rules will put it (`rendered`).
    pub(crate) fn note_file(&mut self, tree: &Tree, hash_id: &str, rendered: Option<&str>) {
        self.hash_ids.push(hash_id.to_owned());
        if let Some(path) = tree
            .file_by_hash(hash_id)
            .and_then(|node| tree.path_of(node.ino()))
        {
            let mut end = path.len();
            let mut is_directory = false;
            while end > 0 {
                self.states
                    .entry(path[..end].to_owned())
                    .or_insert(Some(is_directory));
                is_directory = true;
                end = path[..end].rfind('/').unwrap_or(0);
            }
        }
        if let Some(rendered) = rendered {
            let (directories, name) = split_rendered_path(rendered, hash_id);
            let mut path = String::new();
            for component in directories.iter().chain([&name]) {
                path.push('/');
                path.push_str(component);
                self.states
                    .entry(path.clone())
                    .or_insert_with(|| tree.resolve(&path).map(|node| node.is_directory()));
            }
        }
    }

    /// What changed, now that `tree` has been updated with `invalidations`.
    pub(crate) fn changes(self, tree: &Tree, invalidations: &[Invalidation]) -> Vec<PathChange> {
        // Entries and inodes the tree reported, located in the new tree; an
        // entry whose directory is gone belongs to a removed directory,
        // whose path is among `states`.
        let mut entry_paths = HashSet::new();
        let mut inode_paths = HashSet::new();
        for invalidation in invalidations {
            match invalidation {
                Invalidation::Entry { parent, name } => {
                    if let Some(parent_path) = tree.path_of(*parent) {
                        entry_paths.insert(join(&parent_path, name));
                    }
                }
                Invalidation::Inode { ino } => {
                    if let Some(path) = tree.path_of(*ino) {
                        inode_paths.insert(path);
                    }
                }
            }
        }
        let file_paths_after: HashSet<String> = self
            .hash_ids
            .iter()
            .filter_map(|hash_id| tree.path_of(tree.file_by_hash(hash_id)?.ino()))
            .collect();
        let candidates: BTreeSet<&String> = self
            .states
            .keys()
            .chain(&entry_paths)
            .chain(&inode_paths)
            .chain(&file_paths_after)
            .collect();
        let mut changes = Vec::new();
        for path in candidates {
            let appeared = entry_paths.contains(path) || file_paths_after.contains(path);
            let touched = appeared || inode_paths.contains(path);
            let after = tree.resolve(path).map(|node| node.is_directory());
            let kind = match (self.states.get(path), after) {
                (Some(Some(_)), Some(_)) if touched => PathChangeKind::Changed,
                (Some(Some(was_directory)), None) => {
                    changes.push(PathChange {
                        kind: PathChangeKind::Removed,
                        path: relative(path),
                        is_directory: *was_directory,
                    });
                    continue;
                }
                (Some(None), Some(_)) => PathChangeKind::Added,
                (None, Some(_)) if appeared => PathChangeKind::Added,
                (None, Some(_)) if touched => PathChangeKind::Changed,
                (None, None) if entry_paths.contains(path) => {
                    changes.push(PathChange {
                        kind: PathChangeKind::Removed,
                        path: relative(path),
                        is_directory: false,
                    });
                    continue;
                }
                _ => continue,
            };
            changes.push(PathChange {
                kind,
                path: relative(path),
                is_directory: after.unwrap_or(false),
            });
        }
        changes
    }
}

/// What changed between two whole trees (a swap: new rules, a
/// resynchronisation, another source), given the invalidations the new
/// tree's build reported against the old one.
///
/// Both trees are walked together, each directory's listings merged in
/// name order (the order both keep): a path is added, removed, or changed
/// when it names another node, another kind of node, or a node the build
/// invalidated. Paths are only built for the changes, in one reused
/// buffer (a map of every path of both trees was 35% of a rules change).
pub(crate) fn diff_trees(
    old: &Tree,
    new: &Tree,
    invalidations: &[Invalidation],
) -> Vec<PathChange> {
    let stale_inodes = stale_inodes(invalidations);
    let mut walk = TreeWalk {
        old,
        new,
        stale_inodes: &stale_inodes,
        path: String::new(),
        changes: Vec::new(),
    };
    walk.directories(Some(ROOT_INODE), Some(ROOT_INODE));
    let mut changes = walk.changes;
    changes.sort_by(|left, right| left.path.cmp(&right.path));
    changes
}

/// The inodes whose attributes, listing or contents a build invalidated.
fn stale_inodes(invalidations: &[Invalidation]) -> HashSet<u64> {
    invalidations
        .iter()
        .filter_map(|invalidation| match invalidation {
            Invalidation::Inode { ino } => Some(*ino),
            Invalidation::Entry { .. } => None,
        })
        .collect()
}

/// The two trees of [`diff_trees`] and what their walk found so far.
struct TreeWalk<'t> {
    old: &'t Tree,
    new: &'t Tree,
    stale_inodes: &'t HashSet<u64>,
    /// The relative path of the directory being compared.
    path: String,
    changes: Vec<PathChange>,
}

impl TreeWalk<'_> {
    /// Compares directory `old_directory` of the old tree with
    /// `new_directory` of the new one, both at `self.path`; `None` is a
    /// directory only the other tree has (all its entries were added or
    /// removed).
    fn directories(&mut self, old_directory: Option<u64>, new_directory: Option<u64>) {
        let (old, new) = (self.old, self.new);
        let mut old_children = old_directory
            .and_then(|directory| old.children(directory))
            .into_iter()
            .flatten()
            .peekable();
        let mut new_children = new_directory
            .and_then(|directory| new.children(directory))
            .into_iter()
            .flatten()
            .peekable();
        loop {
            let order = match (old_children.peek(), new_children.peek()) {
                (None, None) => return,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(old_child), Some(new_child)) => old_child.name().cmp(new_child.name()),
            };
            let (old_child, new_child) = match order {
                std::cmp::Ordering::Less => (old_children.next(), None),
                std::cmp::Ordering::Greater => (None, new_children.next()),
                std::cmp::Ordering::Equal => (old_children.next(), new_children.next()),
            };
            let Some(name) = old_child.or(new_child).map(|child| child.name()) else {
                return;
            };
            let parent_length = self.path.len();
            if !self.path.is_empty() {
                self.path.push('/');
            }
            self.path.push_str(name);
            let change = match (old_child, new_child) {
                (Some(old_child), None) => {
                    Some((PathChangeKind::Removed, old_child.is_directory()))
                }
                (None, Some(new_child)) => Some((PathChangeKind::Added, new_child.is_directory())),
                (Some(old_child), Some(new_child)) => (old_child.ino() != new_child.ino()
                    || old_child.is_directory() != new_child.is_directory()
                    || self.stale_inodes.contains(&new_child.ino()))
                .then_some((PathChangeKind::Changed, new_child.is_directory())),
                (None, None) => None,
            };
            if let Some((kind, is_directory)) = change {
                self.changes.push(PathChange {
                    kind,
                    path: self.path.clone(),
                    is_directory,
                });
            }
            let old_subdirectory = old_child
                .filter(|child| child.is_directory())
                .map(|child| child.ino());
            let new_subdirectory = new_child
                .filter(|child| child.is_directory())
                .map(|child| child.ino());
            if old_subdirectory.is_some() || new_subdirectory.is_some() {
                self.directories(old_subdirectory, new_subdirectory);
            }
            self.path.truncate(parent_length);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metafuse_rules::Rules;
    use metafuse_state::FetchedValue;

    use super::*;
    use crate::{Library, SharedLibrary};

    fn value<'v>(hash_id: &'v str, property: &'v str, value: Option<&'v str>) -> FetchedValue<'v> {
        FetchedValue {
            hash_id,
            property,
            value,
        }
    }

    fn episode<'v>(hash_id: &'v str, title: &'v str, episode: &'v str) -> Vec<FetchedValue<'v>> {
        vec![
            value(hash_id, "filePath", Some("incoming/x.mkv")),
            value(hash_id, "title", Some(title)),
            value(hash_id, "season", Some("1")),
            value(hash_id, "episode", Some(episode)),
        ]
    }

    fn preset(name: &str) -> Arc<Rules> {
        Arc::new(Rules::preset(name).expect("preset"))
    }

    /// Every path of `tree` but the root: absolute path → (inode, is
    /// directory). The oracle of [`diff_trees`] (its first version).
    fn every_path(tree: &Tree) -> HashMap<String, (u64, bool)> {
        let mut paths = HashMap::new();
        let mut pending = vec![(ROOT_INODE, String::new())];
        while let Some((directory, path)) = pending.pop() {
            let Some(children) = tree.children(directory) else {
                continue;
            };
            for child in children {
                let child_path = format!("{path}/{}", child.name());
                if child.is_directory() {
                    pending.push((child.ino(), child_path.clone()));
                }
                paths.insert(child_path, (child.ino(), child.is_directory()));
            }
        }
        paths
    }

    /// [`diff_trees`] by comparing maps of every path of both trees.
    fn diff_by_maps(old: &Tree, new: &Tree, invalidations: &[Invalidation]) -> Vec<PathChange> {
        let before = every_path(old);
        let after = every_path(new);
        let stale_inodes = stale_inodes(invalidations);
        let mut changes: Vec<PathChange> = Vec::new();
        for (path, &(ino, is_directory)) in &after {
            let kind = match before.get(path) {
                None => PathChangeKind::Added,
                Some(&(old_ino, was_directory)) => {
                    if old_ino == ino
                        && was_directory == is_directory
                        && !stale_inodes.contains(&ino)
                    {
                        continue;
                    }
                    PathChangeKind::Changed
                }
            };
            changes.push(PathChange {
                kind,
                path: relative(path),
                is_directory,
            });
        }
        for (path, &(_, was_directory)) in &before {
            if !after.contains_key(path) {
                changes.push(PathChange {
                    kind: PathChangeKind::Removed,
                    path: relative(path),
                    is_directory: was_directory,
                });
            }
        }
        changes.sort_by(|left, right| left.path.cmp(&right.path));
        changes
    }

    /// The merged walk finds exactly what comparing maps of every path
    /// finds, between every pair of presets over a library with name
    /// collisions, a file whose path is another's directory, and files
    /// some presets place and others do not.
    #[test]
    fn the_tree_walk_equals_comparing_every_path() {
        let mut values = Vec::new();
        let titles = ["Dark", "Dark ", "Lost", "Lost/S01", "Alien", "A"];
        let hash_ids: Vec<String> = (0..240).map(|index| format!("h{index:03}")).collect();
        let episodes: Vec<String> = (0..12).map(|index| format!("{:02}", index % 7)).collect();
        for (index, hash_id) in hash_ids.iter().enumerate() {
            let title = titles[index % titles.len()];
            values.extend(episode(hash_id, title, &episodes[index % episodes.len()]));
            if index % 5 == 0 {
                values.push(value(hash_id, "movieYear", Some("1979")));
            }
            if index % 7 == 0 {
                values.push(value(hash_id, "season", None));
            }
        }
        let libraries: Vec<Library> = ["default", "plex", "jellyfin"]
            .iter()
            .map(|name| {
                let mut library = Library::new(preset(name));
                library.apply_batch(values.iter().copied());
                library
            })
            .collect();
        assert!(
            !diff_trees(libraries[0].tree(), libraries[1].tree(), &[]).is_empty(),
            "the presets place the library differently"
        );
        for old in &libraries {
            for new in &libraries {
                let mut invalidations = Vec::new();
                let rebuilt = crate::tree::Tree::rebuild_from(old.tree(), [], &mut invalidations);
                for (old_tree, new_tree) in [(old.tree(), new.tree()), (old.tree(), &rebuilt)] {
                    let stale: Vec<Invalidation> = new_tree
                        .file_paths()
                        .iter()
                        .step_by(3)
                        .filter_map(|path| new_tree.resolve(path))
                        .map(|node| Invalidation::Inode { ino: node.ino() })
                        .collect();
                    for invalidations in [&[][..], &stale[..]] {
                        assert_eq!(
                            diff_trees(old_tree, new_tree, invalidations),
                            diff_by_maps(old_tree, new_tree, invalidations)
                        );
                    }
                }
            }
        }
    }

    fn change(kind: PathChangeKind, path: &str, is_directory: bool) -> PathChange {
        PathChange {
            kind,
            path: path.to_owned(),
            is_directory,
        }
    }

    /// Every expected change is reported, and nothing is reported twice.
    fn assert_reports(changes: &TreeChanges, expected: &[PathChange]) {
        let missing: Vec<&PathChange> = expected
            .iter()
            .filter(|wanted| !changes.paths.contains(wanted))
            .collect();
        assert!(
            missing.is_empty(),
            "missing {missing:?} in {:?}",
            changes.paths
        );
        let unique: HashSet<&String> = changes.paths.iter().map(|change| &change.path).collect();
        assert_eq!(unique.len(), changes.paths.len(), "{:?}", changes.paths);
    }

    #[test]
    fn live_batches_report_added_moved_and_removed_paths_with_their_directories() {
        use PathChangeKind::{Added, Changed, Removed};
        let mut library = Library::new(preset("default"));
        let added = library.apply_batch_reporting(episode("h1", "Dark", "01"));
        assert_reports(
            &added,
            &[
                change(Added, "TV Shows", true),
                change(Added, "TV Shows/Dark", true),
                change(Added, "TV Shows/Dark/S01", true),
                change(Added, "TV Shows/Dark/S01/Dark S01E01.mkv", false),
            ],
        );
        assert!(
            added
                .paths
                .iter()
                .all(|change| change.kind == Added || *change == self::change(Changed, "", true)),
            "only the root's listing changed besides: {:?}",
            added.paths
        );
        library.apply_batch_reporting(episode("h2", "Dark", "02"));

        // A move to another show: old path removed, new added, the show it
        // left (still holding h2) changed, the one it reached added.
        let moved = library.apply_batch_reporting([value("h1", "title", Some("Heat"))]);
        assert_reports(
            &moved,
            &[
                change(Removed, "TV Shows/Dark/S01/Dark S01E01.mkv", false),
                change(Changed, "TV Shows/Dark/S01", true),
                change(Added, "TV Shows/Heat", true),
                change(Added, "TV Shows/Heat/S01", true),
                change(Added, "TV Shows/Heat/S01/Heat S01E01.mkv", false),
            ],
        );

        // Moving the last file out of a directory removes the directory.
        let emptied = library.apply_batch_reporting([value("h2", "title", Some("Heat"))]);
        assert_reports(
            &emptied,
            &[
                change(Removed, "TV Shows/Dark/S01/Dark S01E02.mkv", false),
                change(Removed, "TV Shows/Dark/S01", true),
                change(Removed, "TV Shows/Dark", true),
                change(Added, "TV Shows/Heat/S01/Heat S01E02.mkv", false),
                change(Changed, "TV Shows/Heat/S01", true),
            ],
        );
        assert!(!emptied.invalidations.is_empty());

        // A deletion.
        let deleted = library.apply_batch_reporting([value("h2", "filePath", None)]);
        assert_reports(
            &deleted,
            &[change(Removed, "TV Shows/Heat/S01/Heat S01E02.mkv", false)],
        );
        assert!(
            !deleted
                .paths
                .iter()
                .any(|change| change.kind == Removed && change.is_directory),
            "h1 still holds the directories: {:?}",
            deleted.paths
        );

        // A change of attributes in place.
        let resized = library.apply_batch_reporting([value("h1", "size", Some("5"))]);
        assert_reports(
            &resized,
            &[change(Changed, "TV Shows/Heat/S01/Heat S01E01.mkv", false)],
        );
    }

    #[test]
    fn a_swap_reports_the_difference_of_the_two_trees() {
        use PathChangeKind::{Added, Removed};
        let library = SharedLibrary::new(Library::new(preset("default")));
        library.apply_batch(episode("h1", "Dark", "01"));
        let changes = library.replace_rules_reporting(preset("plex"));
        assert_reports(
            &changes,
            &[
                change(Removed, "TV Shows/Dark/S01", true),
                change(Removed, "TV Shows/Dark/S01/Dark S01E01.mkv", false),
                change(Added, "TV Shows/Dark/Season 01", true),
                change(Added, "TV Shows/Dark/Season 01/Dark - S01E01.mkv", false),
            ],
        );
        assert!(
            !changes.paths.iter().any(|change| change.path == "TV Shows"),
            "unchanged: {:?}",
            changes.paths
        );
        let unchanged = library.replace_rules_reporting(preset("plex"));
        assert!(unchanged.is_empty(), "{unchanged:?}");
    }
}
