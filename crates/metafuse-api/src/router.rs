//! Routing and the handlers: request JSON in, the reference's JSON out.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::backend::{Backend, Health, HealthStatus, ServiceList, SourceState, StreamHealth};
use crate::error::ApiError;
use crate::prometheus;
use crate::state::ServerState;
use crate::timestamp::rfc3339_millis;
use crate::{guard, static_files};

/// The reference's preview default.
const DEFAULT_PREVIEW_LIMIT: u64 = 100;
/// Keeps one preview request from rendering the whole library into a response.
const MAX_PREVIEW_LIMIT: u64 = 10_000;

type HttpResponse = Response<Full<Bytes>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Readiness,
    Liveness,
    Stats,
    Readdir,
    Getattr,
    Exists,
    Read,
    Metadata,
    Files,
    Directories,
    Refresh,
    Rules,
    RulesPreview,
    RulesValidate,
    RulesVariables,
    Services,
    Metrics,
}

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const GET_PUT: &[Method] = &[Method::GET, Method::PUT];

fn route_for(path: &str) -> Option<(Route, &'static [Method])> {
    Some(match path {
        "/health" | "/api/health" | "/api/fuse/health" => (Route::Health, GET),
        "/readyz" => (Route::Readiness, GET),
        "/livez" => (Route::Liveness, GET),
        "/api/fuse/stats" => (Route::Stats, GET),
        "/api/fuse/readdir" => (Route::Readdir, POST),
        "/api/fuse/getattr" => (Route::Getattr, POST),
        "/api/fuse/exists" => (Route::Exists, POST),
        "/api/fuse/read" => (Route::Read, POST),
        "/api/fuse/metadata" => (Route::Metadata, POST),
        "/api/fuse/files" => (Route::Files, GET),
        "/api/fuse/directories" => (Route::Directories, GET),
        "/api/fuse/refresh" => (Route::Refresh, POST),
        "/api/fuse/rules" => (Route::Rules, GET_PUT),
        "/api/fuse/rules/preview" => (Route::RulesPreview, POST),
        "/api/fuse/rules/validate" => (Route::RulesValidate, POST),
        "/api/fuse/rules/variables" => (Route::RulesVariables, GET),
        "/api/services" => (Route::Services, GET),
        "/metrics" => (Route::Metrics, GET),
        _ => return None,
    })
}

/// Requests that change state: guarded by the token or the same-origin
/// rule, and never granted to other origins by CORS.
fn is_mutating(route: Route, method: &Method) -> bool {
    matches!(
        (route, method),
        (Route::Rules, &Method::PUT) | (Route::Refresh, &Method::POST)
    )
}

