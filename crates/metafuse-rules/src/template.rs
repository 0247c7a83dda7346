//! Templates: parsed once into a small tree, rendered per file without
//! allocating beyond the output string.

use std::fmt::Write as _;

use crate::diagnostic::Severity;
use crate::metadata::{Field, FieldValue, Metadata};
use crate::sanitize::{push_value, push_value_char, sanitize_literal};

/// A parsed template.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    nodes: Vec<Node>,
    /// Expected output length, to size the output string once.
    pub(crate) size_hint: usize,
}

#[derive(Clone, Debug)]
enum Node {
    /// Template text, already sanitized.
    Literal(Box<str>),
    /// `{a|b|"c":fmt?}`.
    Value {
        alternatives: Box<[Alternative]>,
        format: ValueFormat,
        optional: bool,
    },
    /// `{a?(inner)}`.
    Conditional { field: Field, inner: Vec<Node> },
}

#[derive(Clone, Debug)]
enum Alternative {
    Field(Field),
    Literal(Box<str>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueFormat {
    Plain,
    Pad(usize),
    Upper,
    Lower,
}

/// Something wrong in a template, at a byte offset of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TemplateProblem {
    pub(crate) severity: Severity,
    pub(crate) offset: usize,
    pub(crate) message: String,
}

/// A field name as written in a template, with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldMention {
    pub(crate) name: String,
    pub(crate) offset: usize,
    /// A second or later alternative of `{a|b}`: a typo there silently
    /// renders nothing, so unknown names get a warning.
    pub(crate) is_fallback: bool,
}

/// The result of parsing: the template is always usable (bad placeholders
/// degrade to literal text) but errors stop [`crate::Rules::compile`].
#[derive(Debug)]
pub(crate) struct ParsedTemplate {
    pub(crate) template: Template,
    pub(crate) problems: Vec<TemplateProblem>,
    pub(crate) mentions: Vec<FieldMention>,
}

/// Largest accepted `padN`; wider padding is surely a typo.
const MAX_PAD_WIDTH: usize = 255;

pub(crate) fn parse_template(text: &str) -> ParsedTemplate {
    let mut parser = Parser {
        text,
        problems: Vec::new(),
        mentions: Vec::new(),
    };
    let (nodes, _, _) = parser.parse_sequence(0, false);
    let size_hint = nodes.iter().map(Node::size_hint).sum();
    ParsedTemplate {
        template: Template { nodes, size_hint },
        problems: parser.problems,
        mentions: parser.mentions,
    }
}

struct Parser<'t> {
    text: &'t str,
    problems: Vec<TemplateProblem>,
    mentions: Vec<FieldMention>,
}

fn is_identifier_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

fn is_identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'/' | b'-')
}

fn is_identifier(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && is_identifier_start(bytes[0])
        && bytes.iter().all(|byte| is_identifier_byte(*byte))
}

