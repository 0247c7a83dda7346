//! Debouncing and coalescing (pure: the caller passes the time).
//!
//! Every change names one directory to rescan: an added directory itself
//! (it is new to the media server), otherwise the directory holding the
//! changed path (a removed directory no longer exists to be scanned). A
//! directory already pending, or under a pending ancestor, adds nothing; a
//! new ancestor absorbs its pending descendants. The root (`""`) stands
//! for the whole library: a bulk cause (bootstrap, rules, resync) or a
//! change at the top level pends it, and it absorbs everything.
//!
//! A directory is due `debounce` after its last change, or `max_delay`
//! after its first one if it never goes quiet. When one is due, every
//! directory that would be due within a quarter of the debounce goes with
//! it: a burst spread over a few milliseconds (10k changes across 500
//! directories) leaves as one notification, not as one per timer tick.

use std::collections::BTreeMap;
use std::time::Duration;

use metafuse_vfs::{ChangeBatch, PathChangeKind};
use tokio::time::Instant;

/// How a directory changed, as Jellyfin and Emby name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum DirectoryChange {
    /// The directory itself is new.
    Created,
    /// Something inside it appeared, changed or went.
    Modified,
}

impl DirectoryChange {
    /// The name in the Jellyfin/Emby `UpdateType` and the webhook body.
    pub(crate) fn name(self) -> &'static str {
        match self {
            DirectoryChange::Created => "Created",
            DirectoryChange::Modified => "Modified",
        }
    }

    fn merge(self, other: DirectoryChange) -> DirectoryChange {
        // A directory that is new stays new whatever happens inside it.
        self.min(other)
    }
}

/// One directory to rescan, relative to the mount (`TV Shows/Dark`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ChangedDirectory {
    pub(crate) path: String,
    pub(crate) change: DirectoryChange,
}

/// What is due now: either everything, or these directories (sorted, none
/// an ancestor of another).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    Everything,
    Directories(Vec<ChangedDirectory>),
}

impl Flush {
    /// Combines two flushes waiting for the same target (while it retried).
    pub(crate) fn merge(self, other: Flush) -> Flush {
        match (self, other) {
            (Flush::Directories(mut mine), Flush::Directories(theirs)) => {
                let mut merged = Coalescer::new(Duration::ZERO, Duration::ZERO);
                let now = Instant::now();
                for directory in mine.drain(..).chain(theirs) {
                    merged.pend(directory.path, directory.change, now);
                }
                merged.take_all()
            }
            _ => Flush::Everything,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    first_change: Instant,
    last_change: Instant,
    change: DirectoryChange,
}

/// Pending directories and their deadlines.
#[derive(Debug)]
pub(crate) struct Coalescer {
    debounce: Duration,
    max_delay: Duration,
    pending: BTreeMap<String, Pending>,
}

impl Coalescer {
    pub(crate) fn new(debounce: Duration, max_delay: Duration) -> Self {
        Coalescer {
            debounce,
            max_delay,
            pending: BTreeMap::new(),
        }
    }

    /// Takes in a batch; returns how many of its changes were absorbed by
    /// something already pending (the "coalesced" count).
    pub(crate) fn add_batch(&mut self, batch: &ChangeBatch, now: Instant) -> u64 {
        if batch.cause.is_bulk() {
            let root_was_pending = self.pending.contains_key("");
            let n_merged = self.pend_everything(now);
            let n_changes = batch.changes.len() as u64;
            // Every change rides on one library refresh; unless one was
            // pending, the first of them is what starts it.
            return if root_was_pending {
                n_changes.max(1)
            } else {
                n_merged + n_changes.saturating_sub(1)
            };
        }
        let mut n_absorbed = 0;
        for change in &batch.changes {
            let (directory, kind) = match (change.kind, change.is_directory) {
                // The listing of a directory changes because of entries that
                // have their own changes in the batch.
                (PathChangeKind::Changed, true) => continue,
                (PathChangeKind::Added, true) => (change.path.as_str(), DirectoryChange::Created),
                _ => (parent_of(&change.path), DirectoryChange::Modified),
            };
            n_absorbed += self.pend(directory.to_owned(), kind, now);
        }
        n_absorbed
    }

    /// Pends the whole library; returns how many pending entries it absorbed.
    pub(crate) fn pend_everything(&mut self, now: Instant) -> u64 {
        self.pend(String::new(), DirectoryChange::Modified, now)
    }

    /// Pends one directory; returns how many notifications that saved: 1
    /// when it or an ancestor was pending already, else the number of
    /// pending descendants it absorbed.
    fn pend(&mut self, directory: String, change: DirectoryChange, now: Instant) -> u64 {
        if let Some(ancestor) = self.pending_ancestor_or_self(&directory) {
            let pending = self
                .pending
                .get_mut(&ancestor)
                .expect("the ancestor was just found pending");
            pending.last_change = now;
            if ancestor == directory {
                pending.change = pending.change.merge(change);
            }
            return 1;
        }
        let mut first_change = now;
        let descendants: Vec<String> = if directory.is_empty() {
            self.pending.keys().cloned().collect()
        } else {
            // Descendants sort together right after `directory/`.
            let children_start = format!("{directory}/");
            self.pending
                .range::<str, _>((
                    std::ops::Bound::Included(children_start.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(path, _)| path)
                .take_while(|path| path.starts_with(&children_start))
                .cloned()
                .collect()
        };
        let n_absorbed = descendants.len() as u64;
        for descendant in descendants {
            if let Some(absorbed) = self.pending.remove(&descendant) {
                first_change = first_change.min(absorbed.first_change);
            }
        }
        self.pending.insert(
            directory,
            Pending {
                first_change,
                last_change: now,
                change,
            },
        );
        n_absorbed
    }

    fn pending_ancestor_or_self(&self, directory: &str) -> Option<String> {
        if self.pending.contains_key("") {
            return Some(String::new());
        }
        let mut end = 0;
        loop {
            let next = directory[end..].find('/').map(|offset| end + offset);
            let prefix = &directory[..next.unwrap_or(directory.len())];
            if self.pending.contains_key(prefix) {
                return Some(prefix.to_owned());
            }
            match next {
                Some(slash) => end = slash + 1,
                None => return None,
            }
        }
    }

    /// When the next directory becomes due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|pending| self.deadline(pending))
            .min()
    }

    fn deadline(&self, pending: &Pending) -> Instant {
        (pending.last_change + self.debounce).min(pending.first_change + self.max_delay)
    }

    /// Takes out every directory due at `now`, with those nearly due.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Flush> {
        if self.next_deadline().is_none_or(|deadline| deadline > now) {
            return None;
        }
        let grouped_until = now + self.debounce / 4;
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, pending)| self.deadline(pending) <= grouped_until)
            .map(|(path, _)| path.clone())
            .collect();
        if due.is_empty() {
            return None;
        }
        let directories = due
            .into_iter()
            .filter_map(|path| {
                let pending = self.pending.remove(&path)?;
                Some(ChangedDirectory {
                    path,
                    change: pending.change,
                })
            })
            .collect();
        Some(to_flush(directories))
    }

