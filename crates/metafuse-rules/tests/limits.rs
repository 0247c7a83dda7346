//! What a rules document must contain and how large it may be; the same
//! verdict whether it comes from a file (text) or a `PUT` (JSON value).

use metafuse_rules::{MAX_DOCUMENT_BYTES, MAX_TEMPLATE_BYTES, Rules, RulesDocument, Severity};
use serde_json::json;

fn errors_of_text(text: &str) -> Vec<String> {
    match RulesDocument::parse_auto(text) {
        Err(error) => vec![error.to_string()],
        Ok(document) => errors_of(document),
    }
}

fn errors_of(document: RulesDocument) -> Vec<String> {
    match Rules::compile(document) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid
            .diagnostics
            .iter()
            .filter(|diagnostic| diagnostic.severity == Severity::Error)
            .map(ToString::to_string)
            .collect(),
    }
}

fn rule(template: &str) -> serde_json::Value {
    json!({"id": "r", "name": "R", "enabled": true, "priority": 1,
           "conditions": {"operator": "AND", "conditions": []},
           "template": template, "fallbackToUnsorted": true})
}

#[test]
fn empty_whitespace_and_object_without_rules_are_rejected() {
    for text in [
        "",
        "   \n\t ",
        "{}",
        "\u{feff}",
        "{\"version\": 1}",
        "version = 1\n",
    ] {
        let errors = errors_of_text(text);
        assert!(!errors.is_empty(), "{text:?} was accepted");
        assert!(
            errors.iter().any(|error| error.contains("rules")),
            "{text:?}: {errors:?}"
        );
    }
}

#[test]
fn an_empty_rule_list_needs_a_default_rule() {
    let without = serde_json::from_value(json!({"version": 1, "rules": []})).expect("shape");
    let errors = errors_of(without);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("defaultRule"), "{errors:?}");

    let with = serde_json::from_value(json!({"version": 1, "rules": [],
        "defaultRule": rule("Unsorted/{fileName}")}))
    .expect("shape");
    assert_eq!(errors_of(with), Vec::<String>::new());
}

#[test]
fn templates_longer_than_the_limit_are_rejected() {
    let at_limit = "x".repeat(MAX_TEMPLATE_BYTES);
    let document = serde_json::from_value(json!({"rules": [rule(&at_limit)]})).expect("shape");
    assert_eq!(errors_of(document), Vec::<String>::new());

    let five_mib = "x".repeat(5 * 1024 * 1024);
    let document = serde_json::from_value(json!({"rules": [rule(&five_mib)]})).expect("shape");
    let errors = errors_of(document);
    assert!(
        errors
            .iter()
            .any(|error| error.contains("template is 5242880 bytes")),
        "{errors:?}"
    );
}

#[test]
fn documents_larger_than_the_limit_are_rejected_as_text_and_as_values() {
    // Many rules, each within the template limit, together over 1 MiB.
    let rules: Vec<_> = (0..400)
        .map(|index| {
            let mut rule = rule(&"y".repeat(MAX_TEMPLATE_BYTES - 16));
            rule["id"] = json!(format!("rule-{index}"));
            rule
        })
        .collect();
    let value = json!({"version": 1, "rules": rules});
    let text = value.to_string();
    assert!(text.len() > MAX_DOCUMENT_BYTES);
    let from_text = errors_of_text(&text);
    assert!(
        from_text
            .iter()
            .any(|error| error.contains("at most 1048576")),
        "{from_text:?}"
    );
    let from_value = errors_of(serde_json::from_value(value).expect("shape"));
    assert!(
        from_value
            .iter()
            .any(|error| error.contains("at most 1048576")),
        "{from_value:?}"
    );
}
