//! A library: projection + rules + tree, and the shared handle readers use.

use std::ops::Deref;
use std::sync::Arc;

use metafuse_rules::{Metadata, Rules};
use metafuse_state::{Delta, EventCounts, FetchedValue, FileRef, Projection};
use parking_lot::{Mutex, RwLock};

use crate::change::{PathsBefore, TreeChanges, diff_trees};
use crate::tree::{FileSpec, Invalidation, NodeRef, Tree, TreeBuilder};

/// The state of one library: what we know of every file (the projection),
/// how paths are computed (the rules) and the resulting tree.
#[derive(Debug)]
pub struct Library {
    projection: Projection,
    rules: Arc<Rules>,
    tree: Tree,
}

impl Library {
    /// An empty library whose projection tracks what `rules` need.
    pub fn new(rules: Arc<Rules>) -> Self {
        Library {
            projection: Projection::new(rules.relevant_properties()),
            rules,
            tree: Tree::new(),
        }
    }

    /// Builds the tree of an already filled projection (bootstrap).
    pub fn from_projection(projection: Projection, rules: Arc<Rules>) -> Self {
        let tree = build_tree(&Tree::new(), &projection, &rules, &mut Vec::new());
        Library {
            projection,
            rules,
            tree,
        }
    }

    /// Applies fetched values; returns what the kernel must forget. Time is
    /// proportional to the files the batch changes.
    pub fn apply_batch<'v>(
        &mut self,
        values: impl IntoIterator<Item = FetchedValue<'v>>,
    ) -> Vec<Invalidation> {
        self.apply_batch_with(values, false).invalidations
    }

    /// [`Self::apply_batch`], also reporting which virtual paths changed
    /// (for the change feed).
    pub fn apply_batch_reporting<'v>(
        &mut self,
        values: impl IntoIterator<Item = FetchedValue<'v>>,
    ) -> TreeChanges {
        self.apply_batch_with(values, true)
    }

    fn apply_batch_with<'v>(
        &mut self,
        values: impl IntoIterator<Item = FetchedValue<'v>>,
        report_paths: bool,
    ) -> TreeChanges {
        let deltas = self.projection.apply_batch(values);
        // Where each file is and will be, noted before the tree changes.
        let paths_before = report_paths.then(|| {
            let mut before = PathsBefore::default();
            for delta in &deltas {
                let hash_id = delta.hash_id();
                let rendered = self.projection.file(hash_id).and_then(|file| {
                    let mut rendered = None;
                    with_file_spec(&self.rules, hash_id, file, |spec| {
                        rendered = Some(spec.path.to_owned());
                    });
                    rendered
                });
                before.note_file(&self.tree, hash_id, rendered.as_deref());
            }
            before
        });
        let mut invalidations = Vec::new();
        for delta in &deltas {
            match delta {
                Delta::Visible(hash_id) | Delta::Changed(hash_id) => {
                    match self.projection.file(hash_id) {
                        Some(file) => upsert_file(
                            &mut self.tree,
                            &self.rules,
                            hash_id,
                            file,
                            &mut invalidations,
                        ),
                        None => {
                            self.tree.remove(hash_id, &mut invalidations);
                        }
                    }
                }
                Delta::Gone(hash_id) => {
                    self.tree.remove(hash_id, &mut invalidations);
                }
            }
        }
        let paths = paths_before.map_or_else(Vec::new, |before| {
            before.changes(&self.tree, &invalidations)
        });
        TreeChanges {
            invalidations,
            paths,
        }
    }

    /// Records stream entries read after a batch was applied (the tail's
    /// counts and new position), so the projection's stats stay the truth.
    /// With [`SharedLibrary::update`], together with the batch in one lock.
    pub fn record_events(&mut self, counts: EventCounts, last_event_id: &str) {
        self.projection.record_events(counts, last_event_id);
    }

    /// Recomputes every path with new rules, keeping inodes.
    pub fn replace_rules(&mut self, rules: Arc<Rules>) -> Vec<Invalidation> {
        let mut invalidations = Vec::new();
        self.tree = build_tree(&self.tree, &self.projection, &rules, &mut invalidations);
        self.rules = rules;
        invalidations
    }

    /// Replaces the projection (a resynchronisation, e.g. after a leader
    /// switch), keeping inodes.
    pub fn replace_projection(&mut self, projection: Projection) -> Vec<Invalidation> {
        let mut invalidations = Vec::new();
        self.tree = build_tree(&self.tree, &projection, &self.rules, &mut invalidations);
        self.projection = projection;
        invalidations
    }

    /// The tree (every query of the mount and the API).
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The projection (properties and stats).
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// The rules in force.
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// The visible entry `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<NodeRef<'_>> {
        self.tree.lookup(parent, name)
    }

    /// The node with this inode.
    pub fn get(&self, ino: u64) -> Option<NodeRef<'_>> {
        self.tree.get(ino)
    }

    /// The entries of a directory, in listing order.
    pub fn children(&self, ino: u64) -> Option<impl Iterator<Item = NodeRef<'_>> + '_> {
        self.tree.children(ino)
    }

    /// The node at a `/`-separated path.
    pub fn resolve(&self, path: &str) -> Option<NodeRef<'_>> {
        self.tree.resolve(path)
    }

    /// Number of visible files.
    pub fn file_count(&self) -> usize {
        self.tree.file_count()
    }

    /// Number of directories, the root excluded.
    pub fn directory_count(&self) -> usize {
        self.tree.directory_count()
    }

    /// Sum of the sizes of all files.
    pub fn total_size_bytes(&self) -> u64 {
        self.tree.total_size_bytes()
    }

    /// Absolute paths of every file (`/TV Shows/…`), in listing order.
    pub fn file_paths(&self) -> Vec<String> {
        self.tree.file_paths()
    }

    /// Where the bytes of file `node` are: its `filePath`, as the
    /// projection holds it (the tree does not keep a copy); `None` for a
    /// directory.
    pub fn source_path(&self, node: NodeRef<'_>) -> Option<&str> {
        self.projection
            .file(node.hash_id()?)?
            .get(metafuse_state::FILE_PATH_PROPERTY)
    }

    /// The relevant properties of the file at `path`.
    pub fn file_metadata(&self, path: &str) -> Option<FileRef<'_>> {
        self.projection.file(self.tree.resolve(path)?.hash_id()?)
    }
}

