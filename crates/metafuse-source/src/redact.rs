//! Source locations as they may be shown.

/// `url` with the secret of its user information replaced by `***`, for
/// log lines, messages and unauthenticated API answers, which must not hand
/// out credentials: `redis://user:secret@host/` → `redis://user:***@host/`.
/// A bare `redis://token@host` is some deployments' secret (a password
/// without a user name), so it is hidden too: `redis://***@host`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user_info = &rest[..at];
    let user = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None if user_info.is_empty() => String::new(),
        None => "***".to_owned(),
    };
    format!("{scheme}://{user}@{}", &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn only_the_secret_is_hidden() {
        let table = [
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("redis://host/", "redis://host/"),
            ("redis://host", "redis://host"),
            (
                "rediss://user:s3cret@redis:6380/0",
                "rediss://user:***@redis:6380/0",
            ),
            ("rediss://me:secret@host/", "rediss://me:***@host/"),
            ("redis://:s3cret@redis:6379", "redis://:***@redis:6379"),
            ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://s3cret@redis", "redis://***@redis"),
            ("redis://user@host/", "redis://***@host/"),
            ("redis://@host/", "redis://@host/"),
            ("redis://u:p@ss@host/0", "redis://u:***@host/0"),
            ("redis://host/0?x=a@b", "redis://host/0?x=a@b"),
            ("redis://host?x=a@b", "redis://host?x=a@b"),
            (
                "http://meta:s3cret@core.local:8080/api",
                "http://meta:***@core.local:8080/api",
            ),
            ("http://core.local:8080/", "http://core.local:8080/"),
            ("not a url", "not a url"),
            ("", ""),
        ];
        // Every row is checked; a failing row does not hide the others.
        let failures: Vec<String> = table
            .iter()
            .filter_map(|&(url, expected)| {
                let redacted = redact_url(url);
                (redacted != expected)
                    .then(|| format!("{url:?} → {redacted:?}, expected {expected:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
