//! `metafuse rules check` and `metafuse rules render`, run as a user would.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn metafuse(arguments: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metafuse"))
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("metafuse starts");
    let written = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes());
    // A command that fails before reading its input (an unknown preset, say)
    // closes the pipe; its exit status and messages are what the test checks.
    if let Err(error) = written {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    child.wait_with_output().expect("metafuse finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixture(name: &str) -> String {
    format!("{}/../../fixtures/rules/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_the_shipped_files() {
    for name in ["default.json", "plex.json", "jellyfin.json", "example.toml"] {
        let output = metafuse(&["rules", "check", &fixture(name)], "");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{name}: {}",
            text(&output.stdout)
        );
        assert!(
            text(&output.stdout).contains(": valid ("),
            "{name}: {}",
            text(&output.stdout)
        );
    }
}

#[test]
fn check_lists_every_problem_and_fails() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("rules.json");
    std::fs::write(
        &path,
        r#"{"version": 1, "rules": [
            {"id": "movies", "name": "Movies", "enabled": true, "priority": 1,
             "conditions": {"type": "MATCHES", "field": "title", "value": "("},
             "template": "Movies/{title:pad}/{movieYear|Unknown}", "fallbackToUnsorted": true}]}"#,
    )
    .expect("rules file written");
    let output = metafuse(&["rules", "check", path.to_str().expect("utf-8 path")], "");
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("error: rule \"movies\" (Movies), conditions: invalid regex \"(\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "error: rule \"movies\" (Movies), template offset 14: unknown format \"pad\""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "warning: rule \"movies\" (Movies), template offset 30: fallback \"Unknown\""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid (2 error(s), 1 warning(s))"),
        "{stdout}"
    );

    std::fs::write(&path, "{\"rules\": [").expect("rules file written");
    let output = metafuse(&["rules", "check", path.to_str().expect("utf-8 path")], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains("invalid json rules document"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn check_of_a_missing_file_is_a_usage_error() {
    let output = metafuse(&["rules", "check", "/nonexistent/rules.json"], "");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("cannot read rules file /nonexistent/rules.json"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn render_prints_one_path_per_line_with_each_preset() {
    let input = concat!(
        r#"{"filePath":"watch/x.mkv","title":"Dark","season":1,"episode":"3","hashId":"abc"}"#,
        "\n\n",
        r#"{"filePath":"watch/heat.mkv","titles/eng":"x","title":"Heat","movieYear":1995}"#,
        "\n",
    );
    let cases = [
        (
            "default",
            "TV Shows/Dark/S01/Dark S01E03.mkv\nMovies/Heat (1995)/Heat (1995).mkv\n",
        ),
        (
            "plex",
            "TV Shows/Dark/Season 01/Dark - S01E03.mkv\nMovies/Heat (1995)/Heat (1995).mkv\n",
        ),
        (
            "jellyfin",
            "Shows/Dark/Season 01/S01E03.mkv\nMovies/Heat (1995)/Heat (1995).mkv\n",
        ),
    ];
    let mut table = metafuse_testkit::TableCheck::new();
    for (preset, expected) in cases {
        let output = metafuse(&["rules", "render", "--preset", preset], input);
        table.check_eq(
            (output.status.code(), text(&output.stdout)),
            (Some(0), expected.to_owned()),
            format!("{preset} (stderr: {})", text(&output.stderr)),
        );
    }
    drop(table);
    let output = metafuse(
        &[
            "rules",
            "render",
            "--rules",
            &fixture("example.toml"),
            "--json",
        ],
        input,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    assert_eq!(
        lines[0],
        serde_json::json!({"path": "TV Shows/Dark/Season 01/Dark - S01E03.mkv", "rule": "tv-series"})
    );
    assert_eq!(
        lines[1],
        serde_json::json!({"path": "Movies/Heat (1995)/Heat (1995).mkv", "rule": "movies"})
    );
}

#[test]
fn render_reports_malformed_lines_and_keeps_going() {
    let input =
        "not json\n{\"filePath\":\"a/b.jpg\",\"fileType\":\"image\"}\n{\"filePath\":[1]}\n[]\n";
    let output = metafuse(&["rules", "render", "--preset", "default", "--json"], input);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("error: line 1: not a JSON object"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: line 3: property \"filePath\" is not a string"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: line 4: not a JSON object"),
        "{stderr}"
    );
    assert_eq!(
        text(&output.stdout),
        "{\"path\":\"Images/b.jpg\",\"rule\":\"images\"}\n"
    );
}

#[test]
fn render_needs_rules_and_a_known_preset() {
    assert_eq!(metafuse(&["rules", "render"], "").status.code(), Some(2));
    let output = metafuse(&["rules", "render", "--preset", "kodi"], "{}\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("unknown rules preset \"kodi\""));
}
