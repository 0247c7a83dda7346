//! Asking a meta-core API for `/urls`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::discover::{Leader, LeaderSource};

/// A `/urls` reply is a few hundred bytes; anything much larger is not meta-core.
const MAX_URLS_BODY_BYTES: usize = 64 * 1024;

/// The JSON of meta-core's `GET /urls`.
///
/// Every field is optional on the wire so that an older or newer meta-core
/// still parses; [`Leader`] requires a non-empty `redisUrl`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlsResponse {
    /// Host name of the meta-core instance.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Its public base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Its API base URL.
    #[serde(default)]
    pub api_url: Option<String>,
    /// The Redis the leader serves.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Public WebDAV URL.
    #[serde(default)]
    pub webdav_url: Option<String>,
    /// WebDAV URL reachable from inside the deployment network (preferred for reads).
    #[serde(default)]
    pub webdav_url_internal: Option<String>,
    /// Whether the instance answering is the leader.
    #[serde(default)]
    pub is_leader: Option<bool>,
}

/// Why a meta-core gave no leader. Like [`crate::info_file`] problems these
/// mean "wait and retry".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MetaCoreProblem {
    #[error("meta-core url {url:?} is not a valid http url: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("meta-core at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("meta-core at {url} did not answer within {timeout:?}")]
    TimedOut { url: String, timeout: Duration },
    #[error("meta-core at {url} answered http {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("meta-core at {url} sent a bad /urls body: {reason}")]
    BadBody { url: String, reason: String },
    #[error("meta-core at {url} names no redisUrl in /urls")]
    NoRedisUrl { url: String },
}

impl MetaCoreProblem {
    /// Problems of the same kind for the same URL are one state for logging,
    /// whatever the exact error text of each attempt.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid url",
            Self::Unreachable { .. } => "unreachable",
            Self::TimedOut { .. } => "timed out",
            Self::HttpStatus { .. } => "http status",
            Self::BadBody { .. } => "bad body",
            Self::NoRedisUrl { .. } => "no redis url",
        }
    }
}

/// `{base}/urls`, tolerating a trailing slash on the base.
fn urls_endpoint(meta_core_url: &str) -> String {
    format!("{}/urls", meta_core_url.trim().trim_end_matches('/'))
}

/// Checks that `meta_core_url` is something this client can ask: an absolute http URL.
pub(crate) fn check_meta_core_url(meta_core_url: &str) -> Result<Uri, MetaCoreProblem> {
    let invalid = |reason: String| MetaCoreProblem::InvalidUrl {
        url: meta_core_url.to_owned(),
        reason,
    };
    let uri: Uri = urls_endpoint(meta_core_url)
        .parse()
        .map_err(|error: hyper::http::uri::InvalidUri| invalid(error.to_string()))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(uri),
        Some("http") => Err(invalid("no host".to_owned())),
        Some(other) => Err(invalid(format!(
            "scheme {other} is not supported, use http"
        ))),
        None => Err(invalid("not an absolute url".to_owned())),
    }
}

/// A small HTTP client for meta-core; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct MetaCoreClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl MetaCoreClient {
    pub(crate) fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client, timeout }
    }

    /// `GET {meta_core_url}/urls` turned into a [`Leader`].
    pub(crate) async fn fetch_leader(
        &self,
        meta_core_url: &str,
        source: LeaderSource,
    ) -> Result<Leader, MetaCoreProblem> {
        let urls = self.fetch_urls(meta_core_url).await?;
        leader_from_urls(meta_core_url, urls, source)
    }

    async fn fetch_urls(&self, meta_core_url: &str) -> Result<UrlsResponse, MetaCoreProblem> {
        let uri = check_meta_core_url(meta_core_url)?;
        let url = meta_core_url.to_owned();
        let request = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|error| MetaCoreProblem::InvalidUrl {
                url: url.clone(),
                reason: error.to_string(),
            })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                MetaCoreProblem::Unreachable {
                    url: url.clone(),
                    reason: error_chain(&error),
                }
            })?;
            if response.status() != StatusCode::OK {
                return Err(MetaCoreProblem::HttpStatus {
                    url: url.clone(),
                    status: response.status().as_u16(),
                });
            }
            let body = Limited::new(response.into_body(), MAX_URLS_BODY_BYTES)
                .collect()
                .await
                .map_err(|error| MetaCoreProblem::BadBody {
                    url: url.clone(),
                    reason: error.to_string(),
                })?
                .to_bytes();
            serde_json::from_slice::<UrlsResponse>(&body).map_err(|error| {
                MetaCoreProblem::BadBody {
                    url: url.clone(),
                    reason: error.to_string(),
                }
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_elapsed| MetaCoreProblem::TimedOut {
                url: url.clone(),
                timeout: self.timeout,
            })?
    }
}

