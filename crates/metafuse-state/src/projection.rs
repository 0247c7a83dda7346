use std::hash::BuildHasher;
use std::time::Duration;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use metafuse_rules::{Metadata, RelevantProperties, Rendered, Rules};

use crate::record::{self, NameId, RecordProperties};

/// The property that makes a file complete (visible) when non-empty.
const FILE_PATH: &str = "filePath";
/// `filePath` is interned first, so its id is always 0.
const FILE_PATH_ID: NameId = 0;

/// One value fetched from Redis for a relevant key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchedValue<'v> {
    /// The file's hashId.
    pub hash_id: &'v str,
    /// The property name as stored (`titles/eng`).
    pub property: &'v str,
    /// The current value; `None` (or `""`) means the key is gone.
    pub value: Option<&'v str>,
}

/// What a change did to a file as seen from the outside.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Delta {
    /// The file became complete: it now has a non-empty `filePath`.
    Visible(String),
    /// A property of a complete file changed (set or deleted).
    Changed(String),
    /// The file stopped being complete (its `filePath` is gone, or the file).
    Gone(String),
}

impl Delta {
    /// The hashId of the file concerned.
    pub fn hash_id(&self) -> &str {
        match self {
            Delta::Visible(hash_id) | Delta::Changed(hash_id) | Delta::Gone(hash_id) => hash_id,
        }
    }

    fn from_transition(hash_id: &str, was_complete: bool, is_complete: bool) -> Option<Delta> {
        match (was_complete, is_complete) {
            (true, true) => Some(Delta::Changed(hash_id.to_owned())),
            (false, true) => Some(Delta::Visible(hash_id.to_owned())),
            (true, false) => Some(Delta::Gone(hash_id.to_owned())),
            (false, false) => None,
        }
    }
}

/// What must be fetched after the relevant set grew (see
/// [`Projection::set_relevant`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchPlan {
    /// Every file the projection knows.
    pub hash_ids: Vec<String>,
    /// Newly relevant property names (`/` form) to fetch for every file.
    pub properties: Vec<String>,
    /// Newly relevant names whose nested keys (`{name}/…`) are relevant too
    /// and can only be found by scanning.
    pub nested_prefixes: Vec<String>,
}

impl FetchPlan {
    /// True when nothing needs fetching.
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty() && self.nested_prefixes.is_empty()
    }

    /// The exact keys to fetch: every known file × every newly relevant name.
    pub fn exact_keys<'p>(
        &'p self,
        key_prefix: &'p str,
    ) -> impl Iterator<Item = (&'p str, &'p str, String)> + 'p {
        self.hash_ids.iter().flat_map(move |hash_id| {
            self.properties.iter().map(move |property| {
                (
                    hash_id.as_str(),
                    property.as_str(),
                    format!("{key_prefix}file:{hash_id}/{property}"),
                )
            })
        })
    }
}

/// Counters of the stream side, recorded into the projection so that
/// [`Projection::stats`] tells the whole story.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Stream entries read.
    pub n_events: u64,
    /// Entries whose property is not relevant (never fetched).
    pub n_skipped: u64,
    /// Entries that were malformed and skipped.
    pub n_malformed: u64,
}

/// Statistics of a projection (`/api/fuse/stats` → `stateBuilder`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Stream entries processed.
    pub events_processed: u64,
    /// Relevant values fetched and applied.
    pub properties_fetched: u64,
    /// Entries skipped because their property is not relevant.
    pub properties_skipped: u64,
    /// Malformed stream entries skipped.
    pub malformed_entries: u64,
    /// Files with a non-empty `filePath`.
    pub files_complete: usize,
    /// Files known (with at least one relevant property).
    pub file_count: usize,
    /// The last stream id the projection reflects, if any.
    pub last_event_id: Option<String>,
    /// Estimated heap bytes held by the projection.
    pub state_size: usize,
    /// The bootstrap strategy used, as recorded by the stream side.
    pub strategy: Option<String>,
    /// How long the bootstrap took, as recorded by the stream side.
    pub bootstrap_duration: Option<Duration>,
}