/// Answers one request; never fails at the HTTP level (errors are JSON responses).
pub(crate) async fn handle(
    state: Arc<ServerState>,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let raw_path = request.uri().path().to_owned();
    let path = if raw_path.len() > 1 {
        raw_path.trim_end_matches('/')
    } else {
        raw_path.as_str()
    };
    let method = request.method().clone();
    if crate::webdav_tokens::is_token_route(&raw_path) {
        return Ok(respond_token_route(&state, &method, request).await);
    }
    let Some((route, methods)) = route_for(path) else {
        let is_read = method == Method::GET || method == Method::HEAD;
        let response = match &state.config.ui_dir {
            Some(ui_dir) if is_read && !raw_path.starts_with("/api/") => {
                static_files::serve(ui_dir, &raw_path).await
            }
            _ => error_response(
                StatusCode::NOT_FOUND,
                format!("no route for {method} {raw_path}"),
            ),
        };
        return Ok(response);
    };
    let mut response = if method == Method::OPTIONS {
        preflight(route, methods)
    } else {
        let effective_method = if method == Method::HEAD {
            // hyper drops the body of a HEAD response itself.
            Method::GET
        } else {
            method.clone()
        };
        if methods.contains(&effective_method) {
            respond(&state, route, effective_method, request).await
        } else {
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed for {path}"),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, allow_header(methods));
            response
        }
    };
    // The MetaMesh dashboards call the API from another origin, as the
    // reference allowed; but no other origin may change anything.
    let grant_cors = if method == Method::OPTIONS {
        methods.iter().any(|allowed| !is_mutating(route, allowed))
    } else {
        !is_mutating(route, &method)
    };
    if grant_cors {
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    Ok(response)
}

/// The WebDAV token routes (crate::webdav_tokens) need no backend; minting
/// and revoking tokens are guarded like every other mutating route, and
/// only the listing is granted to other origins.
async fn respond_token_route(
    state: &ServerState,
    method: &Method,
    request: Request<Incoming>,
) -> HttpResponse {
    let is_read = method == Method::GET || method == Method::HEAD;
    if !is_read
        && let Some(response) =
            guard::refusal_to_mutate(request.headers(), state.config.api_token.as_deref())
    {
        return response;
    }
    let mut response = crate::webdav_tokens::respond(request).await;
    if is_read {
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    response
}

/// The CORS preflight: other origins may read, never mutate.
fn preflight(route: Route, methods: &[Method]) -> HttpResponse {
    let mut response = empty_response(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, allow_header(methods));
    let readable: Vec<Method> = methods
        .iter()
        .filter(|method| !is_mutating(route, method))
        .cloned()
        .collect();
    if !readable.is_empty() {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            allow_header(&readable),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
    }
    response
}

async fn respond(
    state: &ServerState,
    route: Route,
    method: Method,
    request: Request<Incoming>,
) -> HttpResponse {
    if is_mutating(route, &method)
        && let Some(response) =
            guard::refusal_to_mutate(request.headers(), state.config.api_token.as_deref())
    {
        return response;
    }
    let Some(backend) = state.backend.current() else {
        return respond_starting(route);
    };
    let (body, _budget) = if method == Method::GET {
        (Bytes::new(), None)
    } else {
        match read_body(state, route, request).await {
            Ok((body, budget)) => (body, Some(budget)),
            Err(response) => return response,
        }
    };
    match dispatch(backend.as_ref(), route, &method, &body).await {
        Ok(response) => response,
        Err(error) => {
            if matches!(error, ApiError::Internal(_)) {
                tracing::warn!("{method} {route:?} failed: {error}");
            }
            json_response(error.status(), &error.body())
        }
    }
}

/// The answer before the service is ready: health says `starting` (the
/// process is alive, so a liveness probe passes), readiness and every other
/// route 503.
fn respond_starting(route: Route) -> HttpResponse {
    match route {
        Route::Health => json_response(
            StatusCode::OK,
            &health_body(Health {
                status: HealthStatus::Starting,
                redis_connected: false,
                stream: StreamHealth {
                    phase: STARTING_PHASE.to_owned(),
                    ..StreamHealth::default()
                },
                rules_error: None,
                reason: None,
                source: SourceState::default(),
            }),
        ),
        Route::Liveness => json_response(StatusCode::OK, &json!({ "status": "alive" })),
        Route::Readiness => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "starting", "phase": STARTING_PHASE }),
        ),
        _ => {
            let error = ApiError::Unavailable(
                "metafuse is starting: waiting for its redis and the bootstrap".to_owned(),
            );
            json_response(error.status(), &error.body())
        }
    }
}

/// The phase reported while no tree serves yet.
const STARTING_PHASE: &str = "bootstrapping";