impl Parser<'_> {
    fn problem(&mut self, severity: Severity, offset: usize, message: String) {
        self.problems.push(TemplateProblem {
            severity,
            offset,
            message,
        });
    }

    /// Parses from `position` to the end, or (inside a conditional) to the
    /// `)}` closing it. Returns the nodes, the position after the end, and
    /// whether the closing `)}` was found.
    fn parse_sequence(
        &mut self,
        mut position: usize,
        inside_conditional: bool,
    ) -> (Vec<Node>, usize, bool) {
        let bytes = self.text.as_bytes();
        let mut nodes = Vec::new();
        let mut literal_start = position;
        let text = self.text;
        let flush = |nodes: &mut Vec<Node>, from: usize, to: usize| {
            if to > from {
                let literal = sanitize_literal(&text[from..to]);
                if !literal.is_empty() {
                    nodes.push(Node::Literal(literal.into_boxed_str()));
                }
            }
        };
        while position < bytes.len() {
            if inside_conditional
                && bytes[position] == b')'
                && bytes.get(position + 1) == Some(&b'}')
            {
                flush(&mut nodes, literal_start, position);
                return (nodes, position + 2, true);
            }
            match bytes[position] {
                b'{' => match self.parse_placeholder(position) {
                    Some((node, next)) => {
                        flush(&mut nodes, literal_start, position);
                        nodes.push(node);
                        position = next;
                        literal_start = next;
                    }
                    None => {
                        self.problem(
                            Severity::Warning,
                            position,
                            "unbalanced `{` is kept as literal text".to_owned(),
                        );
                        position += 1;
                    }
                },
                b'}' => {
                    self.problem(
                        Severity::Warning,
                        position,
                        "unbalanced `}` is kept as literal text".to_owned(),
                    );
                    position += 1;
                }
                _ => position += 1,
            }
        }
        flush(&mut nodes, literal_start, position);
        (nodes, position, false)
    }

    /// Parses the placeholder opening at `start`, or `None` if that `{` has
    /// no matching close (it is then literal text).
    fn parse_placeholder(&mut self, start: usize) -> Option<(Node, usize)> {
        let bytes = self.text.as_bytes();
        let name_start = start + 1;
        let name_length = bytes[name_start..]
            .iter()
            .take_while(|byte| is_identifier_byte(**byte))
            .count();
        let name_end = name_start + name_length;
        if name_length > 0
            && is_identifier_start(bytes[name_start])
            && bytes.get(name_end) == Some(&b'?')
            && bytes.get(name_end + 1) == Some(&b'(')
        {
            let (problems_before, mentions_before) = (self.problems.len(), self.mentions.len());
            let (inner, next, closed) = self.parse_sequence(name_end + 2, true);
            if closed {
                let name = &self.text[name_start..name_end];
                self.mentions.push(FieldMention {
                    name: name.to_owned(),
                    offset: name_start,
                    is_fallback: false,
                });
                return Some((
                    Node::Conditional {
                        field: Field::parse(name),
                        inner,
                    },
                    next,
                ));
            }
            // Re-scanned as plain text by the caller: forget what was found inside.
            self.problems.truncate(problems_before);
            self.mentions.truncate(mentions_before);
            return None;
        }
        let close = find_value_close(bytes, name_start)?;
        let node = self.parse_value_body(name_start, close);
        Some((node, close + 1))
    }

    /// `a|b|"c":fmt?` between `body_start` and `body_end`.
    fn parse_value_body(&mut self, body_start: usize, body_end: usize) -> Node {
        let body = &self.text[body_start..body_end];
        let empty = Node::Literal(Box::from(""));
        if body.trim().is_empty() {
            self.problem(
                Severity::Error,
                body_start - 1,
                "empty placeholder `{}`".to_owned(),
            );
            return empty;
        }
        let mut rest = body.trim_end();
        // Quotes in a body are balanced (see find_value_close), so a final
        // `?` is never inside a quoted literal.
        let optional = rest.ends_with('?');
        if optional {
            rest = &rest[..rest.len() - 1];
        }
        let mut format = ValueFormat::Plain;
        if let Some(colon) = last_unquoted(rest, b':') {
            let format_text = rest[colon + 1..].trim();
            match parse_format(format_text) {
                Some(parsed) => format = parsed,
                None => self.problem(
                    Severity::Error,
                    body_start + colon + 1,
                    format!(
                        "unknown format \"{format_text}\" (known: pad2, pad3, pad4, padN, upper, uppercase, lower, lowercase)"
                    ),
                ),
            }
            rest = &rest[..colon];
        }
        let mut alternatives = Vec::new();
        let mut alternative_start = 0;
        let mut split_points = unquoted_positions(rest, b'|');
        split_points.push(rest.len());
        for (index, split) in split_points.into_iter().enumerate() {
            let raw = &rest[alternative_start..split];
            let offset = body_start + alternative_start + (raw.len() - raw.trim_start().len());
            let alternative = raw.trim();
            alternative_start = split + 1;
            if alternative.is_empty() {
                self.problem(
                    Severity::Error,
                    offset,
                    format!("empty alternative in `{{{body}}}`"),
                );
                continue;
            }
            if alternative.len() >= 2 && alternative.starts_with('"') && alternative.ends_with('"')
            {
                alternatives.push(Alternative::Literal(Box::from(
                    &alternative[1..alternative.len() - 1],
                )));
            } else if is_identifier(alternative) {
                self.mentions.push(FieldMention {
                    name: alternative.to_owned(),
                    offset,
                    is_fallback: index > 0,
                });
                alternatives.push(Alternative::Field(Field::parse(alternative)));
            } else {
                alternatives.push(Alternative::Literal(Box::from(alternative)));
            }
        }
        if !alternatives.is_empty()
            && alternatives
                .iter()
                .all(|alternative| matches!(alternative, Alternative::Literal(_)))
        {
            self.problem(
                Severity::Warning,
                body_start - 1,
                format!("placeholder `{{{body}}}` names no field and renders as fixed text"),
            );
        }
        Node::Value {
            alternatives: alternatives.into_boxed_slice(),
            format,
            optional,
        }
    }
}

/// The `}` closing a value placeholder whose body starts at `from`, skipping
/// quoted text; `None` if a `{` or the end comes first.
fn find_value_close(bytes: &[u8], from: usize) -> Option<usize> {
    let mut in_quotes = false;
    for (offset, byte) in bytes[from..].iter().enumerate() {
        match byte {
            b'"' => in_quotes = !in_quotes,
            b'}' if !in_quotes => return Some(from + offset),
            b'{' if !in_quotes => return None,
            _ => {}
        }
    }
    None
}

