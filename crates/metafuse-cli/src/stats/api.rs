//! `--api` mode: the statistics and health of a running instance, read over
//! its HTTP API (`docs/api.md`) and shown as a table or as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use metafuse_http::{HttpClient, HttpClientConfig};
use serde_json::{Value, json};

use crate::exit::{CliError, ExitKind};

/// A stuck instance must not hang the operator's terminal.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A bad URL is configuration; an instance that cannot be reached or
/// answers badly fails the command.
pub(crate) async fn run(base_url: &str, as_json: bool) -> Result<(), CliError> {
    let base_url = normalise_base_url(base_url).map_err(CliError::of(ExitKind::Config))?;
    ask(&base_url, as_json)
        .await
        .map_err(CliError::of(ExitKind::Failed))
}

async fn ask(base_url: &str, as_json: bool) -> anyhow::Result<()> {
    let base_url = base_url.to_owned();
    let client = HttpClient::new(HttpClientConfig {
        connect_timeout: REQUEST_TIMEOUT,
        response_timeout: REQUEST_TIMEOUT,
        ..HttpClientConfig::default()
    });
    let (stats, health) = tokio::join!(
        get_json(&client, &base_url, "/api/fuse/stats"),
        get_json(&client, &base_url, "/api/fuse/health"),
    );
    let (stats, health) = (stats?, health?);
    if as_json {
        println!("{}", json!({ "stats": stats, "health": health }));
    } else {
        // The leader is a nicety: an instance started with `--redis-url`
        // has none, and an old one may not serve the route at all.
        let services = get_json(&client, &base_url, "/api/services").await.ok();
        print!(
            "{}",
            render_table(&base_url, &stats, &health, services.as_ref())
        );
    }
    Ok(())
}

