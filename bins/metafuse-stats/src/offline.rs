//! Offline mode: bootstrap from Redis and report.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use metafuse_stream::{Phase, Projection, Rules, RulesDocument, Source};
use metafuse_vfs::Library;
use serde_json::json;

use crate::{Arguments, Failure};

fn load_rules(arguments: &Arguments) -> anyhow::Result<Rules> {
    match &arguments.rules {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read rules file {}", path.display()))?;
            let document = RulesDocument::parse_auto(&text)
                .with_context(|| format!("invalid rules file {}", path.display()))?;
            Rules::compile(document).with_context(|| format!("invalid rules in {}", path.display()))
        }
        None => Ok(Rules::preset(&arguments.preset)?),
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

pub(crate) async fn run(arguments: &Arguments) -> Result<(), Failure> {
    let rules = load_rules(arguments).map_err(Failure::Input)?;
    // clap requires `--redis-url` unless `--api` is given, and `--api` never
    // reaches this mode; checked rather than unwrapped so that a later change
    // of the flags gives an error, not a panic.
    let redis_url = arguments
        .redis_url
        .as_deref()
        .ok_or_else(|| Failure::Input(anyhow::anyhow!("missing --redis-url")))?;
    let mut projection = Projection::new(rules.relevant_properties());
    let mut source = Source::connect(redis_url, &arguments.prefix)
        .await
        .map_err(|error| Failure::Redis(error.into()))?;
    let bar = progress_bar();
    let report = source
        .bootstrap(&mut projection, arguments.strategy, |progress| {
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
        .map_err(|error| Failure::Redis(anyhow::Error::new(error).context("bootstrap failed")))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let stats = projection.stats();
    let bytes_per_file = stats.state_size.checked_div(stats.file_count).unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    let written = if arguments.list {
        list(projection, rules, &mut stdout)
    } else if arguments.dump {
        dump(&projection, &mut stdout)
    } else if arguments.json {
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
        });
        writeln!(stdout, "{summary}")
    } else {
        writeln!(
            stdout,
            "{} files ({} visible) ready in {} ms by {} ({})\n\
             {} events processed, {} properties fetched, {} skipped, {} malformed\n\
             last event id {}, state {} bytes ({} bytes per file)",
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
        )
    };
    match written {
        // `metafuse-stats --dump | head` is fine.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other
            .context("cannot write to stdout")
            .map_err(Failure::Input),
    }
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
