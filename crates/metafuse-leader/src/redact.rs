//! Redis URLs as they may be shown.

/// `url` with the password of its user information replaced by `***`, for
/// log lines and unauthenticated API answers, which must not hand out Redis
/// credentials.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user_info = &rest[..at];
    let user = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None if user_info.is_empty() => String::new(),
        // A bare `redis://token@host` is some deployments' secret: hide it too.
        None => "***".to_owned(),
    };
    format!("{scheme}://{user}@{}", &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn redact_password_hides_only_the_secret() {
        assert_eq!(
            redact_password("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
        assert_eq!(
            redact_password("rediss://user:s3cret@redis:6380/0"),
            "rediss://user:***@redis:6380/0"
        );
        assert_eq!(
            redact_password("redis://:s3cret@redis:6379"),
            "redis://:***@redis:6379"
        );
        assert_eq!(redact_password("redis://s3cret@redis"), "redis://***@redis");
        assert_eq!(redact_password("not a url"), "not a url");
    }
}
