//! `GET /api/services`: the MetaMesh services the meta-core in use knows
//! of. Older meta-cores list them at `/api/services`; the newest at
//! `/api/neighbors` (spec §9), mapped here to the old shape. Cached briefly,
//! and never an error: without meta-core the list is empty with a warning.

use std::time::{Duration, Instant};

use metafuse_api::{ServiceEntry, ServiceList};
use metafuse_http::{HttpClient, HttpClientConfig};
use parking_lot::Mutex;
use serde_json::Value;

/// A dashboard polls every 30 s per open tab: ask meta-core at most this often.
const CACHE_FOR: Duration = Duration::from_secs(10);
/// A meta-core that does not answer within this is reported as away.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Service lists are small; anything larger is not one.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// The last answer and when it was fetched.
#[derive(Default)]
pub(crate) struct ServicesCache {
    last: Mutex<Option<(Instant, String, ServiceList)>>,
}

impl ServicesCache {
    /// The services meta-core at `api_url` lists (cached for [`CACHE_FOR`]).
    pub(crate) async fn list(&self, api_url: Option<&str>) -> ServiceList {
        let Some(api_url) = api_url else {
            return ServiceList {
                warning: Some(
                    "no meta-core in use (redis given directly): no services to list".to_owned(),
                ),
                ..ServiceList::default()
            };
        };
        if let Some((fetched_at, url, list)) = &*self.last.lock()
            && url == api_url
            && fetched_at.elapsed() < CACHE_FOR
        {
            return list.clone();
        }
        let list = fetch_services(api_url).await;
        *self.last.lock() = Some((Instant::now(), api_url.to_owned(), list.clone()));
        list
    }
}

async fn fetch_services(api_url: &str) -> ServiceList {
    let base = api_url.trim_end_matches('/');
    let away = |error: String| ServiceList {
        warning: Some(format!(
            "cannot list services from meta-core at {base}: {error}"
        )),
        ..ServiceList::default()
    };
    match get_json(&format!("{base}/api/services")).await {
        Ok(Some(body)) => ServiceList {
            services: from_services(&body),
            ..ServiceList::default()
        },
        // Newest meta-core: no registry, the mesh neighbours instead.
        Ok(None) => match get_json(&format!("{base}/api/neighbors")).await {
            Ok(Some(body)) => ServiceList {
                services: from_neighbors(&body),
                ..ServiceList::default()
            },
            Ok(None) => away("neither /api/services nor /api/neighbors exists".to_owned()),
            Err(error) => away(error),
        },
        Err(error) => away(error),
    }
}

/// One GET: `Ok(None)` for 404, the JSON body for 200, an error otherwise.
async fn get_json(url: &str) -> Result<Option<Value>, String> {
    let client = HttpClient::new(HttpClientConfig {
        connect_timeout: REQUEST_TIMEOUT,
        response_timeout: REQUEST_TIMEOUT,
        max_body_bytes: MAX_REPLY_BYTES,
        ..HttpClientConfig::default()
    });
    let response = client
        .get(url, &[("accept", "application/json")])
        .await
        .map_err(|error| error.to_string())?;
    match response.status {
        404 => Ok(None),
        200..=299 => serde_json::from_slice(&response.body)
            .map(Some)
            .map_err(|error| format!("{url} is not json: {error}")),
        status => Err(format!("{url} answered {status}")),
    }
}

fn text(value: &Value, field: &str) -> Option<String> {
    match value.get(field)? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// `{services: [{name, hostname, baseUrl, status, lastHeartbeat}], count}`
/// (a bare array is accepted too).
fn from_services(body: &Value) -> Vec<ServiceEntry> {
    let list = body.get("services").unwrap_or(body);
    list.as_array()
        .into_iter()
        .flatten()
        .map(|service| ServiceEntry {
            name: text(service, "name").unwrap_or_else(|| "unknown".to_owned()),
            hostname: text(service, "hostname").unwrap_or_default(),
            base_url: text(service, "baseUrl")
                .or_else(|| text(service, "url"))
                .or_else(|| text(service, "api"))
                .unwrap_or_default(),
            status: text(service, "status").unwrap_or_else(|| "unknown".to_owned()),
            last_heartbeat: text(service, "lastHeartbeat"),
        })
        .collect()
}

/// `{neighbors: [{name, instance, status?, baseUrl?, addr, lastSeen}], ...}`
/// → the old shape: `instance` is the host, `addr` the base URL when no
/// `baseUrl` is given, a neighbour without status is `online` (it is heard).
fn from_neighbors(body: &Value) -> Vec<ServiceEntry> {
    body.get("neighbors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|neighbor| {
            let addr = text(neighbor, "addr");
            let base_url = text(neighbor, "baseUrl")
                .or_else(|| {
                    addr.as_ref().map(|addr| {
                        if addr.contains("://") {
                            addr.clone()
                        } else {
                            format!("http://{addr}")
                        }
                    })
                })
                .unwrap_or_default();
            let hostname = text(neighbor, "instance")
                .or_else(|| {
                    addr.as_ref().map(|addr| {
                        addr.rsplit_once(':')
                            .map_or(addr.as_str(), |(host, _)| host)
                            .to_owned()
                    })
                })
                .unwrap_or_default();
            ServiceEntry {
                name: text(neighbor, "name").unwrap_or_else(|| "unknown".to_owned()),
                hostname,
                base_url,
                status: text(neighbor, "status").unwrap_or_else(|| "online".to_owned()),
                last_heartbeat: text(neighbor, "lastSeen"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn neighbors_map_to_the_old_shape() {
        let body = json!({"current": "meta-core", "enabled": true, "count": 2, "self": {},
            "neighbors": [
                {"name": "meta-sort", "instance": "nas", "version": "2.1", "status": "running",
                 "resources": [], "caps": [], "baseUrl": "http://nas:8180", "addr": "10.0.0.5:8180",
                 "lastSeen": "2026-01-01T10:00:00Z"},
                {"name": "meta-orbit", "instance": "", "resources": [], "caps": [],
                 "addr": "10.0.0.6:9000", "lastSeen": "2026-01-01T10:00:05Z"}]});
        let services = from_neighbors(&body);
        assert_eq!(services.len(), 2);
        assert_eq!(services[0].base_url, "http://nas:8180");
        assert_eq!(services[0].hostname, "nas");
        assert_eq!(services[0].status, "running");
        assert_eq!(services[1].base_url, "http://10.0.0.6:9000");
        assert_eq!(services[1].hostname, "10.0.0.6");
        assert_eq!(services[1].status, "online");
        assert_eq!(
            services[1].last_heartbeat.as_deref(),
            Some("2026-01-01T10:00:05Z")
        );
    }
}