async fn dispatch(
    backend: &dyn Backend,
    route: Route,
    method: &Method,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    match route {
        Route::Health => ok(&health_body(backend.health())),
        // The backend exists only once the tree is complete: from then on
        // the mount serves, whatever the stream does (a resynchronisation
        // keeps serving the last good tree).
        Route::Readiness => {
            let phase = backend.health().stream.phase;
            ok(&json!({ "status": "ready", "phase": phase }))
        }
        Route::Liveness => {
            let phase = backend.health().stream.phase;
            if phase == "stopped" {
                Ok(json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "status": "stopped", "phase": phase }),
                ))
            } else {
                ok(&json!({ "status": "alive", "phase": phase }))
            }
        }
        Route::Stats => ok(&backend.stats()),
        Route::Readdir => {
            let entries = backend.readdir(&path_parameter(body)?)?;
            ok(&json!({ "entries": entries }))
        }
        Route::Getattr => ok(&backend.getattr(&path_parameter(body)?)?),
        Route::Exists => ok(&json!({ "exists": backend.exists(&path_parameter(body)?) })),
        Route::Read => ok(&backend.read(&path_parameter(body)?)?),
        Route::Metadata => ok(&backend.metadata(&path_parameter(body)?)?),
        Route::Files => ok(&json!({ "files": backend.files() })),
        Route::Directories => ok(&json!({ "directories": backend.directories() })),
        Route::Refresh => {
            backend.refresh().await?;
            ok(&json!({ "status": "ok" }))
        }
        Route::Rules if *method == Method::PUT => {
            backend.put_rules(rules_document(body)?).await?;
            ok(&json!({ "success": true, "refreshed": true }))
        }
        Route::Rules => {
            let snapshot = backend.rules()?;
            let last_modified = snapshot
                .last_modified
                .map(|time| Value::String(rfc3339_millis(time)))
                .or_else(|| snapshot.config.get("lastModified").cloned())
                .unwrap_or(Value::Null);
            ok(&json!({ "config": snapshot.config, "lastModified": last_modified }))
        }
        Route::RulesPreview => {
            let (rules, limit) = preview_parameters(body)?;
            ok(&backend.preview(rules, limit).await?)
        }
        Route::RulesValidate => {
            let request = json_object(body, false)?;
            let rule = match request.get("rule") {
                Some(rule @ Value::Object(_)) => rule,
                _ => {
                    return Err(bad_request(
                        "missing or invalid \"rule\": expected an object",
                    ));
                }
            };
            let sample_metadata = match request.get("sampleMetadata") {
                None | Some(Value::Null) => None,
                Some(Value::Object(sample)) => Some(sample),
                Some(_) => return Err(bad_request("\"sampleMetadata\" must be an object")),
            };
            ok(&backend.validate(rule, sample_metadata))
        }
        Route::RulesVariables => ok(&json!({ "variables": backend.variables() })),
        Route::Services => ok(&services_body(backend.services().await)),
        Route::Metrics => {
            let mut response = Response::new(Full::new(Bytes::from(prometheus::render(
                &backend.metrics(),
            ))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(prometheus::CONTENT_TYPE),
            );
            Ok(response)
        }
    }
}

fn ok<T: Serialize + ?Sized>(value: &T) -> Result<HttpResponse, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

fn health_body(health: Health) -> Value {
    let mut body = json!({
        "status": health.status,
        "timestamp": rfc3339_millis(std::time::SystemTime::now()),
        "service": "meta-fuse",
        "redis": { "connected": health.redis_connected },
        "redisConnected": health.source.connected,
        "source": health.source,
        "stream": health.stream,
    });
    if let Value::Object(fields) = &mut body {
        if let Some(rules_error) = health.rules_error {
            fields.insert("rulesError".to_owned(), Value::String(rules_error));
        }
        if let Some(reason) = health.reason {
            fields.insert("reason".to_owned(), Value::String(reason));
        }
    }
    body
}

