//! Conditions compiled into a tree of tests: operators resolved and regexes
//! built once, so a bad condition is a load-time error, never a silent false.

use regex::Regex;
use serde_json::Value;

use crate::diagnostic::Severity;
use crate::document::Condition;
use crate::metadata::{Field, FieldValue, Metadata};

#[derive(Clone, Debug)]
pub(crate) enum Test {
    All(Vec<Test>),
    Any(Vec<Test>),
    Exists(Field),
    NotExists(Field),
    Equals(Field, Expected),
    NotEquals(Field, Expected),
    Contains(Field, Box<str>),
    StartsWith(Field, Box<str>),
    EndsWith(Field, Box<str>),
    Matches(Field, Regex),
    GreaterThan(Field, f64),
    LessThan(Field, f64),
}

/// The operand of `EQUALS`, whose type decides how the field is compared.
#[derive(Clone, Debug)]
pub(crate) enum Expected {
    Boolean(bool),
    Number(f64),
    Text(Box<str>),
}

/// A problem found while compiling, at a place like `conditions[0].conditions[2]`.
#[derive(Clone, Debug)]
pub(crate) struct ConditionProblem {
    pub(crate) severity: Severity,
    pub(crate) place: String,
    pub(crate) message: String,
}

const KNOWN_OPERATORS: &str = "EXISTS, NOT_EXISTS, EQUALS, NOT_EQUALS, CONTAINS, MATCHES, startsWith, endsWith, greaterThan, lessThan";

/// Compiles `condition` found at `place`; field names go to `mentions`.
/// On error the returned test is a placeholder, never evaluated because the
/// problem stops compilation.
pub(crate) fn compile_condition(
    condition: &Condition,
    place: &str,
    problems: &mut Vec<ConditionProblem>,
    mentions: &mut Vec<String>,
) -> Test {
    match condition {
        Condition::Group(group) => {
            let is_all = if group.operator.eq_ignore_ascii_case("and") {
                true
            } else if group.operator.eq_ignore_ascii_case("or") {
                false
            } else {
                return fail(
                    problems,
                    place,
                    format!(
                        "unknown group operator \"{}\" (known: AND, OR)",
                        group.operator
                    ),
                );
            };
            let children = group
                .conditions
                .iter()
                .enumerate()
                .map(|(index, child)| {
                    let child_place = if place == "conditions" {
                        format!("conditions[{index}]")
                    } else {
                        format!("{place}.conditions[{index}]")
                    };
                    compile_condition(child, &child_place, problems, mentions)
                })
                .collect();
            if is_all {
                Test::All(children)
            } else {
                Test::Any(children)
            }
        }
        Condition::Leaf(leaf) => {
            let operator_key: String = leaf
                .test
                .chars()
                .filter(|character| *character != '_')
                .flat_map(char::to_lowercase)
                .collect();
            if leaf.field.trim().is_empty() {
                return fail(
                    problems,
                    place,
                    format!("condition \"{}\" has no field", leaf.test),
                );
            }
            mentions.push(leaf.field.trim().to_owned());
            let field = Field::parse(&leaf.field);
            if operator_key.is_empty() {
                return fail(
                    problems,
                    place,
                    format!("condition on field \"{}\" has no operator", leaf.field),
                );
            }
            if matches!(operator_key.as_str(), "exists" | "notexists") {
                return if operator_key == "exists" {
                    Test::Exists(field)
                } else {
                    Test::NotExists(field)
                };
            }
            let known = matches!(
                operator_key.as_str(),
                "equals"
                    | "notequals"
                    | "contains"
                    | "startswith"
                    | "endswith"
                    | "matches"
                    | "greaterthan"
                    | "lessthan"
            );
            if !known {
                return fail(
                    problems,
                    place,
                    format!(
                        "unknown operator \"{}\" (known: {KNOWN_OPERATORS})",
                        leaf.test
                    ),
                );
            }
            let Some(value) = &leaf.value else {
                return fail(
                    problems,
                    place,
                    format!(
                        "missing value for {} on field \"{}\"",
                        leaf.test, leaf.field
                    ),
                );
            };
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                other => {
                    return fail(
                        problems,
                        place,
                        format!(
                            "value {other} of {} is not a string, number or boolean",
                            leaf.test
                        ),
                    );
                }
            };
            match operator_key.as_str() {
                "equals" | "notequals" => {
                    let expected = match value {
                        Value::Bool(flag) => Expected::Boolean(*flag),
                        Value::Number(number) => {
                            Expected::Number(number.as_f64().unwrap_or(f64::NAN))
                        }
                        _ => Expected::Text(text.into_boxed_str()),
                    };
                    if operator_key == "equals" {
                        Test::Equals(field, expected)
                    } else {
                        Test::NotEquals(field, expected)
                    }
                }
                "contains" => Test::Contains(field, text.into_boxed_str()),
                "startswith" => Test::StartsWith(field, text.into_boxed_str()),
                "endswith" => Test::EndsWith(field, text.into_boxed_str()),
                "matches" => match Regex::new(&text) {
                    Ok(regex) => Test::Matches(field, regex),
                    Err(regex_error) => fail(
                        problems,
                        place,
                        format!(
                            "invalid regex \"{text}\": {}",
                            one_line_regex_error(&regex_error)
                        ),
                    ),
                },
                _ => match text.trim().parse::<f64>() {
                    Ok(number) if number.is_finite() => {
                        if operator_key == "greaterthan" {
                            Test::GreaterThan(field, number)
                        } else {
                            Test::LessThan(field, number)
                        }
                    }
                    _ => fail(
                        problems,
                        place,
                        format!("value \"{text}\" of {} is not a number", leaf.test),
                    ),
                },
            }
        }
    }
}

