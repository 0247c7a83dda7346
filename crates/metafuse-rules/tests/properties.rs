//! Property tests: whatever the template and the metadata, rendering never
//! panics and every path is safe.

mod support;

use metafuse_rules::{Metadata, Rules, RulesDocument};
use proptest::prelude::*;

/// Text that exercises the hygiene rules: separators, dots, controls,
/// stripped characters, multi-byte characters, braces.
fn nasty_text() -> impl Strategy<Value = String> {
    nasty_text_from("[<>:\"|?*{}()\t\n ]")
}

/// Like [`nasty_text`] without braces, so template text stays free of
/// placeholder errors (`{}`) that would reject the whole template.
fn nasty_literal() -> impl Strategy<Value = String> {
    nasty_text_from("[<>:\"|?*()\t\n ]")
}

fn nasty_text_from(punctuation: &'static str) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("/".to_owned()),
        Just("\\".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{85}".to_owned()),
        Just("é".to_owned()),
        Just("日本".to_owned()),
        punctuation,
        "[a-zA-Z0-9]{1,8}",
        Just("x".repeat(300)),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

const FIELDS: &[&str] = &[
    "title",
    "originalTitle",
    "season",
    "episode",
    "movieYear",
    "year",
    "extra",
    "fileName",
    "extension",
    "fileType",
    "size",
    "mtime",
    "titles.eng",
    "video/codec",
    "version",
];

/// Templates built from the language's constructs, with nasty literal text.
fn template() -> impl Strategy<Value = String> {
    let field = prop::sample::select(FIELDS).prop_map(str::to_owned);
    let format = prop::sample::select(&["", ":pad2", ":pad3", ":upper", ":lower", ":pad12"][..]);
    let placeholder = (
        field.clone(),
        prop::option::of(field.clone()),
        format,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(first, second, format, optional, quoted_fallback)| {
            let mut body = first;
            if let Some(second) = second {
                body.push('|');
                body.push_str(&second);
            }
            if quoted_fallback {
                body.push_str("|\"Unknown\"");
            }
            format!("{{{body}{format}{}}}", if optional { "?" } else { "" })
        });
    let leaf = prop_oneof![nasty_literal(), placeholder];
    let piece = leaf.prop_recursive(3, 16, 4, move |inner| {
        (
            prop::sample::select(FIELDS),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(field, pieces)| format!("{{{field}?({})}}", pieces.concat()))
    });
    prop::collection::vec(piece, 1..8)
        .prop_map(|pieces| pieces.concat())
        .prop_filter("an empty template is a validation error", |template| {
            !template.trim().is_empty()
        })
}

fn properties() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        prop::sample::select(FIELDS).prop_map(|field| field.replace('.', "/")),
        Just("filePath".to_owned()),
        Just("fileSize".to_owned()),
    ];
    let value = prop_oneof![
        nasty_text(),
        "[0-9]{1,12}",
        Just("true".to_owned()),
        Just(String::new())
    ];
    prop::collection::vec((name, value), 0..12)
}

fn assert_safe(path: &str) {
    assert!(!path.is_empty(), "empty path");
    assert!(!path.starts_with('/'), "absolute: {path:?}");
    for component in path.split('/') {
        assert!(!component.is_empty(), "empty component in {path:?}");
        assert!(
            component != "." && component != "..",
            "dot component in {path:?}"
        );
        assert!(
            component.len() <= 255,
            "component of {} bytes in {path:?}",
            component.len()
        );
    }
    for character in path.chars() {
        assert!(!character.is_control(), "control character in {path:?}");
        assert!(
            !"<>:\"|?*\\".contains(character),
            "stripped character {character:?} in {path:?}"
        );
    }
}

fn render_all(rules: &Rules, hash_id: &str, properties: &[(String, String)]) -> String {
    let metadata = Metadata::new(
        properties
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    rules.render(hash_id, &metadata).path
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn built_templates_always_render_safe_paths(
        template in template(),
        properties in properties(),
        hash_id in prop_oneof![Just("0123abcd".to_owned()), nasty_text()],
    ) {
        // The generator can nest past the template size limit now and then;
        // such a template is refused at load (tested in validation), not
        // rendered.
        prop_assume!(template.len() <= metafuse_rules::MAX_TEMPLATE_BYTES);
        let rules = support::single_template_rules(&template);
        assert_safe(&render_all(&rules, &hash_id, &properties));
    }

    #[test]
    fn arbitrary_templates_never_panic_and_render_safe_paths(
        template in "\\PC{0,60}|[{}()|?:\"a-z/.\\\\]{0,40}",
        properties in properties(),
    ) {
        let document: RulesDocument = serde_json::from_value(serde_json::json!({
            "version": 1,
            "rules": [{"id": "t", "name": "T", "enabled": true, "priority": 1,
                       "conditions": {"operator": "AND", "conditions": []},
                       "template": template, "fallbackToUnsorted": false}]
        })).expect("shape");
        // Templates with errors are rejected at load time: nothing to render.
        if let Ok(rules) = Rules::compile(document) {
            assert_safe(&render_all(&rules, "0123abcd", &properties));
        }
    }

    #[test]
    fn presets_render_safe_paths(properties in properties()) {
        for name in metafuse_rules::PRESET_NAMES {
            let rules = Rules::preset(name).expect("preset");
            assert_safe(&render_all(&rules, "0123abcd", &properties));
        }
    }
}
