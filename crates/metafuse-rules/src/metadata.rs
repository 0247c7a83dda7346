//! The typed view rules have of one file's properties (spec §3, "Typed view").

use std::borrow::Cow;

/// Properties every consumer needs whatever the rules say: where the file
/// is, its name, size and times.
pub const CORE_PROPERTIES: &[&str] = &[
    "filePath",
    "size",
    "fileSize",
    "sizeByte",
    "mtime",
    "ctime",
    "fileName",
    "extension",
];

/// A field's value as rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// Any property, and the derived `fileName`, `extension`, `fileType`.
    Text(Cow<'a, str>),
    /// `season`, `episode`, `movieYear`, `year`, `size`, `mtime`, `ctime`.
    Integer(i64),
    /// `extra`.
    Boolean(bool),
}

impl FieldValue<'_> {
    /// The value as text, the way a template prints it.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            FieldValue::Text(text) => Cow::Borrowed(text.as_ref()),
            FieldValue::Integer(number) => Cow::Owned(number.to_string()),
            FieldValue::Boolean(flag) => Cow::Borrowed(if *flag { "true" } else { "false" }),
        }
    }

    /// The value as a number, if it is one (integers, or text holding a number).
    pub(crate) fn to_number(&self) -> Option<f64> {
        match self {
            FieldValue::Integer(number) => Some(*number as f64),
            FieldValue::Text(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|number| number.is_finite()),
            FieldValue::Boolean(_) => None,
        }
    }
}

/// Stored properties with a dedicated slot: the sources of the typed view,
/// looked up on every render, so they cost an array index, not a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    FilePath,
    FileName,
    Extension,
    FileType,
    Season,
    Episode,
    MovieYear,
    Year,
    Extra,
    Size,
    FileSize,
    SizeByte,
    Mtime,
    Ctime,
}

const SLOT_COUNT: usize = 14;

impl Slot {
    fn of_property(name: &str) -> Option<Slot> {
        Some(match name {
            "filePath" => Slot::FilePath,
            "fileName" => Slot::FileName,
            "extension" => Slot::Extension,
            "fileType" => Slot::FileType,
            "season" => Slot::Season,
            "episode" => Slot::Episode,
            "movieYear" => Slot::MovieYear,
            "year" => Slot::Year,
            "extra" => Slot::Extra,
            "size" => Slot::Size,
            "fileSize" => Slot::FileSize,
            "sizeByte" => Slot::SizeByte,
            "mtime" => Slot::Mtime,
            "ctime" => Slot::Ctime,
            _ => return None,
        })
    }
}

/// A field a rule refers to, resolved once when the rules are compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Season,
    Episode,
    MovieYear,
    Year,
    Extra,
    FileName,
    Extension,
    FileType,
    Size,
    Mtime,
    Ctime,
    /// A stored property with a slot but no typed presentation (`filePath`, `fileSize`, ...).
    Raw(Slot),
    /// Any other property, in `/` form.
    Property(Box<str>),
}

impl Field {
    /// Resolves a field name as written in a rule (`titles.eng`, `season`, ...).
    pub(crate) fn parse(name: &str) -> Field {
        let name = name.trim();
        match name {
            "season" => Field::Season,
            "episode" => Field::Episode,
            "movieYear" => Field::MovieYear,
            "year" => Field::Year,
            "extra" => Field::Extra,
            "fileName" => Field::FileName,
            "extension" => Field::Extension,
            "fileType" => Field::FileType,
            "size" => Field::Size,
            "mtime" => Field::Mtime,
            "ctime" => Field::Ctime,
            _ => match Slot::of_property(name) {
                Some(slot) => Field::Raw(slot),
                None => Field::Property(normalize_property_name(name).into_boxed_str()),
            },
        }
    }

