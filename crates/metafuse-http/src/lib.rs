//! The one HTTP/1.1 client of metafuse.
//!
//! Every outgoing HTTP request (meta-core `/urls`, `/meta`, the event stream,
//! upstream WebDAV ranges) goes through [`HttpClient`]: a keep-alive pool over
//! hyper's legacy client with TCP_NODELAY (loopback requests otherwise stall
//! ~40 ms on delayed ACKs), a connect timeout, a response timeout, and typed
//! errors that name the URL with any password removed.
//!
//! Three ways to ask:
//! - [`HttpClient::get_json`]: a 200 JSON body decoded into a type;
//! - [`HttpClient::get`]: the whole body and status, for callers that give
//!   meaning to statuses themselves (404 = gone);
//! - [`HttpClient::open`]: headers only, then the body chunk by chunk
//!   ([`StreamingResponse::next_chunk`]), for Server-Sent Events and large
//!   downloads; the response timeout covers the headers only.
#![warn(missing_docs)]

mod client;
mod error;
mod url;

pub use client::{FullResponse, HttpClient, HttpClientConfig, StreamingResponse};
pub use error::HttpError;
pub use url::check_http_url;
