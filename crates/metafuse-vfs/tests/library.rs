//! Library: projection deltas → rendered paths → tree, with invalidations.

use std::sync::Arc;

use metafuse_rules::Rules;
use metafuse_state::{FetchedValue, Projection};
use metafuse_vfs::{Invalidation, Library, SharedLibrary};

fn value<'v>(hash_id: &'v str, property: &'v str, value: Option<&'v str>) -> FetchedValue<'v> {
    FetchedValue {
        hash_id,
        property,
        value,
    }
}

fn episode<'v>(hash_id: &'v str, title: &'v str, episode: &'v str) -> Vec<FetchedValue<'v>> {
    vec![
        value(hash_id, "filePath", Some("incoming/x.mkv")),
        value(hash_id, "title", Some(title)),
        value(hash_id, "season", Some("1")),
        value(hash_id, "episode", Some(episode)),
        value(hash_id, "size", Some("100")),
    ]
}

fn preset(name: &str) -> Arc<Rules> {
    Arc::new(Rules::preset(name).expect("preset"))
}

#[test]
fn batches_render_paths_and_report_invalidations() {
    let mut library = Library::new(preset("default"));
    let invalidations = library.apply_batch(episode("h1", "Dark", "01"));
    assert_eq!(library.file_paths(), ["/TV Shows/Dark/S01/Dark S01E01.mkv"]);
    assert!(invalidations.contains(&Invalidation::Entry {
        parent: 1,
        name: "TV Shows".to_owned()
    }));
    assert_eq!(
        (
            library.file_count(),
            library.directory_count(),
            library.total_size_bytes()
        ),
        (1, 3, 100)
    );
    let metadata = library
        .file_metadata("/TV Shows/Dark/S01/Dark S01E01.mkv")
        .expect("metadata");
    assert_eq!(metadata.get("title"), Some("Dark"));

    // A property change moves the file; deleting filePath removes it.
    library.apply_batch([value("h1", "episode", Some("02"))]);
    assert_eq!(library.file_paths(), ["/TV Shows/Dark/S01/Dark S01E02.mkv"]);
    let invalidations = library.apply_batch([value("h1", "filePath", None)]);
    assert!(library.file_paths().is_empty());
    assert!(library.resolve("/TV Shows").is_none());
    assert!(invalidations.contains(&Invalidation::Entry {
        parent: 1,
        name: "TV Shows".to_owned()
    }));
}

#[test]
fn a_rules_change_moves_files_and_keeps_their_inodes() {
    let library = SharedLibrary::new(Library::new(preset("default")));
    library.apply_batch(episode("h1", "Dark", "01"));
    let ino = library
        .read()
        .resolve("/TV Shows/Dark/S01/Dark S01E01.mkv")
        .expect("file")
        .ino();
    let shows = library.read().resolve("/TV Shows/Dark").expect("dir").ino();
    let invalidations = library.replace_rules(preset("plex"));
    let reader = library.read();
    assert_eq!(
        reader.file_paths(),
        ["/TV Shows/Dark/Season 01/Dark - S01E01.mkv"]
    );
    assert_eq!(
        reader
            .resolve("/TV Shows/Dark/Season 01/Dark - S01E01.mkv")
            .expect("file")
            .ino(),
        ino
    );
    assert_eq!(
        reader.resolve("/TV Shows/Dark").expect("dir").ino(),
        shows,
        "path still exists"
    );
    assert!(invalidations.contains(&Invalidation::Entry {
        parent: shows,
        name: "S01".to_owned()
    }));
    assert!(invalidations.contains(&Invalidation::Entry {
        parent: shows,
        name: "Season 01".to_owned()
    }));
}