    /// Takes out everything pending, due or not (at shutdown).
    pub(crate) fn take_all(&mut self) -> Flush {
        let directories = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(path, pending)| ChangedDirectory {
                path,
                change: pending.change,
            })
            .collect();
        to_flush(directories)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

fn to_flush(directories: Vec<ChangedDirectory>) -> Flush {
    if directories
        .iter()
        .any(|directory| directory.path.is_empty())
    {
        Flush::Everything
    } else {
        Flush::Directories(directories)
    }
}

/// The directory holding `path` (`""` for a top-level entry).
fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// Whether `ancestor` is a strict ancestor of `path` (`""` is everyone's).
pub(crate) fn is_ancestor(ancestor: &str, path: &str) -> bool {
    ancestor != path
        && (ancestor.is_empty()
            || path
                .strip_prefix(ancestor)
                .is_some_and(|rest| rest.starts_with('/')))
}

#[cfg(test)]
mod tests {
    use metafuse_vfs::{ChangeCause, PathChange};

    use super::*;

    fn change(kind: PathChangeKind, path: &str, is_directory: bool) -> PathChange {
        PathChange {
            kind,
            path: path.to_owned(),
            is_directory,
        }
    }

    fn batch(changes: Vec<PathChange>) -> ChangeBatch {
        ChangeBatch {
            cause: ChangeCause::Event,
            changes,
            invalidations: Vec::new(),
            sequence: 0,
        }
    }

    fn directories(flush: Option<Flush>) -> Vec<(String, DirectoryChange)> {
        match flush {
            Some(Flush::Directories(directories)) => directories
                .into_iter()
                .map(|directory| (directory.path, directory.change))
                .collect(),
            other => panic!("expected directories, got {other:?}"),
        }
    }

