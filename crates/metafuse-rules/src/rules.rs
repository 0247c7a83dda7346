//! Compiled rules: immutable, cheap to clone, shared by every reader.

use std::fmt;
use std::sync::Arc;

use crate::diagnostic::{Diagnostic, Severity};
use crate::document::RulesDocument;
use crate::metadata::Metadata;
use crate::relevant::RelevantProperties;
use crate::sanitize::{finish_path, push_value};
use crate::validate::{CompiledDocument, CompiledRule, compile_document};

/// Names accepted by [`Rules::preset`].
pub const PRESET_NAMES: &[&str] = &["default", "plex", "jellyfin"];

const PRESET_DEFAULT: &str = include_str!("../presets/default.json");
const PRESET_PLEX: &str = include_str!("../presets/plex.json");
const PRESET_JELLYFIN: &str = include_str!("../presets/jellyfin.json");

/// A document with errors; nothing of it was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRules {
    /// Every error and warning found.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for InvalidRules {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self
            .diagnostics
            .iter()
            .filter(|diagnostic| diagnostic.severity == Severity::Error)
            .count();
        write!(
            formatter,
            "invalid rules document ({errors} error{})",
            if errors == 1 { "" } else { "s" }
        )?;
        for diagnostic in &self.diagnostics {
            write!(formatter, "\n  {diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidRules {}

/// [`Rules::preset`] was given a name not in [`PRESET_NAMES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown rules preset \"{name}\" (known: default, plex, jellyfin)")]
pub struct UnknownPreset {
    /// The name asked for.
    pub name: String,
}

/// A rendered path and the rule that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered<'r> {
    /// Safe relative path, `/`-separated, no leading `/`, no `.`/`..` or empty component.
    pub path: String,
    /// The rule whose template gave the path (the default rule's id when it
    /// did); `None` when the path is the built-in `Unsorted/{fileName}`,
    /// whether reached through `fallbackToUnsorted` or as the last resort.
    pub rule_id: Option<&'r str>,
}

/// A validated, compiled rules document. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Rules {
    inner: Arc<CompiledRules>,
}

#[derive(Debug)]
struct CompiledRules {
    document: RulesDocument,
    ordered_rules: Vec<CompiledRule>,
    default_rule: Option<CompiledRule>,
    warnings: Vec<Diagnostic>,
    relevant: RelevantProperties,
    output_capacity: usize,
}

impl Rules {
    /// Validates and compiles; any error rejects the whole document.
    pub fn compile(document: RulesDocument) -> Result<Rules, InvalidRules> {
        let CompiledDocument {
            ordered_rules,
            default_rule,
            diagnostics,
        } = compile_document(&document);
        if diagnostics
            .iter()
            .any(|diagnostic| diagnostic.severity == Severity::Error)
        {
            return Err(InvalidRules { diagnostics });
        }
        let mut names = Vec::new();
        for rule in ordered_rules.iter().chain(default_rule.iter()) {
            let mut collect =
                |field: &crate::metadata::Field| names.extend(field.source_properties());
            rule.template.visit_fields(&mut collect);
            rule.test.visit_fields(&mut collect);
        }
        let relevant = RelevantProperties::from_names(names);
        let output_capacity = ordered_rules
            .iter()
            .chain(default_rule.iter())
            .map(|rule| rule.template.size_hint)
            .max()
            .unwrap_or(0)
            + 32;
        Ok(Rules {
            inner: Arc::new(CompiledRules {
                document,
                ordered_rules,
                default_rule,
                warnings: diagnostics,
                relevant,
                output_capacity,
            }),
        })
    }

    /// One of the shipped configurations (see [`PRESET_NAMES`]).
    pub fn preset(name: &str) -> Result<Rules, UnknownPreset> {
        let text = match name {
            "default" => PRESET_DEFAULT,
            "plex" => PRESET_PLEX,
            "jellyfin" => PRESET_JELLYFIN,
            _ => {
                return Err(UnknownPreset {
                    name: name.to_owned(),
                });
            }
        };
        // The presets are fixed data checked by this crate's tests.
        let document = RulesDocument::parse_auto(text).expect("shipped preset parses");
        Ok(Rules::compile(document).expect("shipped preset is valid"))
    }

    /// Warnings found while compiling (errors would have rejected it).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.inner.warnings
    }

    /// The document these rules were compiled from.
    pub fn document(&self) -> &RulesDocument {
        &self.inner.document
    }

    /// Core properties plus every property the enabled rules read.
    pub fn relevant_properties(&self) -> RelevantProperties {
        self.inner.relevant.clone()
    }

    /// The path of one file: enabled rules by descending priority, then the
    /// default rule, then `Unsorted/{fileName}`; always a safe path.
    pub fn render(&self, hash_id: &str, metadata: &Metadata<'_>) -> Rendered<'_> {
        let mut output = String::with_capacity(self.inner.output_capacity);
        for rule in self
            .inner
            .ordered_rules
            .iter()
            .chain(self.inner.default_rule.iter())
        {
            if !rule.test.matches(metadata) {
                continue;
            }
            if rule.template.render_into(metadata, &mut output) {
                return Rendered {
                    path: finish_path(output, hash_id),
                    rule_id: Some(&rule.id),
                };
            }
            if rule.fallback_to_unsorted {
                break;
            }
            output.clear();
        }
        output.clear();
        output.push_str("Unsorted/");
        if let Some(file_name) = metadata.file_name() {
            push_value(&mut output, &file_name);
        }
        Rendered {
            path: finish_path(output, hash_id),
            rule_id: None,
        }
    }
}