fn unquoted_positions(text: &str, wanted: u8) -> Vec<usize> {
    let mut in_quotes = false;
    let mut positions = Vec::new();
    for (offset, byte) in text.bytes().enumerate() {
        if byte == b'"' {
            in_quotes = !in_quotes;
        } else if byte == wanted && !in_quotes {
            positions.push(offset);
        }
    }
    positions
}

fn last_unquoted(text: &str, wanted: u8) -> Option<usize> {
    unquoted_positions(text, wanted).last().copied()
}

fn parse_format(text: &str) -> Option<ValueFormat> {
    match text {
        "upper" | "uppercase" => Some(ValueFormat::Upper),
        "lower" | "lowercase" => Some(ValueFormat::Lower),
        _ => {
            let digits = text.strip_prefix("pad")?;
            if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            let width: usize = digits.parse().ok()?;
            (1..=MAX_PAD_WIDTH)
                .contains(&width)
                .then_some(ValueFormat::Pad(width))
        }
    }
}

impl Node {
    fn size_hint(&self) -> usize {
        match self {
            Node::Literal(text) => text.len(),
            Node::Value { .. } => 16,
            Node::Conditional { inner, .. } => inner.iter().map(Node::size_hint).sum(),
        }
    }

    fn visit_fields<'s>(&'s self, visit: &mut impl FnMut(&'s Field)) {
        match self {
            Node::Literal(_) => {}
            Node::Value { alternatives, .. } => {
                for alternative in alternatives.iter() {
                    if let Alternative::Field(field) = alternative {
                        visit(field);
                    }
                }
            }
            Node::Conditional { field, inner } => {
                visit(field);
                for node in inner {
                    node.visit_fields(visit);
                }
            }
        }
    }
}

impl Template {
    /// Calls `visit` for every field the template reads.
    pub(crate) fn visit_fields<'s>(&'s self, visit: &mut impl FnMut(&'s Field)) {
        for node in &self.nodes {
            node.visit_fields(visit);
        }
    }

    /// Appends the rendering to `output`; `false` (with `output` in an
    /// unspecified state) if a required field is absent.
    pub(crate) fn render_into(&self, metadata: &Metadata<'_>, output: &mut String) -> bool {
        render_nodes(&self.nodes, metadata, output)
    }
}

fn render_nodes(nodes: &[Node], metadata: &Metadata<'_>, output: &mut String) -> bool {
    for node in nodes {
        match node {
            Node::Literal(text) => output.push_str(text),
            Node::Value {
                alternatives,
                format,
                optional,
            } => match first_present(alternatives, metadata) {
                Some(value) => push_formatted(output, &value, *format),
                None if *optional => {}
                None => return false,
            },
            Node::Conditional { field, inner } => {
                if metadata.get_field(field).is_some() {
                    let mark = output.len();
                    if !render_nodes(inner, metadata, output) {
                        output.truncate(mark);
                    }
                }
            }
        }
    }
    true
}

fn first_present<'x>(
    alternatives: &'x [Alternative],
    metadata: &Metadata<'x>,
) -> Option<FieldValue<'x>> {
    alternatives
        .iter()
        .find_map(|alternative| match alternative {
            Alternative::Field(field) => metadata.get_field(field),
            Alternative::Literal(text) => Some(FieldValue::Text(std::borrow::Cow::Borrowed(text))),
        })
}

fn push_formatted(output: &mut String, value: &FieldValue<'_>, format: ValueFormat) {
    match (format, value) {
        (ValueFormat::Plain, FieldValue::Text(text)) => push_value(output, text),
        // Writing into a String cannot fail.
        (ValueFormat::Plain, FieldValue::Integer(number)) => {
            let _ = write!(output, "{number}");
        }
        // Like JavaScript's padStart: the sign counts as a character.
        (ValueFormat::Pad(width), FieldValue::Integer(number)) => {
            let _ = write!(output, "{number:0>width$}");
        }
        (ValueFormat::Pad(width), FieldValue::Text(text)) => {
            for _ in text.chars().count()..width {
                output.push('0');
            }
            push_value(output, text);
        }
        (ValueFormat::Upper, value) => {
            for character in value.to_text().chars().flat_map(char::to_uppercase) {
                push_value_char(output, character);
            }
        }
        (ValueFormat::Lower, value) => {
            for character in value.to_text().chars().flat_map(char::to_lowercase) {
                push_value_char(output, character);
            }
        }
        (ValueFormat::Plain | ValueFormat::Pad(_), FieldValue::Boolean(flag)) => {
            output.push_str(if *flag { "true" } else { "false" });
        }
    }
}
