//! A directory's entries: a map from name to value, sorted by name bytes
//! (the listing order).
//!
//! Most directories hold a handful of entries (a movie's folder holds one
//! file): a `BTreeMap` would give each of them a whole leaf node (room for
//! 11 entries, ~600 bytes here). Small directories are a sorted `Vec` of
//! exactly the room they need instead. Past [`LARGE_ENTRIES`] entries they
//! become a hash map of the values (a lookup — every path component of
//! every file placed, every kernel lookup — costs O(1), not a chain of
//! string comparisons that grows with the directory) beside a `BTreeSet`
//! of the names for the listing order (touched only when a name comes or
//! goes).
//!
//! A bulk build (a whole tree at once) defers the listing order: names a
//! large directory gains go to a plain `Vec` and are sorted once when the
//! build ends ([`Entries::settle_order`]), instead of a `BTreeSet` insert
//! each. The ordered inserts were ~17% of a warm start's tree build (100k
//! movie folders in one directory: each insert a chain of string
//! comparisons of names with long shared prefixes).

use std::collections::{BTreeSet, btree_set};
use std::sync::Arc;

use hashbrown::HashMap;

/// Entries beyond which a directory switches to a `BTreeMap`.
const LARGE_ENTRIES: usize = 32;

/// Names are shared (`Arc<str>`): see the tree's `Name`.
type Name = Arc<str>;

#[derive(Clone, Debug)]
pub(crate) enum Entries<V> {
    /// Sorted by name; binary searched.
    Small(Vec<(Name, V)>),
    /// Boxed: a directory node is as large as its biggest variant, and
    /// every file shares the node type, so an inline large variant would
    /// cost every file node its size (~50 B per node).
    Large(Box<LargeEntries<V>>),
}

#[derive(Clone, Debug)]
pub(crate) struct LargeEntries<V> {
    values: HashMap<Name, V>,
    order: BTreeSet<Name>,
    /// Names added with the order deferred, not yet in `order`; empty
    /// outside a bulk build (every ordered read asserts it).
    unordered: Vec<Name>,
}

/// When a large directory's listing order learns of a new name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listing {
    /// At once (a live change: readers may list the directory next).
    Ordered,
    /// At [`Entries::settle_order`] (a bulk build nobody reads meanwhile).
    Deferred,
}

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries::Small(Vec::new())
    }
}

impl<V: Default> Entries<V> {
    /// The entry `name`, created with a default value when absent (one
    /// search); returns the map's own key, cloned, to be shared.
    pub(crate) fn entry(&mut self, name: Name, listing: Listing) -> (Name, &mut V) {
        if let Entries::Small(entries) = self
            && entries.len() >= LARGE_ENTRIES
            && entries
                .binary_search_by(|(key, _)| (**key).cmp(&*name))
                .is_err()
        {
            let entries = std::mem::take(entries);
            let order = entries.iter().map(|(key, _)| key.clone()).collect();
            *self = Entries::Large(Box::new(LargeEntries {
                values: entries.into_iter().collect(),
                order,
                unordered: Vec::new(),
            }));
        }
        match self {
            Entries::Small(entries) => {
                let position = match entries.binary_search_by(|(key, _)| (**key).cmp(&*name)) {
                    Ok(position) => position,
                    Err(position) => {
                        if entries.capacity() == 0 {
                            // Room for exactly one: most directories keep one.
                            entries.reserve_exact(1);
                        }
                        entries.insert(position, (name, V::default()));
                        position
                    }
                };
                let (key, value) = &mut entries[position];
                (key.clone(), value)
            }
            Entries::Large(large) => {
                let LargeEntries {
                    values,
                    order,
                    unordered,
                } = &mut **large;
                // One hash of the name, found or inserted.
                let occupied = match values.entry(name) {
                    hashbrown::hash_map::Entry::Occupied(occupied) => occupied,
                    hashbrown::hash_map::Entry::Vacant(vacant) => {
                        match listing {
                            Listing::Ordered => {
                                order.insert(vacant.key().clone());
                            }
                            Listing::Deferred => unordered.push(vacant.key().clone()),
                        }
                        vacant.insert_entry(V::default())
                    }
                };
                (occupied.key().clone(), occupied.into_mut())
            }
        }
    }
}

