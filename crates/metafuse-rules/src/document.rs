//! The rules document as written on disk (JSON or TOML), kept faithful enough
//! to be saved back: unknown fields survive and conditions keep their spelling.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Serialization format of a rules document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The reference's `renaming-rules.json`.
    Json,
    /// TOML with the same shape.
    Toml,
}

/// A rules document could not be read. The message carries the parser's
/// own (line, column, what was expected), so it is not repeated as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The JSON text is malformed or has the wrong shape.
    #[error("invalid json rules document: {0}")]
    Json(serde_json::Error),
    /// The TOML text is malformed or has the wrong shape.
    #[error("invalid toml rules document: {0}")]
    Toml(toml::de::Error),
    /// The text is larger than [`MAX_DOCUMENT_BYTES`]: nobody writes such
    /// rules, and compiling them would stall every rebuild.
    #[error("rules document is {n_bytes} bytes; at most {MAX_DOCUMENT_BYTES} are allowed")]
    TooLarge {
        /// Size of the text.
        n_bytes: usize,
    },
}

/// Largest rules document accepted, as text on disk and as compact JSON
/// (what a `PUT` sends); real documents are a few KiB.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// A rules document could not be written as TOML (TOML has no `null`, for
/// instance, so an unknown field holding `null` cannot be represented).
#[derive(Debug, thiserror::Error)]
#[error("cannot write rules document as toml: {0}")]
pub struct SerializeError(toml::ser::Error);

/// The whole rules configuration: `{version, rules, defaultRule?, lastModified?, isDefault?}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesDocument {
    /// Document format version; the reference writes `1`.
    #[serde(default = "default_version")]
    pub version: u32,
    /// The rules, in document order (evaluation order is by priority).
    /// Required: a document without it (`{}`, an empty file) is a mistake,
    /// never "no rules"; an empty list needs a `defaultRule`.
    pub rules: Vec<Rule>,
    /// Tried after every rule; `Unsorted/{fileName}` follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rule: Option<Rule>,
    /// When the document was last saved (ISO 8601, as the reference wrote it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Whether this is the shipped default configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
    /// Fields this version does not know, kept so saving never loses them.
    #[serde(flatten)]
    pub extra_fields: Map<String, Value>,
}

fn default_version() -> u32 {
    1
}

fn enabled_by_default() -> bool {
    true
}

/// One renaming rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Unique identifier (validation reports empty and duplicate ids).
    #[serde(default)]
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Disabled rules are neither evaluated nor make properties relevant.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Higher priorities are tried first; ties keep document order.
    #[serde(default)]
    pub priority: i64,
    /// When the rule applies; an empty group always matches.
    #[serde(default)]
    pub conditions: Condition,
    /// The path template.
    #[serde(default)]
    pub template: String,
    /// If the template fails: `Unsorted/{fileName}` instead of the next rule.
    #[serde(default)]
    pub fallback_to_unsorted: bool,
    /// Fields this version does not know, kept so saving never loses them.
    #[serde(flatten)]
    pub extra_fields: Map<String, Value>,
}

/// A condition tree node, in either spelling the reference accepted.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `{operator: "AND"|"OR", conditions: [...]}`.
    Group(ConditionGroup),
    /// `{type, field, value?}` or `{field, operator, value?}`.
    Leaf(ConditionLeaf),
}

impl Default for Condition {
    /// The empty `AND` group, which always matches.
    fn default() -> Self {
        Condition::Group(ConditionGroup {
            operator: "AND".to_owned(),
            conditions: Vec::new(),
            extra_fields: Map::new(),
        })
    }
}

/// `{operator, conditions}`: all (`AND`) or any (`OR`) of the children.
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionGroup {
    /// As written: `AND`, `OR`, `and` or `or` (validated, not trusted).
    pub operator: String,
    /// Children; an empty group matches.
    pub conditions: Vec<Condition>,
    /// Fields this version does not know.
    pub extra_fields: Map<String, Value>,
}

/// Which key named the leaf's test, so it is saved back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionSpelling {
    /// `{type: "EXISTS", field, value?}` (the reference's file format).
    Type,
    /// `{field, operator: "exists", value?}` (the reference's API document).
    Operator,
}

/// A test of one field.
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionLeaf {
    /// The field tested, in `a.b` or `a/b` form.
    pub field: String,
    /// The test as written (`EXISTS`, `notEquals`, ...; validated, not trusted).
    pub test: String,
    /// Which key held [`ConditionLeaf::test`].
    pub spelling: ConditionSpelling,
    /// The operand, if any.
    pub value: Option<Value>,
    /// Fields this version does not know.
    pub extra_fields: Map<String, Value>,
}

