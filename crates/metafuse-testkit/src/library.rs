//! A deterministic synthetic MetaMesh library: the writes the MetaMesh
//! writers would make for `n_files` media files, as a pure list of
//! operations (for benchmarks without Redis) and written to Redis exactly as
//! the writers do it (`SET` per property, `SADD file:__index__`, one
//! `XADD meta:events` per change), pipelined.

use std::collections::BTreeMap;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Writer;

pub use metafuse_state::EVENTS_STREAM;

/// How to generate a library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibrarySpec {
    /// Number of media files.
    pub n_files: usize,
    /// RNG seed: the same spec always yields the same operations.
    pub seed: u64,
    /// Add updates, moves, property deletions and file deletions after the
    /// initial writes.
    pub churn: bool,
}

impl LibrarySpec {
    /// `n_files` files, seed 1, no churn.
    pub fn new(n_files: usize) -> Self {
        Self {
            n_files,
            seed: 1,
            churn: false,
        }
    }
}

/// One write of a writer: a property set (`Some`, possibly `""` as writers
/// store null) or deleted (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Index of the file in [`Library::hash_ids`].
    pub file: u32,
    /// Property name (`titles/eng`).
    pub property: &'static str,
    /// New value, or `None` for a deletion.
    pub value: Option<String>,
    /// The file is gone after this write: remove it from the index.
    pub leaves_index: bool,
}

/// A generated library: hashIds and the ordered writes.
#[derive(Clone, Debug)]
pub struct Library {
    /// hashId of every file (32 hex digits).
    pub hash_ids: Vec<String>,
    /// Every write, in the order the writers make them.
    pub writes: Vec<Write>,
}

/// Properties no shipped rule uses: the bulk of what writers store.
const UNUSED_PROPERTIES: [&str; 20] = [
    "audio/0/codec",
    "audio/0/language",
    "audio/0/channels",
    "audio/1/codec",
    "video/codec",
    "video/width",
    "video/height",
    "video/bitrate",
    "duration",
    "genres",
    "overview",
    "rating",
    "tmdbId",
    "imdbId",
    "container",
    "stage/probe",
    "stage/parse",
    "stage/tmdb",
    "stage/subtitles",
    "checksum",
];

const TITLES: [&str; 12] = [
    "Dark",
    "Breaking Bad",
    "Heat",
    "Face/Off",
    "The Wire",
    "Amélie",
    "Arrival",
    "Severance",
    "Blade Runner",
    "Fargo",
    "Andor",
    "Sicario",
];

const LANGUAGES: [&str; 4] = ["eng", "fra", "deu", "spa"];