/// Interned property names: records store small ids instead of strings, and
/// relevance is decided once per distinct name instead of once per value.
#[derive(Clone, Debug)]
struct PropertyNames {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, NameId>,
    relevant: Vec<bool>,
}

impl PropertyNames {
    fn new(relevant: &RelevantProperties) -> Self {
        let mut names = Self {
            names: Vec::new(),
            ids: HashMap::new(),
            relevant: Vec::new(),
        };
        let file_path_id = names.intern(FILE_PATH, relevant);
        debug_assert_eq!(file_path_id, FILE_PATH_ID);
        names
    }

    fn intern(&mut self, name: &str, relevant: &RelevantProperties) -> NameId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as NameId;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        self.relevant.push(relevant.is_relevant(name));
        id
    }

    fn name(&self, id: NameId) -> &str {
        self.names.get(id as usize).map_or("", |name| name)
    }

    fn heap_size(&self) -> usize {
        let strings: usize = self
            .names
            .iter()
            .map(|name| 2 * record::allocation_cost(name.len()))
            .sum();
        strings + self.ids.capacity() * 24 + self.names.capacity() * 16 + self.relevant.capacity()
    }
}

/// The projection: for every file, only its relevant properties, compactly
/// stored; applying fetched values yields [`Delta`]s.
///
/// Pure data: no IO, no async; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Projection {
    relevant: RelevantProperties,
    names: PropertyNames,
    files: HashTable<Box<[u8]>>,
    hasher: DefaultHashBuilder,
    complete_count: usize,
    record_bytes: usize,
    counts: EventCounts,
    properties_fetched: u64,
    last_event_id: Option<String>,
    strategy: Option<String>,
    bootstrap_duration: Option<Duration>,
}

/// How one applied value changed a file: completeness before and after.
#[derive(Clone, Copy, Debug)]
struct Transition {
    was_complete: bool,
    is_complete: bool,
}

/// A relevant value of a batch, waiting to be applied with its file's others.
#[derive(Clone, Copy, Debug)]
struct PendingValue<'v> {
    hash_id: &'v str,
    name_id: NameId,
    /// `None` deletes (an empty value was already turned into `None`).
    value: Option<&'v str>,
    /// The file's group: files numbered in order of first appearance.
    group: u32,
}

/// A file's net change over a batch.
#[derive(Clone, Copy, Debug)]
struct FileChange {
    transition: Transition,
    /// Batch position of the first value that changed something: deltas are
    /// reported in this order.
    position: u32,
}

/// One property of a file while its batch is applied: still the stored
/// bytes, or a batch value. Indices rather than borrows, so that one
/// scratch vector serves every file of the batch.
#[derive(Clone, Debug)]
enum WorkingValue {
    /// A byte range of the stored record.
    Old(std::ops::Range<usize>),
    /// A position in the batch (its value is `Some`).
    New(u32),
}

impl WorkingValue {
    fn resolve<'a>(&self, old: &'a [u8], pending: &[PendingValue<'a>]) -> Option<&'a str> {
        match self {
            WorkingValue::Old(range) => Some(record::as_str(&old[range.clone()])),
            WorkingValue::New(position) => pending[*position as usize].value,
        }
    }
}

/// A batch's relevant values grouped by file (a stable counting sort): each
/// file's values together, in their batch order, files in order of first
/// appearance.
struct GroupedValues<'v> {
    pending: Vec<PendingValue<'v>>,
    /// Positions in `pending`, group after group.
    by_group: Vec<u32>,
    /// Where each group starts in `by_group`, and one past the last.
    group_starts: Vec<u32>,
    /// The group of each file.
    group_of_file: HashMap<&'v str, u32>,
}

