//! The change feed's data: which *virtual paths* a change added, removed or
//! altered. The tree reports kernel [`Invalidation`](crate::Invalidation)s
//! in inode terms; subscribers that are not the kernel (media-server
//! notifications, WebDAV caches, webhooks) need paths, and a removed
//! directory can no longer be resolved from its inode once it is gone, so
//! the path is recorded when the change happens.

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
}