fn fail(problems: &mut Vec<ConditionProblem>, place: &str, message: String) -> Test {
    problems.push(ConditionProblem {
        severity: Severity::Error,
        place: place.to_owned(),
        message,
    });
    Test::All(Vec::new())
}

/// The regex crate's syntax errors span several lines with a caret; the
/// last line holds the reason.
fn one_line_regex_error(error: &regex::Error) -> String {
    let text = error.to_string();
    let last_line = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    last_line.trim().trim_start_matches("error: ").to_owned()
}

impl Test {
    pub(crate) fn matches(&self, metadata: &Metadata<'_>) -> bool {
        match self {
            Test::All(children) => children.iter().all(|child| child.matches(metadata)),
            Test::Any(children) => {
                children.is_empty() || children.iter().any(|child| child.matches(metadata))
            }
            Test::Exists(field) => metadata.get_field(field).is_some(),
            Test::NotExists(field) => metadata.get_field(field).is_none(),
            Test::Equals(field, expected) => equals(metadata.get_field(field), expected),
            Test::NotEquals(field, expected) => !equals(metadata.get_field(field), expected),
            Test::Contains(field, needle) => {
                text_test(metadata, field, |text| text.contains(&**needle))
            }
            Test::StartsWith(field, prefix) => {
                text_test(metadata, field, |text| text.starts_with(&**prefix))
            }
            Test::EndsWith(field, suffix) => {
                text_test(metadata, field, |text| text.ends_with(&**suffix))
            }
            Test::Matches(field, regex) => text_test(metadata, field, |text| regex.is_match(text)),
            Test::GreaterThan(field, limit) => {
                number_test(metadata, field, |number| number > *limit)
            }
            Test::LessThan(field, limit) => number_test(metadata, field, |number| number < *limit),
        }
    }

    /// Calls `visit` for every field the test reads.
    pub(crate) fn visit_fields<'s>(&'s self, visit: &mut impl FnMut(&'s Field)) {
        match self {
            Test::All(children) | Test::Any(children) => {
                for child in children {
                    child.visit_fields(visit);
                }
            }
            Test::Exists(field)
            | Test::NotExists(field)
            | Test::Equals(field, _)
            | Test::NotEquals(field, _)
            | Test::Contains(field, _)
            | Test::StartsWith(field, _)
            | Test::EndsWith(field, _)
            | Test::Matches(field, _)
            | Test::GreaterThan(field, _)
            | Test::LessThan(field, _) => visit(field),
        }
    }
}

fn equals(value: Option<FieldValue<'_>>, expected: &Expected) -> bool {
    let Some(value) = value else { return false };
    match expected {
        Expected::Boolean(flag) => match value {
            FieldValue::Boolean(actual) => actual == *flag,
            FieldValue::Text(text) => text == if *flag { "true" } else { "false" },
            FieldValue::Integer(_) => false,
        },
        Expected::Number(number) => value.to_number() == Some(*number),
        Expected::Text(text) => value.to_text() == **text,
    }
}

fn text_test(metadata: &Metadata<'_>, field: &Field, test: impl Fn(&str) -> bool) -> bool {
    metadata
        .get_field(field)
        .is_some_and(|value| test(&value.to_text()))
}

fn number_test(metadata: &Metadata<'_>, field: &Field, test: impl Fn(f64) -> bool) -> bool {
    metadata
        .get_field(field)
        .and_then(|value| value.to_number())
        .is_some_and(test)
}
