//! `--ui-dir`: a built single-page dashboard served at `/`, after the API
//! routes. Only regular files beneath the directory are served; paths that
//! would leave it (`..`, encoded or not, symlinks pointing outside) are 404.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

type HttpResponse = Response<Full<Bytes>>;

/// The page a single-page app boots from; unknown routes get it too.
const INDEX: &str = "index.html";

/// Answers `GET raw_path` (still percent-encoded) from `ui_dir`.
pub(crate) async fn serve(ui_dir: &Path, raw_path: &str) -> HttpResponse {
    let Some(relative) = relative_path(raw_path) else {
        return not_found();
    };
    let Ok(root) = tokio::fs::canonicalize(ui_dir).await else {
        tracing::warn!(ui_dir = %ui_dir.display(), "the ui directory cannot be opened");
        return not_found();
    };
    match beneath(&root, &root.join(&relative)).await {
        Lookup::File(file) => file_response(&file).await,
        Lookup::Outside => not_found(),
        // A route of the app (`/rules`), or a directory: the app itself.
        // A missing asset (`/assets/x.js`) stays 404, so a broken build
        // shows as one instead of as HTML parsed as script.
        Lookup::Missing | Lookup::Directory if !looks_like_asset(&relative) => {
            match beneath(&root, &root.join(INDEX)).await {
                Lookup::File(index) => file_response(&index).await,
                _ => not_found(),
            }
        }
        Lookup::Missing | Lookup::Directory => not_found(),
    }
}

enum Lookup {
    File(PathBuf),
    Directory,
    Missing,
    Outside,
}

/// Resolves `candidate` (following symlinks) and keeps it only if it is
/// still beneath `root`.
async fn beneath(root: &Path, candidate: &Path) -> Lookup {
    let Ok(resolved) = tokio::fs::canonicalize(candidate).await else {
        return Lookup::Missing;
    };
    if !resolved.starts_with(root) {
        return Lookup::Outside;
    }
    match tokio::fs::metadata(&resolved).await {
        Ok(metadata) if metadata.is_file() => Lookup::File(resolved),
        Ok(metadata) if metadata.is_dir() => Lookup::Directory,
        _ => Lookup::Missing,
    }
}

/// `/assets/app%20x.js` → `assets/app x.js`; `None` for anything that is
/// not a plain relative path once decoded (`..`, `.`, NUL, backslashes,
/// invalid escapes or UTF-8).
fn relative_path(raw_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(raw_path)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut relative = PathBuf::new();
    for part in decoded.split('/').filter(|part| !part.is_empty()) {
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(name)), None) => relative.push(name),
            _ => return None,
        }
    }
    Some(relative)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

fn looks_like_asset(relative: &Path) -> bool {
    relative
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.contains('.'))
}

async fn file_response(path: &Path) -> HttpResponse {
    let Ok(contents) = tokio::fs::read(path).await else {
        return not_found();
    };
    let mut response = Response::new(Full::new(Bytes::from(contents)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // The entry page names the hashed assets of the current build: always
    // revalidate it.
    if path.file_name().is_some_and(|name| name == INDEX) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("ttf") => "font/ttf",
        Some("txt") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

fn not_found() -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(br#"{"error":"not found"}"#)));
    *response.status_mut() = StatusCode::NOT_FOUND;
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
    fn only_plain_relative_paths_survive_decoding() {
        assert_eq!(relative_path("/"), Some(PathBuf::new()));
        assert_eq!(
            relative_path("/assets/a%20b.js"),
            Some(PathBuf::from("assets/a b.js"))
        );
        for hostile in [
            "/../x",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/a/./b",
            "/a%2f..%2fb",
            "/a%00",
            "/a%5c..",
            "/%zz",
            "/%e9",
        ] {
            assert_eq!(relative_path(hostile), None, "{hostile}");
        }
    }
}
