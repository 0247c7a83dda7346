//! Rules documents: the reference files, both formats, saving back, and
//! validation reporting every problem at once.

mod support;

use metafuse_rules::{
    Condition, ConditionSpelling, Format, PRESET_NAMES, Rules, RulesDocument, Severity, validate,
};
use metafuse_testkit::TableCheck;
use serde_json::json;

fn reference_rules(name: &str) -> Option<String> {
    let path = format!(
        "{}/../../../shared/spec/reference-rules/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(error) => {
            eprintln!(
                "skipping: reference rules {path} not readable ({error}); CI keeps shared/ beside the clone"
            );
            None
        }
    }
}

#[test]
fn reference_files_load_unchanged_and_save_back_identically() {
    for name in ["default", "plex", "jellyfin"] {
        let Some(text) = reference_rules(name) else {
            continue;
        };
        let document = RulesDocument::parse(&text, Format::Json).expect("reference file parses");
        let rules =
            Rules::compile(document.clone()).unwrap_or_else(|invalid| panic!("{name}: {invalid}"));
        let original: serde_json::Value = serde_json::from_str(&text).expect("reference is JSON");
        let saved: serde_json::Value =
            serde_json::from_str(&document.to_json_pretty()).expect("saved is JSON");
        assert_eq!(saved, original, "{name} saved back differs");
        assert_eq!(
            document.to_json_pretty(),
            text.trim_end(),
            "{name} layout differs"
        );
        // The old plex file's unquoted `Unknown` is the one expected warning.
        let warned_about_unknown = rules
            .warnings()
            .iter()
            .any(|warning| warning.message.contains("\"Unknown\""));
        assert_eq!(
            warned_about_unknown,
            name == "plex",
            "{name}: {:?}",
            rules.warnings()
        );
    }
}

#[test]
fn shipped_presets_match_the_reference_except_the_quoted_plex_fallback() {
    for name in PRESET_NAMES {
        let preset = Rules::preset(name).expect("preset exists");
        assert!(
            preset.warnings().is_empty(),
            "{name}: {:?}",
            preset.warnings()
        );
        let Some(text) = reference_rules(name) else {
            continue;
        };
        let reference = RulesDocument::parse_auto(&text).expect("reference parses");
        let expected = reference
            .to_json_pretty()
            .replace("{movieYear|Unknown}", "{movieYear|\\\"Unknown\\\"}");
        assert_eq!(preset.document().to_json_pretty(), expected, "{name}");
    }
    assert!(Rules::preset("kodi").is_err());
    assert_eq!(
        Rules::preset("kodi").expect_err("unknown").to_string(),
        "unknown rules preset \"kodi\" (known: default, plex, jellyfin)"
    );
}

#[test]
fn unknown_fields_survive_a_round_trip_in_both_formats() {
    let text = json!({
        "version": 1,
        "lastModified": "2024-05-01T10:00:00.000Z",
        "isDefault": false,
        "author": {"name": "me"},
        "rules": [{
            "id": "r", "name": "R", "enabled": true, "priority": 5,
            "conditions": {"operator": "and", "note": "api spelling", "conditions": [
                {"field": "title", "operator": "startsWith", "value": "A", "comment": "leaf extra"},
                {"type": "EXISTS", "field": "season"}
            ]},
            "template": "{title}", "fallbackToUnsorted": true,
            "color": "blue"
        }],
        "defaultRule": {"id": "d", "name": "D", "enabled": true, "priority": 0,
                        "conditions": {"operator": "AND", "conditions": []},
                        "template": "Unsorted/{fileName}", "fallbackToUnsorted": false}
    })
    .to_string();
    let document = RulesDocument::parse_auto(&text).expect("parses");
    assert_eq!(document.extra_fields["author"], json!({"name": "me"}));
    assert_eq!(document.rules[0].extra_fields["color"], json!("blue"));
    let Condition::Group(group) = &document.rules[0].conditions else {
        panic!("root is a group")
    };
    assert_eq!(group.operator, "and");
    let Condition::Leaf(leaf) = &group.conditions[0] else {
        panic!("first child is a leaf")
    };
    assert_eq!(leaf.spelling, ConditionSpelling::Operator);
    assert_eq!(leaf.extra_fields["comment"], json!("leaf extra"));

    let original: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let saved_json: serde_json::Value =
        serde_json::from_str(&document.to_json_pretty()).expect("JSON");
    assert_eq!(saved_json, original);

    let toml_text = document.to_toml().expect("writes TOML");
    let from_toml = RulesDocument::parse_auto(&toml_text).expect("reads its own TOML");
    assert_eq!(from_toml, document, "TOML round trip:\n{toml_text}");
}

#[test]
fn toml_documents_of_the_same_shape_load() {
    let example = include_str!("example.toml");
    assert_eq!(RulesDocument::detect_format(example), Format::Toml);
    let document = RulesDocument::parse(example, Format::Toml).expect("example parses");
    let rules = Rules::compile(document).unwrap_or_else(|invalid| panic!("{invalid}"));
    assert!(rules.warnings().is_empty(), "{:?}", rules.warnings());
    let metadata = metafuse_rules::Metadata::new([
        ("filePath", "in/x.mkv"),
        ("title", "Dark"),
        ("season", "1"),
        ("episode", "2"),
    ]);
    assert_eq!(
        rules.render("h", &metadata).path,
        "TV Shows/Dark/Season 01/Dark - S01E02.mkv"
    );

    let default_as_toml = Rules::preset("default")
        .expect("preset")
        .document()
        .to_toml()
        .expect("TOML");
    let reparsed = RulesDocument::parse_auto(&default_as_toml).expect("TOML parses");
    assert_eq!(
        &reparsed,
        Rules::preset("default").expect("preset").document()
    );
}