/// hyper's top-level client error says only "client error (Connect)"; the
/// cause ("connection refused") is what an operator needs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn non_blank(value: Option<String>) -> Option<String> {
    value
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The leader described by a `/urls` reply of the meta-core at `meta_core_url`.
///
/// WebDAV: `webdavUrlInternal`, else `http://{hostname}/webdav` (spec §6).
/// `api_url` is the URL we asked, which is known to answer, rather than the
/// `apiUrl` the reply advertises.
pub(crate) fn leader_from_urls(
    meta_core_url: &str,
    urls: UrlsResponse,
    source: LeaderSource,
) -> Result<Leader, MetaCoreProblem> {
    let redis_url = non_blank(urls.redis_url).ok_or_else(|| MetaCoreProblem::NoRedisUrl {
        url: meta_core_url.to_owned(),
    })?;
    let hostname = non_blank(urls.hostname);
    let webdav_url = non_blank(urls.webdav_url_internal).or_else(|| {
        hostname
            .as_ref()
            .map(|hostname| format!("http://{hostname}/webdav"))
    });
    Ok(Leader {
        redis_url,
        webdav_url,
        api_url: Some(meta_core_url.trim().trim_end_matches('/').to_owned()),
        hostname,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(json: &str) -> UrlsResponse {
        serde_json::from_str(json).expect("valid urls json")
    }

    #[test]
    fn the_shipped_urls_fixture_gives_a_leader() {
        let fixture = include_str!("../../../fixtures/leader/urls.json");
        let leader = leader_from_urls(
            "http://meta-core:9000",
            urls(fixture),
            LeaderSource::LeaderInfoFile,
        )
        .expect("leader");
        assert_eq!(leader.redis_url, "redis://meta-core:6379");
        assert_eq!(
            leader.webdav_url.as_deref(),
            Some("http://meta-core/webdav")
        );
    }

    #[test]
    fn internal_webdav_url_is_preferred() {
        let leader = leader_from_urls(
            "http://core:9000/",
            urls(
                r#"{"hostname":"core","redisUrl":"redis://core:6379","webdavUrl":"http://public/webdav","webdavUrlInternal":"http://core-internal/webdav","isLeader":true}"#,
            ),
            LeaderSource::LeaderInfoFile,
        )
        .expect("leader");
        assert_eq!(leader.redis_url, "redis://core:6379");
        assert_eq!(
            leader.webdav_url.as_deref(),
            Some("http://core-internal/webdav")
        );
        assert_eq!(leader.api_url.as_deref(), Some("http://core:9000"));
        assert_eq!(leader.hostname.as_deref(), Some("core"));
    }

    #[test]
    fn webdav_falls_back_to_hostname_when_internal_url_is_blank() {
        let leader = leader_from_urls(
            "http://core:9000",
            urls(r#"{"hostname":"core-7","redisUrl":"redis://x:1","webdavUrlInternal":""}"#),
            LeaderSource::PinnedMetaCore,
        )
        .expect("leader");
        assert_eq!(leader.webdav_url.as_deref(), Some("http://core-7/webdav"));
    }

    #[test]
    fn a_reply_without_redis_url_is_no_leader() {
        let problem = leader_from_urls(
            "http://core:9000",
            urls(r#"{"hostname":"core","redisUrl":"  "}"#),
            LeaderSource::PinnedMetaCore,
        )
        .unwrap_err();
        assert!(matches!(problem, MetaCoreProblem::NoRedisUrl { .. }));
    }

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        assert!(check_meta_core_url("http://core:9000/").is_ok());
        for bad in ["https://core:9000", "core:9000", "/relative", "http:// bad"] {
            assert!(
                matches!(
                    check_meta_core_url(bad),
                    Err(MetaCoreProblem::InvalidUrl { .. })
                ),
                "{bad} should be rejected"
            );
        }
    }
}