/// Files per message from the rendering thread to the placing one: the
/// channel then costs nothing per file, and placing starts at once.
const RENDER_CHUNK_FILES: usize = 1024;

/// Below this many files a build renders and places on one thread (a
/// thread would cost more than it saves).
const PARALLEL_BUILD_MIN_FILES: usize = 8 * RENDER_CHUNK_FILES;

/// Builds the tree of every complete file of `projection`, keeping the
/// inodes of `previous`.
///
/// Rendering a file's path (parsing its properties, evaluating the rules)
/// and placing it in the tree are independent until the placing: with a
/// second core the paths are rendered on a scoped thread, in chunks and in
/// projection order, while this thread places the previous chunk. The tree
/// is the same as a one-thread build's (same files, same order). At 100k
/// files rendering is about a quarter of a build's time.
fn build_tree(
    previous: &Tree,
    projection: &Projection,
    rules: &Rules,
    invalidations: &mut Vec<Invalidation>,
) -> Tree {
    let mut builder = TreeBuilder::new(previous);
    builder.reserve(projection.complete_count());
    let parallel = projection.complete_count() >= PARALLEL_BUILD_MIN_FILES
        && std::thread::available_parallelism().is_ok_and(|cores| cores.get() > 1);
    let rendered_on_a_thread = parallel
        && std::thread::scope(|scope| {
            // Two chunks in flight: enough to keep both threads busy, little
            // memory (the rendered paths of ~2k files).
            let (chunks, rendered_chunks) = std::sync::mpsc::sync_channel(2);
            let renderer = std::thread::Builder::new()
                .name("tree-render".to_owned())
                .spawn_scoped(scope, move || {
                    let mut chunk = Vec::with_capacity(RENDER_CHUNK_FILES);
                    for (hash_id, file) in projection.complete_files() {
                        if let Some(rendered) = render_file(rules, hash_id, file) {
                            chunk.push(rendered);
                        }
                        if chunk.len() == RENDER_CHUNK_FILES {
                            let full = std::mem::replace(
                                &mut chunk,
                                Vec::with_capacity(RENDER_CHUNK_FILES),
                            );
                            if chunks.send(full).is_err() {
                                return;
                            }
                        }
                    }
                    // The placing thread only stops early by panicking;
                    // nothing to report then.
                    let _ = chunks.send(chunk);
                });
            if renderer.is_err() {
                // No thread to be had (a process or container at its
                // limit): the build goes on with one.
                return false;
            }
            for chunk in rendered_chunks {
                for rendered in &chunk {
                    builder.insert(rendered.spec());
                }
            }
            true
        });
    if !rendered_on_a_thread {
        for (hash_id, file) in projection.complete_files() {
            with_file_spec(rules, hash_id, file, |spec| builder.insert(spec));
        }
    }
    builder.finish(invalidations)
}

