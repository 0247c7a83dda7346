//! Helpers shared by the integration tests.
#![allow(dead_code)]

use metafuse_rules::{Metadata, Rules, RulesDocument};
use serde_json::json;

/// Rules made of one always-matching rule `t` with `template` and no
/// fallback to Unsorted, so a failing template shows as `None`.
pub fn single_template_rules(template: &str) -> Rules {
    let document = json!({
        "version": 1,
        "rules": [{
            "id": "t", "name": "T", "enabled": true, "priority": 1,
            "conditions": {"operator": "AND", "conditions": []},
            "template": template, "fallbackToUnsorted": false
        }]
    });
    let document: RulesDocument =
        serde_json::from_value(document).expect("test document has the right shape");
    Rules::compile(document)
        .unwrap_or_else(|invalid| panic!("template {template:?} should compile: {invalid}"))
}

/// The path `template` renders for `properties`, or `None` if it fails.
pub fn render_template(template: &str, properties: &[(&str, &str)]) -> Option<String> {
    let rules = single_template_rules(template);
    let metadata = Metadata::new(properties.iter().copied());
    let rendered = rules.render("hash0001", &metadata);
    (rendered.rule_id == Some("t")).then_some(rendered.path)
}

/// Rules from a JSON value, panicking with the diagnostics if invalid.
pub fn rules_from_json(document: serde_json::Value) -> Rules {
    let document: RulesDocument =
        serde_json::from_value(document).expect("test document has the right shape");
    Rules::compile(document).unwrap_or_else(|invalid| panic!("{invalid}"))
}
