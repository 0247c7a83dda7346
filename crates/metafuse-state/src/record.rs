//! The packed form of one file: a single heap allocation holding its hashId
//! and every stored property as `varint(name id) varint(len) bytes`.
//!
//! One allocation per file (instead of a map of strings) is what keeps the
//! projection near 200 bytes per file: a `HashMap<String, String>` per file
//! costs more in headers and padding than the values themselves.

pub(crate) type NameId = u32;

fn push_varint(buffer: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        buffer.push((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.push(value as u8);
}

/// Reads a varint at `*position`; records are only built by us, so a
/// truncated one is a bug, answered with 0 rather than a panic.
fn read_varint(bytes: &[u8], position: &mut usize) -> u32 {
    let mut value = 0u32;
    let mut shift = 0;
    while let Some(&byte) = bytes.get(*position) {
        *position += 1;
        value |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    value
}

pub(crate) fn as_str(bytes: &[u8]) -> &str {
    // Every byte string in a record was copied from a `&str`.
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn varint_length(value: u32) -> usize {
    match value {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        _ => 5,
    }
}

/// Builds a record from a hashId and `(name id, value)` pairs, in one
/// allocation of exactly the record's size (no growth, no final shrink).
pub(crate) fn encode<'a, P>(hash_id: &str, properties: P) -> Box<[u8]>
where
    P: IntoIterator<Item = (NameId, &'a str)>,
    P::IntoIter: Clone,
{
    let properties = properties.into_iter();
    let length = varint_length(hash_id.len() as u32)
        + hash_id.len()
        + properties
            .clone()
            .map(|(name_id, value)| {
                varint_length(name_id) + varint_length(value.len() as u32) + value.len()
            })
            .sum::<usize>();
    let mut buffer = Vec::with_capacity(length);
    push_varint(&mut buffer, hash_id.len() as u32);
    buffer.extend_from_slice(hash_id.as_bytes());
    for (name_id, value) in properties {
        push_varint(&mut buffer, name_id);
        push_varint(&mut buffer, value.len() as u32);
        buffer.extend_from_slice(value.as_bytes());
    }
    debug_assert_eq!(buffer.len(), length);
    buffer.into_boxed_slice()
}

/// Where the properties start, and the hashId.
fn split_header(record: &[u8]) -> (&str, usize) {
    let mut position = 0;
    let length = read_varint(record, &mut position) as usize;
    let end = (position + length).min(record.len());
    (as_str(&record[position..end]), end)
}

pub(crate) fn hash_id(record: &[u8]) -> &str {
    split_header(record).0
}

/// Iterates over the `(name id, value)` pairs of a record.
#[derive(Clone, Debug)]
pub(crate) struct RecordProperties<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> RecordProperties<'a> {
    pub(crate) fn new(record: &'a [u8]) -> Self {
        let (_, position) = split_header(record);
        Self {
            bytes: record,
            position,
        }
    }
}

impl<'a> Iterator for RecordProperties<'a> {
    type Item = (NameId, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.bytes.len() {
            return None;
        }
        let name_id = read_varint(self.bytes, &mut self.position);
        let length = read_varint(self.bytes, &mut self.position) as usize;
        let end = (self.position + length).min(self.bytes.len());
        let value = as_str(&self.bytes[self.position..end]);
        self.position = end;
        Some((name_id, value))
    }
}

/// Every `(name id, byte range of the value)` of a record: positions
/// instead of borrows, for callers that take the record apart and rebuild it.
pub(crate) fn property_ranges(
    record: &[u8],
) -> impl Iterator<Item = (NameId, std::ops::Range<usize>)> + '_ {
    let (_, mut position) = split_header(record);
    std::iter::from_fn(move || {
        if position >= record.len() {
            return None;
        }
        let name_id = read_varint(record, &mut position);
        let length = read_varint(record, &mut position) as usize;
        let end = (position + length).min(record.len());
        let range = position..end;
        position = end;
        Some((name_id, range))
    })
}

pub(crate) fn get(record: &[u8], name_id: NameId) -> Option<&str> {
    RecordProperties::new(record)
        .find(|(id, _)| *id == name_id)
        .map(|(_, value)| value)
}

pub(crate) fn is_empty(record: &[u8]) -> bool {
    RecordProperties::new(record).next().is_none()
}

/// Checks a record that came from outside memory (a checkpoint): varints
/// and lengths within bounds, UTF-8 text, a non-empty hashId, at least one
/// property, each name id known, relevant (`relevant[id]`) and present
/// once, no empty value. Returns whether it holds `filePath` (id 0).
/// `seen` is scratch space, reused across records.
pub(crate) fn validate(
    record: &[u8],
    relevant: &[bool],
    seen: &mut Vec<NameId>,
) -> Result<bool, String> {
    let mut position = 0;
    let hash_id_range = checked_field(record, &mut position)?;
    if hash_id_range.is_empty() {
        return Err("a file without a hashId".to_owned());
    }
    let text_error = |error: std::str::Utf8Error| format!("text is not UTF-8: {error}");
    std::str::from_utf8(&record[hash_id_range]).map_err(text_error)?;
    seen.clear();
    while position < record.len() {
        let name_id = checked_varint(record, &mut position)?;
        if !relevant.get(name_id as usize).copied().unwrap_or(false) {
            return Err(format!("property id {name_id} is unknown or not relevant"));
        }
        if seen.contains(&name_id) {
            return Err(format!("property id {name_id} appears twice in a file"));
        }
        seen.push(name_id);
        let value = checked_field(record, &mut position)?;
        if value.is_empty() {
            return Err("an empty value is stored".to_owned());
        }
        std::str::from_utf8(&record[value]).map_err(text_error)?;
    }
    if seen.is_empty() {
        return Err("a file without properties".to_owned());
    }
    Ok(seen.contains(&0))
}

/// A varint that must end within `bytes` and fit in 32 bits.
fn checked_varint(bytes: &[u8], position: &mut usize) -> Result<u32, String> {
    let mut value = 0u64;
    for shift in (0..35).step_by(7) {
        let Some(&byte) = bytes.get(*position) else {
            break;
        };
        *position += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(value).map_err(|_| "a varint overflows".to_owned());
        }
    }
    Err("a varint runs past its record".to_owned())
}

/// A `varint(len) bytes` field that must end within `bytes`.
fn checked_field(bytes: &[u8], position: &mut usize) -> Result<std::ops::Range<usize>, String> {
    let length = checked_varint(bytes, position)? as usize;
    let start = *position;
    let end = start
        .checked_add(length)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| "a field runs past its record".to_owned())?;
    *position = end;
    Ok(start..end)
}

/// Approximate heap cost of one allocation of `length` bytes with glibc
/// malloc (8-byte header, 16-byte granularity, 32-byte minimum chunk).
pub(crate) fn allocation_cost(length: usize) -> usize {
    if length == 0 {
        return 0;
    }
    (length + 8).div_ceil(16).max(2) * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_hash_id_and_properties() {
        let long_value = "x".repeat(300);
        let record = encode("abc", [(1, "v"), (200, long_value.as_str()), (70_000, "")]);
        assert_eq!(hash_id(&record), "abc");
        let properties: Vec<_> = RecordProperties::new(&record).collect();
        assert_eq!(
            properties,
            vec![(1, "v"), (200, long_value.as_str()), (70_000, "")]
        );
        assert_eq!(get(&record, 200), Some(long_value.as_str()));
        assert_eq!(get(&record, 2), None);
        assert!(is_empty(&encode("abc", [])));
    }
}