impl<'v> GroupedValues<'v> {
    /// Interns every value's name (deciding its relevance by `relevant`)
    /// and keeps only the relevant values.
    fn new(
        names: &mut PropertyNames,
        relevant: &RelevantProperties,
        values: impl IntoIterator<Item = FetchedValue<'v>>,
    ) -> Self {
        let mut pending: Vec<PendingValue<'v>> = Vec::new();
        let mut group_of_file: HashMap<&'v str, u32> = HashMap::new();
        let mut group_sizes: Vec<u32> = Vec::new();
        for fetched in values {
            let name_id = names.intern(fetched.property, relevant);
            if !names.relevant[name_id as usize] {
                continue;
            }
            let next_group = group_sizes.len() as u32;
            let group = *group_of_file.entry(fetched.hash_id).or_insert(next_group);
            if group == next_group {
                group_sizes.push(0);
            }
            group_sizes[group as usize] += 1;
            pending.push(PendingValue {
                hash_id: fetched.hash_id,
                name_id,
                value: fetched.value.filter(|value| !value.is_empty()),
                group,
            });
        }
        let mut group_starts: Vec<u32> = Vec::with_capacity(group_sizes.len() + 1);
        let mut running = 0u32;
        for size in &group_sizes {
            group_starts.push(running);
            running += size;
        }
        group_starts.push(running);
        let mut cursor = group_starts.clone();
        let mut by_group = vec![0u32; pending.len()];
        for (position, value) in pending.iter().enumerate() {
            let slot = &mut cursor[value.group as usize];
            by_group[*slot as usize] = position as u32;
            *slot += 1;
        }
        GroupedValues {
            pending,
            by_group,
            group_starts,
            group_of_file,
        }
    }

    fn n_groups(&self) -> usize {
        self.group_starts.len() - 1
    }

    /// The positions in `pending` of one file's values, in batch order.
    fn positions(&self, group: usize) -> &[u32] {
        &self.by_group[self.group_starts[group] as usize..self.group_starts[group + 1] as usize]
    }
}

/// Applies the values at `positions` (all for one file, in batch order) to
/// the file's record `stored` (`None`: not known yet), leaving its
/// properties in `working`. Returns whether the file was complete before
/// and where the first value that changed something sits (`None` when none
/// did).
fn merge_values<'a>(
    stored: Option<&'a [u8]>,
    pending: &[PendingValue<'a>],
    positions: &[u32],
    working: &mut Vec<(NameId, WorkingValue)>,
) -> (bool, Option<u32>) {
    let old: &[u8] = stored.unwrap_or_default();
    working.clear();
    if stored.is_some() {
        working
            .extend(record::property_ranges(old).map(|(id, range)| (id, WorkingValue::Old(range))));
    }
    let was_complete = working.iter().any(|(id, _)| *id == FILE_PATH_ID);
    let mut first_change: Option<u32> = None;
    for &position in positions {
        let value = &pending[position as usize];
        let slot = working.iter().position(|(id, _)| *id == value.name_id);
        let current = slot.and_then(|slot| working[slot].1.resolve(old, pending));
        if current == value.value {
            continue;
        }
        match (slot, value.value) {
            (Some(slot), Some(_)) => working[slot].1 = WorkingValue::New(position),
            (Some(slot), None) => {
                working.swap_remove(slot);
            }
            (None, Some(_)) => working.push((value.name_id, WorkingValue::New(position))),
            (None, None) => {}
        }
        first_change.get_or_insert(position);
    }
    (was_complete, first_change)
}

/// The names `relevant` tracks that `previous` did not fetch: the exact
/// properties to fetch (parents of nested names included) and the names
/// whose nested keys must be scanned for.
fn newly_relevant(
    relevant: &RelevantProperties,
    previous: &RelevantProperties,
) -> (Vec<String>, Vec<String>) {
    let added = relevant.added_since(previous);
    let mut properties: Vec<String> = Vec::new();
    for name in &added {
        // Tracking `titles/eng` makes `titles` itself relevant too.
        let mut parents: Vec<&str> = name
            .char_indices()
            .filter(|(_, c)| *c == '/')
            .map(|(index, _)| &name[..index])
            .collect();
        parents.push(name);
        for candidate in parents {
            if !previous.is_relevant(candidate)
                && !properties.iter().any(|known| known == candidate)
            {
                properties.push(candidate.to_owned());
            }
        }
    }
    (properties, added)
}

