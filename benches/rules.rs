//! Files rendered per second with the default preset on a realistic mix.
//! `Metadata` is built per file inside the timed loop, as the service does.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metafuse_rules::{Metadata, Rules};

const N_FILES: usize = 1000;

/// A deterministic mix: episodes (some with subtitles, versions and empty
/// `subtitleLanguage`), specials, extras, movies with and without year,
/// images, and files no rule matches, each with the usual core properties.
fn synthetic_library() -> Vec<(String, Vec<(String, String)>)> {
    let shows = [
        "Dark",
        "Breaking Bad",
        "Doctor Who",
        "Amélie's Café",
        "AC/DC: Live",
        "The Office (US)",
    ];
    let movies = [
        "Heat",
        "Inception",
        "千と千尋の神隠し",
        "Mission: Impossible",
        "Face/Off",
        "Le Fabuleux Destin",
    ];
    (0..N_FILES)
        .map(|index| {
            let hash_id = format!(
                "{:016x}",
                (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            );
            let mut properties = vec![
                (
                    "fileSize".to_owned(),
                    (1_000_000 + index * 7919).to_string(),
                ),
                (
                    "mtime".to_owned(),
                    (1_700_000_000_000_u64 + index as u64).to_string(),
                ),
            ];
            let mut add = |name: &str, value: String| properties.push((name.to_owned(), value));
            match index % 10 {
                0..=4 => {
                    let show = shows[index % shows.len()];
                    let (season, episode) = (index % 7, index % 23 + 1);
                    let subtitle = index % 5 == 0;
                    let extension = if subtitle { "srt" } else { "mkv" };
                    add(
                        "filePath",
                        format!("watch/{show}/S{season:02}E{episode:02}.{extension}"),
                    );
                    add("title", show.to_owned());
                    add("season", season.to_string());
                    add("episode", episode.to_string());
                    add(
                        "subtitleLanguage",
                        if subtitle {
                            "eng".to_owned()
                        } else {
                            String::new()
                        },
                    );
                    if index % 13 == 0 {
                        add("version", "Extended".to_owned());
                    }
                    if index % 17 == 0 {
                        add("extra", "true".to_owned());
                    }
                }
                5..=7 => {
                    let movie = movies[index % movies.len()];
                    add("filePath", format!("watch/movies/{index}.mp4"));
                    add("title", movie.to_owned());
                    if index % 3 != 0 {
                        add("movieYear", (1950 + index % 70).to_string());
                    }
                    add("originalTitle", movie.to_owned());
                }
                8 => {
                    add("filePath", format!("posters/{index}.jpg"));
                    add("fileType", "image".to_owned());
                }
                _ => add("filePath", format!("misc/README-{index}")),
            }
            (hash_id, properties)
        })
        .collect()
}

fn render_default_preset(criterion: &mut Criterion) {
    let rules = Rules::preset("default").expect("shipped preset");
    let library = synthetic_library();
    let mut group = criterion.benchmark_group("rules");
    group.throughput(Throughput::Elements(library.len() as u64));
    group.bench_function("render_default_preset", |bencher| {
        bencher.iter(|| {
            for (hash_id, properties) in &library {
                let metadata = Metadata::new(
                    properties
                        .iter()
                        .map(|(name, value)| (name.as_str(), value.as_str())),
                );
                black_box(rules.render(hash_id, &metadata));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, render_default_preset);
criterion_main!(benches);
