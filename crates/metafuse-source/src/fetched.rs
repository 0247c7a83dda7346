//! Values fetched from a source, owned, in one buffer per batch.

use metafuse_state::FetchedValue;

/// Values larger than this are skipped as malformed: no media property is
/// that long, and a runaway writer must not blow up our memory.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// One value: where its hashId, property and value sit in
/// [`FetchedValues::text`], end to end.
#[derive(Clone, Copy, Debug)]
struct Slot {
    start: usize,
    hash_id_len: u32,
    property_len: u32,
    /// `None` = the key is gone.
    value_len: Option<u32>,
}

/// Current values of keys, fetched from a source; [`FetchedValues::iter`]
/// lends them as [`FetchedValue`]s for `Projection::apply_batch`.
///
/// Any source builds one with [`FetchedValues::push`] (or
/// [`FetchedValues::push_bytes`] for raw bytes); the rules about what is
/// malformed (not UTF-8, longer than [`MAX_VALUE_BYTES`]) live here, once.
#[derive(Clone, Debug, Default)]
pub struct FetchedValues {
    slots: Vec<Slot>,
    /// Every hashId, property and value, end to end: one allocation per
    /// batch, not per value.
    text: String,
    n_malformed: u64,
}

impl FetchedValues {
    /// Empty, with room for `n_values`.
    pub fn with_capacity(n_values: usize) -> Self {
        Self {
            slots: Vec::with_capacity(n_values),
            ..Self::default()
        }
    }

    /// The values, in the order they were pushed, ready for
    /// `Projection::apply_batch`.
    pub fn iter(&self) -> impl Iterator<Item = FetchedValue<'_>> {
        self.slots.iter().map(|slot| {
            let property_start = slot.start + slot.hash_id_len as usize;
            let value_start = property_start + slot.property_len as usize;
            FetchedValue {
                hash_id: &self.text[slot.start..property_start],
                property: &self.text[property_start..value_start],
                value: slot
                    .value_len
                    .map(|len| &self.text[value_start..value_start + len as usize]),
            }
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Values skipped as malformed (not UTF-8, too large, odd replies).
    pub fn n_malformed(&self) -> u64 {
        self.n_malformed
    }

    /// Keeps the current `value` of `property` of `hash_id` (`None` = gone),
    /// or counts it as malformed when it is longer than [`MAX_VALUE_BYTES`].
    pub fn push(&mut self, hash_id: &str, property: &str, value: Option<&str>) {
        if let Some(text) = value
            && text.len() > MAX_VALUE_BYTES
        {
            self.n_malformed += 1;
            return;
        }
        let start = self.text.len();
        self.text.push_str(hash_id);
        self.text.push_str(property);
        if let Some(text) = value {
            self.text.push_str(text);
        }
        self.slots.push(Slot {
            start,
            hash_id_len: hash_id.len() as u32,
            property_len: property.len() as u32,
            value_len: value.map(|text| text.len() as u32),
        });
    }

    /// [`FetchedValues::push`] for a value as raw bytes. A value that is
    /// not UTF-8 is kept, never dropped: decoded lossily, or — for
    /// `filePath` — escaped losslessly (`metafuse_state::stored_value`;
    /// the byte reader gets the exact bytes back with
    /// `metafuse_state::file_path_bytes`). Only a value longer than
    /// [`MAX_VALUE_BYTES`] is counted as malformed. Returns whether the
    /// value was kept.
    pub fn push_bytes(&mut self, hash_id: &str, property: &str, value: Option<&[u8]>) -> bool {
        let Some(bytes) = value else {
            self.push(hash_id, property, None);
            return true;
        };
        if bytes.len() > MAX_VALUE_BYTES {
            self.n_malformed += 1;
            return false;
        }
        let text = metafuse_state::stored_value(property, bytes);
        if text.len() > MAX_VALUE_BYTES {
            // Escaping can lengthen a path up to four times.
            self.n_malformed += 1;
            return false;
        }
        self.push(hash_id, property, Some(&text));
        true
    }

    /// Counts a value the source answered in a shape that is no value.
    pub fn record_malformed(&mut self) {
        self.n_malformed += 1;
    }

    /// Appends `other`'s values after these.
    pub fn extend(&mut self, other: FetchedValues) {
        let shift = self.text.len();
        self.text.push_str(&other.text);
        self.slots.extend(other.slots.into_iter().map(|slot| Slot {
            start: slot.start + shift,
            ..slot
        }));
        self.n_malformed += other.n_malformed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_tuples(values: &FetchedValues) -> Vec<(String, String, Option<String>)> {
        values
            .iter()
            .map(|value| {
                (
                    value.hash_id.to_owned(),
                    value.property.to_owned(),
                    value.value.map(str::to_owned),
                )
            })
            .collect()
    }

    #[test]
    fn pushed_values_come_back_in_order_and_malformed_ones_are_counted() {
        let mut values = FetchedValues::default();
        values.push("a", "title", Some("Dark"));
        values.push("a", "genre", None);
        values.push("b", "filePath", Some(""));
        assert!(values.push_bytes("c", "title", Some(&[b'A', 0xff])));
        assert!(values.push_bytes("c", "filePath", Some(&[b'a', 0xe9])));
        assert!(!values.push_bytes(
            "c",
            "title",
            Some("x".repeat(MAX_VALUE_BYTES + 1).as_bytes())
        ));
        values.push("d", "title", Some(&"y".repeat(MAX_VALUE_BYTES + 1)));
        assert!(values.push_bytes("e", "titles/eng", Some("Heat".as_bytes())));
        values.record_malformed();
        let mut more = FetchedValues::with_capacity(1);
        more.push("f", "title", Some("Up"));
        more.record_malformed();
        values.extend(more);
        assert_eq!(
            as_tuples(&values),
            [
                ("a".into(), "title".into(), Some("Dark".into())),
                ("a".into(), "genre".into(), None),
                ("b".into(), "filePath".into(), Some(String::new())),
                ("c".into(), "title".into(), Some("A\u{fffd}".into())),
                ("c".into(), "filePath".into(), Some("\0a\\xe9".into())),
                ("e".into(), "titles/eng".into(), Some("Heat".into())),
                ("f".into(), "title".into(), Some("Up".into())),
            ]
        );
        assert_eq!(values.len(), 7);
        assert_eq!(values.n_malformed(), 4, "2 too large, 2 odd");
        assert!(FetchedValues::default().is_empty());
    }
}