/// A file's writes grouped by the plugin stage that makes them, so stages
/// can be interleaved across files as the real pipeline does.
type Stages = [Vec<(&'static str, String)>; 4];

fn file_stages(rng: &mut ChaCha8Rng, index: usize) -> Stages {
    let title = *TITLES.choose(rng).unwrap_or(&"Untitled");
    let is_series = rng.random_bool(0.6);
    let is_subtitle = rng.random_bool(0.15);
    let extension = if is_subtitle {
        "srt"
    } else {
        *["mkv", "mp4", "avi"].choose(rng).unwrap_or(&"mkv")
    };
    let season = rng.random_range(1..9u32);
    let episode = rng.random_range(1..25u32);
    let year = rng.random_range(1960..2025u32);
    let stem = if is_series {
        format!(
            "{}.S{season:02}E{episode:02}.{index}",
            title.replace(' ', ".")
        )
    } else {
        format!("{}.{year}.{index}", title.replace(' ', "."))
    };
    let file_name = format!("{stem}.{extension}");
    let directory = if is_series { "tv" } else { "movies" };

    let mut discovery = vec![
        ("filePath", format!("watch/{directory}/{title}/{file_name}")),
        ("fileName", file_name),
        ("extension", extension.to_owned()),
        (
            "size",
            rng.random_range(10_000..10_000_000_000u64).to_string(),
        ),
        (
            "mtime",
            rng.random_range(1_500_000_000_000..1_700_000_000_000u64)
                .to_string(),
        ),
    ];
    if rng.random_bool(0.3) {
        discovery.push((
            "ctime",
            rng.random_range(1_500_000_000..1_700_000_000u64)
                .to_string(),
        ));
    }
    let mut probe = vec![(
        "fileType",
        if is_subtitle { "subtitle" } else { "video" }.to_owned(),
    )];
    let mut parse = vec![("title", title.to_owned())];
    let mut enrich = vec![
        ("originalTitle", title.to_owned()),
        ("titles/eng", title.to_owned()),
    ];
    if is_series {
        parse.push(("season", format!("{season:02}")));
        parse.push(("episode", format!("{episode:02}")));
    } else {
        parse.push(("movieYear", year.to_string()));
    }
    if is_subtitle {
        parse.push((
            "subtitleLanguage",
            (*LANGUAGES.choose(rng).unwrap_or(&"eng")).to_owned(),
        ));
    } else if rng.random_bool(0.2) {
        // Writers store null as "": an absent subtitle language.
        parse.push(("subtitleLanguage", String::new()));
    }
    if rng.random_bool(0.05) {
        parse.push(("version", "Extended".to_owned()));
    }
    if rng.random_bool(0.05) {
        parse.push(("extra", "true".to_owned()));
    }
    // About half of the unused properties, spread over the stages.
    for (position, property) in UNUSED_PROPERTIES.iter().enumerate() {
        if rng.random_bool(0.45) {
            let value = format!("{property}-{}", rng.random_range(0..1000u32));
            match position % 3 {
                0 => probe.push((property, value)),
                1 => parse.push((property, value)),
                _ => enrich.push((property, value)),
            }
        }
    }
    [discovery, probe, parse, enrich]
}

impl Library {
    /// Generates the library described by `spec`.
    pub fn generate(spec: &LibrarySpec) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let hash_ids: Vec<String> = (0..spec.n_files)
            .map(|_| format!("{:032x}", rng.random::<u128>()))
            .collect();
        let mut writes = Vec::with_capacity(spec.n_files * 24);
        // Plugins work on windows of files: every stage runs over the window
        // before the next stage starts, so one file's writes are spread out.
        const WINDOW: usize = 256;
        for window_start in (0..spec.n_files).step_by(WINDOW) {
            let window_end = (window_start + WINDOW).min(spec.n_files);
            let stages: Vec<Stages> = (window_start..window_end)
                .map(|index| file_stages(&mut rng, index))
                .collect();
            for stage in 0..4 {
                for (offset, file_stages) in stages.iter().enumerate() {
                    for (property, value) in &file_stages[stage] {
                        writes.push(Write {
                            file: (window_start + offset) as u32,
                            property,
                            value: Some(value.clone()),
                            leaves_index: false,
                        });
                    }
                }
            }
        }
        if spec.churn && spec.n_files > 0 {
            add_churn(&mut rng, spec.n_files, &mut writes);
        }
        Self { hash_ids, writes }
    }

    /// The stream key of write `write` (`{prefix}file:{hashId}/{property}`).
    pub fn key(&self, prefix: &str, write: &Write) -> String {
        format!(
            "{prefix}file:{}/{}",
            self.hash_ids[write.file as usize], write.property
        )
    }

    /// What Redis holds after the first `n_writes` writes: every file's
    /// non-empty properties (empty strings count as absent).
    pub fn truth_after(&self, n_writes: usize) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut files: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for write in &self.writes[..n_writes.min(self.writes.len())] {
            let hash_id = &self.hash_ids[write.file as usize];
            match write.value.as_deref().filter(|value| !value.is_empty()) {
                Some(value) => {
                    files
                        .entry(hash_id.clone())
                        .or_default()
                        .insert(write.property.to_owned(), value.to_owned());
                }
                None => {
                    if let Some(file) = files.get_mut(hash_id) {
                        file.remove(write.property);
                    }
                }
            }
        }
        files.retain(|_, properties| !properties.is_empty());
        files
    }

    /// What Redis holds after every write.
    pub fn truth(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.truth_after(self.writes.len())
    }

    /// Writes `writes[range]` to Redis the way the writers do (see
    /// [`Writer`]), pipelined: per write a `SET` and `SADD` of the index or a
    /// `DEL`, an `SREM` once a file is deleted, and an `XADD` (trimmed to
    /// `~maxlen` if given).
    pub fn write_range(
        &self,
        connection: &mut redis::Connection,
        prefix: &str,
        range: std::ops::Range<usize>,
        maxlen: Option<usize>,
    ) -> redis::RedisResult<()> {
        let mut writer = Writer::new(connection, prefix).with_maxlen(maxlen);
        for chunk in self.writes[range].chunks(2000) {
            for write in chunk {
                let hash_id = &self.hash_ids[write.file as usize];
                match &write.value {
                    Some(value) => writer.set(hash_id, write.property, value),
                    None => writer.del(hash_id, write.property),
                };
                if write.leaves_index {
                    writer.remove_from_index(hash_id);
                }
            }
            writer.flush()?;
        }
        Ok(())
    }

    /// Writes every write (see [`Library::write_range`]).
    pub fn write_all(
        &self,
        connection: &mut redis::Connection,
        prefix: &str,
        maxlen: Option<usize>,
    ) -> redis::RedisResult<()> {
        self.write_range(connection, prefix, 0..self.writes.len(), maxlen)
    }
}

