//! The one place this crate speaks HTTP. It uses hyper-util directly until
//! the project's shared client (metafuse-http) lands; then this module
//! becomes a call into it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A keep-alive HTTP/1 client shared by every target of a notifier.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
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
        let mut connector = HttpConnector::new();
        // 30 ms stalls per request otherwise (see DEVELOPERS.md).
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// Sends `call`; the body of a 2xx answer, else an error. Secrets are
    /// in headers, never in `url`, so the error can be logged as is.
    pub(crate) async fn send(&self, call: &HttpCall) -> Result<Bytes, HttpError> {
        let failed = |reason: String| HttpError::Failed {
            method: call.method.clone(),
            url: call.url.clone(),
            reason,
        };
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(&call.url);
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(
                call.body.clone().unwrap_or_default(),
            )))
            .map_err(|error| failed(format!("invalid request: {error}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| failed(format!("{error}")))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| failed(format!("reading the answer: {error}")))?
                .to_bytes();
            if !status.is_success() {
                return Err(HttpError::Status {
                    method: call.method.clone(),
                    url: call.url.clone(),
                    status,
                });
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| failed(format!("no answer within {:?}", self.timeout)))?
    }
}
