//! The rules language, row by row of the spec: templates (§4), conditions
//! (§4), the typed view (§3) and path hygiene (§5).

mod support;

use std::borrow::Cow;

use metafuse_rules::{FieldValue, Metadata};
use metafuse_testkit::TableCheck;
use serde_json::json;
use support::{render_template, rules_from_json};

/// Stored properties of one test file, as (name, value).
type Properties<'p> = &'p [(&'p str, &'p str)];

#[test]
fn template_syntax_rows() {
    let dark: Properties<'_> = &[
        ("title", "Dark"),
        ("season", "1"),
        ("episode", "3"),
        ("filePath", "x/dark.mkv"),
    ];
    let cases: &[(&str, Properties<'_>, Option<&str>)] = &[
        // {a}: value; absent or "" fails the template.
        ("{title}", dark, Some("Dark")),
        ("{version}", dark, None),
        ("{title}", &[("title", "")], None),
        // {a:fmt}
        ("{season:pad2}", &[("season", "1")], Some("01")),
        ("{season:pad2}", &[("season", "01")], Some("01")),
        ("{season:pad3}", &[("season", "7")], Some("007")),
        ("{episode:pad4}", &[("episode", "12")], Some("0012")),
        ("{season:pad2}", &[("season", "123")], Some("123")),
        ("{season:pad10}", &[("season", "1")], Some("0000000001")),
        ("{title:pad5}", &[("title", "ab")], Some("000ab")),
        ("{title:upper}", dark, Some("DARK")),
        ("{title:uppercase}", dark, Some("DARK")),
        ("{title:lower}", dark, Some("dark")),
        ("{title:lowercase}", dark, Some("dark")),
        // {a?} and {a:fmt?}: nothing if absent.
        ("{title}{version?}", dark, Some("Dark")),
        (
            "{title}{version:upper?}",
            &[("title", "Dark"), ("version", "Extended")],
            Some("DarkEXTENDED"),
        ),
        ("x{season:pad2?}", &[], Some("x")),
        // {a?(inner)}: inner only if a is present; a failing inner gives nothing.
        ("{title}{season?( S{season:pad2})}", dark, Some("Dark S01")),
        ("{title}{version?( S{season:pad2})}", dark, Some("Dark")),
        ("{title}{season?( [{version}])}.mkv", dark, Some("Dark.mkv")),
        (
            "{season?(S{season:pad2}{episode?(E{episode:pad2})})}",
            dark,
            Some("S01E03"),
        ),
        (
            "{season?(S{season:pad2}{version?(E{episode:pad2})})}",
            dark,
            Some("S01"),
        ),
        (
            "{title}{movieYear?( ({movieYear}))}",
            &[("title", "Heat"), ("movieYear", "1995")],
            Some("Heat (1995)"),
        ),
        // {a|b|c}: first present; quoted or non-identifier text is a literal.
        (
            "{title|originalTitle}",
            &[("originalTitle", "Dunkel")],
            Some("Dunkel"),
        ),
        (
            "{title|originalTitle}",
            &[("title", "Dark"), ("originalTitle", "Dunkel")],
            Some("Dark"),
        ),
        ("{title|originalTitle}", &[], None),
        ("{a|b|title}", dark, Some("Dark")),
        ("{movieYear|\"Unknown\"}", &[], Some("Unknown")),
        (
            "{movieYear|\"Unknown\"}",
            &[("movieYear", "1995")],
            Some("1995"),
        ),
        ("{movieYear|Unknown}", &[], None),
        ("{movieYear|-}", &[], Some("-")),
        ("{movieYear|19 99}", &[], Some("19 99")),
        ("{title|\"x:y\"}", &[], Some("xy")),
        (
            "{title|originalTitle:upper}",
            &[("originalTitle", "Dunkel")],
            Some("DUNKEL"),
        ),
        ("{title|originalTitle?}x", &[], Some("x")),
        // Unbalanced braces are literal text.
        ("a{b", &[], Some("a{b")),
        ("a}b", &[], Some("a}b")),
        ("{title", dark, Some("{title")),
        ("x{season?(y", dark, Some("x{season(y")),
        ("{title}{", dark, Some("Dark{")),
        // Nested properties in either spelling, any relevant property.
        ("{titles.eng}", &[("titles/eng", "Dark")], Some("Dark")),
        ("{titles/eng}", &[("titles/eng", "Dark")], Some("Dark")),
        (
            "{video/codec}-{genre}",
            &[("video/codec", "hevc"), ("genre", "Drama")],
            Some("hevc-Drama"),
        ),
        // Typed fields print their typed value.
        ("{season}", &[("season", "01")], Some("1")),
        ("{extra}", &[("extra", "true")], Some("true")),
        ("{size}", &[("fileSize", "1234")], Some("1234")),
        ("{year}", &[("movieYear", "1999")], Some("1999")),
        (
            "{fileName}",
            &[("filePath", "watch/a/b.mkv")],
            Some("b.mkv"),
        ),
        (
            "{extension:upper}",
            &[("filePath", "watch/a/b.mkv")],
            Some("MKV"),
        ),
    ];
    let mut table = TableCheck::new();
    for (template, properties, expected) in cases {
        table.check_eq(
            render_template(template, properties).as_deref(),
            *expected,
            format!("template {template:?} with {properties:?}"),
        );
    }
}

