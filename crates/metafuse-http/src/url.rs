//! URLs as this client accepts and shows them.

use hyper::Uri;

use metafuse_source::redact_url;

use crate::error::HttpError;

/// `url` parsed, if it is an absolute `http://` URL with a host.
///
/// `https` is refused: meta-core and its WebDAV are reached inside the
/// deployment network, and no TLS stack is linked.
pub fn check_http_url(url: &str) -> Result<Uri, HttpError> {
    let invalid = |reason: String| HttpError::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    let uri: Uri = url
        .trim()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_urls_with_a_host_are_accepted() {
        assert!(check_http_url("http://core:9000/urls").is_ok());
        for bad in ["https://core:9000", "core:9000", "/relative", "http:// bad"] {
            assert!(
                matches!(check_http_url(bad), Err(HttpError::InvalidUrl { .. })),
                "{bad} should be rejected"
            );
        }
    }
}