/// The old shape `{services: [...], count}` (what meta-core's own
/// `/api/services` answers), each entry also carrying `url` and `api` (the
/// old meta-fuse code's names, which its dashboard's links read), plus the
/// old `current`, `isLeader` and `leader`, and `warning` when the list may
/// be incomplete.
fn services_body(list: ServiceList) -> Value {
    let services: Vec<Value> = list
        .services
        .iter()
        .map(|service| {
            let mut entry = json!(service);
            if let Value::Object(fields) = &mut entry {
                fields.insert("url".to_owned(), json!(service.base_url));
                fields.insert("api".to_owned(), json!(service.base_url));
            }
            entry
        })
        .collect();
    let mut body = json!({
        "services": services,
        "count": list.services.len(),
        "current": "meta-fuse",
        "isLeader": false,
        "leader": list.leader,
    });
    if let (Some(warning), Value::Object(fields)) = (list.warning, &mut body) {
        fields.insert("warning".to_owned(), Value::String(warning));
    }
    body
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The request body as a JSON object; an empty body is `{}` when `allow_empty`.
fn json_object(body: &[u8], allow_empty: bool) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if allow_empty {
            Ok(Map::new())
        } else {
            Err(bad_request("empty request body: expected a json object"))
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(bad_request(format!(
            "request body must be a json object, not {}",
            json_type_name(&other)
        ))),
        Err(error) => Err(bad_request(format!(
            "request body is not valid json: {error}"
        ))),
    }
}

/// `{"path": "..."}` → a normalised virtual path: leading `/`, no empty
/// components, no trailing `/`.
fn path_parameter(body: &[u8]) -> Result<String, ApiError> {
    let request = json_object(body, false)?;
    match request.get("path") {
        Some(Value::String(path)) => {
            let components: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
            Ok(format!("/{}", components.join("/")))
        }
        Some(other) => Err(bad_request(format!(
            "invalid \"path\" parameter: expected a string, got {}",
            json_type_name(other)
        ))),
        None => Err(bad_request("missing \"path\" parameter")),
    }
}

/// `PUT /api/fuse/rules` takes `{"config": document}` like the reference; a
/// bare document (an object with `rules`) is accepted too.
fn rules_document(body: &[u8]) -> Result<Value, ApiError> {
    let mut request = json_object(body, false)?;
    match request.remove("config") {
        Some(document @ Value::Object(_)) => Ok(document),
        Some(other) => Err(bad_request(format!(
            "invalid \"config\": expected an object, got {}",
            json_type_name(&other)
        ))),
        None if request.contains_key("rules") => Ok(Value::Object(request)),
        None => Err(bad_request(
            "missing \"config\": expected a rules document object",
        )),
    }
}

fn preview_parameters(body: &[u8]) -> Result<(Option<Value>, usize), ApiError> {
    let request = json_object(body, true)?;
    let rules = match request.get("rules") {
        None | Some(Value::Null) => None,
        Some(rules @ Value::Array(_)) => Some(rules.clone()),
        Some(other) => {
            return Err(bad_request(format!(
                "invalid \"rules\": expected an array, got {}",
                json_type_name(other)
            )));
        }
    };
    let limit = match request.get("limit") {
        None | Some(Value::Null) => DEFAULT_PREVIEW_LIMIT,
        Some(Value::Number(number)) => number.as_u64().ok_or_else(|| {
            bad_request(format!(
                "invalid \"limit\" {number}: expected a non-negative integer"
            ))
        })?,
        Some(other) => {
            return Err(bad_request(format!(
                "invalid \"limit\": expected a non-negative integer, got {}",
                json_type_name(other)
            )));
        }
    };
    let limit = usize::try_from(limit.min(MAX_PREVIEW_LIMIT)).unwrap_or(usize::MAX);
    Ok((rules, limit))
}

