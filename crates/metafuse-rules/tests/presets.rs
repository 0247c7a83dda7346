//! The shipped presets on a realistic sample, and the properties they make relevant.

use metafuse_rules::{Metadata, Rules};
use metafuse_testkit::TableCheck;

type Properties = &'static [(&'static str, &'static str)];

/// (description, properties, default, plex, jellyfin); each expectation is
/// (path, rule id or None for the built-in Unsorted).
type Row = (
    &'static str,
    Properties,
    (&'static str, Option<&'static str>),
    (&'static str, Option<&'static str>),
    (&'static str, Option<&'static str>),
);

const SAMPLE: &[Row] = &[
    (
        "episode",
        &[
            ("filePath", "watch/Dark.S01E03.1080p.mkv"),
            ("title", "Dark"),
            ("season", "1"),
            ("episode", "3"),
        ],
        ("TV Shows/Dark/S01/Dark S01E03.mkv", Some("tv-series")),
        ("TV Shows/Dark/Season 01/Dark - S01E03.mkv", Some("plex-tv")),
        ("Shows/Dark/Season 01/S01E03.mkv", Some("jellyfin-tv")),
    ),
    (
        "episode with year and version, title only as originalTitle",
        &[
            ("filePath", "w/d.mkv"),
            ("originalTitle", "Dunkel"),
            ("season", "02"),
            ("episode", "10"),
            ("year", "2017"),
            ("version", "Director's Cut"),
        ],
        (
            "TV Shows/Dunkel/S02/Dunkel S02E10 Director's Cut.mkv",
            Some("tv-series"),
        ),
        (
            "TV Shows/Dunkel/Season 02/Dunkel - S02E10 - Director's Cut.mkv",
            Some("plex-tv"),
        ),
        (
            "Shows/Dunkel (2017)/Season 02/S02E10.mkv",
            Some("jellyfin-tv"),
        ),
    ),
    (
        "special in season 0",
        &[
            ("filePath", "w/dw.special.mp4"),
            ("title", "Doctor Who"),
            ("season", "0"),
            ("episode", "1"),
        ],
        (
            "TV Shows/Doctor Who/S00/Doctor Who S00E01.mp4",
            Some("tv-series"),
        ),
        (
            "TV Shows/Doctor Who/Season 00/Doctor Who - S00E01.mp4",
            Some("plex-tv"),
        ),
        ("Shows/Doctor Who/Season 00/S00E01.mp4", Some("jellyfin-tv")),
    ),
    (
        "extra with a season but no episode",
        &[
            ("filePath", "w/Dark/behind the scenes.mkv"),
            ("title", "Dark"),
            ("season", "1"),
            ("extra", "true"),
        ],
        ("TV Shows/Dark/extra/Dark S01.mkv", Some("tv-extras")),
        ("Unsorted/behind the scenes.mkv", Some("fallback-unsorted")),
        ("Unsorted/behind the scenes.mkv", Some("fallback-unsorted")),
    ),
    (
        "subtitle with language",
        &[
            ("filePath", "w/dark.s01e03.en.srt"),
            ("title", "Dark"),
            ("season", "1"),
            ("episode", "3"),
            ("subtitleLanguage", "eng"),
        ],
        ("TV Shows/Dark/S01/Dark S01E03.eng.srt", Some("tv-series")),
        (
            "TV Shows/Dark/Season 01/Dark - S01E03.eng.srt",
            Some("plex-tv"),
        ),
        ("Shows/Dark/Season 01/S01E03.eng.srt", Some("jellyfin-tv")),
    ),
    (
        "empty subtitleLanguage counts as absent",
        &[
            ("filePath", "w/dark.s01e03.mkv"),
            ("title", "Dark"),
            ("season", "1"),
            ("episode", "3"),
            ("subtitleLanguage", ""),
            ("version", ""),
        ],
        ("TV Shows/Dark/S01/Dark S01E03.mkv", Some("tv-series")),
        ("TV Shows/Dark/Season 01/Dark - S01E03.mkv", Some("plex-tv")),
        ("Shows/Dark/Season 01/S01E03.mkv", Some("jellyfin-tv")),
    ),
    (
        "movie with year and version",
        &[
            ("filePath", "w/heat.mkv"),
            ("title", "Heat"),
            ("movieYear", "1995"),
            ("version", "Director's Cut"),
        ],
        (
            "Movies/Heat (1995)/Heat (1995) Director's Cut.mkv",
            Some("movies"),
        ),
        (
            "Movies/Heat (1995)/Heat (1995) - Director's Cut.mkv",
            Some("plex-movies"),
        ),
        (
            "Movies/Heat (1995)/Heat (1995).mkv",
            Some("jellyfin-movies"),
        ),
    ),
    (
        "movie without year",
        &[("filePath", "w/heat.mkv"), ("title", "Heat")],
        ("Movies/Heat/Heat.mkv", Some("movies")),
        (
            "Movies/Heat (Unknown)/Heat (Unknown).mkv",
            Some("plex-movies"),
        ),
        ("Unsorted/heat.mkv", None),
    ),
    (
        "movie subtitle with language",
        &[
            ("filePath", "w/heat.fr.srt"),
            ("title", "Heat"),
            ("movieYear", "1995"),
            ("subtitleLanguage", "fra"),
        ],
        ("Movies/Heat (1995)/Heat (1995).fra.srt", Some("movies")),
        (
            "Movies/Heat (1995)/Heat (1995).fra.srt",
            Some("plex-movies"),
        ),
        (
            "Movies/Heat (1995)/Heat (1995).fra.srt",
            Some("jellyfin-movies"),
        ),
    ),
    (
        "unicode and punctuation",
        &[
            ("filePath", "w/m.mkv"),
            (
                "title",
                "Mission: Impossible – Dead Reckoning? *Part* <One>",
            ),
            ("movieYear", "2023"),
        ],
        (
            "Movies/Mission Impossible – Dead Reckoning Part One (2023)/Mission Impossible – Dead Reckoning Part One (2023).mkv",
            Some("movies"),
        ),
        (
            "Movies/Mission Impossible – Dead Reckoning Part One (2023)/Mission Impossible – Dead Reckoning Part One (2023).mkv",
            Some("plex-movies"),
        ),
        (
            "Movies/Mission Impossible – Dead Reckoning Part One (2023)/Mission Impossible – Dead Reckoning Part One (2023).mkv",
            Some("jellyfin-movies"),
        ),
    ),
    (
        "a slash in a title never makes a directory",
        &[
            ("filePath", "w/acdc.mkv"),
            ("title", "AC/DC: Let There Be Rock"),
            ("movieYear", "1980"),
        ],
        (
            "Movies/AC-DC Let There Be Rock (1980)/AC-DC Let There Be Rock (1980).mkv",
            Some("movies"),
        ),
        (
            "Movies/AC-DC Let There Be Rock (1980)/AC-DC Let There Be Rock (1980).mkv",
            Some("plex-movies"),
        ),
        (
            "Movies/AC-DC Let There Be Rock (1980)/AC-DC Let There Be Rock (1980).mkv",
            Some("jellyfin-movies"),
        ),
    ),
    (
        "non-latin title",
        &[
            ("filePath", "w/spirited.MP4"),
            ("title", "千と千尋の神隠し"),
            ("movieYear", "2001"),
        ],
        (
            "Movies/千と千尋の神隠し (2001)/千と千尋の神隠し (2001).MP4",
            Some("movies"),
        ),
        (
            "Movies/千と千尋の神隠し (2001)/千と千尋の神隠し (2001).MP4",
            Some("plex-movies"),
        ),
        (
            "Movies/千と千尋の神隠し (2001)/千と千尋の神隠し (2001).MP4",
            Some("jellyfin-movies"),
        ),
    ),
    (
        "torrent",
        &[
            ("filePath", "t/heat.torrent"),
            ("title", "Heat"),
            ("movieYear", "1995"),
        ],
        ("Movies/Heat (1995)/Heat (1995).torrent", Some("movies")),
        (
            "Movies/Heat (1995)/Heat (1995).torrent",
            Some("plex-movies"),
        ),
        (
            "Movies/Heat (1995)/Heat (1995).torrent",
            Some("jellyfin-movies"),
        ),
    ),
    (
        "image with a fileType",
        &[
            ("filePath", "posters/heat.jpg"),
            ("fileType", "image"),
            ("title", "Heat"),
        ],
        ("Images/heat.jpg", Some("images")),
        ("Unsorted/heat.jpg", Some("fallback-unsorted")),
        ("Unsorted/heat.jpg", Some("fallback-unsorted")),
    ),
    (
        "image without a fileType (not inferred)",
        &[("filePath", "posters/poster.png")],
        ("Unsorted/poster.png", Some("fallback-unsorted")),
        ("Unsorted/poster.png", Some("fallback-unsorted")),
        ("Unsorted/poster.png", Some("fallback-unsorted")),
    ),
    (
        "file with no extension",
        &[("filePath", "misc/README"), ("title", "Readme")],
        ("Unsorted/README", Some("fallback-unsorted")),
        ("Unsorted/README", Some("fallback-unsorted")),
        ("Unsorted/README", Some("fallback-unsorted")),
    ),
    (
        "episode whose title is unknown falls back to Unsorted",
        &[
            ("filePath", "w/x.s01e01.mkv"),
            ("season", "1"),
            ("episode", "1"),
        ],
        ("Unsorted/x.s01e01.mkv", None),
        ("Unsorted/x.s01e01.mkv", None),
        ("Unsorted/x.s01e01.mkv", None),
    ),
    (
        "unparsable season is absent",
        &[
            ("filePath", "w/odd.mkv"),
            ("title", "Odd"),
            ("season", "S1"),
            ("episode", "2"),
        ],
        ("Movies/Odd/Odd.mkv", Some("movies")),
        (
            "Movies/Odd (Unknown)/Odd (Unknown).mkv",
            Some("plex-movies"),
        ),
        ("Unsorted/odd.mkv", None),
    ),
    (
        "no file path at all: the hashId names it",
        &[("title", "Ghost")],
        ("Unsorted/0123456789abcdef", None),
        ("Unsorted/0123456789abcdef", None),
        ("Unsorted/0123456789abcdef", None),
    ),
];

