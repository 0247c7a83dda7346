//! `GET/POST /api/webdav-tokens` and `DELETE /api/webdav-tokens/{id}`
//! (spec §11): per-device WebDAV tokens, kept by metafuse-webdav's
//! [`TokenStore`], shared with the WebDAV server so that a revocation
//! applies to its next request.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use metafuse_webdav::{TokenStore, TokenStoreError};
use parking_lot::RwLock;
use serde_json::{Value, json};

/// A label body is tiny; anything larger is not one.
const MAX_BODY_BYTES: usize = 64 * 1024;

const ROUTE: &str = "/api/webdav-tokens";

/// The store the routes use; `None` until the service installs one (the
/// routes then answer 503).
static STORE: RwLock<Option<Arc<TokenStore>>> = RwLock::new(None);

/// Serves the token routes from `store` (call at start, with the store the
/// WebDAV server uses).
pub fn install_webdav_tokens(store: Arc<TokenStore>) {
    *STORE.write() = Some(store);
}

/// Whether `path` is one of the token routes.
pub(crate) fn is_token_route(path: &str) -> bool {
    path == ROUTE
        || path
            .strip_prefix(ROUTE)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn json_reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_reply(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_reply(status, &json!({ "error": message }))
}

fn store_error(error: &TokenStoreError) -> Response<Full<Bytes>> {
    match error {
        TokenStoreError::LabelTooLong => error_reply(StatusCode::BAD_REQUEST, &error.to_string()),
        _ => {
            tracing::warn!(%error, "webdav token store");
            error_reply(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string())
        }
    }
}

/// Answers a token route.
pub(crate) async fn respond(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(store) = STORE.read().clone() else {
        return error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "webdav tokens are not available in this process",
        );
    };
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let method = request.method().clone();
    let id = path
        .strip_prefix(ROUTE)
        .and_then(|rest| rest.strip_prefix('/'));
    match (method, id) {
        (Method::GET, None) => {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.list()).await {
                Ok(Ok(tokens)) => json_reply(StatusCode::OK, &json!({ "tokens": tokens })),
                Ok(Err(error)) => store_error(&error),
                Err(_) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, "token listing failed"),
            }
        }
        (Method::POST, None) => {
            let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return error_reply(StatusCode::BAD_REQUEST, "body unreadable or too large");
                }
            };
            let label = if body.iter().all(u8::is_ascii_whitespace) {
                String::new()
            } else {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(object)) => match object.get("label") {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(label)) => label.clone(),
                        Some(_) => {
                            return error_reply(
                                StatusCode::BAD_REQUEST,
                                "\"label\" must be a string",
                            );
                        }
                    },
                    _ => return error_reply(StatusCode::BAD_REQUEST, "body must be a JSON object"),
                }
            };
            match tokio::task::spawn_blocking(move || store.create(&label)).await {
                Ok(Ok(new_token)) => json_reply(StatusCode::CREATED, &json!(new_token)),
                Ok(Err(error)) => store_error(&error),
                Err(_) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, "token creation failed"),
            }
        }
        (Method::DELETE, Some(id)) if !id.contains('/') => {
            let id = id.to_owned();
            match tokio::task::spawn_blocking(move || store.revoke(&id)).await {
                Ok(Ok(true)) => {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    response
                }
                Ok(Ok(false)) => error_reply(StatusCode::NOT_FOUND, "token not found"),
                Ok(Err(error)) => store_error(&error),
                Err(_) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, "token revocation failed"),
            }
        }
        (method, _) => error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {method} not allowed for {path}"),
        ),
    }
}