    /// Stored properties this field is computed from, so they are fetched
    /// even when only the derived field is named in a rule.
    pub(crate) fn source_properties(&self) -> Vec<String> {
        let names: &[&str] = match self {
            Field::Season => &["season"],
            Field::Episode => &["episode"],
            Field::MovieYear => &["movieYear"],
            Field::Year => &["year", "movieYear"],
            Field::Extra => &["extra"],
            Field::FileName => &["fileName", "filePath"],
            Field::Extension => &["extension", "fileName", "filePath"],
            Field::FileType => &["fileType", "extension", "fileName", "filePath"],
            Field::Size => &["size", "fileSize", "sizeByte"],
            Field::Mtime => &["mtime"],
            Field::Ctime => &["ctime", "mtime"],
            Field::Raw(slot) => return vec![slot_property_name(*slot).to_owned()],
            Field::Property(name) => return vec![name.to_string()],
        };
        names.iter().map(|name| (*name).to_owned()).collect()
    }
}

fn slot_property_name(slot: Slot) -> &'static str {
    match slot {
        Slot::FilePath => "filePath",
        Slot::FileName => "fileName",
        Slot::Extension => "extension",
        Slot::FileType => "fileType",
        Slot::Season => "season",
        Slot::Episode => "episode",
        Slot::MovieYear => "movieYear",
        Slot::Year => "year",
        Slot::Extra => "extra",
        Slot::Size => "size",
        Slot::FileSize => "fileSize",
        Slot::SizeByte => "sizeByte",
        Slot::Mtime => "mtime",
        Slot::Ctime => "ctime",
    }
}

/// `titles.eng` → `titles/eng`: the form properties are stored in.
pub(crate) fn normalize_property_name(name: &str) -> String {
    name.trim().replace('.', "/")
}

/// Whether two property names are the same with `.` ≡ `/`.
fn same_property_name(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .all(|(left, right)| left == right || (is_separator(left) && is_separator(right)))
}

pub(crate) fn is_separator(byte: u8) -> bool {
    byte == b'/' || byte == b'.'
}

/// One file's properties, seen through the typed view of the spec.
#[derive(Clone, Debug, Default)]
pub struct Metadata<'a> {
    slots: [Option<&'a str>; SLOT_COUNT],
    others: Vec<(&'a str, &'a str)>,
}

impl<'a> Metadata<'a> {
    /// Wraps properties named as stored in Redis (`titles/eng`). An empty
    /// value counts as absent: writers store null as `""`. When a name repeats,
    /// the first non-empty value wins.
    pub fn new(properties: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut metadata = Metadata::default();
        for (name, value) in properties {
            if value.is_empty() {
                continue;
            }
            match Slot::of_property(name) {
                Some(slot) => {
                    let stored = &mut metadata.slots[slot as usize];
                    if stored.is_none() {
                        *stored = Some(value);
                    }
                }
                None => metadata.others.push((name, value)),
            }
        }
        metadata
    }