impl<V> Entries<V> {
    fn position(entries: &[(Name, V)], name: &str) -> Option<usize> {
        entries.binary_search_by(|(key, _)| (**key).cmp(name)).ok()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&V> {
        self.get_key_value(name).map(|(_, value)| value)
    }

    pub(crate) fn get_key_value(&self, name: &str) -> Option<(&Name, &V)> {
        match self {
            Entries::Small(entries) => {
                let (key, value) = &entries[Self::position(entries, name)?];
                Some((key, value))
            }
            Entries::Large(large) => large.values.get_key_value(name),
        }
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        match self {
            Entries::Small(entries) => {
                let position = Self::position(entries, name)?;
                Some(&mut entries[position].1)
            }
            Entries::Large(large) => large.values.get_mut(name),
        }
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<V> {
        match self {
            Entries::Small(entries) => {
                let position = Self::position(entries, name)?;
                let (_, value) = entries.remove(position);
                if entries.is_empty() {
                    // An emptied directory gives its room back.
                    *entries = Vec::new();
                }
                Some(value)
            }
            Entries::Large(large) => {
                let LargeEntries {
                    values,
                    order,
                    unordered,
                } = &mut **large;
                let value = values.remove(name)?;
                if !order.remove(name) {
                    // Only during a bulk build (a file given twice): rare.
                    unordered.retain(|unordered_name| **unordered_name != *name);
                }
                Some(value)
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Entries::Small(entries) => entries.is_empty(),
            Entries::Large(large) => large.values.is_empty(),
        }
    }

    /// Puts the names added with [`Listing::Deferred`] in the listing
    /// order: one sort, then a bulk build of the order when it was empty.
    pub(crate) fn settle_order(&mut self) {
        if let Entries::Large(large) = self
            && !large.unordered.is_empty()
        {
            let LargeEntries {
                order, unordered, ..
            } = &mut **large;
            let mut added = std::mem::take(unordered);
            added.sort_unstable();
            // The names already ordered (the first few dozen, from when
            // the directory became large) and the added ones are two
            // sorted runs: a stable sort merges them in one pass, and
            // `collect` of sorted names builds the tree in one pass too
            // (an insert per name compares strings all the way down).
            let mut all: Vec<Name> = std::mem::take(order).into_iter().collect();
            all.extend(added);
            all.sort();
            *order = all.into_iter().collect();
        }
    }

    /// Every entry in name order.
    pub(crate) fn iter(&self) -> Iter<'_, V> {
        match self {
            Entries::Small(entries) => Iter::Small(entries.iter()),
            Entries::Large(large) => {
                let LargeEntries {
                    values,
                    order,
                    unordered,
                } = &**large;
                debug_assert!(
                    unordered.is_empty(),
                    "entries invariant: the listing order is settled before it is read"
                );
                Iter::Large {
                    values,
                    order: order.iter(),
                }
            }
        }
    }

    /// Every value in name order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }

    /// Every value in no particular order (also during a bulk build, before
    /// the order is settled).
    pub(crate) fn values_unordered(&self) -> Box<dyn Iterator<Item = &V> + '_> {
        match self {
            Entries::Small(entries) => Box::new(entries.iter().map(|(_, value)| value)),
            Entries::Large(large) => Box::new(large.values.values()),
        }
    }

    /// Every value, mutably, in no particular order.
    pub(crate) fn values_mut(&mut self) -> Box<dyn Iterator<Item = &mut V> + '_> {
        match self {
            Entries::Small(entries) => Box::new(entries.iter_mut().map(|(_, value)| value)),
            Entries::Large(large) => Box::new(large.values.values_mut()),
        }
    }
}

/// [`Entries::iter`].
pub(crate) enum Iter<'e, V> {
    Small(std::slice::Iter<'e, (Name, V)>),
    Large {
        values: &'e HashMap<Name, V>,
        order: btree_set::Iter<'e, Name>,
    },
}

impl<'e, V> Iterator for Iter<'e, V> {
    type Item = (&'e Name, &'e V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(entries) => entries.next().map(|(key, value)| (key, value)),
            Iter::Large { values, order } => {
                let key = order.next()?;
                let value = values
                    .get(&**key)
                    .expect("entries invariant: every ordered name has a value");
                Some((key, value))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Operation {
        Entry(u8, u32, Listing),
        Remove(u8),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            3 => (any::<u8>(), any::<u32>(), any::<bool>()).prop_map(|(name, value, deferred)| {
                let listing = if deferred { Listing::Deferred } else { Listing::Ordered };
                Operation::Entry(name, value, listing)
            }),
            1 => any::<u8>().prop_map(Operation::Remove),
        ]
    }

    fn name(index: u8) -> Name {
        // Names of different lengths and shared prefixes, in byte order.
        Name::from(format!("{}{index}", "n".repeat(usize::from(index % 3))))
    }

    proptest! {
        /// Whatever the operations, the entries behave like a `BTreeMap`
        /// (same contents, same order once settled), small or large, with
        /// the listing order kept at once or deferred.
        #[test]
        fn entries_behave_like_a_btree_map(
            operations in proptest::collection::vec(operation(), 0..300),
        ) {
            let mut entries: Entries<u32> = Entries::default();
            let mut model: BTreeMap<Name, u32> = BTreeMap::new();
            for operation in operations {
                match operation {
                    Operation::Entry(index, value, listing) => {
                        let (key, stored) = entries.entry(name(index), listing);
                        *stored = stored.wrapping_add(value);
                        let modelled = model.entry(name(index)).or_default();
                        *modelled = modelled.wrapping_add(value);
                        prop_assert_eq!(&*key, &*name(index));
                    }
                    Operation::Remove(index) => {
                        prop_assert_eq!(entries.remove(&name(index)), model.remove(&name(index)));
                    }
                }
                for index in [0u8, 1, 100, 255] {
                    prop_assert_eq!(entries.get(&name(index)), model.get(&name(index)));
                }
                prop_assert_eq!(entries.is_empty(), model.is_empty());
                let mut unordered: Vec<u32> = entries.values_unordered().copied().collect();
                let mut modelled: Vec<u32> = model.values().copied().collect();
                unordered.sort_unstable();
                modelled.sort_unstable();
                prop_assert_eq!(unordered, modelled);
            }
            entries.settle_order();
            let listed: Vec<(String, u32)> =
                entries.iter().map(|(key, value)| (key.to_string(), *value)).collect();
            let expected: Vec<(String, u32)> =
                model.iter().map(|(key, value)| (key.to_string(), *value)).collect();
            prop_assert_eq!(listed, expected);
            for value in entries.values_mut() {
                *value = 0;
            }
            prop_assert!(entries.values().all(|value| *value == 0));
        }
    }
}