fn upsert_file(
    tree: &mut Tree,
    rules: &Rules,
    hash_id: &str,
    file: FileRef<'_>,
    invalidations: &mut Vec<Invalidation>,
) {
    let placed = with_file_spec(rules, hash_id, file, |spec| {
        tree.upsert(spec, invalidations)
    });
    if !placed {
        tree.remove(hash_id, invalidations);
    }
}

/// A complete file rendered: its path under the rules and the attributes
/// the tree needs, borrowing the rest from the projection.
struct RenderedFile<'p> {
    hash_id: &'p str,
    path: String,
    source_path: &'p str,
    size_bytes: u64,
    mtime_ms: i64,
    ctime_ms: i64,
}

impl RenderedFile<'_> {
    fn spec(&self) -> FileSpec<'_> {
        FileSpec {
            hash_id: self.hash_id,
            path: &self.path,
            source_path: self.source_path,
            size_bytes: self.size_bytes,
            mtime_ms: self.mtime_ms,
            ctime_ms: self.ctime_ms,
        }
    }
}

/// Renders a file; `None` when it has no `filePath`, i.e. is not complete.
fn render_file<'p>(rules: &Rules, hash_id: &'p str, file: FileRef<'p>) -> Option<RenderedFile<'p>> {
    let metadata = Metadata::new(file.properties());
    let source_path = metadata.file_path()?;
    let path = rules.render(hash_id, &metadata).path;
    let mtime_ms = metadata.mtime_ms().unwrap_or(0);
    Some(RenderedFile {
        hash_id,
        path,
        source_path,
        size_bytes: metadata.size_bytes().unwrap_or(0),
        mtime_ms,
        ctime_ms: metadata.ctime_ms().unwrap_or(mtime_ms),
    })
}