impl Projection {
    /// An empty projection tracking `relevant`.
    pub fn new(relevant: RelevantProperties) -> Self {
        Self {
            names: PropertyNames::new(&relevant),
            relevant,
            files: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            complete_count: 0,
            record_bytes: 0,
            counts: EventCounts::default(),
            properties_fetched: 0,
            last_event_id: None,
            strategy: None,
            bootstrap_duration: None,
        }
    }

    /// The interned property names in id order and every stored record,
    /// as they are in memory (the checkpoint writes them verbatim).
    pub(crate) fn raw_parts(&self) -> (&[Box<str>], impl Iterator<Item = &[u8]>) {
        (&self.names.names, self.files.iter().map(|stored| &**stored))
    }

    /// A projection made of records in this crate's packed layout whose
    /// name ids refer to `names` (id order, `filePath` first), as
    /// [`Self::raw_parts`] gave them. Every record is checked (well formed,
    /// UTF-8, known and relevant names, no empty value, no repeated hashId
    /// or name), so a wrong one is refused rather than trusted. Records are
    /// read from `records` one after another and copied into their own
    /// allocation, the projection's layout: no per-property work.
    pub(crate) fn from_raw_parts<'r>(
        relevant: RelevantProperties,
        names: impl IntoIterator<Item = &'r str>,
        n_records: usize,
        mut next_record: impl FnMut() -> Result<&'r [u8], String>,
    ) -> Result<Self, String> {
        let mut projection = Projection::new(relevant);
        let mut n_names = 0usize;
        for (id, name) in names.into_iter().enumerate() {
            if id == 0 {
                if name != FILE_PATH {
                    return Err(format!("the first property name is {name:?}, not filePath"));
                }
            } else {
                if projection.names.ids.contains_key(name) {
                    return Err(format!("property name {name:?} appears twice"));
                }
                projection.names.intern(name, &projection.relevant);
            }
            n_names = id + 1;
        }
        if n_names == 0 {
            return Err("no property names".to_owned());
        }
        projection.files = HashTable::with_capacity(n_records);
        let mut seen_names = Vec::new();
        for _ in 0..n_records {
            let bytes = next_record()?;
            let complete = record::validate(bytes, &projection.names.relevant, &mut seen_names)?;
            let hash_id = record::hash_id(bytes);
            let hash = projection.hasher.hash_one(hash_id);
            let hasher = &projection.hasher;
            match projection.files.entry(
                hash,
                |stored| record::hash_id(stored) == hash_id,
                |stored| hasher.hash_one(record::hash_id(stored)),
            ) {
                hashbrown::hash_table::Entry::Occupied(_) => {
                    return Err(format!("file {hash_id:?} appears twice"));
                }
                hashbrown::hash_table::Entry::Vacant(vacant) => {
                    vacant.insert(Box::from(bytes));
                }
            }
            projection.record_bytes += record::allocation_cost(bytes.len());
            projection.complete_count += usize::from(complete);
        }
        Ok(projection)
    }

    /// The relevant properties in force.
    pub fn relevant(&self) -> &RelevantProperties {
        &self.relevant
    }

    /// Applies one fetched value. `None` or `""` deletes the property.
    ///
    /// Returns `Visible` when the file became complete, `Gone` when it
    /// stopped being complete, `Changed` for any other change of a complete
    /// file, and nothing when nothing visible changed (including values for
    /// properties that are not relevant, which are ignored).
    pub fn apply(&mut self, hash_id: &str, property: &str, value: Option<&str>) -> Option<Delta> {
        let transition = self.update(hash_id, property, value)?;
        Delta::from_transition(hash_id, transition.was_complete, transition.is_complete)
    }

    /// Applies a batch and returns at most one delta per file, its net
    /// change over the batch, in the order files were first changed.
    ///
    /// The values are grouped by file first, so each touched file's record
    /// is decoded and re-encoded once per batch, however many of its
    /// properties arrive (a snapshot brings them all at once): linear in
    /// the batch instead of quadratic in properties per file.
    pub fn apply_batch<'v>(
        &mut self,
        values: impl IntoIterator<Item = FetchedValue<'v>>,
    ) -> Vec<Delta> {
        let grouped = GroupedValues::new(&mut self.names, &self.relevant, values);
        self.properties_fetched += grouped.pending.len() as u64;
        // Net change per file, keyed by the position of its first change.
        let mut changed: Vec<(u32, Delta)> = Vec::new();
        let mut working = Vec::new();
        let pending = &grouped.pending;
        for group in 0..grouped.n_groups() {
            let positions = grouped.positions(group);
            let Some(first_change) = self.update_file(pending, positions, &mut working) else {
                continue;
            };
            let first = &pending[positions[0] as usize];
            if let Some(delta) = Delta::from_transition(
                first.hash_id,
                first_change.transition.was_complete,
                first_change.transition.is_complete,
            ) {
                changed.push((first_change.position, delta));
            }
        }
        changed.sort_unstable_by_key(|(position, _)| *position);
        changed.into_iter().map(|(_, delta)| delta).collect()
    }

    /// Applies the values at `positions` (all for one file, in batch order)
    /// with one decode and one encode of its record. Returns the net
    /// transition and where the first value that changed something sits, or
    /// `None` when no value changed anything.
    fn update_file(
        &mut self,
        pending: &[PendingValue<'_>],
        positions: &[u32],
        working: &mut Vec<(NameId, WorkingValue)>,
    ) -> Option<FileChange> {
        let hash_id = pending[*positions.first()? as usize].hash_id;
        let hash = self.hasher.hash_one(hash_id);
        // Taken out of the table so that its bytes can be borrowed while the
        // table is not; put back (re-encoded or as is) below.
        let stored: Option<Box<[u8]>> = self
            .files
            .find_entry(hash, |stored| record::hash_id(stored) == hash_id)
            .ok()
            .map(|occupied| occupied.remove().0);
        let old: &[u8] = stored.as_deref().unwrap_or_default();
        let (was_complete, first_change) =
            merge_values(stored.as_deref(), pending, positions, working);
        let is_complete = working.iter().any(|(id, _)| *id == FILE_PATH_ID);
        let Some(first_change) = first_change else {
            if let Some(stored) = stored {
                self.reinsert(hash, stored);
            }
            return None;
        };
        if let Some(stored) = &stored {
            self.record_bytes -= record::allocation_cost(stored.len());
        }
        if !working.is_empty() {
            let updated = record::encode(
                hash_id,
                working
                    .iter()
                    .map(|(id, value)| (*id, value.resolve(old, pending).unwrap_or_default())),
            );
            self.record_bytes += record::allocation_cost(updated.len());
            self.reinsert(hash, updated);
        }
        match (was_complete, is_complete) {
            (false, true) => self.complete_count += 1,
            (true, false) => self.complete_count -= 1,
            _ => {}
        }
        Some(FileChange {
            transition: Transition {
                was_complete,
                is_complete,
            },
            position: first_change,
        })
    }

    fn reinsert(&mut self, hash: u64, stored: Box<[u8]>) {
        let hasher = &self.hasher;
        self.files.insert_unique(hash, stored, |stored| {
            hasher.hash_one(record::hash_id(stored))
        });
    }

    /// Stores one value; `None` when nothing changed.
    fn update(&mut self, hash_id: &str, property: &str, value: Option<&str>) -> Option<Transition> {
        let name_id = self.names.intern(property, &self.relevant);
        if !self.names.relevant[name_id as usize] {
            return None;
        }
        self.properties_fetched += 1;
        let value = value.filter(|value| !value.is_empty());
        let hash = self.hasher.hash_one(hash_id);
        let hasher = &self.hasher;
        let entry = self.files.entry(
            hash,
            |stored| record::hash_id(stored) == hash_id,
            |stored| hasher.hash_one(record::hash_id(stored)),
        );
        let transition = match entry {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                let stored = occupied.get();
                if record::get(stored, name_id) == value {
                    return None;
                }
                let was_complete = record::get(stored, FILE_PATH_ID).is_some();
                let old_cost = record::allocation_cost(stored.len());
                let others = RecordProperties::new(stored).filter(|(id, _)| *id != name_id);
                let updated =
                    record::encode(hash_id, others.chain(value.map(|value| (name_id, value))));
                let is_complete = record::get(&updated, FILE_PATH_ID).is_some();
                self.record_bytes -= old_cost;
                if record::is_empty(&updated) {
                    occupied.remove();
                } else {
                    self.record_bytes += record::allocation_cost(updated.len());
                    *occupied.get_mut() = updated;
                }
                Transition {
                    was_complete,
                    is_complete,
                }
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let value = value?;
                let created = record::encode(hash_id, [(name_id, value)]);
                self.record_bytes += record::allocation_cost(created.len());
                vacant.insert(created);
                Transition {
                    was_complete: false,
                    is_complete: name_id == FILE_PATH_ID,
                }
            }
        };
        match (transition.was_complete, transition.is_complete) {
            (false, true) => self.complete_count += 1,
            (true, false) => self.complete_count -= 1,
            _ => {}
        }
        Some(transition)
    }

    /// The file `hash_id`, complete or not, if it has any relevant property.
    pub fn file(&self, hash_id: &str) -> Option<FileRef<'_>> {
        let hash = self.hasher.hash_one(hash_id);
        let stored = self
            .files
            .find(hash, |stored| record::hash_id(stored) == hash_id)?;
        Some(FileRef {
            record: stored,
            names: &self.names,
        })
    }

    /// Every known file, complete or not, in no particular order.
    pub fn files(&self) -> impl Iterator<Item = (&str, FileRef<'_>)> {
        self.files.iter().map(|stored| {
            (
                record::hash_id(stored),
                FileRef {
                    record: stored,
                    names: &self.names,
                },
            )
        })
    }

    /// Every complete file (non-empty `filePath`), in no particular order.
    pub fn complete_files(&self) -> impl Iterator<Item = (&str, FileRef<'_>)> {
        self.files().filter(|(_, file)| file.is_complete())
    }

    /// Number of known files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Number of complete files.
    pub fn complete_count(&self) -> usize {
        self.complete_count
    }

    /// Switches to a new relevant set (the rules changed): properties no
    /// longer relevant are dropped now; the returned plan says what must be
    /// fetched for the newly relevant ones. Dropping never touches
    /// `filePath` (always relevant), so completeness is unchanged.
    pub fn set_relevant(&mut self, relevant: RelevantProperties) -> FetchPlan {
        let previous = std::mem::replace(&mut self.relevant, relevant);
        for (id, name) in self.names.names.iter().enumerate() {
            self.names.relevant[id] = self.relevant.is_relevant(name);
        }
        let flags = &self.names.relevant;
        let mut record_bytes = 0;
        self.files.retain(|stored| {
            let keeps_all = RecordProperties::new(stored).all(|(id, _)| flags[id as usize]);
            if !keeps_all {
                let kept = RecordProperties::new(stored).filter(|(id, _)| flags[*id as usize]);
                *stored = record::encode(record::hash_id(stored), kept);
            }
            record_bytes += record::allocation_cost(stored.len());
            !record::is_empty(stored)
        });
        self.record_bytes = record_bytes;
        self.complete_count = self
            .files
            .iter()
            .filter(|stored| record::get(stored, FILE_PATH_ID).is_some())
            .count();

        let (properties, nested_prefixes) = newly_relevant(&self.relevant, &previous);
        FetchPlan {
            hash_ids: self
                .files
                .iter()
                .map(|stored| record::hash_id(stored).to_owned())
                .collect(),
            properties,
            nested_prefixes,
        }
    }

    /// The plan [`Self::set_relevant`] would return for `relevant`,
    /// computed without changing anything: every file that would keep a
    /// property, and the names newly relevant. With [`Self::rebuilt`], a
    /// rules change reads the projection only, so readers keep going.
    pub fn plan_for(&self, relevant: &RelevantProperties) -> FetchPlan {
        let keeps: Vec<bool> = self
            .names
            .names
            .iter()
            .map(|name| relevant.is_relevant(name))
            .collect();
        let (properties, nested_prefixes) = newly_relevant(relevant, &self.relevant);
        FetchPlan {
            hash_ids: self
                .files
                .iter()
                .filter(|stored| RecordProperties::new(stored).any(|(id, _)| keeps[id as usize]))
                .map(|stored| record::hash_id(stored).to_owned())
                .collect(),
            properties,
            nested_prefixes,
        }
    }

    /// The projection a rules change leaves, built beside this one (which
    /// is only read, so it keeps serving): the same as
    /// `set_relevant(fetching)`, then `apply_batch(values)` (what the plan
    /// for `fetching` fetched), then `set_relevant(relevant)` on a copy,
    /// but each record is decoded and encoded at most once and nothing is
    /// copied twice.
    pub fn rebuilt<'v>(
        &self,
        fetching: &RelevantProperties,
        values: impl IntoIterator<Item = FetchedValue<'v>>,
        relevant: RelevantProperties,
    ) -> Projection {
        let mut names = self.names.clone();
        for (id, name) in names.names.iter().enumerate() {
            names.relevant[id] = fetching.is_relevant(name);
        }
        let grouped = GroupedValues::new(&mut names, fetching, values);
        // From here on, what the final set keeps.
        for (id, name) in names.names.iter().enumerate() {
            names.relevant[id] = relevant.is_relevant(name);
        }
        let keeps = &names.relevant;
        let mut files: HashTable<Box<[u8]>> = HashTable::with_capacity(self.files.len());
        let mut complete_count = 0usize;
        let mut record_bytes = 0usize;
        let mut keep = |hash: u64, stored: Box<[u8]>| {
            record_bytes += record::allocation_cost(stored.len());
            complete_count += usize::from(record::get(&stored, FILE_PATH_ID).is_some());
            let hasher = &self.hasher;
            files.insert_unique(hash, stored, |stored| {
                hasher.hash_one(record::hash_id(stored))
            });
        };
        let mut merged = vec![false; grouped.n_groups()];
        let mut working = Vec::new();
        let pending = &grouped.pending;
        for stored in &self.files {
            let hash_id = record::hash_id(stored);
            let hash = self.hasher.hash_one(hash_id);
            match grouped.group_of_file.get(hash_id) {
                Some(&group) => {
                    merged[group as usize] = true;
                    merge_values(
                        Some(stored),
                        pending,
                        grouped.positions(group as usize),
                        &mut working,
                    );
                    working.retain(|(id, _)| keeps[*id as usize]);
                    if !working.is_empty() {
                        keep(
                            hash,
                            record::encode(
                                hash_id,
                                working.iter().map(|(id, value)| {
                                    (*id, value.resolve(stored, pending).unwrap_or_default())
                                }),
                            ),
                        );
                    }
                }
                None => {
                    if RecordProperties::new(stored).all(|(id, _)| keeps[id as usize]) {
                        keep(hash, stored.clone());
                    } else {
                        let kept =
                            RecordProperties::new(stored).filter(|(id, _)| keeps[*id as usize]);
                        let updated = record::encode(hash_id, kept);
                        if !record::is_empty(&updated) {
                            keep(hash, updated);
                        }
                    }
                }
            }
        }
        // Files the projection did not know yet (found by a scan).
        let unknown_files = merged
            .iter()
            .enumerate()
            .filter(|(_, merged)| !**merged)
            .map(|(group, _)| group);
        for group in unknown_files {
            let positions = grouped.positions(group);
            let hash_id = pending[positions[0] as usize].hash_id;
            merge_values(None, pending, positions, &mut working);
            working.retain(|(id, _)| keeps[*id as usize]);
            if !working.is_empty() {
                let hash = self.hasher.hash_one(hash_id);
                keep(
                    hash,
                    record::encode(
                        hash_id,
                        working.iter().map(|(id, value)| {
                            (*id, value.resolve(&[], pending).unwrap_or_default())
                        }),
                    ),
                );
            }
        }
        Projection {
            relevant,
            names,
            files,
            hasher: self.hasher,
            complete_count,
            record_bytes,
            counts: self.counts,
            properties_fetched: self.properties_fetched + pending.len() as u64,
            last_event_id: self.last_event_id.clone(),
            strategy: self.strategy.clone(),
            bootstrap_duration: self.bootstrap_duration,
        }
    }

    /// Records stream-side counters (added to the running totals) and the
    /// last stream id now reflected.
    pub fn record_events(&mut self, counts: EventCounts, last_event_id: &str) {
        self.counts.n_events += counts.n_events;
        self.counts.n_skipped += counts.n_skipped;
        self.counts.n_malformed += counts.n_malformed;
        if self.last_event_id.as_deref() != Some(last_event_id) {
            self.last_event_id = Some(last_event_id.to_owned());
        }
    }

    /// Records how the projection was bootstrapped.
    pub fn record_bootstrap(&mut self, strategy: &str, duration: Duration) {
        self.strategy = Some(strategy.to_owned());
        self.bootstrap_duration = Some(duration);
    }

    /// The last stream id the projection reflects, if any.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Estimated heap bytes: the hash table, every file record, the names.
    pub fn state_size(&self) -> usize {
        let table = self.files.capacity() * (std::mem::size_of::<Box<[u8]>>() + 1);
        table + self.record_bytes + self.names.heap_size()
    }

    /// Current statistics.
    pub fn stats(&self) -> Stats {
        Stats {
            events_processed: self.counts.n_events,
            properties_fetched: self.properties_fetched,
            properties_skipped: self.counts.n_skipped,
            malformed_entries: self.counts.n_malformed,
            files_complete: self.complete_count,
            file_count: self.files.len(),
            last_event_id: self.last_event_id.clone(),
            state_size: self.state_size(),
            strategy: self.strategy.clone(),
            bootstrap_duration: self.bootstrap_duration,
        }
    }
}