/// Updates, moves, property deletions and file deletions: about a fifth of
/// the initial writes.
fn add_churn(rng: &mut ChaCha8Rng, n_files: usize, writes: &mut Vec<Write>) {
    let n_changes = writes.len() / 5;
    let mut deleted = vec![false; n_files];
    let mut changes = 0;
    while changes < n_changes {
        let file = rng.random_range(0..n_files);
        if deleted[file] {
            continue;
        }
        let file_id = file as u32;
        let roll = rng.random_range(0..100u32);
        if roll < 45 {
            // Re-tagging: a relevant and an unused property change.
            let title = *TITLES.choose(rng).unwrap_or(&"Untitled");
            writes.push(Write {
                file: file_id,
                property: "title",
                value: Some(title.to_owned()),
                leaves_index: false,
            });
            let property = *UNUSED_PROPERTIES.choose(rng).unwrap_or(&"genres");
            let value = Some(format!("{property}-x{changes}"));
            writes.push(Write {
                file: file_id,
                property,
                value,
                leaves_index: false,
            });
            changes += 2;
        } else if roll < 75 {
            // A move: filePath and fileName change together.
            let name = format!("moved-{file}-{changes}.mkv");
            let path = Some(format!("watch/moved/{name}"));
            writes.push(Write {
                file: file_id,
                property: "filePath",
                value: path,
                leaves_index: false,
            });
            writes.push(Write {
                file: file_id,
                property: "fileName",
                value: Some(name),
                leaves_index: false,
            });
            changes += 2;
        } else if roll < 95 {
            let property = *["subtitleLanguage", "version", "originalTitle", "genres"]
                .choose(rng)
                .unwrap_or(&"genres");
            writes.push(Write {
                file: file_id,
                property,
                value: None,
                leaves_index: false,
            });
            changes += 1;
        } else {
            // A file deletion: every property the file may have.
            deleted[file] = true;
            for property in [
                "filePath",
                "fileName",
                "extension",
                "size",
                "mtime",
                "ctime",
                "fileType",
                "title",
            ]
            .into_iter()
            .chain([
                "originalTitle",
                "titles/eng",
                "season",
                "episode",
                "movieYear",
                "subtitleLanguage",
            ])
            .chain(["version", "extra"])
            .chain(UNUSED_PROPERTIES)
            {
                writes.push(Write {
                    file: file_id,
                    property,
                    value: None,
                    leaves_index: false,
                });
                changes += 1;
            }
            if let Some(last) = writes.last_mut() {
                last.leaves_index = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_library() {
        let spec = LibrarySpec {
            n_files: 300,
            seed: 7,
            churn: true,
        };
        let first = Library::generate(&spec);
        let second = Library::generate(&spec);
        assert_eq!(first.hash_ids, second.hash_ids);
        assert_eq!(first.writes, second.writes);
        let other = Library::generate(&LibrarySpec { seed: 8, ..spec });
        assert_ne!(first.hash_ids, other.hash_ids);
    }

    #[test]
    fn every_file_gets_a_path_and_churn_changes_the_truth() {
        let calm = Library::generate(&LibrarySpec::new(500));
        let truth = calm.truth();
        assert_eq!(truth.len(), 500);
        assert!(
            truth
                .values()
                .all(|file| file["filePath"].starts_with("watch/"))
        );
        let churned = Library::generate(&LibrarySpec {
            churn: true,
            ..LibrarySpec::new(500)
        });
        assert!(churned.writes.len() > calm.writes.len());
        assert!(churned.writes.iter().any(|write| write.value.is_none()));
        assert_ne!(churned.truth(), truth);
    }

    #[test]
    fn writes_land_in_redis_with_one_event_each() {
        let server = crate::RedisServer::start().unwrap();
        let mut connection = server.client().get_connection().unwrap();
        let library = Library::generate(&LibrarySpec {
            churn: true,
            ..LibrarySpec::new(50)
        });
        library.write_all(&mut connection, "p:", None).unwrap();
        let length: usize = redis::cmd("XLEN")
            .arg(EVENTS_STREAM)
            .query(&mut connection)
            .unwrap();
        assert_eq!(length, library.writes.len());
        assert_eq!(
            crate::read_truth(&mut connection, "p:").unwrap(),
            library.truth()
        );
        let (hash_id, properties) = library.truth().into_iter().next().unwrap();
        for (property, value) in properties {
            let stored: String = redis::cmd("GET")
                .arg(format!("p:file:{hash_id}/{property}"))
                .query(&mut connection)
                .unwrap();
            assert_eq!(stored, value);
        }
    }
}
