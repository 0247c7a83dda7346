//! Routing and the handlers: request JSON in, the reference's JSON out.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::backend::{Backend, Health, HealthStatus, StreamHealth};
use crate::error::ApiError;
use crate::prometheus;
use crate::server::BackendSlot;
use crate::timestamp::rfc3339_millis;

/// Rules documents are the largest bodies; a few MiB is far above any real one.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The reference's preview default.
const DEFAULT_PREVIEW_LIMIT: u64 = 100;
/// Keeps one preview request from rendering the whole library into a response.
const MAX_PREVIEW_LIMIT: u64 = 10_000;

type HttpResponse = Response<Full<Bytes>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
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

/// Answers one request; never fails at the HTTP level (errors are JSON responses).
pub(crate) async fn handle(
    backend: BackendSlot,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let mut response = match backend.current() {
        // Token routes need no backend (crate::webdav_tokens).
        _ if crate::webdav_tokens::is_token_route(request.uri().path()) => {
            crate::webdav_tokens::respond(request).await
        }
        Some(backend) => respond(backend.as_ref(), request).await,
        None => respond_starting(&request),
    };
    // The MetaMesh dashboards call the API from another origin, as the
    // reference allowed.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
}

/// The answer before the service is ready: health says `starting` (the
/// process is alive, so a liveness probe passes), everything else is 503.
fn respond_starting(request: &Request<Incoming>) -> HttpResponse {
    let path = request.uri().path();
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    match route_for(path) {
        None => error_response(
            StatusCode::NOT_FOUND,
            format!("no route for {} {}", request.method(), request.uri().path()),
        ),
        Some((Route::Health, _)) => json_response(
            StatusCode::OK,
            &health_body(Health {
                status: HealthStatus::Starting,
                redis_connected: false,
                stream: StreamHealth {
                    phase: "bootstrapping".to_owned(),
                    ..StreamHealth::default()
                },
                rules_error: None,
            }),
        ),
        Some(_) => {
            let error = ApiError::Unavailable(
                "metafuse is starting: waiting for its redis and the bootstrap".to_owned(),
            );
            json_response(error.status(), &error.body())
        }
    }
}

async fn respond(backend: &dyn Backend, request: Request<Incoming>) -> HttpResponse {
    let raw_path = request.uri().path().to_owned();
    let path = if raw_path.len() > 1 {
        raw_path.trim_end_matches('/')
    } else {
        raw_path.as_str()
    };
    let method = request.method().clone();
    let Some((route, methods)) = route_for(path) else {
        return error_response(
            StatusCode::NOT_FOUND,
            format!("no route for {method} {raw_path}"),
        );
    };
    let allow = allow_header(methods);
    if method == Method::OPTIONS {
        let mut response = empty_response(StatusCode::NO_CONTENT);
        let headers = response.headers_mut();
        headers.insert(header::ALLOW, allow.clone());
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, allow);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        return response;
    }
    // hyper drops the body of a HEAD response itself.
    let effective_method = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    if !methods.contains(&effective_method) {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed for {path}"),
        );
        response.headers_mut().insert(header::ALLOW, allow);
        return response;
    }
    let body = if effective_method == Method::GET {
        Bytes::new()
    } else {
        match read_body(request.into_body()).await {
            Ok(body) => body,
            Err(response) => return response,
        }
    };
    match dispatch(backend, route, &effective_method, &body).await {
        Ok(response) => response,
        Err(error) => {
            if matches!(error, ApiError::Internal(_)) {
                tracing::warn!("{method} {path} failed: {error}");
            }
            json_response(error.status(), &error.body())
        }
    }
}

async fn dispatch(
    backend: &dyn Backend,
    route: Route,
    method: &Method,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    match route {
        Route::Health => ok(&health_body(backend.health())),
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
        Route::Services => ok(&backend.services()),
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
        "stream": health.stream,
    });
    if let (Some(rules_error), Value::Object(fields)) = (health.rules_error, &mut body) {
        fields.insert("rulesError".to_owned(), Value::String(rules_error));
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

async fn read_body(body: Incoming) -> Result<Bytes, HttpResponse> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY_BYTES} bytes"),
        )),
        Err(error) => Err(error_response(
            StatusCode::BAD_REQUEST,
            format!("request body unreadable: {error}"),
        )),
    }
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