#[test]
fn presets_render_a_realistic_sample() {
    let presets = [("default", 0), ("plex", 1), ("jellyfin", 2)]
        .map(|(name, column)| (name, column, Rules::preset(name).expect("shipped preset")));
    let mut table = TableCheck::new();
    for (description, properties, default, plex, jellyfin) in SAMPLE {
        let metadata = Metadata::new(properties.iter().copied());
        for (name, column, rules) in &presets {
            let (expected_path, expected_rule) = [default, plex, jellyfin][*column];
            let rendered = rules.render("0123456789abcdef", &metadata);
            table.check_eq(
                (rendered.path.as_str(), rendered.rule_id),
                (*expected_path, *expected_rule),
                format!("{name} preset, {description}"),
            );
        }
    }
}

#[test]
fn relevant_properties_cover_every_field_the_rules_read_and_their_sources() {
    let default: Vec<String> = Rules::preset("default")
        .expect("preset")
        .relevant_properties()
        .names()
        .map(str::to_owned)
        .collect();
    let expected = [
        "ctime",
        "episode",
        "extension",
        "extra",
        "filePath",
        "fileName",
        "fileSize",
        "fileType",
        "movieYear",
        "mtime",
        "originalTitle",
        "season",
        "size",
        "sizeByte",
        "subtitleLanguage",
        "title",
        "version",
    ];
    let mut expected: Vec<String> = expected.iter().map(|name| (*name).to_owned()).collect();
    expected.sort();
    assert_eq!(default, expected);

    // `year` is derived from movieYear; a template fallback counts too.
    let jellyfin = Rules::preset("jellyfin")
        .expect("preset")
        .relevant_properties();
    assert!(jellyfin.is_relevant("year") && jellyfin.is_relevant("movieYear"));
    assert!(!jellyfin.is_relevant("version"));
    assert!(!jellyfin.is_relevant("genre"));
    assert!(jellyfin.is_relevant("originalTitle"));

    let custom = custom_rules("{titles.eng|genre}/{video/codec}");
    let relevant = custom.relevant_properties();
    for property in [
        "titles/eng",
        "titles",
        "genre",
        "video/codec",
        "video",
        "filePath",
    ] {
        assert!(relevant.is_relevant(property), "{property}");
    }
    assert!(!relevant.is_relevant("titles/fra"));
    assert_eq!(
        relevant.added_since(&jellyfin),
        vec!["genre", "titles/eng", "video/codec"]
    );
}

