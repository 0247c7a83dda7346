//! The files shipped for deployment stay valid: the example configuration
//! parses and names every key, and the systemd unit passes
//! `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use metafuse_cli::{CommonArgs, FileConfig, MountArgs, resolve};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_example_configuration_loads_and_names_every_key() {
    let path = repository().join("metafuse.example.toml");
    let as_shipped = FileConfig::load(&path).expect("the example loads");
    resolve(
        &CommonArgs::default(),
        &MountArgs::default(),
        |_| None,
        &as_shipped,
    )
    .expect("the example resolves");

    // With every `# key = value` line (and the lines of a commented array)
    // uncommented, every key is set: none is missing from the example, and
    // an unknown (misspelt) one would fail to parse.
    let text = std::fs::read_to_string(&path).expect("read example");
    let mut uncommented = String::new();
    let mut in_array = false;
    for line in text.lines() {
        let body = line.strip_prefix("# ").unwrap_or("");
        let is_setting = body.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        });
        if is_setting || in_array {
            uncommented.push_str(body);
            in_array = (is_setting && body.ends_with('[')) || (in_array && body != "]");
        } else {
            uncommented.push_str(line);
        }
        uncommented.push('\n');
    }
    // `rules` and `preset` both set is allowed (the file wins), so all parse.
    let everything: FileConfig =
        toml::from_str(&uncommented).unwrap_or_else(|error| panic!("{error}\n{uncommented}"));
    let shown = format!("{everything:?}");
    assert!(
        !shown.contains("None"),
        "a key is missing from the example: {shown}"
    );
    assert_eq!(everything.notify.as_ref().map(Vec::len), Some(3));
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    // `verify` checks that ExecStart's program exists and that the
    // `man:` documentation resolves: give it the built binary and its page.
    let directory = tempfile::tempdir().expect("tempdir");
    let manual = directory.path().join("man/man1");
    std::fs::create_dir_all(&manual).expect("mkdir");
    let written = Command::new(env!("CARGO_BIN_EXE_metafuse"))
        .args(["man", "--out-dir"])
        .arg(&manual)
        .status()
        .expect("metafuse man");
    assert!(written.success());
    let unit = std::fs::read_to_string(repository().join("contrib/systemd/metafuse.service"))
        .expect("read unit");
    assert!(unit.contains("Type=notify"));
    let unit = unit.replace("/usr/local/bin/metafuse", env!("CARGO_BIN_EXE_metafuse"));
    let unit_path = directory.path().join("metafuse.service");
    std::fs::write(&unit_path, unit).expect("write unit");
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&unit_path)
        .env("MANPATH", directory.path().join("man"))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}
