//! `seed-sample`: writes a JSON-lines library (flat property maps with a
//! `hashId`) to Redis the way the MetaMesh writers do, and creates a small
//! real source file for each, so a demo mount can read every file back.

use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use metafuse_testkit::Writer;
use serde_json::{Map, Value};

/// Properties that would contradict the real size of the demo source file.
const DROPPED_SIZE_PROPERTIES: [&str; 2] = ["fileSize", "sizeByte"];

/// What one `seed-sample` run wrote.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SampleSummary {
    pub(crate) n_files: usize,
    pub(crate) n_properties: usize,
    pub(crate) n_source_files: usize,
}

/// One library file from the JSONL, with its source content decided.
struct SampleFile {
    hash_id: String,
    properties: Vec<(String, String)>,
    source: Option<(PathBuf, String)>,
}

pub(crate) fn seed_sample(
    redis_url: &str,
    jsonl: &Path,
    files_root: &Path,
    prefix: &str,
) -> anyhow::Result<SampleSummary> {
    let text = std::fs::read_to_string(jsonl)
        .with_context(|| format!("cannot read sample library {}", jsonl.display()))?;
    // Parse everything before writing anything: a bad line must not leave
    // a half-seeded library behind.
    let mut files = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let file = parse_line(line, files_root)
            .with_context(|| format!("invalid line {} of {}", index + 1, jsonl.display()))?;
        files.push(file);
    }

    let mut n_source_files = 0;
    for file in &files {
        if let Some((path, content)) = &file.source {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create directory {}", parent.display()))?;
            }
            std::fs::write(path, content)
                .with_context(|| format!("cannot write source file {}", path.display()))?;
            n_source_files += 1;
        }
    }

    let client = redis::Client::open(redis_url)
        .with_context(|| format!("invalid redis url {redis_url:?}"))?;
    let mut connection = client
        .get_connection()
        .with_context(|| format!("cannot connect to redis at {redis_url}"))?;
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let mut writer = Writer::new(&mut connection, prefix).with_timestamp_ms(timestamp_ms);
    let mut n_properties = 0;
    for file in &files {
        writer.set_file(&file.hash_id, &file.properties);
        n_properties += file.properties.len();
        // A rerun overwrites: size properties a writer may have set before
        // would shadow the real size, so they go, with the event saying so.
        if file.source.is_some() {
            for property in DROPPED_SIZE_PROPERTIES {
                writer.del(&file.hash_id, property);
            }
        }
    }
    writer
        .flush()
        .with_context(|| format!("writing the sample library to {redis_url} failed"))?;
    Ok(SampleSummary {
        n_files: files.len(),
        n_properties,
        n_source_files,
    })
}

fn parse_line(line: &str, files_root: &Path) -> anyhow::Result<SampleFile> {
    let object: Map<String, Value> =
        serde_json::from_str(line).context("not a JSON object of properties")?;
    let hash_id = match object.get("hashId") {
        Some(Value::String(hash_id)) if !hash_id.is_empty() && !hash_id.contains('/') => {
            hash_id.clone()
        }
        other => bail!("missing or invalid \"hashId\": {other:?}"),
    };
    let mut properties = Vec::new();
    for (name, value) in &object {
        if name == "hashId" || DROPPED_SIZE_PROPERTIES.contains(&name.as_str()) {
            continue;
        }
        let value = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            // A null is an absent property, as a writer's DEL would leave it.
            Value::Null => continue,
            Value::Array(_) | Value::Object(_) => {
                bail!("property {name:?} is not a scalar: {value}")
            }
        };
        properties.push((name.clone(), value));
    }
    let file_path = properties
        .iter()
        .find(|(name, _)| name == "filePath")
        .map(|(_, value)| value.clone());
    let source = match file_path {
        Some(file_path) if !file_path.is_empty() => {
            let path = files_root.join(relative_source_path(&file_path)?);
            let content = demo_content(&hash_id, &file_path);
            // The mount reports `size`; it must be what a read returns.
            properties.retain(|(name, _)| name != "size");
            properties.push(("size".to_owned(), content.len().to_string()));
            Some((path, content))
        }
        _ => None,
    };
    Ok(SampleFile {
        hash_id,
        properties,
        source,
    })
}

/// `filePath` under the files root, as the mount resolves it (an absolute
/// one is taken under the root too); a path leaving the root is refused
/// rather than written outside it.
// MERGE: the same rule as the FUSE source path (moving to the
// `metafuse-bytes` crate); call that crate's function once it lands.
fn relative_source_path(file_path: &str) -> anyhow::Result<PathBuf> {
    let mut relative = PathBuf::new();
    for component in Path::new(file_path.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                bail!("filePath {file_path:?} leaves the files root")
            }
        }
    }
    if relative.as_os_str().is_empty() {
        bail!("filePath {file_path:?} names no file");
    }
    Ok(relative)
}

/// A few KiB of text naming the file: recognisable when `cat` through the
/// mount, and the same on every run so reruns change nothing.
fn demo_content(hash_id: &str, file_path: &str) -> String {
    let mut content = format!(
        "metafuse demo source file\nfilePath: {file_path}\nhashId: {hash_id}\n\n\
         The bytes you read through the mount come from this file.\n\n"
    );
    for line in 1..=96 {
        content.push_str(&format!("{line:03} {file_path}\n"));
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_paths_stay_under_the_root() -> anyhow::Result<()> {
        assert_eq!(
            relative_source_path("/watch/./a.mkv")?,
            PathBuf::from("watch/a.mkv")
        );
        assert!(relative_source_path("watch/../../etc/passwd").is_err());
        assert!(relative_source_path("/").is_err());
        Ok(())
    }

    #[test]
    fn size_is_the_length_of_the_source_and_size_aliases_are_dropped() -> anyhow::Result<()> {
        let line = r#"{"hashId":"h1","filePath":"watch/a.mkv","size":"99","fileSize":"98","sizeByte":"97","season":1,"gone":null}"#;
        let file = parse_line(line, Path::new("/root"))?;
        let (path, content) = file.source.as_ref().context("a source file")?;
        assert_eq!(path, Path::new("/root/watch/a.mkv"));
        let size = content.len().to_string();
        let mut names: Vec<_> = file
            .properties
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                ("filePath", "watch/a.mkv"),
                ("season", "1"),
                ("size", size.as_str())
            ]
        );
        Ok(())
    }

    #[test]
    fn a_line_without_hash_id_is_rejected() {
        assert!(parse_line(r#"{"filePath":"a.mkv"}"#, Path::new("/root")).is_err());
        assert!(parse_line(r#"{"hashId":"h","tags":["x"]}"#, Path::new("/root")).is_err());
    }
}