fn condition_matches(condition: serde_json::Value, properties: &[(&str, &str)]) -> bool {
    let rules = rules_from_json(json!({
        "version": 1,
        "rules": [{"id": "c", "name": "C", "enabled": true, "priority": 1,
                   "conditions": condition, "template": "matched", "fallbackToUnsorted": false}]
    }));
    rules
        .render("h", &Metadata::new(properties.iter().copied()))
        .rule_id
        == Some("c")
}

#[test]
fn condition_rows() {
    let episode: Properties<'_> = &[
        ("filePath", "w/dark.S01E03.MKV"),
        ("title", "Dark"),
        ("season", "01"),
        ("extra", "true"),
        ("subtitleLanguage", ""),
        ("rating", "7.5"),
    ];
    let cases: &[(serde_json::Value, bool)] = &[
        (json!({"operator": "AND", "conditions": []}), true),
        (json!({"operator": "OR", "conditions": []}), true),
        (json!({"type": "EXISTS", "field": "title"}), true),
        (
            json!({"type": "EXISTS", "field": "subtitleLanguage"}),
            false,
        ),
        (
            json!({"type": "NOT_EXISTS", "field": "subtitleLanguage"}),
            true,
        ),
        (json!({"type": "NOT_EXISTS", "field": "episode"}), true),
        // Derived fields exist when only filePath is stored.
        (
            json!({"type": "EQUALS", "field": "fileType", "value": "video"}),
            true,
        ),
        (json!({"type": "EXISTS", "field": "extension"}), true),
        (
            json!({"type": "EQUALS", "field": "extension", "value": "MKV"}),
            true,
        ),
        // Boolean value compares with the boolean field.
        (
            json!({"type": "EQUALS", "field": "extra", "value": true}),
            true,
        ),
        (
            json!({"type": "EQUALS", "field": "extra", "value": false}),
            false,
        ),
        (
            json!({"type": "NOT_EQUALS", "field": "extra", "value": true}),
            false,
        ),
        // Numeric value compares numerically; a string value as text.
        (
            json!({"type": "EQUALS", "field": "season", "value": 1}),
            true,
        ),
        (
            json!({"type": "EQUALS", "field": "season", "value": "1"}),
            true,
        ),
        (
            json!({"type": "EQUALS", "field": "season", "value": "01"}),
            false,
        ),
        (
            json!({"type": "EQUALS", "field": "rating", "value": 7.5}),
            true,
        ),
        (
            json!({"type": "EQUALS", "field": "title", "value": "dark"}),
            false,
        ),
        (
            json!({"type": "NOT_EQUALS", "field": "title", "value": "Heat"}),
            true,
        ),
        (
            json!({"type": "NOT_EQUALS", "field": "missing", "value": "Heat"}),
            true,
        ),
        (
            json!({"type": "CONTAINS", "field": "title", "value": "ar"}),
            true,
        ),
        (
            json!({"type": "CONTAINS", "field": "missing", "value": ""}),
            false,
        ),
        (
            json!({"type": "MATCHES", "field": "filePath", "value": "(?i)s\\d+e\\d+"}),
            true,
        ),
        (
            json!({"type": "MATCHES", "field": "missing", "value": ".*"}),
            false,
        ),
        // The API document's spelling.
        (
            json!({"operator": "and", "conditions": [{"field": "title", "operator": "startsWith", "value": "Da"}]}),
            true,
        ),
        (
            json!({"field": "title", "operator": "endsWith", "value": "rk"}),
            true,
        ),
        (
            json!({"field": "title", "operator": "endsWith", "value": "Da"}),
            false,
        ),
        (json!({"field": "title", "operator": "exists"}), true),
        (json!({"field": "episode", "operator": "notExists"}), true),
        (
            json!({"field": "title", "operator": "equals", "value": "Dark"}),
            true,
        ),
        (
            json!({"field": "title", "operator": "notEquals", "value": "Dark"}),
            false,
        ),
        (
            json!({"field": "title", "operator": "contains", "value": "ar"}),
            true,
        ),
        (
            json!({"field": "title", "operator": "matches", "value": "^D"}),
            true,
        ),
        (
            json!({"field": "season", "operator": "greaterThan", "value": 0}),
            true,
        ),
        (
            json!({"field": "season", "operator": "lessThan", "value": "1"}),
            false,
        ),
        (
            json!({"field": "rating", "operator": "lessThan", "value": 8}),
            true,
        ),
        (
            json!({"field": "title", "operator": "greaterThan", "value": 0}),
            false,
        ),
        (
            json!({"field": "missing", "operator": "lessThan", "value": 10}),
            false,
        ),
        // Groups.
        (
            json!({"operator": "OR", "conditions": [
            {"type": "EXISTS", "field": "missing"}, {"type": "EXISTS", "field": "title"}]}),
            true,
        ),
        (
            json!({"operator": "AND", "conditions": [
            {"type": "EXISTS", "field": "missing"}, {"type": "EXISTS", "field": "title"}]}),
            false,
        ),
        (
            json!({"operator": "AND", "conditions": [{"operator": "OR", "conditions": [
            {"type": "EQUALS", "field": "fileType", "value": "subtitle"},
            {"type": "EQUALS", "field": "fileType", "value": "video"}]}]}),
            true,
        ),
    ];
    let mut table = TableCheck::new();
    for (condition, expected) in cases {
        table.check_eq(
            condition_matches(condition.clone(), episode),
            *expected,
            condition,
        );
    }
}

