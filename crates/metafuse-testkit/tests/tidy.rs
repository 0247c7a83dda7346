//! The tidy test: conventions of DEVELOPERS.md and docs/ARCHITECTURE.md that
//! the compiler does not check, checked on the source tree itself.
//!
//! - The core crates (rules, state, vfs) do no IO: no dependency, direct or
//!   through another workspace crate, on tokio, redis, fuser or hyper, and
//!   no `std::fs` / `std::net` outside `#[cfg(test)]` code.
//! - The code map of docs/ARCHITECTURE.md names every crate under crates/
//!   and bins/, and no other.
//! - Every library crate can be packaged: a description, no placeholder
//!   repository, a version on each path dependency.
//! - `fixtures/rules/` holds no second copy of the shipped presets.
//!
//! Each test lists every violation it finds, not only the first.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates that must stay pure: plain data in, plain data out.
const CORE_CRATES: &[&str] = &["metafuse-rules", "metafuse-state", "metafuse-vfs"];

/// Dependencies that mean IO or async; a name also matches its family
/// (`tokio-util`, `hyper-util`, `redis-test`).
const IO_DEPENDENCIES: &[&str] = &["tokio", "redis", "fuser", "hyper"];

/// Paths a core crate's non-test code must not name.
const IO_MODULES: &[&str] = &["fs", "net"];

/// Where docs/ARCHITECTURE.md marks code-map rows of crates that other
/// branches are adding: allowed to be missing, and an error once they exist
/// (then the row belongs in the table proper).
const PENDING_START: &str = "<!-- pending-crates";
const PENDING_END: &str = "<!-- /pending-crates -->";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Every package directory under `crates/` and `bins/`, by package name.
fn workspace_packages(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut packages = BTreeMap::new();
    for group in ["crates", "bins"] {
        let entries = fs::read_dir(root.join(group)).expect("read crates/ or bins/");
        for entry in entries {
            let directory = entry.expect("directory entry").path();
            if directory.join("Cargo.toml").is_file() {
                let manifest = read_manifest(&directory);
                let name = manifest["package"]["name"]
                    .as_str()
                    .expect("package name")
                    .to_owned();
                packages.insert(name, directory);
            }
        }
    }
    packages
}

fn read_manifest(directory: &Path) -> toml::Table {
    let path = directory.join("Cargo.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    text.parse()
        .unwrap_or_else(|error| panic!("{path:?} is not TOML: {error}"))
}

/// The names in a manifest's normal `[dependencies]` (build and dev
/// dependencies may do IO: they do not ship in the library).
fn normal_dependencies(manifest: &toml::Table) -> Vec<String> {
    let mut names: Vec<String> = manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|table| table.keys().cloned().collect())
        .unwrap_or_default();
    // `[target.'cfg(...)'.dependencies]` ship too.
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        for target in targets.values() {
            if let Some(table) = target.get("dependencies").and_then(toml::Value::as_table) {
                names.extend(table.keys().cloned());
            }
        }
    }
    names
}

fn is_io_dependency(name: &str) -> bool {
    IO_DEPENDENCIES
        .iter()
        .any(|io| name == *io || name.starts_with(&format!("{io}-")))
}

/// The IO dependencies `package` ships with, each with the chain of
/// workspace crates that brings it in.
fn io_dependencies_of(
    package: &str,
    packages: &BTreeMap<String, PathBuf>,
    chain: &mut Vec<String>,
    found: &mut BTreeSet<String>,
) {
    if chain.iter().any(|seen| seen == package) {
        return;
    }
    let Some(directory) = packages.get(package) else {
        return;
    };
    chain.push(package.to_owned());
    for dependency in normal_dependencies(&read_manifest(directory)) {
        if is_io_dependency(&dependency) {
            found.insert(format!("{} -> {dependency}", chain.join(" -> ")));
        } else if packages.contains_key(&dependency) {
            io_dependencies_of(&dependency, packages, chain, found);
        }
    }
    chain.pop();
}

