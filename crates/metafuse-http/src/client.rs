//! The pooled client and its responses.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::error::HttpError;
use crate::url::check_http_url;
use metafuse_source::redact_url as redact_url_password;

/// Timeouts and limits of an [`HttpClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpClientConfig {
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Longest wait for a whole answer of [`HttpClient::get`] and
    /// [`HttpClient::get_json`], and for the headers of [`HttpClient::open`].
    pub response_timeout: Duration,
    /// How long an unused keep-alive connection stays in the pool.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host: at least the callers' request
    /// concurrency, or bursts reconnect for every request.
    pub max_idle_per_host: usize,
    /// Largest body [`HttpClient::get`] reads; a larger one is a
    /// [`HttpError::BadBody`]. `/meta` of a million files is ~40 MB.
    pub max_body_bytes: usize,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 64,
            max_body_bytes: 512 * 1024 * 1024,
        }
    }
}

/// An HTTP/1.1 client with a keep-alive pool; cheap to clone (clones share
/// the pool).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    config: HttpClientConfig,
}

/// A whole answer, whatever its status.
#[derive(Debug, Clone)]
pub struct FullResponse {
    /// The HTTP status code.
    pub status: u16,
    /// `Retry-After` in seconds, when sent.
    pub retry_after: Option<Duration>,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// An answer whose headers have arrived and whose body is read chunk by
/// chunk. Dropping it closes the connection unless the body was read to
/// its end.
#[derive(Debug)]
pub struct StreamingResponse {
    /// The HTTP status code.
    pub status: u16,
    /// `Retry-After` in seconds, when sent.
    pub retry_after: Option<Duration>,
    /// The response headers.
    pub headers: HeaderMap,
    body: Incoming,
    url: String,
}

impl StreamingResponse {
    /// The next piece of the body; `None` at its end. Cancel-safe: a
    /// chunk is either returned or still in the connection. No timeout:
    /// callers that wait for a stream watch it themselves.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(error)) => {
                    return Err(HttpError::Unreachable {
                        url: self.url.clone(),
                        reason: error_chain(&error),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// This answer as the [`HttpError::Status`] a caller reports when the
    /// status is not one it accepts.
    pub fn status_error(&self) -> HttpError {
        HttpError::Status {
            url: self.url.clone(),
            status: self.status,
            retry_after: self.retry_after,
        }
    }
}

impl FullResponse {
    /// The value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

impl HttpClient {
    /// A client with its own pool.
    pub fn new(config: HttpClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .build(connector);
        Self { client, config }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &HttpClientConfig {
        &self.config
    }

    /// `GET url` with extra `headers`, body read whole, any status.
    /// The response timeout covers the whole exchange.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<FullResponse, HttpError> {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    /// `method url` with extra `headers` and `body`, the answer read whole,
    /// any status (a media server's `POST`, a webhook). The response timeout
    /// covers the whole exchange.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<FullResponse, HttpError> {
        let shown_url = redact_url_password(url);
        let exchange = async {
            let response = self.send(method, url, headers, body).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.config.max_body_bytes)
                .collect()
                .await
                .map_err(|error| HttpError::BadBody {
                    url: shown_url.clone(),
                    reason: error.to_string(),
                })?
                .to_bytes();
            Ok(FullResponse {
                status: parts.status.as_u16(),
                retry_after: retry_after(&parts.headers),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.config.response_timeout, exchange)
            .await
            .map_err(|_elapsed| HttpError::TimedOut {
                url: shown_url.clone(),
                timeout: self.config.response_timeout,
            })?
    }

    /// `GET url` answered 200 with a JSON body decoded as `T`; any other
    /// status is an [`HttpError::Status`].
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, HttpError> {
        let response = self.get(url, &[("accept", "application/json")]).await?;
        if response.status != 200 {
            return Err(HttpError::Status {
                url: redact_url_password(url),
                status: response.status,
                retry_after: response.retry_after,
            });
        }
        serde_json::from_slice(&response.body).map_err(|error| HttpError::BadBody {
            url: redact_url_password(url),
            reason: error.to_string(),
        })
    }

    /// Sends `method url` with `headers` and returns once the headers
    /// arrived (within the response timeout), any status; the body is read
    /// with [`StreamingResponse::next_chunk`].
    pub async fn open(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<StreamingResponse, HttpError> {
        let shown_url = redact_url_password(url);
        let response = tokio::time::timeout(
            self.config.response_timeout,
            self.send(method, url, headers, Bytes::new()),
        )
        .await
        .map_err(|_elapsed| HttpError::TimedOut {
            url: shown_url.clone(),
            timeout: self.config.response_timeout,
        })??;
        let (parts, body) = response.into_parts();
        Ok(StreamingResponse {
            status: parts.status.as_u16(),
            retry_after: retry_after(&parts.headers),
            headers: parts.headers,
            body,
            url: shown_url,
        })
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, HttpError> {
        let uri = check_http_url(url)?;
        let invalid = |reason: String| HttpError::InvalidUrl {
            url: redact_url_password(url),
            reason,
        };
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|error| invalid(format!("header name {name:?}: {error}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|error| invalid(format!("header {name}: {error}")))?;
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|error| invalid(error.to_string()))?;
        self.client
            .request(request)
            .await
            .map_err(|error| HttpError::Unreachable {
                url: redact_url_password(url),
                reason: error_chain(&error),
            })
    }
}

/// `Retry-After` as delay-seconds; the HTTP-date form is not used by
/// meta-core and is ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
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