#[test]
fn typed_view_rows() {
    let text = |value: &'static str| Some(FieldValue::Text(Cow::Borrowed(value)));
    let cases: &[(Properties<'_>, &str, Option<FieldValue<'static>>)] = &[
        (&[("season", "01")], "season", Some(FieldValue::Integer(1))),
        (
            &[("episode", "12abc")],
            "episode",
            Some(FieldValue::Integer(12)),
        ),
        (&[("season", "S01")], "season", None),
        (&[("season", "")], "season", None),
        (
            &[("movieYear", "2010")],
            "movieYear",
            Some(FieldValue::Integer(2010)),
        ),
        (
            &[("year", "2011"), ("movieYear", "2010")],
            "year",
            Some(FieldValue::Integer(2011)),
        ),
        (
            &[("movieYear", "2010")],
            "year",
            Some(FieldValue::Integer(2010)),
        ),
        (
            &[("year", "n/a"), ("movieYear", "2010")],
            "year",
            Some(FieldValue::Integer(2010)),
        ),
        (
            &[("extra", "true")],
            "extra",
            Some(FieldValue::Boolean(true)),
        ),
        (
            &[("extra", "TRUE")],
            "extra",
            Some(FieldValue::Boolean(false)),
        ),
        (
            &[("extra", "false")],
            "extra",
            Some(FieldValue::Boolean(false)),
        ),
        (&[("extra", "")], "extra", None),
        (&[("titles/eng", "Dark")], "titles.eng", text("Dark")),
        (&[("titles/eng", "Dark")], "titles/eng", text("Dark")),
        (&[("audio/0/codec", "aac")], "audio.0.codec", text("aac")),
        (
            &[("fileName", "given.mkv"), ("filePath", "a/b.mkv")],
            "fileName",
            text("given.mkv"),
        ),
        (&[("filePath", "a/b/c.mkv")], "fileName", text("c.mkv")),
        (&[("filePath", "a/b/c.mkv")], "filePath", text("a/b/c.mkv")),
        (
            &[("extension", "mp4"), ("filePath", "a/b.mkv")],
            "extension",
            text("mp4"),
        ),
        (&[("filePath", "a/b.tar.gz")], "extension", text("gz")),
        (&[("filePath", "a/.hidden")], "extension", None),
        (&[("filePath", "a/noext")], "extension", None),
        (&[("fileName", "b.srt")], "extension", text("srt")),
        (
            &[("fileType", "image"), ("filePath", "a/b.mkv")],
            "fileType",
            text("image"),
        ),
        (&[("filePath", "a/b.MKV")], "fileType", text("video")),
        (&[("filePath", "a/b.m4v")], "fileType", text("video")),
        (&[("filePath", "a/b.Ass")], "fileType", text("subtitle")),
        (&[("filePath", "a/b.idx")], "fileType", text("subtitle")),
        (&[("filePath", "a/b.torrent")], "fileType", text("torrent")),
        (&[("filePath", "a/b.jpg")], "fileType", None),
        (
            &[("size", "20"), ("fileSize", "10"), ("sizeByte", "30")],
            "size",
            Some(FieldValue::Integer(10)),
        ),
        (
            &[("size", "20"), ("sizeByte", "30")],
            "size",
            Some(FieldValue::Integer(20)),
        ),
        (&[("sizeByte", "30")], "size", Some(FieldValue::Integer(30))),
        (
            &[("mtime", "1700000000123")],
            "mtime",
            Some(FieldValue::Integer(1_700_000_000_123)),
        ),
        (
            &[("mtime", "1700000000")],
            "mtime",
            Some(FieldValue::Integer(1_700_000_000_000)),
        ),
        (
            &[("mtime", "2023-11-14T22:13:20Z")],
            "mtime",
            Some(FieldValue::Integer(1_700_000_000_000)),
        ),
        (
            &[("mtime", "1700000000")],
            "ctime",
            Some(FieldValue::Integer(1_700_000_000_000)),
        ),
        (
            &[("mtime", "1700000000"), ("ctime", "1600000000")],
            "ctime",
            Some(FieldValue::Integer(1_600_000_000_000)),
        ),
        (&[("genre", "Drama")], "genre", text("Drama")),
        (&[("genre", "")], "genre", None),
    ];
    let mut table = TableCheck::new();
    for (properties, field, expected) in cases {
        let metadata = Metadata::new(properties.iter().copied());
        table.check_eq(
            metadata.get(field),
            expected.clone(),
            format!("{field} of {properties:?}"),
        );
    }
}

