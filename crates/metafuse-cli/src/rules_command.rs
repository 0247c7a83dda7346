//! `metafuse rules check` and `metafuse rules render`.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use metafuse_rules::{Format, Metadata, Rules, RulesDocument, Severity, validate};
use serde_json::Value;

use crate::exit::{CliError, ExitKind};

/// `metafuse rules …`.
#[derive(Debug, Args)]
pub struct RulesCommand {
    #[command(subcommand)]
    action: RulesAction,
}

#[derive(Debug, Subcommand)]
enum RulesAction {
    /// Print every error and warning of a rules file (JSON or TOML).
    /// Exits 0 if it is valid (warnings allowed), 1 if not, 2 if it cannot be read.
    Check {
        /// The rules file (`renaming-rules.json` or TOML of the same shape).
        file: PathBuf,
    },
    /// Read one JSON object of properties per stdin line
    /// (`{"filePath":"watch/x.mkv","titles/eng":"Dark","season":"1"}`, optional
    /// "hashId") and print each file's virtual path. Exits 1 if any line failed.
    Render {
        /// Rules file to use.
        #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
        rules: Option<PathBuf>,
        /// Shipped preset to use: default, plex or jellyfin.
        #[arg(long)]
        preset: Option<String>,
        /// Print `{"path":…,"rule":…}` per line instead of the bare path.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `rules check` or `rules render`. An unreadable input is a
/// configuration failure; invalid rules or unrenderable lines are `Failed`.
pub fn run_rules(command: RulesCommand) -> Result<(), CliError> {
    match command.action {
        RulesAction::Check { file } => check(&file),
        RulesAction::Render {
            rules,
            preset,
            json,
        } => render(rules.as_deref(), preset.as_deref(), json),
    }
}

fn usage(error: anyhow::Error) -> CliError {
    CliError::new(ExitKind::Config, error)
}

fn read_document(path: &Path) -> anyhow::Result<(String, Format)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read rules file {}", path.display()))?;
    let format = match path.extension().and_then(|extension| extension.to_str()) {
        Some(extension) if extension.eq_ignore_ascii_case("json") => Format::Json,
        Some(extension) if extension.eq_ignore_ascii_case("toml") => Format::Toml,
        _ => RulesDocument::detect_format(&text),
    };
    Ok((text, format))
}

fn check(path: &Path) -> Result<(), CliError> {
    let (text, format) = read_document(path).map_err(usage)?;
    let document = match RulesDocument::parse(&text, format) {
        Ok(document) => document,
        Err(error) => {
            println!("error: {}: {error}", path.display());
            return Err(CliError::already_reported(ExitKind::Failed));
        }
    };
    let diagnostics = validate(&document);
    for diagnostic in &diagnostics {
        println!("{diagnostic}");
    }
    let errors = diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    if errors > 0 {
        println!(
            "{}: invalid ({errors} error(s), {warnings} warning(s))",
            path.display()
        );
        Err(CliError::already_reported(ExitKind::Failed))
    } else {
        println!(
            "{}: valid ({} rule(s), {warnings} warning(s))",
            path.display(),
            document.rules.len()
        );
        Ok(())
    }
}

fn load_rules(rules_file: Option<&Path>, preset: Option<&str>) -> anyhow::Result<Rules> {
    if let Some(name) = preset {
        return Ok(Rules::preset(name)?);
    }
    let Some(path) = rules_file else {
        bail!("give --rules FILE or --preset NAME")
    };
    let (text, format) = read_document(path)?;
    let document = RulesDocument::parse(&text, format)
        .with_context(|| format!("cannot load {}", path.display()))?;
    let rules =
        Rules::compile(document).with_context(|| format!("cannot load {}", path.display()))?;
    for warning in rules.warnings() {
        eprintln!("{warning}");
    }
    Ok(rules)
}

fn render(rules_file: Option<&Path>, preset: Option<&str>, json: bool) -> Result<(), CliError> {
    let rules = load_rules(rules_file, preset).map_err(usage)?;
    let n_failed_lines = render_lines(&rules, json).map_err(usage)?;
    if n_failed_lines > 0 {
        return Err(CliError::new(
            ExitKind::Failed,
            anyhow::anyhow!("{n_failed_lines} line(s) could not be rendered"),
        ));
    }
    Ok(())
}

/// Renders stdin to stdout; the number of lines that failed.
fn render_lines(rules: &Rules, json: bool) -> anyhow::Result<usize> {
    let stdin = std::io::stdin().lock();
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let mut n_failed_lines = 0_usize;
    for (index, line) in stdin.lines().enumerate() {
        let line_number = index + 1;
        let line = line.with_context(|| format!("cannot read stdin line {line_number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let file = match parse_file_line(&line, line_number) {
            Ok(file) => file,
            Err(message) => {
                // Keep the order of outputs and errors readable when both go to a terminal.
                stdout.flush().context("cannot write to stdout")?;
                eprintln!("error: line {line_number}: {message}");
                n_failed_lines += 1;
                continue;
            }
        };
        let metadata = Metadata::new(
            file.properties
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        let rendered = rules.render(&file.hash_id, &metadata);
        if json {
            let output = serde_json::json!({"path": rendered.path, "rule": rendered.rule_id});
            writeln!(stdout, "{output}")
        } else {
            writeln!(stdout, "{}", rendered.path)
        }
        .context("cannot write to stdout")?;
    }
    stdout.flush().context("cannot write to stdout")?;
    Ok(n_failed_lines)
}

struct FileLine {
    hash_id: String,
    properties: Vec<(String, String)>,
}

/// One stdin line: a flat JSON object of properties; numbers and booleans
/// are taken as their text, `null` as absent.
fn parse_file_line(line: &str, line_number: usize) -> Result<FileLine, String> {
    let object: serde_json::Map<String, Value> = serde_json::from_str(line)
        .map_err(|error| format!("not a JSON object of properties: {error}"))?;
    let mut hash_id = format!("line{line_number}");
    let mut properties = Vec::with_capacity(object.len());
    for (name, value) in object {
        let text = match value {
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            Value::Null => continue,
            Value::Array(_) | Value::Object(_) => {
                return Err(format!(
                    "property \"{name}\" is not a string, number or boolean"
                ));
            }
        };
        if name == "hashId" {
            hash_id = text;
        } else {
            properties.push((name, text));
        }
    }
    Ok(FileLine {
        hash_id,
        properties,
    })
}