#[test]
fn bootstrap_from_a_projection_equals_applying_the_same_values() {
    let rules = preset("default");
    let values: Vec<_> = [
        episode("h2", "Dark", "01"),
        episode("h1", "Dark", "01"),
        episode("h3", "Lost", "05"),
    ]
    .concat();
    let mut projection = Projection::new(rules.relevant_properties());
    projection.apply_batch(values.iter().copied());
    let bootstrapped = Library::from_projection(projection, rules.clone());
    let mut incremental = Library::new(rules);
    incremental.apply_batch(values.iter().copied());
    assert_eq!(bootstrapped.file_paths(), incremental.file_paths());
    assert_eq!(
        bootstrapped.file_paths(),
        [
            "/TV Shows/Dark/S01/Dark S01E01 [h2].mkv",
            "/TV Shows/Dark/S01/Dark S01E01.mkv",
            "/TV Shows/Lost/S01/Lost S01E05.mkv",
        ]
    );
    assert_eq!(
        bootstrapped
            .resolve("/TV Shows/Dark/S01/Dark S01E01.mkv")
            .and_then(|node| node.hash_id()),
        Some("h1")
    );
}

#[test]
fn recorded_events_show_in_the_projection_stats() {
    let shared = SharedLibrary::new(Library::new(preset("default")));
    shared.update(|library| {
        library.apply_batch(episode("h1", "Dark", "01"));
        library.record_events(
            metafuse_state::EventCounts {
                n_events: 7,
                n_skipped: 2,
                n_malformed: 1,
            },
            "1700000000000-4",
        );
    });
    let stats = shared.read().projection().stats();
    assert_eq!(stats.events_processed, 7);
    assert_eq!(stats.properties_skipped, 2);
    assert_eq!(stats.malformed_entries, 1);
    assert_eq!(stats.properties_fetched, 5);
    assert_eq!(stats.last_event_id.as_deref(), Some("1700000000000-4"));
}

/// Every visible path of a library with its inode, in listing order.
fn paths_and_inodes(library: &Library) -> Vec<(String, u64)> {
    library
        .file_paths()
        .into_iter()
        .map(|path| {
            let ino = library
                .resolve(&path)
                .expect("a listed path resolves")
                .ino();
            (path, ino)
        })
        .collect()
}

/// A build big enough to render on a second thread (and with directories
/// large enough for the deferred listing order) gives the same tree as
/// the same files applied live, one batch at a time: same paths, same
/// collision suffixes, same inodes, same listing order; and so does a
/// rules change rebuilt from it.
#[test]
fn a_large_bootstrap_equals_the_same_files_applied_live() {
    let rules = preset("default");
    let hash_ids: Vec<String> = (0..20_000).map(|index| format!("{index:08x}")).collect();
    let titles: Vec<String> = (0..400).map(|index| format!("Show {index}")).collect();
    let episodes: Vec<String> = (0..40).map(|index| format!("{index:02}")).collect();
    let mut values = Vec::new();
    for (index, hash_id) in hash_ids.iter().enumerate() {
        // 400 shows of 40 episodes; the last 4,000 files are second
        // copies of episodes: collisions, settled by hashId.
        let title = &titles[index % titles.len()];
        let number = &episodes[(index / titles.len()) % episodes.len()];
        values.extend(episode(hash_id, title, number));
    }
    let mut projection = Projection::new(rules.relevant_properties());
    projection.apply_batch(values.iter().copied());
    let bootstrapped = Library::from_projection(projection, rules.clone());
    let mut live = Library::new(rules);
    for batch in values.chunks(999) {
        live.apply_batch(batch.iter().copied());
    }
    assert_eq!(bootstrapped.file_count(), 20_000);
    assert_eq!(paths_and_inodes(&bootstrapped), paths_and_inodes(&live));
    // The top directory holds 400 shows: large, so ordered at the end.
    let shows = |library: &Library| -> Vec<String> {
        let top = library.resolve("/TV Shows").expect("TV Shows");
        library
            .children(top.ino())
            .expect("a directory")
            .map(|node| node.name().to_owned())
            .collect()
    };
    let listed = shows(&bootstrapped);
    assert_eq!(listed.len(), 400);
    assert!(
        listed.windows(2).all(|pair| pair[0] < pair[1]),
        "listing order"
    );
    assert_eq!(listed, shows(&live));

    let (mut rebuilt, mut live) = (bootstrapped, live);
    rebuilt.replace_rules(preset("plex"));
    live.replace_rules(preset("plex"));
    assert_eq!(paths_and_inodes(&rebuilt), paths_and_inodes(&live));
}