impl Condition {
    /// Builds a condition from its JSON object form, deciding group vs leaf
    /// and the spelling from the keys present.
    fn from_object(mut object: Map<String, Value>) -> Result<Self, String> {
        let operator_is_group = matches!(
            object.get("operator"),
            Some(Value::String(operator)) if operator.eq_ignore_ascii_case("and") || operator.eq_ignore_ascii_case("or")
        );
        let is_group = object.contains_key("conditions")
            || (operator_is_group && !object.contains_key("field") && !object.contains_key("type"));
        if is_group {
            let operator = match object.remove("operator") {
                None => "AND".to_owned(),
                Some(Value::String(operator)) => operator,
                Some(other) => {
                    return Err(format!("condition group operator {other} is not a string"));
                }
            };
            let conditions = match object.remove("conditions") {
                None => Vec::new(),
                Some(Value::Array(children)) => children
                    .into_iter()
                    .map(Condition::from_value)
                    .collect::<Result<Vec<_>, _>>()?,
                Some(other) => {
                    return Err(format!(
                        "condition group conditions {other} is not an array"
                    ));
                }
            };
            return Ok(Condition::Group(ConditionGroup {
                operator,
                conditions,
                extra_fields: object,
            }));
        }
        let (test, spelling) = if let Some(test) = object.remove("type") {
            (test, ConditionSpelling::Type)
        } else if let Some(test) = object.remove("operator") {
            (test, ConditionSpelling::Operator)
        } else {
            (Value::String(String::new()), ConditionSpelling::Type)
        };
        let test = match test {
            Value::String(test) => test,
            other => return Err(format!("condition operator {other} is not a string")),
        };
        let field = match object.remove("field") {
            None => String::new(),
            Some(Value::String(field)) => field,
            Some(other) => return Err(format!("condition field {other} is not a string")),
        };
        let value = object.remove("value").filter(|value| !value.is_null());
        Ok(Condition::Leaf(ConditionLeaf {
            field,
            test,
            spelling,
            value,
            extra_fields: object,
        }))
    }

    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Object(object) => Condition::from_object(object),
            other => Err(format!("condition {other} is not an object")),
        }
    }

    /// The JSON object form, keys in the order the reference wrote them.
    fn to_object(&self) -> Map<String, Value> {
        let mut object = Map::new();
        match self {
            Condition::Group(group) => {
                object.insert("operator".to_owned(), Value::String(group.operator.clone()));
                let children = group
                    .conditions
                    .iter()
                    .map(|child| Value::Object(child.to_object()))
                    .collect();
                object.insert("conditions".to_owned(), Value::Array(children));
                object.extend(group.extra_fields.clone());
            }
            Condition::Leaf(leaf) => {
                match leaf.spelling {
                    ConditionSpelling::Type => {
                        object.insert("type".to_owned(), Value::String(leaf.test.clone()));
                        object.insert("field".to_owned(), Value::String(leaf.field.clone()));
                    }
                    ConditionSpelling::Operator => {
                        object.insert("field".to_owned(), Value::String(leaf.field.clone()));
                        object.insert("operator".to_owned(), Value::String(leaf.test.clone()));
                    }
                }
                if let Some(value) = &leaf.value {
                    object.insert("value".to_owned(), value.clone());
                }
                object.extend(leaf.extra_fields.clone());
            }
        }
        object
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Going through a generic map lets both JSON and TOML share one
        // decision about which spelling a node uses.
        let object = Map::<String, Value>::deserialize(deserializer)?;
        Condition::from_object(object).map_err(D::Error::custom)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_object().serialize(serializer)
    }
}

impl RulesDocument {
    /// Parses a document in the given format.
    pub fn parse(text: &str, format: Format) -> Result<Self, ParseError> {
        // Editors on Windows like to start files with a byte order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(ParseError::TooLarge {
                n_bytes: text.len(),
            });
        }
        match format {
            Format::Json => serde_json::from_str(text).map_err(ParseError::Json),
            Format::Toml => toml::from_str(text).map_err(ParseError::Toml),
        }
    }

    /// Parses JSON if the first non-blank character is `{`, TOML otherwise.
    pub fn parse_auto(text: &str) -> Result<Self, ParseError> {
        Self::parse(text, Self::detect_format(text))
    }

    /// The format [`RulesDocument::parse_auto`] would use for `text`.
    pub fn detect_format(text: &str) -> Format {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Toml
        }
    }

    /// Pretty JSON in the reference's layout (two-space indent, reference key order).
    pub fn to_json_pretty(&self) -> String {
        // Serializing plain data into a String cannot fail: every key is a string.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// TOML of the same shape.
    pub fn to_toml(&self) -> Result<String, SerializeError> {
        toml::to_string_pretty(self).map_err(SerializeError)
    }
}