    #[test]
    fn a_new_show_is_one_created_directory() {
        let mut coalescer = Coalescer::new(Duration::from_secs(5), Duration::from_secs(60));
        let start = Instant::now();
        let absorbed = coalescer.add_batch(
            &batch(vec![
                change(PathChangeKind::Added, "TV/Dark/S01/e1.mkv", false),
                change(PathChangeKind::Added, "TV/Dark/S01", true),
                change(PathChangeKind::Added, "TV/Dark", true),
                change(PathChangeKind::Changed, "TV", true),
            ]),
            start,
        );
        assert_eq!(absorbed, 2);
        assert_eq!(
            coalescer.next_deadline(),
            Some(start + Duration::from_secs(5))
        );
        assert_eq!(coalescer.take_due(start + Duration::from_secs(4)), None);
        assert_eq!(
            directories(coalescer.take_due(start + Duration::from_secs(5))),
            vec![("TV/Dark".to_owned(), DirectoryChange::Created)]
        );
        assert!(coalescer.is_empty());
    }

    #[test]
    fn each_directory_waits_for_its_own_quiet_time_and_max_delay_caps_it() {
        let mut coalescer = Coalescer::new(Duration::from_secs(5), Duration::from_secs(12));
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let file = |path: &str| batch(vec![change(PathChangeKind::Changed, path, false)]);
        coalescer.add_batch(&file("A/x.mkv"), at(0));
        coalescer.add_batch(&file("B/y.mkv"), at(3));
        coalescer.add_batch(&file("C/z.mkv"), at(4));
        assert_eq!(
            directories(coalescer.take_due(at(5))),
            vec![("A".to_owned(), DirectoryChange::Modified)]
        );
        // C, quiet for 4 of the 5 s when B goes, goes with it.
        assert_eq!(coalescer.take_due(at(7)), None);
        assert_eq!(
            directories(coalescer.take_due(at(8))),
            vec![
                ("B".to_owned(), DirectoryChange::Modified),
                ("C".to_owned(), DirectoryChange::Modified),
            ]
        );
        // D keeps changing every 4 s: due 12 s after its first change.
        for second in [10, 14, 18] {
            coalescer.add_batch(&file("D/y.mkv"), at(second));
        }
        assert_eq!(coalescer.next_deadline(), Some(at(22)));
    }

    #[test]
    fn ancestors_absorb_descendants_and_removed_directories_rescan_the_parent() {
        let mut coalescer = Coalescer::new(Duration::ZERO, Duration::ZERO);
        let now = Instant::now();
        coalescer.add_batch(
            &batch(vec![
                change(PathChangeKind::Removed, "M/A/B/f.mkv", false),
                change(PathChangeKind::Removed, "M/A/B", true),
                change(PathChangeKind::Added, "M/AB/x.mkv", false),
                change(PathChangeKind::Removed, "N/old.mkv", false),
            ]),
            now,
        );
        assert_eq!(
            directories(coalescer.take_due(now)),
            vec![
                ("M/A".to_owned(), DirectoryChange::Modified),
                ("M/AB".to_owned(), DirectoryChange::Modified),
                ("N".to_owned(), DirectoryChange::Modified),
            ]
        );
    }

    #[test]
    fn bulk_causes_and_top_level_changes_mean_everything() {
        let mut coalescer = Coalescer::new(Duration::ZERO, Duration::ZERO);
        let now = Instant::now();
        coalescer.add_batch(
            &batch(vec![change(PathChangeKind::Added, "A/x", false)]),
            now,
        );
        let absorbed = coalescer.add_batch(
            &ChangeBatch {
                cause: ChangeCause::Bootstrap,
                changes: vec![
                    change(PathChangeKind::Added, "A/y", false),
                    change(PathChangeKind::Added, "B/z", false),
                ],
                invalidations: Vec::new(),
                sequence: 0,
            },
            now,
        );
        assert_eq!(absorbed, 2);
        assert_eq!(coalescer.take_due(now), Some(Flush::Everything));
        coalescer.add_batch(
            &batch(vec![change(PathChangeKind::Added, "top.mkv", false)]),
            now,
        );
        assert_eq!(coalescer.take_due(now), Some(Flush::Everything));
    }

    #[test]
    fn merging_flushes_keeps_the_outermost_directories() {
        let a = Flush::Directories(vec![ChangedDirectory {
            path: "A/B".into(),
            change: DirectoryChange::Created,
        }]);
        let b = Flush::Directories(vec![ChangedDirectory {
            path: "A".into(),
            change: DirectoryChange::Modified,
        }]);
        assert_eq!(
            a.clone().merge(b),
            Flush::Directories(vec![ChangedDirectory {
                path: "A".into(),
                change: DirectoryChange::Modified,
            }])
        );
        assert_eq!(a.merge(Flush::Everything), Flush::Everything);
    }
}