    fn slot(&self, slot: Slot) -> Option<&'a str> {
        self.slots[slot as usize]
    }

    fn property(&self, name: &str) -> Option<&'a str> {
        self.others
            .iter()
            .find(|(stored_name, _)| same_property_name(stored_name, name))
            .map(|(_, value)| *value)
    }

    /// A field in `a.b` or `a/b` form, typed as the spec's table says.
    pub fn get(&self, field: &str) -> Option<FieldValue<'_>> {
        self.get_field(&Field::parse(field))
    }

    pub(crate) fn get_field(&self, field: &Field) -> Option<FieldValue<'a>> {
        let text = |value: &'a str| FieldValue::Text(Cow::Borrowed(value));
        match field {
            Field::Season => self.integer(Slot::Season).map(FieldValue::Integer),
            Field::Episode => self.integer(Slot::Episode).map(FieldValue::Integer),
            Field::MovieYear => self.integer(Slot::MovieYear).map(FieldValue::Integer),
            Field::Year => self
                .integer(Slot::Year)
                .or_else(|| self.integer(Slot::MovieYear))
                .map(FieldValue::Integer),
            Field::Extra => self
                .slot(Slot::Extra)
                .map(|value| FieldValue::Boolean(value == "true")),
            Field::FileName => self.file_name().map(FieldValue::Text),
            Field::Extension => self.extension().map(FieldValue::Text),
            Field::FileType => self.file_type().map(FieldValue::Text),
            Field::Size => self
                .size_bytes()
                .map(|size| FieldValue::Integer(i64::try_from(size).unwrap_or(i64::MAX))),
            Field::Mtime => self.mtime_ms().map(FieldValue::Integer),
            Field::Ctime => self.ctime_ms().map(FieldValue::Integer),
            Field::Raw(slot) => self.slot(*slot).map(text),
            Field::Property(name) => self.property(name).map(text),
        }
    }

    fn integer(&self, slot: Slot) -> Option<i64> {
        self.slot(slot).and_then(parse_leading_integer)
    }

    /// The stored `filePath`.
    pub fn file_path(&self) -> Option<&'a str> {
        self.slot(Slot::FilePath)
    }

    /// `fileName`, else the last component of `filePath`.
    pub fn file_name(&self) -> Option<Cow<'a, str>> {
        if let Some(name) = self.slot(Slot::FileName) {
            return Some(Cow::Borrowed(name));
        }
        self.file_path()?
            .rsplit('/')
            .find(|component| !component.is_empty())
            .map(Cow::Borrowed)
    }

    /// `extension`, else the extension of the file name without its dot.
    pub fn extension(&self) -> Option<Cow<'a, str>> {
        if let Some(extension) = self.slot(Slot::Extension) {
            return Some(Cow::Borrowed(extension));
        }
        match self.file_name()? {
            Cow::Borrowed(name) => extension_of(name).map(Cow::Borrowed),
            Cow::Owned(name) => {
                extension_of(&name).map(|extension| Cow::Owned(extension.to_owned()))
            }
        }
    }

    /// `fileType`, else inferred from the extension (video, subtitle, torrent).
    pub fn file_type(&self) -> Option<Cow<'a, str>> {
        if let Some(file_type) = self.slot(Slot::FileType) {
            return Some(Cow::Borrowed(file_type));
        }
        infer_file_type(&self.extension()?).map(Cow::Borrowed)
    }

    /// Size in bytes: the first present of `fileSize`, `size`, `sizeByte`.
    pub fn size_bytes(&self) -> Option<u64> {
        [Slot::FileSize, Slot::Size, Slot::SizeByte]
            .into_iter()
            .find_map(|slot| self.slot(slot))
            .and_then(|value| {
                let value = value.trim();
                value.parse::<u64>().ok().or_else(|| {
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|size| size.is_finite() && *size >= 0.0)
                        .map(|size| size as u64)
                })
            })
    }

    /// `mtime` in epoch milliseconds.
    pub fn mtime_ms(&self) -> Option<i64> {
        self.slot(Slot::Mtime).and_then(parse_time_ms)
    }

    /// `ctime` in epoch milliseconds, defaulting to `mtime`.
    pub fn ctime_ms(&self) -> Option<i64> {
        self.slot(Slot::Ctime)
            .and_then(parse_time_ms)
            .or_else(|| self.mtime_ms())
    }
}

/// The extension of a file name without its dot; like Node's `path.extname`,
/// a leading dot (`.hidden`) or a trailing one (`name.`) is no extension.
fn extension_of(name: &str) -> Option<&str> {
    let dot = name.rfind('.')?;
    if dot == 0 || dot + 1 == name.len() {
        None
    } else {
        Some(&name[dot + 1..])
    }
}

fn infer_file_type(extension: &str) -> Option<&'static str> {
    const VIDEO: &[&str] = &["mkv", "mp4", "avi", "mov", "wmv", "flv", "webm", "m4v"];
    const SUBTITLE: &[&str] = &["srt", "ass", "ssa", "sub", "idx", "vtt"];
    let is = |list: &[&str]| {
        list.iter()
            .any(|known| known.eq_ignore_ascii_case(extension))
    };
    if is(VIDEO) {
        Some("video")
    } else if is(SUBTITLE) {
        Some("subtitle")
    } else if extension.eq_ignore_ascii_case("torrent") {
        Some("torrent")
    } else {
        None
    }
}