/// A view of one file's stored (relevant, non-empty) properties.
#[derive(Clone, Copy, Debug)]
pub struct FileRef<'a> {
    record: &'a [u8],
    names: &'a PropertyNames,
}

impl<'a> FileRef<'a> {
    /// The file's hashId.
    pub fn hash_id(&self) -> &'a str {
        record::hash_id(self.record)
    }

    /// True when the file has a non-empty `filePath`.
    pub fn is_complete(&self) -> bool {
        record::get(self.record, FILE_PATH_ID).is_some()
    }

    /// The value of a property by its stored name (`titles/eng`).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let id = *self.names.ids.get(name)?;
        record::get(self.record, id)
    }

    /// Every stored property as `(name, value)`, in no particular order.
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let names = self.names;
        RecordProperties::new(self.record).map(move |(id, value)| (names.name(id), value))
    }

    /// The file's properties through the rules' typed view (`season` as a
    /// number, `fileName` derived from `filePath`, ...).
    pub fn metadata(&self) -> Metadata<'a> {
        Metadata::new(self.properties())
    }

    /// The file's virtual path under `rules` and the rule that gave it, or
    /// `None` while the file is not complete (has no `filePath`) and so is
    /// not shown. This is the path the virtual tree puts the file at, before
    /// collisions between files are resolved (`metafuse-vfs`).
    pub fn render<'r>(&self, rules: &'r Rules) -> Option<Rendered<'r>> {
        let metadata = self.metadata();
        metadata.file_path()?;
        Some(rules.render(self.hash_id(), &metadata))
    }
}