/// `127.0.0.1:3000`, `http://127.0.0.1:3000/` → `http://127.0.0.1:3000`.
fn normalise_base_url(base_url: &str) -> anyhow::Result<String> {
    let trimmed = base_url.trim().trim_end_matches('/');
    if trimmed.starts_with("https://") {
        bail!("unsupported api url {base_url:?}: only http:// is supported");
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    with_scheme
        .parse::<hyper::Uri>()
        .with_context(|| format!("invalid api url {base_url:?}"))?;
    Ok(with_scheme)
}

async fn get_json(client: &HttpClient, base_url: &str, route: &str) -> anyhow::Result<Value> {
    let url = format!("{base_url}{route}");
    let response = client
        .get(&url, &[("accept", "application/json")])
        .await
        .with_context(|| format!("cannot reach metafuse at {url}"))?;
    if !(200..300).contains(&response.status) {
        bail!(
            "{url} answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body).trim()
        );
    }
    serde_json::from_slice::<Value>(&response.body)
        .with_context(|| format!("{url} did not answer JSON"))
}

/// The table of `--api`: one figure per line, `unknown` for what the
/// instance does not report (yet).
fn render_table(base_url: &str, stats: &Value, health: &Value, services: Option<&Value>) -> String {
    let unknown = || "unknown".to_owned();
    let number = |value: &Value| value.as_u64().map(|n| n.to_string());
    let builder = &stats["stateBuilder"];
    let stream = &health["stream"];
    let mut rows: Vec<(&str, String)> = Vec::new();

    rows.push(("status", text(&health["status"]).unwrap_or_else(unknown)));
    rows.push((
        "redis",
        match health["redis"]["connected"].as_bool() {
            Some(true) => "connected".to_owned(),
            Some(false) => "disconnected".to_owned(),
            None => unknown(),
        },
    ));
    // An instance given `--redis-url` knows no leader: no row rather than
    // a row of unknowns.
    if let Some(leader) = services.map(|services| &services["leader"]) {
        match (text(&leader["hostname"]), text(&leader["redisUrl"])) {
            (Some(hostname), Some(redis_url)) => {
                rows.push(("leader", format!("{hostname} ({redis_url})")));
            }
            (Some(name), None) | (None, Some(name)) => rows.push(("leader", name)),
            (None, None) => {}
        }
    }
    // A Redis source says how it is deployed and what each node served.
    let topology = &health["source"]["topology"];
    if let Some(mode) = text(&topology["mode"]) {
        rows.push(("redis mode", mode));
        for node in topology["nodes"].as_array().into_iter().flatten() {
            let mut line = text(&node["address"]).unwrap_or_else(unknown);
            if let Some(role) = text(&node["role"]).filter(|role| role != "master") {
                line.push_str(&format!(" [{role}]"));
            }
            if let Some(n_keys) = number(&node["fetchedKeys"]) {
                line.push_str(&format!(" ({n_keys} keys fetched)"));
            }
            rows.push(("redis node", line));
        }
    }
    rows.push(("files", number(&stats["fileCount"]).unwrap_or_else(unknown)));
    rows.push((
        "directories",
        number(&stats["directoryCount"]).unwrap_or_else(unknown),
    ));
    rows.push((
        "total size",
        stats["totalSize"]
            .as_u64()
            .map(|bytes| format!("{} ({bytes} bytes)", human_size(bytes)))
            .unwrap_or_else(unknown),
    ));
    rows.push((
        "events processed",
        number(&builder["eventsProcessed"]).unwrap_or_else(unknown),
    ));
    rows.push((
        "properties fetched",
        match (
            number(&builder["propertiesFetched"]),
            number(&builder["propertiesSkipped"]),
        ) {
            (Some(fetched), Some(skipped)) => format!("{fetched} ({skipped} skipped)"),
            (Some(fetched), None) => fetched,
            _ => unknown(),
        },
    ));
    rows.push((
        "stream",
        match text(&stream["phase"]) {
            Some(phase) => format!(
                "{phase}, last event {}",
                text(&builder["lastEventId"])
                    .or_else(|| text(&stream["lastEventId"]))
                    .unwrap_or_else(|| "none".to_owned())
            ),
            None => unknown(),
        },
    ));
    rows.push((
        "tail lag",
        number(&stream["lagEntries"])
            .map(|entries| format!("{entries} entries"))
            .unwrap_or_else(unknown),
    ));
    rows.push((
        "last event",
        stream["secondsSinceLastEvent"]
            .as_f64()
            .map(|seconds| format!("{seconds:.1} s ago"))
            .unwrap_or_else(unknown),
    ));
    rows.push((
        "strategy",
        match (text(&stats["strategy"]), number(&stats["bootstrapMs"])) {
            (Some(strategy), Some(milliseconds)) => {
                format!("{strategy} (bootstrap {milliseconds} ms)")
            }
            (Some(strategy), None) => strategy,
            _ => unknown(),
        },
    ));
    rows.push((
        "last refresh",
        text(&stats["lastRefresh"]).unwrap_or_else(unknown),
    ));

    if let Some(rules_error) = text(&stats["rulesError"]) {
        rows.push(("rules error", rules_error));
    }

    let mut table = format!("metafuse at {base_url}\n");
    for (label, value) in rows {
        // Writing to a String cannot fail.
        let _ = writeln!(table, "  {label:<20}{value}");
    }
    table
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// Binary units with one decimal (`1.4 GiB`); plain bytes below 1 KiB.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_size_uses_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1_503_238_553), "1.4 GiB");
        assert_eq!(human_size(15_847_392_847_362), "14.4 TiB");
    }

    #[test]
    fn base_url_gets_a_scheme_and_loses_its_trailing_slash() -> anyhow::Result<()> {
        assert_eq!(
            normalise_base_url("127.0.0.1:3000")?,
            "http://127.0.0.1:3000"
        );
        assert_eq!(
            normalise_base_url("http://localhost:3000/")?,
            "http://localhost:3000"
        );
        assert!(normalise_base_url("https://example.invalid").is_err());
        Ok(())
    }

    #[test]
    fn table_marks_missing_figures_unknown() {
        let stats = json!({ "fileCount": 3, "lastRefresh": null });
        let health = json!({ "status": "starting", "redis": { "connected": false } });
        let table = render_table("http://x", &stats, &health, None);
        assert!(table.contains("status              starting"), "{table}");
        assert!(
            table.contains("redis               disconnected"),
            "{table}"
        );
        assert!(table.contains("files               3"), "{table}");
        assert!(table.contains("directories         unknown"), "{table}");
        assert!(table.contains("last refresh        unknown"), "{table}");
        assert!(!table.contains("leader"), "{table}");
        assert!(!table.contains("redis mode"), "{table}");
    }

    #[test]
    fn table_lists_the_nodes_of_a_cluster() {
        let health = json!({ "source": { "topology": { "mode": "cluster", "nodes": [
            { "address": "10.0.0.1:7000", "role": "master", "fetchedKeys": 12 },
            { "address": "10.0.0.2:7001", "role": "gone", "fetchedKeys": 3 },
        ] } } });
        let table = render_table("http://x", &json!({}), &health, None);
        assert!(table.contains("redis mode          cluster\n"), "{table}");
        assert!(
            table.contains("redis node          10.0.0.1:7000 (12 keys fetched)\n"),
            "{table}"
        );
        assert!(
            table.contains("redis node          10.0.0.2:7001 [gone] (3 keys fetched)\n"),
            "{table}"
        );
    }
}
