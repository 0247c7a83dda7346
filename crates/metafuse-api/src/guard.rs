//! Who may change state: the bearer token when one is configured, else only
//! requests a browser marks as same-origin (or that come from no browser).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

type HttpResponse = Response<Full<Bytes>>;

/// `None` when the request may mutate; otherwise the 401/403 answer.
///
/// With a token: `Authorization: Bearer <token>` is required (401 without
/// it or with another token). Without one, a web page of another origin
/// must not be able to change the rules with the user's browser: a request
/// marked `Sec-Fetch-Site` other than `same-origin`/`none`, or carrying an
/// `Origin` whose host differs from `Host`, is refused (403). Requests with
/// neither header come from scripts and command-line clients, which a page
/// cannot forge.
pub(crate) fn refusal_to_mutate(
    headers: &HeaderMap,
    api_token: Option<&str>,
) -> Option<HttpResponse> {
    if let Some(expected) = api_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        return match presented {
            Some(token) if same_secret(token.as_bytes(), expected.as_bytes()) => None,
            Some(_) => Some(unauthorized("invalid api token")),
            None => Some(unauthorized(
                "this route needs the api token: Authorization: Bearer <token>",
            )),
        };
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site == "same-origin" || site == "none" {
            return None;
        }
        return Some(forbidden(&format!(
            "cross-origin request refused (Sec-Fetch-Site: {site}); changes are accepted only from the same origin or with an api token"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if origin_authority(origin).is_some_and(|authority| authority.eq_ignore_ascii_case(host)) {
            return None;
        }
        return Some(forbidden(&format!(
            "cross-origin request refused (Origin {origin}, Host {host}); changes are accepted only from the same origin or with an api token"
        )));
    }
    None
}

/// `http://host:3000` → `host:3000`; `null` and anything odd → `None`.
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then_some(authority)
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guess was right.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    presented
        .iter()
        .zip(expected)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

fn unauthorized(message: &str) -> HttpResponse {
    let mut response = refusal(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"metafuse\""),
    );
    response
}

fn forbidden(message: &str) -> HttpResponse {
    refusal(StatusCode::FORBIDDEN, message)
}

fn refusal(status: StatusCode, message: &str) -> HttpResponse {
    let body = json!({ "error": message }).to_string();
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn status(pairs: &[(&'static str, &'static str)], token: Option<&str>) -> u16 {
        match refusal_to_mutate(&headers(pairs), token) {
            None => 200,
            Some(response) => response.status().as_u16(),
        }
    }

    #[test]
    fn without_a_token_only_same_origin_browsers_and_non_browsers_pass() {
        assert_eq!(status(&[("host", "nas:3000")], None), 200);
        assert_eq!(
            status(&[("host", "nas:3000"), ("origin", "http://nas:3000")], None),
            200
        );
        assert_eq!(
            status(
                &[("host", "nas:3000"), ("origin", "http://evil.example")],
                None
            ),
            403
        );
        assert_eq!(
            status(&[("host", "nas:3000"), ("origin", "null")], None),
            403
        );
        assert_eq!(status(&[("sec-fetch-site", "same-origin")], None), 200);
        assert_eq!(status(&[("sec-fetch-site", "cross-site")], None), 403);
        assert_eq!(status(&[("sec-fetch-site", "same-site")], None), 403);
        // The browser's own header wins over an Origin behind a proxy.
        assert_eq!(
            status(
                &[
                    ("host", "backend:3000"),
                    ("origin", "http://nas"),
                    ("sec-fetch-site", "same-origin")
                ],
                None
            ),
            200
        );
    }

    #[test]
    fn with_a_token_the_bearer_must_match() {
        let token = Some("s3cret");
        assert_eq!(status(&[], token), 401);
        assert_eq!(status(&[("authorization", "Bearer nope")], token), 401);
        assert_eq!(status(&[("authorization", "Basic s3cret")], token), 401);
        assert_eq!(status(&[("authorization", "Bearer s3cret")], token), 200);
    }
}
