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
    if let Some(topology) = &metrics.topology {
        out.family(
            "metafuse_redis_mode",
            "gauge",
            "How the Redis source is deployed (value 1, mode single, cluster or sentinel as label).",
        );
        out.sample(
            "metafuse_redis_mode",
            &format!("{{mode=\"{}\"}}", escape_label_value(&topology.mode)),
            1.0,
        );
        out.family(
            "metafuse_redis_node_up",
            "gauge",
            "1 for each Redis node serving now (a cluster's masters, a sentinel's master), 0 for one fetched from earlier that serves no more.",
        );
        for node in &topology.nodes {
            out.sample(
                "metafuse_redis_node_up",
                &format!("{{node=\"{}\"}}", escape_label_value(&node.address)),
                if node.role == "gone" { 0.0 } else { 1.0 },
            );
        }
        let counted: Vec<_> = topology
            .nodes
            .iter()
            .filter_map(|node| Some((&node.address, node.fetched_keys?)))
            .collect();
        if !counted.is_empty() {
            out.family(
                "metafuse_redis_node_fetched_keys_total",
                "counter",
                "Values fetched from each Redis node (cluster masters).",
            );
            for (address, n_keys) in counted {
                out.sample(
                    "metafuse_redis_node_fetched_keys_total",
                    &format!("{{node=\"{}\"}}", escape_label_value(address)),
                    n_keys as f64,
                );
            }
        }
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
    fn cluster_nodes_get_a_labelled_sample_each() {
        use crate::backend::{NodeState, TopologyState};
        let single = render(&MetricsSnapshot::default());
        assert!(!single.contains("metafuse_redis_node"), "{single}");
        let text = render(&MetricsSnapshot {
            topology: Some(TopologyState {
                mode: "cluster".into(),
                nodes: vec![
                    NodeState {
                        address: "10.0.0.1:7000".into(),
                        role: "master".into(),
                        fetched_keys: Some(1200),
                    },
                    NodeState {
                        address: "10.0.0.2:7001".into(),
                        role: "gone".into(),
                        fetched_keys: Some(7),
                    },
                ],
            }),
            ..MetricsSnapshot::default()
        });
        for line in [
            "metafuse_redis_mode{mode=\"cluster\"} 1\n",
            "metafuse_redis_node_up{node=\"10.0.0.1:7000\"} 1\n",
            "metafuse_redis_node_up{node=\"10.0.0.2:7001\"} 0\n",
            "# TYPE metafuse_redis_node_fetched_keys_total counter\n",
            "metafuse_redis_node_fetched_keys_total{node=\"10.0.0.1:7000\"} 1200\n",
            "metafuse_redis_node_fetched_keys_total{node=\"10.0.0.2:7001\"} 7\n",
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