/// JavaScript's `parseInt` as the reference used it: leading blanks, a sign,
/// then the leading digits (`"01"` → 1, `"3x"` → 3); no digit → absent.
pub(crate) fn parse_leading_integer(text: &str) -> Option<i64> {
    let text = text.trim_start();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digit_count = digits.bytes().take_while(u8::is_ascii_digit).count();
    if digit_count == 0 {
        return None;
    }
    let magnitude: i64 = digits[..digit_count].parse().ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Epoch milliseconds from epoch milliseconds, epoch seconds (values below
/// 10^11, i.e. before 1973 in milliseconds but year 5138 in seconds) or RFC 3339.
pub(crate) fn parse_time_ms(text: &str) -> Option<i64> {
    const SECONDS_LIMIT: f64 = 1e11;
    let text = text.trim();
    if let Ok(number) = text.parse::<i64>() {
        return Some(if (number.unsigned_abs() as f64) < SECONDS_LIMIT {
            number.saturating_mul(1000)
        } else {
            number
        });
    }
    if let Ok(number) = text.parse::<f64>() {
        if !number.is_finite() {
            return None;
        }
        let milliseconds = if number.abs() < SECONDS_LIMIT {
            number * 1000.0
        } else {
            number
        };
        return Some(milliseconds.round() as i64);
    }
    parse_rfc3339_ms(text)
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|±HH:MM]`; no offset means UTC.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut milliseconds = days_from_civil(year, month, day) * 86_400_000;
    let mut position = 10;
    if position < bytes.len() && matches!(bytes[position], b'T' | b't' | b' ') {
        if bytes.get(position + 3) != Some(&b':') {
            return None;
        }
        let (hour, minute) = (
            number(position + 1..position + 3)?,
            number(position + 4..position + 6)?,
        );
        if hour > 23 || minute > 59 {
            return None;
        }
        milliseconds += (hour * 3600 + minute * 60) * 1000;
        position += 6;
        if bytes.get(position) == Some(&b':') {
            let second = number(position + 1..position + 3)?;
            if second > 60 {
                return None;
            }
            milliseconds += second * 1000;
            position += 3;
            if bytes.get(position) == Some(&b'.') {
                let fraction_length = bytes[position + 1..]
                    .iter()
                    .take_while(|byte| byte.is_ascii_digit())
                    .count();
                if fraction_length == 0 {
                    return None;
                }
                let millis_digits = fraction_length.min(3);
                let mut fraction = number(position + 1..position + 1 + millis_digits)?;
                for _ in millis_digits..3 {
                    fraction *= 10;
                }
                milliseconds += fraction;
                position += 1 + fraction_length;
            }
        }
    }
    match bytes.get(position) {
        None => Some(milliseconds),
        Some(b'Z' | b'z') if position + 1 == bytes.len() => Some(milliseconds),
        Some(sign @ (b'+' | b'-')) => {
            let offset_hours = number(position + 1..position + 3)?;
            let minutes_start = if bytes.get(position + 3) == Some(&b':') {
                position + 4
            } else {
                position + 3
            };
            let offset_minutes = number(minutes_start..minutes_start + 2)?;
            if minutes_start + 2 != bytes.len() || offset_hours > 23 || offset_minutes > 59 {
                return None;
            }
            let offset = (offset_hours * 60 + offset_minutes) * 60_000;
            Some(if *sign == b'+' {
                milliseconds - offset
            } else {
                milliseconds + offset
            })
        }
        Some(_) => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use metafuse_testkit::TableCheck;

    use super::*;

    #[test]
    fn rfc3339_dates_parse_to_epoch_milliseconds() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2024-02-29T12:34:56.789Z", Some(1_709_210_096_789)),
            ("2024-02-29T12:34:56.7Z", Some(1_709_210_096_700)),
            ("2024-02-29T14:34:56+02:00", Some(1_709_210_096_000)),
            ("2024-02-29 12:34:56", Some(1_709_210_096_000)),
            ("2024-02-29", Some(1_709_164_800_000)),
            ("2024-13-01", None),
            ("2024-02-29T12:34:56Zjunk", None),
            ("yesterday", None),
        ];
        let mut table = TableCheck::new();
        for (text, expected) in cases {
            table.check_eq(parse_time_ms(text), expected, text);
        }
    }

    #[test]
    fn leading_integers_follow_parse_int() {
        let cases = [
            ("01", Some(1)),
            ("3x", Some(3)),
            (" 7", Some(7)),
            ("-2", Some(-2)),
            ("x3", None),
            ("", None),
            ("-", None),
        ];
        let mut table = TableCheck::new();
        for (text, expected) in cases {
            table.check_eq(parse_leading_integer(text), expected, text);
        }
    }
}
