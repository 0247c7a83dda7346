//! Validation: every problem of a document at once, each with its rule and
//! place, so a user fixes a rules file in one round.

use std::collections::{HashMap, HashSet};

use crate::condition::{Test, compile_condition};
use crate::diagnostic::{Diagnostic, Severity};
use crate::document::{MAX_DOCUMENT_BYTES, Rule, RulesDocument};
use crate::metadata::CORE_PROPERTIES;
use crate::template::{Template, parse_template};

/// Longest template accepted: real ones are under 300 bytes, and every
/// rebuild renders every file with it.
pub const MAX_TEMPLATE_BYTES: usize = 4 * 1024;

/// Property names writers are known to store (beyond the typed view):
/// an unquoted fallback naming one of these is surely meant as a field.
const KNOWN_PROPERTIES: &[&str] = &[
    "title",
    "originalTitle",
    "titles",
    "subtitleLanguage",
    "audioLanguage",
    "language",
    "version",
    "fileType",
    "mimeType",
    "season",
    "episode",
    "movieYear",
    "year",
    "extra",
    "genre",
    "genres",
    "video",
    "audio",
    "subtitles",
    "resolution",
    "duration",
    "episodeTitle",
    "imdbId",
    "tmdbId",
    "tvdbId",
];

/// A rule ready to evaluate.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRule {
    pub(crate) id: String,
    pub(crate) test: Test,
    pub(crate) template: Template,
    pub(crate) fallback_to_unsorted: bool,
}

/// Everything compilation produces: enabled rules in evaluation order, the
/// default rule (if enabled), and all diagnostics.
#[derive(Debug)]
pub(crate) struct CompiledDocument {
    pub(crate) ordered_rules: Vec<CompiledRule>,
    pub(crate) default_rule: Option<CompiledRule>,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

/// Every problem in `document`: errors (it cannot load) and warnings.
pub fn validate(document: &RulesDocument) -> Vec<Diagnostic> {
    compile_document(document).diagnostics
}

/// Who a diagnostic is about.
struct RuleLabel<'d> {
    rule: &'d Rule,
    /// `rules[3]` or `defaultRule`, used when the rule has no id.
    position: String,
}

impl RuleLabel<'_> {
    fn diagnostic(&self, severity: Severity, place: &str, message: String) -> Diagnostic {
        let has_id = !self.rule.id.trim().is_empty();
        Diagnostic {
            severity,
            rule_id: has_id.then(|| self.rule.id.clone()),
            rule_name: (!self.rule.name.trim().is_empty()).then(|| self.rule.name.clone()),
            place: if has_id {
                place.to_owned()
            } else {
                format!("{}.{place}", self.position)
            },
            message,
        }
    }
}