#[test]
fn core_crates_depend_on_nothing_that_does_io() {
    let packages = workspace_packages(&workspace_root());
    let mut found = BTreeSet::new();
    for core in CORE_CRATES {
        assert!(packages.contains_key(*core), "core crate {core} not found");
        io_dependencies_of(core, &packages, &mut Vec::new(), &mut found);
    }
    assert!(
        found.is_empty(),
        "core crates must not depend on {IO_DEPENDENCIES:?} (docs/ARCHITECTURE.md, Invariants):\n  {}",
        found.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

/// Removes string and char literals and a trailing `//` comment from a
/// line of Rust, well enough to count braces and spot paths in code.
fn code_of(line: &str) -> String {
    let mut code = String::with_capacity(line.len());
    let mut characters = line.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '"' => {
                // Skip to the closing quote, honouring escapes.
                while let Some(inner) = characters.next() {
                    match inner {
                        '\\' => {
                            characters.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                code.push_str("\"\"");
            }
            '\'' => {
                // A char literal ('{', '\''), or a lifetime ('a), which stays.
                let rest: String = characters.clone().take(3).collect();
                let is_literal = rest.starts_with('\\') || rest.chars().nth(1) == Some('\'');
                if is_literal {
                    let mut escaped = false;
                    for inner in characters.by_ref() {
                        if inner == '\'' && !escaped {
                            break;
                        }
                        escaped = inner == '\\' && !escaped;
                    }
                    code.push_str("' '");
                } else {
                    code.push('\'');
                }
            }
            '/' if characters.peek() == Some(&'/') => break,
            _ => code.push(character),
        }
    }
    code
}

/// The `(line number, code)` of `source` outside `#[cfg(test)]` items,
/// and the names of `#[cfg(test)] mod name;` files it declares.
fn non_test_code(source: &str) -> (Vec<(usize, String)>, Vec<String>) {
    let mut kept = Vec::new();
    let mut test_module_files = Vec::new();
    let mut lines = source.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let code = code_of(line);
        if code.trim() != "#[cfg(test)]" {
            kept.push((index + 1, code));
            continue;
        }
        // Skip the item the attribute applies to (after other attributes).
        let mut depth = 0i64;
        let mut opened = false;
        for (_, item_line) in lines.by_ref() {
            let item = code_of(item_line);
            let trimmed = item.trim();
            if !opened && (trimmed.is_empty() || trimmed.starts_with("#[")) {
                continue;
            }
            if !opened
                && let Some(name) = trimmed
                    .strip_prefix("mod ")
                    .or_else(|| trimmed.strip_prefix("pub(crate) mod "))
                    .and_then(|rest| rest.strip_suffix(';'))
            {
                test_module_files.push(name.trim().to_owned());
                break;
            }
            for character in item.chars() {
                match character {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if (opened && depth <= 0) || (!opened && trimmed.ends_with(';')) {
                break;
            }
        }
    }
    (kept, test_module_files)
}

/// Whether `code` names `std::<module>`, also as `use std::{.., module, ..}`.
fn names_std_module(code: &str, module: &str) -> bool {
    let direct = format!("std::{module}");
    let mut rest = code;
    while let Some(position) = rest.find(&direct) {
        let after = &rest[position + direct.len()..];
        if !after.starts_with(|character: char| character.is_alphanumeric() || character == '_') {
            return true;
        }
        rest = after;
    }
    if let Some(position) = code.find("std::{") {
        return code[position + "std::{".len()..]
            .split(|character: char| !(character.is_alphanumeric() || character == '_'))
            .any(|word| word == module);
    }
    false
}

fn rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(directory).expect("read source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn core_crates_use_no_file_or_network_io_outside_tests() {
    let root = workspace_root();
    let packages = workspace_packages(&root);
    let mut violations = Vec::new();
    for core in CORE_CRATES {
        let source_root = packages[*core].join("src");
        let mut files = Vec::new();
        rust_files(&source_root, &mut files);
        let mut test_files = BTreeSet::new();
        let mut scanned = Vec::new();
        for file in &files {
            let source = fs::read_to_string(file).expect("read source");
            let (code, test_modules) = non_test_code(&source);
            let directory = file.parent().expect("file in a directory");
            for module in test_modules {
                test_files.insert(directory.join(format!("{module}.rs")));
                test_files.insert(directory.join(&module).join("mod.rs"));
            }
            scanned.push((file.clone(), code));
        }
        for (file, code) in scanned {
            if test_files.contains(&file) {
                continue;
            }
            for (line_number, line) in code {
                for module in IO_MODULES {
                    if names_std_module(&line, module) {
                        violations.push(format!(
                            "{}:{line_number}: std::{module} in a core crate: {}",
                            file.strip_prefix(&root).unwrap_or(&file).display(),
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "core crates do no IO (docs/ARCHITECTURE.md, Invariants); move it to an edge crate:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn the_io_scan_sees_through_test_modules_and_literals() {
    let source = r#"
use std::collections::HashMap;
use std::{fmt, net::TcpStream};
fn f() { let _ = "std::fs in a string"; } // std::fs in a comment
#[cfg(test)]
mod tests {
    use std::fs;
    fn braces() { let _ = '{'; }
}
#[cfg(test)]
mod more_tests;
fn after() { std::fs::read("x"); }
"#;
    let (code, test_modules) = non_test_code(source);
    let flagged: Vec<(usize, &str)> = code
        .iter()
        .filter(|(_, line)| {
            IO_MODULES
                .iter()
                .any(|module| names_std_module(line, module))
        })
        .map(|(number, line)| (*number, line.trim()))
        .collect();
    assert_eq!(
        flagged,
        [
            (3, "use std::{fmt, net::TcpStream};"),
            (12, "fn after() { std::fs::read(\"\"); }")
        ]
    );
    assert_eq!(test_modules, ["more_tests"]);
    assert!(!names_std_module("use std::fsx;", "fs"));
}

/// The crate paths (`crates/x`, `bins/y`) named in the first column of the
/// code map table, split into listed rows and pending rows.
fn code_map_rows(architecture: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let section = architecture
        .split("\n## Code map")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a \"## Code map\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut listed = BTreeSet::new();
    let mut pending = BTreeSet::new();
    let mut in_pending = false;
    for line in section.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with(PENDING_START) {
            in_pending = true;
            continue;
        }
        if trimmed == PENDING_END {
            in_pending = false;
            continue;
        }
        let Some(first_cell) = trimmed
            .strip_prefix('|')
            .and_then(|row| row.split('|').next())
        else {
            continue;
        };
        let name = first_cell.trim().trim_matches('`').trim_end_matches('/');
        if name.starts_with("crates/") || name.starts_with("bins/") {
            if in_pending {
                pending.insert(name.to_owned());
            } else {
                listed.insert(name.to_owned());
            }
        }
    }
    (listed, pending)
}

#[test]
fn the_code_map_names_every_crate_and_only_those() {
    let root = workspace_root();
    let architecture =
        fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let on_disk: BTreeSet<String> = workspace_packages(&root)
        .values()
        .map(|directory| {
            directory
                .strip_prefix(&root)
                .expect("under the root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let problems = code_map_problems(&architecture, &on_disk);
    assert!(
        problems.is_empty(),
        "docs/ARCHITECTURE.md code map and the crates disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_code_map_check_catches_missing_extra_and_arrived_crates() {
    let architecture = "# A\n## Code map\n| crate | does |\n|---|---|\n\
        | `crates/a` | x |\n| `bins/b` | y |\n| `fixtures/` | data |\n| `crates/gone` | z |\n\
        <!-- pending-crates: later -->\n| crate | does |\n|---|---|\n\
        | `crates/later` | w |\n| `crates/arrived` | v |\n<!-- /pending-crates -->\n\
        ## Next\n| `crates/elsewhere` | not the map |\n";
    let on_disk: BTreeSet<String> = ["crates/a", "bins/b", "crates/unlisted", "crates/arrived"]
        .map(String::from)
        .into();
    assert_eq!(
        code_map_problems(architecture, &on_disk),
        [
            "crates/arrived exists now: move its row out of the pending-crates block",
            "crates/unlisted is not in the code map",
            "the code map names crates/gone, which does not exist",
        ]
    );
}

/// What is wrong between the code map of `architecture` and the crate
/// directories `on_disk` (`crates/x`, `bins/y`).
fn code_map_problems(architecture: &str, on_disk: &BTreeSet<String>) -> Vec<String> {
    let (listed, pending) = code_map_rows(architecture);
    let mut problems = Vec::new();
    for missing in on_disk.difference(&listed) {
        if pending.contains(missing) {
            problems.push(format!(
                "{missing} exists now: move its row out of the pending-crates block"
            ));
        } else {
            problems.push(format!("{missing} is not in the code map"));
        }
    }
    for stale in listed.difference(on_disk) {
        problems.push(format!("the code map names {stale}, which does not exist"));
    }
    problems
}

#[test]
fn library_manifests_can_be_packaged() {
    let root = workspace_root();
    let packages = workspace_packages(&root);
    let mut problems = Vec::new();
    for (name, directory) in &packages {
        let manifest = read_manifest(directory);
        let package = manifest["package"].as_table().expect("[package]");
        if package.get("description").is_none() {
            problems.push(format!("{name}: no description"));
        }
        if let Some(readme) = package.get("readme").and_then(toml::Value::as_str)
            && !directory.join(readme).is_file()
        {
            problems.push(format!("{name}: readme {readme} does not exist"));
        }
        if directory.join("README.md").is_file() && package.get("readme").is_none() {
            problems.push(format!("{name}: has README.md but no `readme` field"));
        }
        if let Some(repository) = package.get("repository").and_then(toml::Value::as_str)
            && repository.contains(".invalid")
        {
            problems.push(format!("{name}: placeholder repository {repository}"));
        }
    }
    // Path dependencies need a version to be packaged; crates name them
    // through [workspace.dependencies].
    let workspace: toml::Table = fs::read_to_string(root.join("Cargo.toml"))
        .expect("root Cargo.toml")
        .parse()
        .expect("root Cargo.toml is TOML");
    let dependencies = workspace["workspace"]["dependencies"]
        .as_table()
        .expect("[workspace.dependencies]");
    for (name, specification) in dependencies {
        if specification.get("path").is_some() && specification.get("version").is_none() {
            problems.push(format!(
                "[workspace.dependencies] {name}: path without version"
            ));
        }
    }
    if let Some(repository) = workspace["workspace"]
        .get("package")
        .and_then(|package| package.get("repository"))
        .and_then(toml::Value::as_str)
        && repository.contains(".invalid")
    {
        problems.push(format!(
            "[workspace.package]: placeholder repository {repository}"
        ));
    }
    assert!(
        problems.is_empty(),
        "manifests:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn fixture_rules_are_the_shipped_presets_not_copies() {
    let root = workspace_root();
    let presets = root.join("crates/metafuse-rules/presets");
    let mut problems = Vec::new();
    for entry in fs::read_dir(root.join("fixtures/rules")).expect("fixtures/rules") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_name() else {
            continue;
        };
        let preset = presets.join(name);
        if !preset.exists() {
            continue;
        }
        let is_link = fs::symlink_metadata(&path).is_ok_and(|metadata| metadata.is_symlink());
        let same = fs::canonicalize(&path).ok() == fs::canonicalize(&preset).ok();
        if !(is_link && same) {
            problems.push(format!(
                "{} must be a link to {} (one source of truth)",
                path.strip_prefix(&root).unwrap_or(&path).display(),
                preset.strip_prefix(&root).unwrap_or(&preset).display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
