//! `replay`: every bootstrap strategy timed against the old design.

use std::time::Duration;

use metafuse_stream::{Projection, Rules, Source, Strategy};

use crate::baseline;

/// One measured bootstrap.
struct Measurement {
    label: String,
    elapsed: Duration,
    n_events: u64,
    n_files: usize,
    state_size: Option<usize>,
    note: String,
}

impl Measurement {
    fn print(&self, baseline: Option<Duration>) {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let bytes_per_file = match self.state_size {
            Some(size) if self.n_files > 0 => format!("{}", size / self.n_files),
            _ => "n/a".to_owned(),
        };
        let speed_up = baseline.map_or("".to_owned(), |baseline| {
            format!("{:.0}x", baseline.as_secs_f64() / seconds)
        });
        println!(
            "{:<22} {:>10.3} {:>12.0} {:>11.0} {:>10} {:>9}  {}",
            self.label,
            seconds,
            self.n_events as f64 / seconds,
            self.n_files as f64 / seconds,
            bytes_per_file,
            speed_up,
            self.note
        );
    }
}

/// Times every strategy and the old design; prints the table.
pub(crate) async fn compare(
    url: &str,
    preset: &str,
    prefix: &str,
    baseline_limit: u64,
    runs: usize,
) -> anyhow::Result<()> {
    let relevant = Rules::preset(preset)?.relevant_properties();
    let mut source = Source::connect(url, prefix).await?;
    let mut measurements = Vec::new();
    for strategy in [Strategy::Auto, Strategy::Replay, Strategy::Snapshot] {
        let mut best: Option<Measurement> = None;
        for _ in 0..runs {
            let mut projection = Projection::new(relevant.clone());
            let report = source.bootstrap(&mut projection, strategy, |_| {}).await?;
            let stats = projection.stats();
            let label = match strategy {
                Strategy::Auto => format!("auto ({})", report.strategy_used.name()),
                other => other.name().to_owned(),
            };
            let measurement = Measurement {
                label,
                elapsed: report.elapsed,
                n_events: report.n_events,
                n_files: stats.file_count,
                state_size: Some(stats.state_size),
                note: format!(
                    "{} fetched, load {} ms, catch-up {} ms; {}",
                    report.n_fetched,
                    report.timings.load.as_millis(),
                    report.timings.catch_up.as_millis(),
                    report.reason
                ),
            };
            if best
                .as_ref()
                .is_none_or(|best| measurement.elapsed < best.elapsed)
            {
                best = Some(measurement);
            }
        }
        measurements.extend(best);
    }
    let old = baseline::run(url, prefix, &relevant, baseline_limit).await?;
    let baseline_elapsed = old.extrapolated;
    let old_measurement = Measurement {
        label: "old design (1 GET/event)".to_owned(),
        elapsed: old.extrapolated,
        n_events: old.n_stream_entries,
        n_files: measurements
            .first()
            .map_or(old.n_files, |measurement| measurement.n_files),
        state_size: None,
        note: if old.n_events < old.n_stream_entries {
            format!(
                "EXTRAPOLATED from {} of {} events in {:.1} s",
                old.n_events,
                old.n_stream_entries,
                old.measured.as_secs_f64()
            )
        } else {
            "measured over the whole stream".to_owned()
        },
    };
    println!(
        "{:<22} {:>10} {:>12} {:>11} {:>10} {:>9}  note",
        "strategy", "ready s", "events/s", "files/s", "B/file", "speed-up"
    );
    for measurement in &measurements {
        measurement.print(Some(baseline_elapsed));
    }
    old_measurement.print(None);
    Ok(())
}
