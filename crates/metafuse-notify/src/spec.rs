//! Where notifications go: one [`NotifierSpec`] per `--notify` flag or
//! TOML entry, parsed from `plex=URL,token=T[,section=ID]`,
//! `jellyfin=URL,key=K`, `emby=URL,key=K`, `exec=PROGRAM` or `webhook=URL`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// One notification target.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSpec")]
pub enum NotifierSpec {
    /// Plex Media Server: partial scans of the library sections.
    Plex {
        /// Base URL, `http://host:32400` (no trailing `/`).
        url: String,
        /// `X-Plex-Token`.
        token: String,
        /// Only this library section (its key); `None` discovers the
        /// sections from `/library/sections`.
        section: Option<String>,
    },
    /// Jellyfin: `POST /Library/Media/Updated`.
    Jellyfin {
        /// Base URL, `http://host:8096` (no trailing `/`).
        url: String,
        /// API key.
        key: String,
    },
    /// Emby: `POST /Library/Media/Updated`.
    Emby {
        /// Base URL, `http://host:8096` (no trailing `/`).
        url: String,
        /// API key.
        key: String,
    },
    /// A program called with the changed directories as arguments and on
    /// stdin, one per line.
    Exec {
        /// The program (looked up in `PATH` when it has no `/`).
        program: String,
    },
    /// A JSON `POST` to this URL.
    Webhook {
        /// The URL.
        url: String,
    },
}

/// Why a notification spec was refused; names the spec with its secrets
/// masked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Nothing before `=`, or no `=`.
    #[error("notify spec `{spec}`: expected KIND=VALUE (plex, jellyfin, emby, exec or webhook)")]
    Malformed {
        /// The spec, secrets masked.
        spec: String,
    },
    /// A kind we do not know.
    #[error(
        "notify spec `{spec}`: unknown kind `{kind}` (expected plex, jellyfin, emby, exec or webhook)"
    )]
    UnknownKind {
        /// The spec, secrets masked.
        spec: String,
        /// The kind given.
        kind: String,
    },
    /// A required option is missing.
    #[error("notify spec `{spec}`: missing `{option}=`")]
    MissingOption {
        /// The spec, secrets masked.
        spec: String,
        /// The option (`token`, `key`).
        option: &'static str,
    },
    /// An option this kind does not take, or one given twice.
    #[error("notify spec `{spec}`: unexpected option `{option}` (this kind takes {expected})")]
    UnexpectedOption {
        /// The spec, secrets masked.
        spec: String,
        /// The option given.
        option: String,
        /// What the kind takes.
        expected: &'static str,
    },
    /// The URL is not `http://host[:port][/path]`.
    #[error("notify spec `{spec}`: invalid url `{url}`: {reason}")]
    InvalidUrl {
        /// The spec, secrets masked.
        spec: String,
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `exec=` without a program.
    #[error("notify spec `{spec}`: empty program")]
    EmptyProgram {
        /// The spec, secrets masked.
        spec: String,
    },
}

impl FromStr for NotifierSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let masked = mask_secrets(text);
        let (kind, value) = text
            .split_once('=')
            .filter(|(kind, _)| !kind.trim().is_empty())
            .ok_or_else(|| SpecError::Malformed {
                spec: masked.clone(),
            })?;
        let kind = kind.trim().to_ascii_lowercase();
        match kind.as_str() {
            // The whole value is the program or URL: both may hold commas.
            "exec" => {
                let program = value.trim();
                if program.is_empty() {
                    return Err(SpecError::EmptyProgram { spec: masked });
                }
                Ok(NotifierSpec::Exec {
                    program: program.to_owned(),
                })
            }
            "webhook" => Ok(NotifierSpec::Webhook {
                url: checked_url(value.trim(), &masked)?,
            }),
            "plex" | "jellyfin" | "emby" => {
                let mut parts = value.split(',');
                let url = checked_url(parts.next().unwrap_or_default().trim(), &masked)?;
                let (secret_name, expected) = match kind.as_str() {
                    "plex" => ("token", "token= and optionally section="),
                    _ => ("key", "key="),
                };
                let mut secret = None;
                let mut section = None;
                for part in parts {
                    let (name, option_value) = part.split_once('=').unwrap_or((part, ""));
                    let name = name.trim();
                    let unexpected = || SpecError::UnexpectedOption {
                        spec: masked.clone(),
                        option: name.to_owned(),
                        expected,
                    };
                    let slot = if name == secret_name {
                        &mut secret
                    } else if name == "section" && kind == "plex" {
                        &mut section
                    } else {
                        return Err(unexpected());
                    };
                    if slot.is_some() {
                        return Err(unexpected());
                    }
                    *slot = Some(option_value.trim().to_owned());
                }
                let secret = secret.filter(|value| !value.is_empty()).ok_or_else(|| {
                    SpecError::MissingOption {
                        spec: masked.clone(),
                        option: secret_name,
                    }
                })?;
                Ok(match kind.as_str() {
                    "plex" => NotifierSpec::Plex {
                        url,
                        token: secret,
                        section: section.filter(|section| !section.is_empty()),
                    },
                    "jellyfin" => NotifierSpec::Jellyfin { url, key: secret },
                    _ => NotifierSpec::Emby { url, key: secret },
                })
            }
            _ => Err(SpecError::UnknownKind { spec: masked, kind }),
        }
    }
}