/// Renders a file and hands its spec to `use_spec`; returns false (and
/// calls nothing) when the file has no `filePath`, i.e. is not complete.
fn with_file_spec(
    rules: &Rules,
    hash_id: &str,
    file: FileRef<'_>,
    use_spec: impl FnOnce(FileSpec<'_>),
) -> bool {
    match render_file(rules, hash_id, file) {
        Some(rendered) => {
            use_spec(rendered.spec());
            true
        }
        None => false,
    }
}

/// A cheap-to-clone handle on a [`Library`] shared by the mount, the API
/// and the service loop.
///
/// Readers take the read lock for one query at a time. Writers are
/// serialised by a separate mutex, so a long rebuild can run under a read
/// lock (readers keep going) and take the write lock only to swap the
/// result in: nobody ever waits for a rebuild nor sees a half-applied batch.
#[derive(Clone, Debug)]
pub struct SharedLibrary {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    library: RwLock<Library>,
    writer: Mutex<()>,
}

impl SharedLibrary {
    /// Shares a library.
    pub fn new(library: Library) -> Self {
        SharedLibrary {
            shared: Arc::new(Shared {
                library: RwLock::new(library),
                writer: Mutex::new(()),
            }),
        }
    }

    /// Read access for one query; hold it briefly.
    pub fn read(&self) -> impl Deref<Target = Library> + '_ {
        self.shared.library.read()
    }

    /// Applies a (small) batch atomically; returns what the kernel must
    /// forget (pass it to the mount after this returns).
    pub fn apply_batch<'v>(
        &self,
        values: impl IntoIterator<Item = FetchedValue<'v>>,
    ) -> Vec<Invalidation> {
        let _writer = self.shared.writer.lock();
        self.shared.library.write().apply_batch(values)
    }

    /// [`Self::apply_batch`], also reporting which virtual paths changed.
    pub fn apply_batch_reporting<'v>(
        &self,
        values: impl IntoIterator<Item = FetchedValue<'v>>,
    ) -> TreeChanges {
        let _writer = self.shared.writer.lock();
        self.shared.library.write().apply_batch_reporting(values)
    }

    /// Runs a short change under the write lock (e.g.
    /// [`Library::record_events`]).
    pub fn update<R>(&self, change: impl FnOnce(&mut Library) -> R) -> R {
        let _writer = self.shared.writer.lock();
        change(&mut self.shared.library.write())
    }

    /// Recomputes every path with new rules: built beside the current tree,
    /// swapped in at once.
    pub fn replace_rules(&self, rules: Arc<Rules>) -> Vec<Invalidation> {
        self.replace_rules_with(rules, false).invalidations
    }

    /// [`Self::replace_rules`], also reporting which virtual paths changed.
    pub fn replace_rules_reporting(&self, rules: Arc<Rules>) -> TreeChanges {
        self.replace_rules_with(rules, true)
    }

    fn replace_rules_with(&self, rules: Arc<Rules>, report_paths: bool) -> TreeChanges {
        self.swap_in_rebuilt_tree(
            report_paths,
            |library, invalidations| {
                let tree = build_tree(&library.tree, &library.projection, &rules, invalidations);
                (tree, rules)
            },
            |library, rules| std::mem::replace(&mut library.rules, rules),
        )
    }

    /// Switches to new rules together with the projection they need: the
    /// projection (`rebuild` from the current one, e.g.
    /// [`Projection::rebuilt`]) and the tree are both built beside the
    /// current ones under the read lock, so readers keep going, and all
    /// three are swapped in at once under the write lock: neither the mount
    /// nor the API ever sees new rules with the old properties, or the
    /// reverse. Also reports which virtual paths changed.
    pub fn replace_rules_and_projection_reporting(
        &self,
        rules: Arc<Rules>,
        rebuild: impl FnOnce(&Projection) -> Projection,
    ) -> TreeChanges {
        self.swap_in_rebuilt_tree(
            true,
            |library, invalidations| {
                let projection = rebuild(&library.projection);
                let tree = build_tree(&library.tree, &projection, &rules, invalidations);
                (tree, (rules, projection))
            },
            |library, (rules, projection)| {
                (
                    std::mem::replace(&mut library.rules, rules),
                    std::mem::replace(&mut library.projection, projection),
                )
            },
        )
    }

    /// Replaces the projection (resynchronisation after a leader switch or
    /// a trimmed stream): built beside the current tree, swapped in at once.
    pub fn replace_projection(&self, projection: Projection) -> Vec<Invalidation> {
        self.replace_projection_with(projection, false)
            .invalidations
    }

    /// [`Self::replace_projection`], also reporting which virtual paths
    /// changed.
    pub fn replace_projection_reporting(&self, projection: Projection) -> TreeChanges {
        self.replace_projection_with(projection, true)
    }

    fn replace_projection_with(&self, projection: Projection, report_paths: bool) -> TreeChanges {
        self.swap_in_rebuilt_tree(
            report_paths,
            |library, invalidations| {
                let tree = build_tree(&library.tree, &projection, &library.rules, invalidations);
                (tree, projection)
            },
            |library, projection| std::mem::replace(&mut library.projection, projection),
        )
    }

    /// Builds a new tree and the `Part` (rules, projection or both) it was
    /// built for under the read lock, so readers keep going meanwhile, then
    /// swaps both in under the write lock. Writers are serialised
    /// throughout, so nothing changes between the build and the swap.
    fn swap_in_rebuilt_tree<Part>(
        &self,
        report_paths: bool,
        build: impl FnOnce(&Library, &mut Vec<Invalidation>) -> (Tree, Part),
        swap: impl FnOnce(&mut Library, Part) -> Part,
    ) -> TreeChanges {
        let _writer = self.shared.writer.lock();
        let mut invalidations = Vec::new();
        let (tree, part, paths) = {
            let library = self.shared.library.read();
            let (tree, part) = build(&library, &mut invalidations);
            // Compared while both trees exist, before readers see the new one.
            let paths = if report_paths {
                diff_trees(&library.tree, &tree, &invalidations)
            } else {
                Vec::new()
            };
            (tree, part, paths)
        };
        let displaced = {
            let mut library = self.shared.library.write();
            let old_tree = std::mem::replace(&mut library.tree, tree);
            (old_tree, swap(&mut library, part))
        };
        // Freeing a whole tree (and projection) takes a while: done after
        // the write lock is released, so readers do not wait for it.
        drop(displaced);
        TreeChanges {
            invalidations,
            paths,
        }
    }
}
