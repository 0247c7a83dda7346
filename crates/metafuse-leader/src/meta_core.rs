//! Asking a meta-core API for `/urls`.

use std::time::Duration;

use metafuse_http::{HttpClient, HttpClientConfig, HttpError, check_http_url};
use serde::{Deserialize, Serialize};

use crate::leader::{Leader, LeaderSource, SourceMode};

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
    #[error("meta-core /urls request failed: {error}")]
    Http { url: String, error: HttpError },
    #[error("meta-core at {url} names no redisUrl in /urls, and the redis source was asked for")]
    NoRedisUrl { url: String },
}

impl MetaCoreProblem {
    /// Problems of the same kind for the same URL are one state for logging,
    /// whatever the exact error text of each attempt.
    pub(crate) fn state_key(&self) -> String {
        let (url, kind) = match self {
            Self::Http { url, error } => (url, error.kind()),
            Self::NoRedisUrl { url } => (url, "no redis url"),
        };
        format!("meta-core {url} {kind}")
    }
}

/// `{base}/urls`, tolerating a trailing slash on the base.
fn urls_endpoint(meta_core_url: &str) -> String {
    format!("{}/urls", meta_core_url.trim().trim_end_matches('/'))
}

/// Checks that `meta_core_url` is something the client can ask: an absolute http URL.
pub(crate) fn check_meta_core_url(meta_core_url: &str) -> Result<(), HttpError> {
    check_http_url(&urls_endpoint(meta_core_url)).map(|_uri| ())
}

/// Asks meta-cores for `/urls`; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct MetaCoreClient {
    client: HttpClient,
}

impl MetaCoreClient {
    pub(crate) fn new(timeout: Duration) -> Self {
        let client = HttpClient::new(HttpClientConfig {
            connect_timeout: timeout,
            response_timeout: timeout,
            max_body_bytes: MAX_URLS_BODY_BYTES,
            ..HttpClientConfig::default()
        });
        Self { client }
    }

    /// `GET {meta_core_url}/urls` turned into a [`Leader`].
    pub(crate) async fn fetch_leader(
        &self,
        meta_core_url: &str,
        source: LeaderSource,
        forced_mode: Option<SourceMode>,
    ) -> Result<Leader, MetaCoreProblem> {
        let urls = self
            .client
            .get_json::<UrlsResponse>(&urls_endpoint(meta_core_url))
            .await
            .map_err(|error| MetaCoreProblem::Http {
                url: meta_core_url.to_owned(),
                error,
            })?;
        leader_from_urls(meta_core_url, urls, source, forced_mode)
    }
}

fn non_blank(value: Option<String>) -> Option<String> {
    value
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The mode a meta-core's `/urls` reply implies (spec §9): a published
/// `redisUrl` means direct Redis, none means the API; `forced` (the
/// `--source` flag) overrides.
pub fn choose_mode(published_redis_url: Option<&str>, forced: Option<SourceMode>) -> SourceMode {
    match (forced, published_redis_url.map(str::trim)) {
        (Some(mode), _) => mode,
        (None, Some(url)) if !url.is_empty() => SourceMode::Redis,
        (None, _) => SourceMode::MetaCore,
    }
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
    forced_mode: Option<SourceMode>,
) -> Result<Leader, MetaCoreProblem> {
    let redis_url = non_blank(urls.redis_url);
    let mode = choose_mode(redis_url.as_deref(), forced_mode);
    let redis_url = match mode {
        SourceMode::Redis => redis_url.ok_or_else(|| MetaCoreProblem::NoRedisUrl {
            url: meta_core_url.to_owned(),
        })?,
        SourceMode::MetaCore => String::new(),
    };
    let hostname = non_blank(urls.hostname);
    let webdav_url = non_blank(urls.webdav_url_internal).or_else(|| {
        hostname
            .as_ref()
            .map(|hostname| format!("http://{hostname}/webdav"))
    });
    Ok(Leader {
        mode,
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
            None,
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
            None,
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
            None,
        )
        .expect("leader");
        assert_eq!(leader.webdav_url.as_deref(), Some("http://core-7/webdav"));
    }

    #[test]
    fn a_reply_without_redis_url_means_api_mode_unless_redis_is_forced() {
        let leader = leader_from_urls(
            "http://core:9000",
            urls(r#"{"hostname":"core","redisUrl":"  "}"#),
            LeaderSource::PinnedMetaCore,
            None,
        )
        .expect("api-mode leader");
        assert_eq!(leader.mode, SourceMode::MetaCore);
        assert_eq!(leader.redis_url, "");
        assert_eq!(leader.api_url.as_deref(), Some("http://core:9000"));
        let problem = leader_from_urls(
            "http://core:9000",
            urls(r#"{"hostname":"core","redisUrl":""}"#),
            LeaderSource::PinnedMetaCore,
            Some(SourceMode::Redis),
        )
        .unwrap_err();
        assert!(matches!(problem, MetaCoreProblem::NoRedisUrl { .. }));
    }

    #[test]
    fn a_published_redis_url_means_redis_unless_the_api_is_forced() {
        assert_eq!(choose_mode(Some("redis://x"), None), SourceMode::Redis);
        assert_eq!(choose_mode(Some(" "), None), SourceMode::MetaCore);
        assert_eq!(choose_mode(None, None), SourceMode::MetaCore);
        assert_eq!(
            choose_mode(Some("redis://x"), Some(SourceMode::MetaCore)),
            SourceMode::MetaCore
        );
    }

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        assert!(check_meta_core_url("http://core:9000/").is_ok());
        for bad in ["https://core:9000", "core:9000", "/relative", "http:// bad"] {
            assert!(
                check_meta_core_url(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