#[test]
fn typed_view_accessors() {
    let metadata = Metadata::new([
        ("filePath", "watch/Heat.1995.mkv"),
        ("sizeByte", "5"),
        ("size", "7"),
        ("mtime", "2024-01-01T00:00:00+01:00"),
    ]);
    assert_eq!(metadata.file_path(), Some("watch/Heat.1995.mkv"));
    assert_eq!(metadata.file_name().as_deref(), Some("Heat.1995.mkv"));
    assert_eq!(metadata.size_bytes(), Some(7));
    assert_eq!(metadata.mtime_ms(), Some(1_704_063_600_000));
    assert_eq!(metadata.ctime_ms(), Some(1_704_063_600_000));
    let empty = Metadata::new([("filePath", ""), ("mtime", "soon")]);
    assert_eq!(empty.file_path(), None);
    assert_eq!(empty.file_name(), None);
    assert_eq!(empty.mtime_ms(), None);
    assert_eq!(empty.ctime_ms(), None);
}

#[test]
fn path_hygiene_rows() {
    let long_title = "Ä".repeat(200);
    let long_expected = format!("{}.mkv", "Ä".repeat(125));
    let cases: &[(&str, Properties<'_>, &str)] = &[
        // Reference sanitation of template text.
        ("Mo<v>i:e\"s|?*\\{title}", &[("title", "x")], "Movies/x"),
        // Values never create directories.
        (
            "Music/{title}.mp3",
            &[("title", "AC/DC")],
            "Music/AC-DC.mp3",
        ),
        (
            "Movies/{title}",
            &[("title", "Face/Off")],
            "Movies/Face-Off",
        ),
        (
            "Movies/{title}",
            &[("title", "Back\\slash")],
            "Movies/Back-slash",
        ),
        (
            "Movies/{title}",
            &[("title", "Who? What: \"Why\" <*|>")],
            "Movies/Who What Why ",
        ),
        (
            "Movies/{title}",
            &[("title", "Tab\there\u{0}nul\u{7f}\u{9c}")],
            "Movies/Tabherenul",
        ),
        // Empty components collapse; dot components become `_`.
        ("Movies//{title}/", &[("title", "x")], "Movies/x/hash0001"),
        ("/abs/{title}", &[("title", "x")], "abs/x"),
        ("../{title}", &[("title", "x")], "_/x"),
        ("./a/../{title}", &[("title", "x")], "_/a/_/x"),
        ("Movies/{title}", &[("title", "..")], "Movies/_"),
        (
            "Movies/{title}/{version}",
            &[("title", "."), ("version", "..")],
            "Movies/_/_",
        ),
        (
            "Movies/{title}.{extension}",
            &[("title", ".."), ("extension", "mkv")],
            "Movies/...mkv",
        ),
        // An empty name falls back to the hashId.
        ("Movies/{title?}", &[], "Movies/hash0001"),
        ("{title?}", &[], "hash0001"),
        ("Movies/{title}", &[("title", "<>")], "Movies/hash0001"),
        // Long components are cut keeping the extension.
        (
            "Movies/{title}.mkv",
            &[("title", long_title.as_str())],
            long_expected.as_str(),
        ),
        // Unicode and punctuation survive.
        (
            "{title}",
            &[("title", "Amélie — L'été (2001) #1 & co. 日本")],
            "Amélie — L'été (2001) #1 & co. 日本",
        ),
    ];
    let mut table = TableCheck::new();
    for (template, properties, expected) in cases {
        let expected = if expected.starts_with("ÄÄ") {
            format!("Movies/{expected}")
        } else {
            (*expected).to_owned()
        };
        table.check_eq(
            render_template(template, properties),
            Some(expected),
            format!("template {template:?} with {properties:?}"),
        );
    }
}