fn custom_rules(template: &str) -> Rules {
    let document = serde_json::json!({
        "version": 1,
        "rules": [
            {"id": "on", "name": "On", "enabled": true, "priority": 1,
             "conditions": {"operator": "AND", "conditions": []}, "template": template, "fallbackToUnsorted": true},
            {"id": "off", "name": "Off", "enabled": false, "priority": 2,
             "conditions": {"type": "EXISTS", "field": "ignoredBecauseDisabled"}, "template": "{alsoIgnored}", "fallbackToUnsorted": true}
        ]
    });
    let rules = Rules::compile(serde_json::from_value(document).expect("shape")).expect("valid");
    assert!(
        !rules
            .relevant_properties()
            .is_relevant("ignoredBecauseDisabled")
    );
    assert!(!rules.relevant_properties().is_relevant("alsoIgnored"));
    rules
}

#[test]
fn evaluation_order_is_priority_then_document_order() {
    let document = serde_json::json!({
        "version": 1,
        "rules": [
            {"id": "low", "name": "Low", "enabled": true, "priority": 1,
             "conditions": {"operator": "AND", "conditions": []}, "template": "low/{fileName}", "fallbackToUnsorted": false},
            {"id": "tie-first", "name": "Tie first", "enabled": true, "priority": 5,
             "conditions": {"operator": "AND", "conditions": []}, "template": "first/{missing}", "fallbackToUnsorted": false},
            {"id": "tie-second", "name": "Tie second", "enabled": true, "priority": 5,
             "conditions": {"type": "EXISTS", "field": "title"}, "template": "second/{fileName}", "fallbackToUnsorted": false},
            {"id": "disabled", "name": "Disabled", "enabled": false, "priority": 99,
             "conditions": {"operator": "AND", "conditions": []}, "template": "disabled/{fileName}", "fallbackToUnsorted": false}
        ],
        "defaultRule": {"id": "default", "name": "Default", "enabled": true, "priority": 0,
             "conditions": {"operator": "AND", "conditions": []}, "template": "default/{missing}", "fallbackToUnsorted": false}
    });
    let rules = Rules::compile(serde_json::from_value(document).expect("shape")).expect("valid");
    let with_title = Metadata::new([("filePath", "a/b.mkv"), ("title", "T")]);
    let rendered = rules.render("h", &with_title);
    assert_eq!(
        (rendered.path.as_str(), rendered.rule_id),
        ("second/b.mkv", Some("tie-second"))
    );
    let without_title = Metadata::new([("filePath", "a/b.mkv")]);
    let rendered = rules.render("h", &without_title);
    assert_eq!(
        (rendered.path.as_str(), rendered.rule_id),
        ("low/b.mkv", Some("low"))
    );
    // Nothing renders: the built-in Unsorted, named by the hashId without a file name.
    let nothing = Metadata::new([("title", "T")]);
    let rendered = rules.render("hash/../x", &nothing);
    assert_eq!(
        (rendered.path.as_str(), rendered.rule_id),
        ("Unsorted/hash-..-x", None)
    );
}

#[test]
fn compiled_rules_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Rules>();
    let rules = Rules::preset("default").expect("preset");
    let worker_rules = rules.clone();
    let path = std::thread::spawn(move || {
        worker_rules
            .render("h", &Metadata::new([("filePath", "a/b.png")]))
            .path
    })
    .join()
    .expect("worker renders");
    assert_eq!(path, "Unsorted/b.png");
}