/// Reads a request body within the limits: too large → 413 (400 for a
/// rules document, which is then simply invalid), no room in the shared
/// budget of buffered bytes → 503 at once, too slow → 408. The returned
/// permit holds the body's share of the budget while it is in use.
async fn read_body(
    state: &ServerState,
    route: Route,
    request: Request<Incoming>,
) -> Result<(Bytes, OwnedSemaphorePermit), HttpResponse> {
    let max_body_bytes = state.config.max_body_bytes;
    let too_large = || {
        let message = format!("request body larger than {max_body_bytes} bytes");
        let mut response = if route == Route::Rules {
            let error =
                ApiError::InvalidRules(vec![format!("rules document too large: {message}")]);
            json_response(error.status(), &error.body())
        } else {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, message)
        };
        close_after(&mut response);
        response
    };
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let reserved = match declared_length {
        Some(length) if length > max_body_bytes as u64 => return Err(too_large()),
        // At least one permit, so an empty body holds a (free) permit too.
        Some(length) => (length as usize).max(1),
        None => max_body_bytes.max(1),
    };
    let Ok(budget) = state
        .body_budget
        .clone()
        .try_acquire_many_owned(u32::try_from(reserved).unwrap_or(u32::MAX))
    else {
        let mut response = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many request bodies in flight; retry in a moment".to_owned(),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        close_after(&mut response);
        return Err(response);
    };
    let collect = Limited::new(request.into_body(), max_body_bytes).collect();
    match tokio::time::timeout(state.config.body_read_timeout, collect).await {
        Ok(Ok(collected)) => Ok((collected.to_bytes(), budget)),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(error)) => Err(error_response(
            StatusCode::BAD_REQUEST,
            format!("request body unreadable: {error}"),
        )),
        Err(_) => {
            let mut response = error_response(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} s",
                    state.config.body_read_timeout.as_secs_f64()
                ),
            );
            close_after(&mut response);
            Err(response)
        }
    }
}

/// The rest of the request is never read: the connection cannot be reused.
fn close_after(response: &mut HttpResponse) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

fn allow_header(methods: &[Method]) -> HeaderValue {
    let mut names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    if methods.contains(&Method::GET) {
        names.push("HEAD");
    }
    names.push("OPTIONS");
    HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static("OPTIONS"))
}

fn empty_response(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn error_response(status: StatusCode, message: String) -> HttpResponse {
    json_response(status, &json!({ "error": message }))
}

fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> HttpResponse {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        Err(error) => {
            tracing::warn!("response serialization failed: {error}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":"response serialization failed"}"#.to_vec(),
            )
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        let path = |body: &str| path_parameter(body.as_bytes());
        assert_eq!(path(r#"{"path":""}"#), Ok("/".to_owned()));
        assert_eq!(
            path(r#"{"path":"Movies//Heat/"}"#),
            Ok("/Movies/Heat".to_owned())
        );
        assert_eq!(path(r#"{"path":"/"}"#), Ok("/".to_owned()));
    }

    #[test]
    fn bad_path_bodies_say_what_is_wrong() {
        let message = |body: &str| path_parameter(body.as_bytes()).unwrap_err().to_string();
        assert!(message("").contains("empty request body"));
        assert!(message("{").contains("not valid json"));
        assert!(message("[1]").contains("not an array"));
        assert!(message("{}").contains("missing \"path\""));
        assert!(message(r#"{"path":7}"#).contains("got a number"));
    }

    #[test]
    fn rules_document_accepts_the_wrapper_and_a_bare_document() {
        let wrapped = rules_document(br#"{"config":{"version":1,"rules":[]}}"#).expect("wrapped");
        assert_eq!(wrapped["version"], 1);
        let bare = rules_document(br#"{"version":2,"rules":[]}"#).expect("bare");
        assert_eq!(bare["version"], 2);
        assert!(rules_document(br#"{"config":[]}"#).is_err());
        assert!(rules_document(br#"{"something":1}"#).is_err());
    }

    #[test]
    fn preview_limit_defaults_and_is_capped() {
        assert_eq!(preview_parameters(b"").expect("empty").1, 100);
        assert_eq!(preview_parameters(br#"{"limit":5}"#).expect("five").1, 5);
        assert_eq!(
            preview_parameters(br#"{"limit":99999999}"#).expect("big").1,
            10_000
        );
        assert!(preview_parameters(br#"{"limit":-1}"#).is_err());
        assert!(preview_parameters(br#"{"limit":"10"}"#).is_err());
        assert!(preview_parameters(br#"{"rules":{}}"#).is_err());
    }
}
