//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;

use crate::backend::MetricsSnapshot;

pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        let _ = writeln!(self.text, "{name}{labels} {}", format_value(value));
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

// Counts are exported as f64, the Prometheus sample type; u64 values beyond
// 2^53 lose precision there anyway.
pub(crate) fn render(metrics: &MetricsSnapshot) -> String {
    let mut out = Exposition {
        text: String::new(),
    };
    out.single(
        "metafuse_files",
        "gauge",
        "Visible files in the virtual tree.",
        metrics.files as f64,
    );
    out.single(
        "metafuse_directories",
        "gauge",
        "Directories in the virtual tree.",
        metrics.directories as f64,
    );
    out.single(
        "metafuse_files_size_bytes",
        "gauge",
        "Sum of the sizes of visible files.",
        metrics.total_size_bytes as f64,
    );
    out.single(
        "metafuse_events_processed_total",
        "counter",
        "Stream entries applied.",
        metrics.events_processed as f64,
    );
    out.single(
        "metafuse_properties_fetched_total",
        "counter",
        "Property values fetched from Redis.",
        metrics.properties_fetched as f64,
    );
    out.single(
        "metafuse_properties_skipped_total",
        "counter",
        "Stream entries skipped because their property is not relevant.",
        metrics.properties_skipped as f64,
    );
    out.single(
        "metafuse_malformed_entries_skipped_total",
        "counter",
        "Malformed stream entries skipped.",
        metrics.malformed_entries_skipped as f64,
    );
    out.single(
        "metafuse_redis_connected",
        "gauge",
        "1 when the Redis connection is up.",
        if metrics.redis_connected { 1.0 } else { 0.0 },
    );
    out.single(
        "metafuse_redis_reconnects_total",
        "counter",
        "Redis reconnections.",
        metrics.redis_reconnects as f64,
    );
    // Unknown figures are left out rather than exported as a misleading 0.
    if let Some(lag) = metrics.tail_lag_entries {
        out.single(
            "metafuse_tail_lag_entries",
            "gauge",
            "Stream entries not yet applied.",
            lag as f64,
        );
    }
    if let Some(seconds) = metrics.seconds_since_last_event {
        out.single(
            "metafuse_seconds_since_last_event",
            "gauge",
            "Seconds since the last stream entry was applied.",
            seconds,
        );
    }
    if let Some(seconds) = metrics.bootstrap_seconds {
        out.single(
            "metafuse_bootstrap_duration_seconds",
            "gauge",
            "Duration of the last bootstrap.",
            seconds,
        );
    }
    if let Some(strategy) = &metrics.strategy {
        out.family(
            "metafuse_bootstrap_strategy",
            "gauge",
            "Bootstrap strategy in use (value 1, strategy as label).",
        );
        out.sample(
            "metafuse_bootstrap_strategy",
            &format!("{{strategy=\"{}\"}}", escape_label_value(strategy)),
            1.0,
        );
    }
    if let Some(source) = &metrics.source {
        out.family(
            "metafuse_source",
            "gauge",
            "Kind of metadata source in use (value 1, kind as label).",
        );
        out.sample(
            "metafuse_source",
            &format!("{{source=\"{}\"}}", escape_label_value(source)),
            1.0,
        );
    }
    if let Some(notifications) = &metrics.notifications {
        for (name, help, value) in [
            (
                "metafuse_notifications_sent_total",
                "Change notifications sent (requests or program runs that succeeded).",
                notifications.sent,
            ),
            (
                "metafuse_notifications_failed_total",
                "Change notification attempts that failed (each retry counts).",
                notifications.failed,
            ),
            (
                "metafuse_notifications_coalesced_total",
                "Changes merged into another notification instead of sent alone.",
                notifications.coalesced,
            ),
            (
                "metafuse_notifications_abandoned_total",
                "Change notifications given up after the last retry.",
                notifications.abandoned,
            ),
        ] {
            out.single(name, "counter", help, value as f64);
        }
    }
    out.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NotificationCounts;

    #[test]
    fn unknown_figures_are_omitted_and_labels_escaped() {
        let text = render(&MetricsSnapshot {
            files: 3,
            strategy: Some("re\"play".into()),
            source: Some("metacore".into()),
            ..MetricsSnapshot::default()
        });
        assert!(text.contains("metafuse_files 3\n"), "{text}");
        assert!(!text.contains("metafuse_tail_lag_entries"), "{text}");
        assert!(
            text.contains("metafuse_source{source=\"metacore\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("metafuse_bootstrap_strategy{strategy=\"re\\\"play\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn notification_counters_appear_only_when_notifications_are_configured() {
        let without = render(&MetricsSnapshot::default());
        assert!(!without.contains("metafuse_notifications"), "{without}");
        let text = render(&MetricsSnapshot {
            notifications: Some(NotificationCounts {
                sent: 4,
                failed: 2,
                coalesced: 999,
                abandoned: 0,
            }),
            ..MetricsSnapshot::default()
        });
        for line in [
            "# TYPE metafuse_notifications_sent_total counter\n",
            "metafuse_notifications_sent_total 4\n",
            "metafuse_notifications_failed_total 2\n",
            "metafuse_notifications_coalesced_total 999\n",
            "metafuse_notifications_abandoned_total 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in {text}");
        }
    }

    #[test]
    fn special_values_use_prometheus_spelling() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(0.25), "0.25");
    }
}