#[test]
fn malformed_documents_are_parse_errors_naming_the_problem() {
    let cases = [
        ("{\"rules\": [", "invalid json rules document"),
        ("{\"rules\": 3}", "invalid json rules document"),
        (
            "{\"rules\": [{\"conditions\": {\"conditions\": [1]}}]}",
            "condition 1 is not an object",
        ),
        ("{\"rules\": [{\"conditions\": [1]}]}", "expected a map"),
        ("rules = 3", "invalid toml rules document"),
        ("rules = [", "invalid toml rules document"),
    ];
    let mut table = TableCheck::new();
    for (text, expected) in cases {
        match RulesDocument::parse_auto(text) {
            Ok(_) => table.check(false, format!("{text}: parsed, expected an error")),
            Err(error) => {
                let error = error.to_string();
                table.check(error.contains(expected), format!("{text}: {error}"));
            }
        }
    }
}

#[test]
fn validation_reports_every_problem_at_once_with_rule_and_place() {
    let document: RulesDocument = serde_json::from_value(json!({
        "version": 1,
        "rules": [
            {"id": "movies", "name": "Movies", "enabled": true, "priority": 1,
             "conditions": {"operator": "AND", "conditions": [
                {"type": "EXISTS", "field": "title"},
                {"operator": "OR", "conditions": [
                    {"type": "SIMILAR", "field": "title", "value": "x"},
                    {"type": "EQUALS", "field": "title"},
                    {"type": "MATCHES", "field": "title", "value": "(unclosed"}
                ]}
             ]},
             "template": "Movies/{title:pad}/{}/{movieYear|Unkown}/{title", "fallbackToUnsorted": true},
            {"id": "movies", "name": "Again", "enabled": false, "priority": 1,
             "conditions": {"operator": "XOR", "conditions": []},
             "template": "", "fallbackToUnsorted": true},
            {"id": "", "name": "", "enabled": true, "priority": 1,
             "conditions": {"field": "season", "operator": "greaterThan", "value": "many"},
             "template": "{a|}", "fallbackToUnsorted": true}
        ]
    }))
    .expect("shape is fine; content is not");
    let diagnostics = validate(&document);
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    let expected = [
        "error: rule \"movies\" (Movies), conditions[1].conditions[0]: unknown operator \"SIMILAR\"",
        "error: rule \"movies\" (Movies), conditions[1].conditions[1]: missing value for EQUALS on field \"title\"",
        "error: rule \"movies\" (Movies), conditions[1].conditions[2]: invalid regex \"(unclosed\": unclosed group",
        "error: rule \"movies\" (Movies), template offset 14: unknown format \"pad\"",
        "error: rule \"movies\" (Movies), template offset 19: empty placeholder `{}`",
        "error: rule \"movies\" (Again), id: duplicate rule id \"movies\" (first used by rules[0])",
        "error: rule \"movies\" (Again), conditions: unknown group operator \"XOR\"",
        "error: rule \"movies\" (Again), template: template is empty",
        "error: rules[2].id: rule has no id",
        "error: rules[2].conditions: value \"many\" of greaterThan is not a number",
        "error: rules[2].template offset 3: empty alternative in `{a|}`",
        "warning: rule \"movies\" (Movies), template offset 41: unbalanced `{` is kept as literal text",
        "warning: rule \"movies\" (Movies), template offset 33: fallback \"Unkown\" is read as a field",
    ];
    for fragment in expected {
        assert!(
            lines.iter().any(|line| line.starts_with(fragment)),
            "missing {fragment:?} in:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(lines.len(), expected.len(), "{}", lines.join("\n"));
    assert!(
        diagnostics
            .iter()
            .all(|diagnostic| !diagnostic.to_string().contains('\n'))
    );
    let errors_first = diagnostics
        .windows(2)
        .all(|pair| pair[0].severity <= pair[1].severity);
    assert!(errors_first);

    let invalid = Rules::compile(document).expect_err("errors reject the document");
    assert_eq!(invalid.diagnostics, diagnostics);
    assert!(
        invalid
            .to_string()
            .starts_with("invalid rules document (11 errors)"),
        "{invalid}"
    );
    assert_eq!(
        diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count(),
        2
    );
}

#[test]
fn warnings_alone_do_not_stop_loading() {
    let rules = support::single_template_rules("Movies/{title|Unknown}");
    assert_eq!(rules.warnings().len(), 1);
    assert_eq!(rules.warnings()[0].severity, Severity::Warning);
    assert_eq!(rules.warnings()[0].rule_id.as_deref(), Some("t"));
    // A fallback that names a property used elsewhere is no typo.
    let rules = support::single_template_rules(
        "{title|originalTitle}/{titles.eng|titles.fra}/{genre}-{x|genre}",
    );
    assert!(rules.warnings().is_empty(), "{:?}", rules.warnings());
}