pub(crate) fn compile_document(document: &RulesDocument) -> CompiledDocument {
    let mut diagnostics = document_limits(document);
    let labelled_rules: Vec<RuleLabel<'_>> = document
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| RuleLabel {
            rule,
            position: format!("rules[{index}]"),
        })
        .chain(document.default_rule.iter().map(|rule| RuleLabel {
            rule,
            position: "defaultRule".to_owned(),
        }))
        .collect();

    let mut first_position_of_id: HashMap<&str, &str> = HashMap::new();
    for label in &labelled_rules {
        let id = label.rule.id.trim();
        if id.is_empty() {
            diagnostics.push(label.diagnostic(Severity::Error, "id", "rule has no id".to_owned()));
        } else if let Some(first_position) = first_position_of_id.get(id) {
            diagnostics.push(label.diagnostic(
                Severity::Error,
                "id",
                format!("duplicate rule id \"{id}\" (first used by {first_position})"),
            ));
        } else {
            first_position_of_id.insert(id, &label.position);
        }
    }

    let mut compiled = Vec::with_capacity(labelled_rules.len());
    let mut all_fallback_mentions = Vec::new();
    let mut primary_names: HashSet<String> = HashSet::new();
    for (rule_index, label) in labelled_rules.iter().enumerate() {
        let rule = label.rule;
        let mut condition_problems = Vec::new();
        let mut condition_mentions = Vec::new();
        let test = compile_condition(
            &rule.conditions,
            "conditions",
            &mut condition_problems,
            &mut condition_mentions,
        );
        for problem in condition_problems {
            diagnostics.push(label.diagnostic(problem.severity, &problem.place, problem.message));
        }
        if rule.template.trim().is_empty() {
            diagnostics.push(label.diagnostic(
                Severity::Error,
                "template",
                "template is empty".to_owned(),
            ));
        }
        let template_text = if rule.template.len() > MAX_TEMPLATE_BYTES {
            diagnostics.push(label.diagnostic(
                Severity::Error,
                "template",
                format!(
                    "template is {} bytes; at most {MAX_TEMPLATE_BYTES} are allowed",
                    rule.template.len()
                ),
            ));
            // Not parsed: the rule is rejected anyway, and parsing megabytes
            // would only produce more noise.
            ""
        } else {
            rule.template.as_str()
        };
        let parsed = parse_template(template_text);
        for problem in parsed.problems {
            diagnostics.push(label.diagnostic(
                problem.severity,
                &format!("template offset {}", problem.offset),
                problem.message,
            ));
        }
        primary_names.extend(
            condition_mentions
                .iter()
                .map(|name| root_segment(name).to_owned()),
        );
        for mention in parsed.mentions {
            if mention.is_fallback {
                all_fallback_mentions.push((rule_index, mention));
            } else {
                primary_names.insert(root_segment(&mention.name).to_owned());
            }
        }
        compiled.push(CompiledRule {
            id: rule.id.clone(),
            test,
            template: parsed.template,
            fallback_to_unsorted: rule.fallback_to_unsorted,
        });
    }

    for (rule_index, mention) in all_fallback_mentions {
        let root = root_segment(&mention.name);
        let known = primary_names.contains(root)
            || KNOWN_PROPERTIES.contains(&root)
            || CORE_PROPERTIES.contains(&root)
            || matches!(root, "filePath" | "size" | "mtime" | "ctime");
        if !known {
            diagnostics.push(labelled_rules[rule_index].diagnostic(
                Severity::Warning,
                &format!("template offset {}", mention.offset),
                format!(
                    "fallback \"{name}\" is read as a field but no rule uses such a property; quote it (\"{name}\") if it is meant as text",
                    name = mention.name
                ),
            ));
        }
    }

    diagnostics.sort_by_key(|diagnostic| diagnostic.severity);
    let rule_count = document.rules.len();
    let mut default_rule = None;
    let mut ordered_rules = Vec::new();
    for (index, compiled_rule) in compiled.into_iter().enumerate() {
        let rule = labelled_rules[index].rule;
        if !rule.enabled {
            continue;
        }
        if index < rule_count {
            ordered_rules.push((rule.priority, compiled_rule));
        } else {
            default_rule = Some(compiled_rule);
        }
    }
    // A stable sort keeps document order among equal priorities.
    ordered_rules.sort_by_key(|(priority, _)| std::cmp::Reverse(*priority));
    CompiledDocument {
        ordered_rules: ordered_rules.into_iter().map(|(_, rule)| rule).collect(),
        default_rule,
        diagnostics,
    }
}

/// Problems of the document as a whole: its size (as compact JSON, the form
/// a `PUT` sends, so a file and a `PUT` are judged alike) and a rules list
/// that would send every file to `Unsorted/` without saying so.
fn document_limits(document: &RulesDocument) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    let document_error = |message: String| Diagnostic {
        severity: Severity::Error,
        rule_id: None,
        rule_name: None,
        place: "document".to_owned(),
        message,
    };
    if document.rules.is_empty() && document.default_rule.is_none() {
        diagnostics.push(document_error(
            "\"rules\" is empty and there is no \"defaultRule\": every file would go to Unsorted/"
                .to_owned(),
        ));
    }
    let n_bytes = serde_json::to_vec(document).map_or(0, |json| json.len());
    if n_bytes > MAX_DOCUMENT_BYTES {
        diagnostics.push(document_error(format!(
            "rules document is {n_bytes} bytes as json; at most {MAX_DOCUMENT_BYTES} are allowed"
        )));
    }
    diagnostics
}

/// `titles.eng` → `titles`: fallbacks are judged by the property they live under.
fn root_segment(name: &str) -> &str {
    name.split(['.', '/']).next().unwrap_or(name)
}
