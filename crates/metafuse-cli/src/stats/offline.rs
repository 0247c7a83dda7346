//! Offline mode: bootstrap from Redis and report.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use metafuse_stream::{
    Phase, Projection, Rules, RulesDocument, Source, SourceTopology, StreamError,
};
use metafuse_vfs::Library;
use serde_json::json;

use super::Output;
use crate::config::{StatsRules, StatsSettings};
use crate::exit::{CliError, ExitKind};

fn load_rules(rules: &StatsRules) -> anyhow::Result<Rules> {
    match rules {
        StatsRules::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read rules file {}", path.display()))?;
            let document = RulesDocument::parse_auto(&text)
                .with_context(|| format!("invalid rules file {}", path.display()))?;
            Rules::compile(document).with_context(|| format!("invalid rules in {}", path.display()))
        }
        StatsRules::Preset(name) => Ok(Rules::preset(name)?),
    }
}

fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    let style =
        indicatif::ProgressStyle::with_template("{msg:10} [{bar:40}] {pos}/{len} ({per_sec})")
            .map(|style| style.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    Some(bar)
}

/// An unreachable Redis ends a one-shot command (`Failed`); a malformed URL
/// or reply is the source's fault (`Source`).
fn source_failure_kind(error: &StreamError) -> ExitKind {
    if error.is_connection_error() {
        ExitKind::Failed
    } else {
        ExitKind::Source
    }
}

fn source_failure(error: StreamError) -> CliError {
    CliError::new(source_failure_kind(&error), error)
}

pub(crate) async fn run(settings: &StatsSettings, output: Output) -> Result<(), CliError> {
    let rules = load_rules(&settings.rules).map_err(CliError::of(ExitKind::Config))?;
    let redis_url = settings.redis_url.as_deref().ok_or_else(|| {
        CliError::new(
            ExitKind::Config,
            anyhow::anyhow!(
                "no redis: give --redis-url URL, REDIS_URL or redis_url in --config, or --api URL"
            ),
        )
    })?;
    let mut projection = Projection::new(rules.relevant_properties());
    let mut source = Source::connect(redis_url, &settings.prefix)
        .await
        .map_err(source_failure)?;
    let bar = progress_bar();
    let report = source
        .bootstrap(&mut projection, settings.strategy, |progress| {
            if let Some(bar) = &bar {
                bar.set_message(match progress.phase {
                    Phase::Replay => "replay",
                    Phase::Snapshot => "snapshot",
                    Phase::CatchUp => "catch-up",
                });
                bar.set_length(progress.total);
                bar.set_position(progress.done);
            }
        })
        .await
        .map_err(|error| {
            let kind = source_failure_kind(&error);
            CliError::new(kind, anyhow::Error::new(error).context("bootstrap failed"))
        })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let stats = projection.stats();
    let bytes_per_file = stats.state_size.checked_div(stats.file_count).unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    let written = if output == Output::List {
        list(projection, rules, &mut stdout)
    } else if output == Output::Dump {
        dump(&projection, &mut stdout)
    } else if output == Output::Json {
        let summary = json!({
            // The same meanings as `GET /api/fuse/stats`: `fileCount` is what
            // the mount shows, `stateSize` the files the state knows.
            "fileCount": stats.files_complete,
            "filesComplete": stats.files_complete,
            "filesKnown": stats.file_count,
            "eventsProcessed": stats.events_processed,
            "propertiesFetched": stats.properties_fetched,
            "propertiesSkipped": stats.properties_skipped,
            "malformedEntries": stats.malformed_entries,
            "lastEventId": stats.last_event_id,
            "stateSize": stats.file_count,
            "stateBytes": stats.state_size,
            "bytesPerFile": bytes_per_file,
            "bootstrapMs": report.elapsed.as_millis() as u64,
            "strategy": report.strategy_used.name(),
            "strategyReason": report.reason,
            "relevantProperties": projection.relevant().names().collect::<Vec<_>>(),
            // The same shape as `source.topology` of `GET /api/fuse/stats`.
            "topology": topology_json(&source.topology()),
        });
        writeln!(stdout, "{summary}")
    } else {
        writeln!(
            stdout,
            "{} files ({} visible) ready in {} ms by {} ({})\n\
             {} events processed, {} properties fetched, {} skipped, {} malformed\n\
             last event id {}, state {} bytes ({} bytes per file)\n\
             redis {}",
            stats.file_count,
            stats.files_complete,
            report.elapsed.as_millis(),
            report.strategy_used.name(),
            report.reason,
            stats.events_processed,
            stats.properties_fetched,
            stats.properties_skipped,
            stats.malformed_entries,
            stats.last_event_id.as_deref().unwrap_or("none"),
            stats.state_size,
            bytes_per_file,
            topology_line(&source.topology()),
        )
    };
    match written {
        // `metafuse-stats --dump | head` is fine.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other
            .context("cannot write to stdout")
            .map_err(CliError::of(ExitKind::Failed)),
    }
}

/// `{"mode": "cluster", "nodes": [{"address", "role", "fetchedKeys"}]}`.
fn topology_json(topology: &SourceTopology) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = topology
        .nodes
        .iter()
        .map(|node| {
            let mut entry = json!({ "address": node.address, "role": node.role });
            if let (Some(n_keys), Some(fields)) = (node.fetched_keys, entry.as_object_mut()) {
                fields.insert("fetchedKeys".to_owned(), json!(n_keys));
            }
            entry
        })
        .collect();
    json!({ "mode": topology.mode, "nodes": nodes })
}

/// `cluster: 10.0.0.1:7000 (412003 keys fetched), …` for the summary.
fn topology_line(topology: &SourceTopology) -> String {
    let nodes: Vec<String> = topology
        .nodes
        .iter()
        .map(|node| {
            let mut text = node.address.clone();
            if node.role != "master" {
                text.push_str(&format!(" [{}]", node.role));
            }
            if let Some(n_keys) = node.fetched_keys {
                text.push_str(&format!(" ({n_keys} keys fetched)"));
            }
            text
        })
        .collect();
    format!("{}: {}", topology.mode, nodes.join(", "))
}

/// One JSON line per visible file, sorted by hashId, so dumps diff well.
fn dump(projection: &Projection, out: &mut impl Write) -> std::io::Result<()> {
    let mut files: Vec<_> = projection.complete_files().collect();
    files.sort_unstable_by_key(|(hash_id, _)| *hash_id);
    for (hash_id, file) in files {
        let properties: BTreeMap<&str, &str> = file.properties().collect();
        writeln!(
            out,
            "{}",
            json!({ "hashId": hash_id, "properties": properties })
        )?;
    }
    Ok(())
}

/// Every virtual file path, sorted: the tree the mount would serve, built
/// by the same `Library` the service uses, so collision suffixes match.
fn list(projection: Projection, rules: Rules, out: &mut impl Write) -> std::io::Result<()> {
    let library = Library::from_projection(projection, Arc::new(rules));
    let mut paths = library.file_paths();
    paths.sort_unstable();
    for path in paths {
        writeln!(out, "{path}")?;
    }
    Ok(())
}