/// The spec text with the values of `token=` and `key=` replaced by `***`,
/// for error messages and logs.
fn mask_secrets(text: &str) -> String {
    text.split(',')
        .map(|part| match part.split_once('=') {
            Some((name, _)) if matches!(name.trim(), "token" | "key") => format!("{name}=***"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `http://host[:port][/path]`, returned without a trailing `/`. Only
/// plain HTTP: media servers are reached on the local network, and the
/// client has no TLS yet (metafuse-http will bring it).
fn checked_url(url: &str, masked_spec: &str) -> Result<String, SpecError> {
    let invalid = |reason: &str| SpecError::InvalidUrl {
        spec: masked_spec.to_owned(),
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: hyper::Uri = url.parse().map_err(|error| invalid(&format!("{error}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(invalid("https is not supported yet; use http")),
        _ => return Err(invalid("expected http://host[:port]")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl NotifierSpec {
    /// The kind as in the spec (`plex`, `jellyfin`, …), for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifierSpec::Plex { .. } => "plex",
            NotifierSpec::Jellyfin { .. } => "jellyfin",
            NotifierSpec::Emby { .. } => "emby",
            NotifierSpec::Exec { .. } => "exec",
            NotifierSpec::Webhook { .. } => "webhook",
        }
    }
}

/// The spec form with secrets masked: safe to log.
impl fmt::Display for NotifierSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifierSpec::Plex { url, section, .. } => {
                write!(formatter, "plex={url},token=***")?;
                match section {
                    Some(section) => write!(formatter, ",section={section}"),
                    None => Ok(()),
                }
            }
            NotifierSpec::Jellyfin { url, .. } => write!(formatter, "jellyfin={url},key=***"),
            NotifierSpec::Emby { url, .. } => write!(formatter, "emby={url},key=***"),
            NotifierSpec::Exec { program } => write!(formatter, "exec={program}"),
            NotifierSpec::Webhook { url } => write!(formatter, "webhook={url}"),
        }
    }
}

/// Debug never shows the token or key.
impl fmt::Debug for NotifierSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "NotifierSpec({self})")
    }
}

/// The TOML forms: a spec string, or a table with `kind`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSpec {
    Text(String),
    Table(TableSpec),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum TableSpec {
    Plex {
        url: String,
        token: String,
        section: Option<String>,
    },
    Jellyfin {
        url: String,
        key: String,
    },
    Emby {
        url: String,
        key: String,
    },
    Exec {
        program: String,
    },
    Webhook {
        url: String,
    },
}

impl TryFrom<RawSpec> for NotifierSpec {
    type Error = SpecError;

    fn try_from(raw: RawSpec) -> Result<Self, SpecError> {
        let table = match raw {
            RawSpec::Text(text) => return text.parse(),
            RawSpec::Table(table) => table,
        };
        // Checked exactly like the string form.
        let spec = NotifierSpec::from(table);
        let text = match &spec {
            NotifierSpec::Plex {
                url,
                token,
                section,
            } => match section {
                Some(section) => format!("plex={url},token={token},section={section}"),
                None => format!("plex={url},token={token}"),
            },
            NotifierSpec::Jellyfin { url, key } => format!("jellyfin={url},key={key}"),
            NotifierSpec::Emby { url, key } => format!("emby={url},key={key}"),
            NotifierSpec::Exec { program } => format!("exec={program}"),
            NotifierSpec::Webhook { url } => format!("webhook={url}"),
        };
        text.parse()
    }
}

impl From<TableSpec> for NotifierSpec {
    fn from(table: TableSpec) -> Self {
        match table {
            TableSpec::Plex {
                url,
                token,
                section,
            } => NotifierSpec::Plex {
                url,
                token,
                section,
            },
            TableSpec::Jellyfin { url, key } => NotifierSpec::Jellyfin { url, key },
            TableSpec::Emby { url, key } => NotifierSpec::Emby { url, key },
            TableSpec::Exec { program } => NotifierSpec::Exec { program },
            TableSpec::Webhook { url } => NotifierSpec::Webhook { url },
        }
    }
}

/// Everything the notifier needs besides the media path prefix. The TOML
/// form (section `[notify]`, every field optional):
///
/// ```toml
/// [notify]
/// targets = ["plex=http://plex:32400,token=T", { kind = "webhook", url = "http://hooks:9000/x" }]
/// debounce_ms = 5000
/// max_directories = 50
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Where to send notifications; empty = notifications off.
    pub targets: Vec<NotifierSpec>,
    /// Quiet time after the last change in a directory before it is sent.
    #[serde(rename = "debounce_ms", with = "milliseconds")]
    pub debounce: Duration,
    /// Longest a directory that keeps changing waits.
    #[serde(rename = "max_delay_ms", with = "milliseconds")]
    pub max_delay: Duration,
    /// More directories than this in one notification (per Plex section)
    /// become one library-level refresh.
    pub max_directories: usize,
    /// Attempts per request before it is abandoned.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled per attempt.
    #[serde(rename = "retry_initial_ms", with = "milliseconds")]
    pub retry_initial: Duration,
    /// Longest wait between retries.
    #[serde(rename = "retry_max_ms", with = "milliseconds")]
    pub retry_max: Duration,
    /// Time limit of one request (or one run of the program).
    #[serde(rename = "request_timeout_ms", with = "milliseconds")]
    pub request_timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            targets: Vec::new(),
            debounce: Duration::from_secs(5),
            max_delay: Duration::from_secs(60),
            max_directories: 50,
            max_attempts: 6,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

mod milliseconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            "plex=http://plex:32400/,token=abc,section=2".parse(),
            Ok(NotifierSpec::Plex {
                url: "http://plex:32400".into(),
                token: "abc".into(),
                section: Some("2".into()),
            })
        );
        assert_eq!(
            "jellyfin=http://jf:8096,key=k1".parse(),
            Ok(NotifierSpec::Jellyfin {
                url: "http://jf:8096".into(),
                key: "k1".into(),
            })
        );
        assert_eq!(
            "emby=http://emby:8096,key=k2".parse(),
            Ok(NotifierSpec::Emby {
                url: "http://emby:8096".into(),
                key: "k2".into(),
            })
        );
        assert_eq!(
            "exec=/usr/local/bin/scan --all,now".parse(),
            Ok(NotifierSpec::Exec {
                program: "/usr/local/bin/scan --all,now".into(),
            })
        );
        assert_eq!(
            "webhook=http://hooks:9000/x?a=1,2".parse(),
            Ok(NotifierSpec::Webhook {
                url: "http://hooks:9000/x?a=1,2".into(),
            })
        );
    }

    #[test]
    fn errors_name_the_spec_without_its_secret() {
        let error = "plex=http://plex:32400,tokn=secret"
            .parse::<NotifierSpec>()
            .expect_err("typo");
        assert!(
            matches!(error, SpecError::UnexpectedOption { ref option, .. } if option == "tokn")
        );
        assert!(
            error
                .to_string()
                .contains("plex=http://plex:32400,tokn=secret")
        );

        let error = "plex=http://plex:32400,token=secret,token=again"
            .parse::<NotifierSpec>()
            .expect_err("twice");
        assert!(!error.to_string().contains("secret"), "{error}");

        assert_eq!(
            "jellyfin=http://jf:8096".parse::<NotifierSpec>(),
            Err(SpecError::MissingOption {
                spec: "jellyfin=http://jf:8096".into(),
                option: "key",
            })
        );
        assert!(matches!(
            "kodi=http://x".parse::<NotifierSpec>(),
            Err(SpecError::UnknownKind { ref kind, .. }) if kind == "kodi"
        ));
        assert!(matches!(
            "plex".parse::<NotifierSpec>(),
            Err(SpecError::Malformed { .. })
        ));
        assert!(matches!(
            "exec= ".parse::<NotifierSpec>(),
            Err(SpecError::EmptyProgram { .. })
        ));
        let error = "emby=https://emby,key=zzz"
            .parse::<NotifierSpec>()
            .expect_err("https");
        assert!(matches!(error, SpecError::InvalidUrl { .. }));
        assert!(error.to_string().contains("key=***"), "{error}");
        assert!(matches!(
            "webhook=not a url".parse::<NotifierSpec>(),
            Err(SpecError::InvalidUrl { .. })
        ));
        assert!(matches!(
            "jellyfin=http://jf,key=k,section=1".parse::<NotifierSpec>(),
            Err(SpecError::UnexpectedOption { .. })
        ));
    }

    #[test]
    fn display_and_debug_mask_secrets() {
        let spec: NotifierSpec = "plex=http://p:32400,token=hidden".parse().expect("valid");
        assert_eq!(spec.to_string(), "plex=http://p:32400,token=***");
        assert!(!format!("{spec:?}").contains("hidden"));
    }
}
