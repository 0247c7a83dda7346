//! The one place this crate speaks HTTP: a thin layer over the project's
//! client (metafuse-http) that keeps this crate's error shape.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use metafuse_http::HttpClientConfig;

/// A keep-alive HTTP/1 client shared by every target of a notifier.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    client: metafuse_http::HttpClient,
}

/// One request to send.
#[derive(Clone, Debug)]
pub(crate) struct HttpCall {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Vec<u8>>,
}

/// A request that did not get a 2xx answer; the message carries the cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("{method} {url}: {reason}")]
    Failed {
        method: Method,
        url: String,
        reason: String,
    },
    #[error("{method} {url}: status {status}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
    },
}

impl HttpClient {
    pub(crate) fn new(timeout: Duration) -> Self {
        HttpClient {
            client: metafuse_http::HttpClient::new(HttpClientConfig {
                connect_timeout: timeout,
                response_timeout: timeout,
                ..HttpClientConfig::default()
            }),
        }
    }

    /// Sends `call`; the body of a 2xx answer, else an error. Secrets are
    /// in headers, never in `url`, so the error can be logged as is.
    pub(crate) async fn send(&self, call: &HttpCall) -> Result<Bytes, HttpError> {
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let body = Bytes::from(call.body.clone().unwrap_or_default());
        let response = self
            .client
            .request(call.method.clone(), &call.url, &headers, body)
            .await
            .map_err(|error| HttpError::Failed {
                method: call.method.clone(),
                url: call.url.clone(),
                reason: error.to_string(),
            })?;
        if !(200..300).contains(&response.status) {
            return Err(HttpError::Status {
                method: call.method.clone(),
                url: call.url.clone(),
                status: StatusCode::from_u16(response.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            });
        }
        Ok(response.body)
    }
}
