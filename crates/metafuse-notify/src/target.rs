//! What each kind of target is sent for a [`Flush`]: planned as a list of
//! calls (so a failed one is retried alone), then performed. The wire
//! formats are documented in the crate docs (lib.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use hyper::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::coalesce::{ChangedDirectory, Flush, is_ancestor};
use crate::http::{HttpCall, HttpClient, HttpError};
use crate::spec::NotifierSpec;

/// How long discovered Plex sections are trusted.
const PLEX_SECTIONS_TTL: Duration = Duration::from_secs(300);

/// Query-string encoding: everything but the unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One call to make for a flush.
#[derive(Clone, Debug)]
pub(crate) enum Call {
    Http(HttpCall),
    Exec {
        program: String,
        arguments: Vec<String>,
        scope: &'static str,
    },
}

/// Why planning or a call failed; the message is complete.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error("{0}")]
    Http(HttpError),
    #[error("cannot read plex library sections from {url}: {reason}")]
    PlexSections { url: String, reason: String },
    #[error("notify program {program}: {reason}")]
    Exec { program: String, reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PlexSection {
    key: String,
    /// Without a trailing `/` (`/` itself becomes `""`).
    locations: Vec<String>,
}

/// One target and what it remembers between flushes.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) spec: NotifierSpec,
    media_path_prefix: String,
    max_directories: usize,
    plex_sections: Option<(Instant, Vec<PlexSection>)>,
}

impl Target {
    pub(crate) fn new(spec: NotifierSpec, media_path_prefix: &str, max_directories: usize) -> Self {
        Target {
            spec,
            media_path_prefix: media_path_prefix.trim_end_matches('/').to_owned(),
            max_directories,
            plex_sections: None,
        }
    }

    fn media_path(&self, directory: &str) -> String {
        match (self.media_path_prefix.as_str(), directory) {
            ("", "") => "/".to_owned(),
            (prefix, "") => prefix.to_owned(),
            (prefix, directory) => format!("{prefix}/{directory}"),
        }
    }

    /// Forgets what a failure may have made stale.
    pub(crate) fn forget_discoveries(&mut self) {
        self.plex_sections = None;
    }

    pub(crate) async fn plan(
        &mut self,
        flush: &Flush,
        http: &HttpClient,
    ) -> Result<Vec<Call>, DeliveryError> {
        let directories = match flush {
            Flush::Directories(directories) if directories.len() <= self.max_directories => {
                Some(directories.as_slice())
            }
            Flush::Directories(directories) if matches!(self.spec, NotifierSpec::Plex { .. }) => {
                // Plex counts per section.
                Some(directories.as_slice())
            }
            _ => None,
        };
        Ok(match self.spec.clone() {
            NotifierSpec::Plex {
                url,
                token,
                section,
            } => {
                match (section, directories) {
                    // A configured section holds every directory of the mount.
                    (Some(key), Some(directories)) if directories.len() <= self.max_directories => {
                        directories
                            .iter()
                            .map(|directory| {
                                let path = self.media_path(&directory.path);
                                plex_refresh_call(&url, &token, &key, Some(&path))
                            })
                            .collect()
                    }
                    (Some(key), _) => vec![plex_refresh_call(&url, &token, &key, None)],
                    (None, directories) => {
                        let sections = self.plex_sections(&url, &token, http).await?;
                        self.plan_plex(&url, &token, &sections, directories)
                    }
                }
            }
            NotifierSpec::Jellyfin { url, key } => {
                let header = ("authorization", format!("MediaBrowser Token=\"{key}\""));
                vec![self.library_call(&url, header, directories)]
            }
            NotifierSpec::Emby { url, key } => {
                vec![self.library_call(&url, ("x-emby-token", key), directories)]
            }
            NotifierSpec::Exec { program } => vec![match directories {
                Some(directories) => Call::Exec {
                    program,
                    arguments: directories
                        .iter()
                        .map(|directory| self.media_path(&directory.path))
                        .collect(),
                    scope: "directories",
                },
                None => Call::Exec {
                    program,
                    arguments: vec![self.media_path("")],
                    scope: "all",
                },
            }],
            NotifierSpec::Webhook { url } => {
                let listed: Vec<serde_json::Value> = directories
                    .unwrap_or_default()
                    .iter()
                    .map(|directory| {
                        serde_json::json!({
                            "path": directory.path,
                            "mediaPath": self.media_path(&directory.path),
                            "change": directory.change.name().to_ascii_lowercase(),
                        })
                    })
                    .collect();
                let body = serde_json::json!({
                    "scope": if directories.is_some() { "directories" } else { "all" },
                    "mediaPathPrefix": self.media_path(""),
                    "directories": listed,
                });
                vec![Call::Http(HttpCall {
                    method: Method::POST,
                    url,
                    headers: vec![("content-type", "application/json".to_owned())],
                    body: Some(body.to_string().into_bytes()),
                })]
            }
        })
    }

    /// Jellyfin and Emby: the changed paths, or a library refresh.
    fn library_call(
        &self,
        url: &str,
        auth_header: (&'static str, String),
        directories: Option<&[ChangedDirectory]>,
    ) -> Call {
        Call::Http(match directories {
            Some(directories) => {
                let updates: Vec<serde_json::Value> = directories
                    .iter()
                    .map(|directory| {
                        serde_json::json!({
                            "Path": self.media_path(&directory.path),
                            "UpdateType": directory.change.name(),
                        })
                    })
                    .collect();
                HttpCall {
                    method: Method::POST,
                    url: format!("{url}/Library/Media/Updated"),
                    headers: vec![auth_header, ("content-type", "application/json".to_owned())],
                    body: Some(
                        serde_json::json!({ "Updates": updates })
                            .to_string()
                            .into_bytes(),
                    ),
                }
            }
            None => HttpCall {
                method: Method::POST,
                url: format!("{url}/Library/Refresh"),
                headers: vec![auth_header],
                body: None,
            },
        })
    }

    fn plan_plex(
        &self,
        url: &str,
        token: &str,
        sections: &[PlexSection],
        directories: Option<&[ChangedDirectory]>,
    ) -> Vec<Call> {
        /// Per section: a whole-section refresh, or these paths.
        #[derive(Default)]
        struct SectionPlan {
            whole: bool,
            paths: BTreeSet<String>,
        }
        let mut plans: BTreeMap<&str, SectionPlan> = BTreeMap::new();
        let prefix = self.media_path_prefix.as_str();
        match directories {
            None => {
                for section in sections {
                    for location in &section.locations {
                        if location == prefix || is_ancestor(prefix, location) {
                            plans.entry(&section.key).or_default().whole = true;
                        } else if is_ancestor(location, prefix) {
                            // The library holds the mount and more: scan the mount only.
                            let plan = plans.entry(&section.key).or_default();
                            plan.paths.insert(self.media_path(""));
                        }
                    }
                }
            }
            Some(directories) => {
                for directory in directories {
                    let media_path = self.media_path(&directory.path);
                    let media_path_trimmed = media_path.trim_end_matches('/');
                    for section in sections {
                        for location in &section.locations {
                            if location == media_path_trimmed
                                || is_ancestor(location, media_path_trimmed)
                            {
                                let plan = plans.entry(&section.key).or_default();
                                plan.paths.insert(media_path.clone());
                            } else if is_ancestor(media_path_trimmed, location) {
                                plans.entry(&section.key).or_default().whole = true;
                            }
                        }
                    }
                }
            }
        }
        let refresh = |key: &str, path: Option<&str>| plex_refresh_call(url, token, key, path);
        let mut calls = Vec::new();
        for (key, plan) in plans {
            if plan.whole || plan.paths.len() > self.max_directories {
                calls.push(refresh(key, None));
            } else {
                calls.extend(plan.paths.iter().map(|path| refresh(key, Some(path))));
            }
        }
        calls
    }

    async fn plex_sections(
        &mut self,
        url: &str,
        token: &str,
        http: &HttpClient,
    ) -> Result<Vec<PlexSection>, DeliveryError> {
        if let Some((fetched_at, sections)) = &self.plex_sections
            && fetched_at.elapsed() < PLEX_SECTIONS_TTL
        {
            return Ok(sections.clone());
        }
        let failed = |reason: String| DeliveryError::PlexSections {
            url: url.to_owned(),
            reason,
        };
        let body = http
            .send(&HttpCall {
                method: Method::GET,
                url: format!("{url}/library/sections"),
                headers: vec![
                    ("x-plex-token", token.to_owned()),
                    ("accept", "application/json".to_owned()),
                ],
                body: None,
            })
            .await
            .map_err(|error| failed(error.to_string()))?;
        let sections = parse_plex_sections(&body).map_err(failed)?;
        self.plex_sections = Some((Instant::now(), sections.clone()));
        Ok(sections)
    }
}

/// A partial scan of `path` in section `key`, or of the whole section.
fn plex_refresh_call(url: &str, token: &str, key: &str, path: Option<&str>) -> Call {
    let mut call_url = format!("{url}/library/sections/{key}/refresh");
    if let Some(path) = path {
        call_url.push_str("?path=");
        call_url.extend(utf8_percent_encode(path, QUERY_VALUE));
    }
    Call::Http(HttpCall {
        method: Method::GET,
        url: call_url,
        headers: vec![("x-plex-token", token.to_owned())],
        body: None,
    })
}

/// `GET /library/sections` as JSON: `{"MediaContainer":{"Directory":[{"key":"1",
/// "Location":[{"path":"/media/Movies"}]}]}}` (keys are strings, some
/// servers send numbers).
fn parse_plex_sections(body: &[u8]) -> Result<Vec<PlexSection>, String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "MediaContainer")]
        media_container: Container,
    }
    #[derive(Deserialize)]
    struct Container {
        #[serde(rename = "Directory", default)]
        directories: Vec<Directory>,
    }
    #[derive(Deserialize)]
    struct Directory {
        key: serde_json::Value,
        #[serde(rename = "Location", default)]
        locations: Vec<Location>,
    }
    #[derive(Deserialize)]
    struct Location {
        path: String,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|error| error.to_string())?;
    answer
        .media_container
        .directories
        .into_iter()
        .map(|directory| {
            let key = match directory.key {
                serde_json::Value::String(key) => key,
                serde_json::Value::Number(key) => key.to_string(),
                other => return Err(format!("unexpected section key {other}")),
            };
            let locations = directory
                .locations
                .into_iter()
                .map(|location| location.path.trim_end_matches('/').to_owned())
                .collect();
            Ok(PlexSection { key, locations })
        })
        .collect()
}

/// Makes one call.
pub(crate) async fn perform(
    call: &Call,
    http: &HttpClient,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    match call {
        Call::Http(call) => http.send(call).await.map(drop).map_err(DeliveryError::Http),
        Call::Exec {
            program,
            arguments,
            scope,
        } => run_program(program, arguments, scope, timeout)
            .await
            .map_err(|reason| DeliveryError::Exec {
                program: program.clone(),
                reason,
            }),
    }
}

async fn run_program(
    program: &str,
    arguments: &[String],
    scope: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut child = tokio::process::Command::new(program)
        .args(arguments)
        .env("METAFUSE_NOTIFY_SCOPE", scope)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start: {error}"))?;
    let mut lines = arguments.join("\n");
    lines.push('\n');
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read its stdin is fine.
            let _ = stdin.write_all(lines.as_bytes()).await;
        }
        child.wait().await
    };
    let status = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("still running after {timeout:?}; killed"))?
        .map_err(|error| format!("cannot wait for it: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exited with {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coalesce::DirectoryChange;

    fn urls(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .map(|call| match call {
                Call::Http(call) => call.url.clone(),
                Call::Exec { .. } => panic!("http expected"),
            })
            .collect()
    }

    fn directory(path: &str) -> ChangedDirectory {
        ChangedDirectory {
            path: path.to_owned(),
            change: DirectoryChange::Modified,
        }
    }

    #[test]
    fn plex_maps_directories_to_the_sections_that_hold_them() {
        let spec = "plex=http://plex:32400,token=t".parse().expect("spec");
        let target = Target::new(spec, "/mnt/library/", 2);
        let sections = vec![
            PlexSection {
                key: "1".into(),
                locations: vec!["/mnt/library/Movies".into()],
            },
            PlexSection {
                key: "2".into(),
                locations: vec!["/mnt/library/TV Shows".into(), "/elsewhere".into()],
            },
            PlexSection {
                key: "3".into(),
                locations: vec!["/mnt".into()],
            },
            PlexSection {
                key: "4".into(),
                locations: vec!["/other".into()],
            },
        ];
        let calls = target.plan_plex(
            "http://plex:32400",
            "t",
            &sections,
            Some(&[directory("TV Shows/Dark/S01"), directory("Unsorted")]),
        );
        assert_eq!(
            urls(&calls),
            vec![
                "http://plex:32400/library/sections/2/refresh?path=%2Fmnt%2Flibrary%2FTV%20Shows%2FDark%2FS01",
                "http://plex:32400/library/sections/3/refresh?path=%2Fmnt%2Flibrary%2FTV%20Shows%2FDark%2FS01",
                "http://plex:32400/library/sections/3/refresh?path=%2Fmnt%2Flibrary%2FUnsorted",
            ]
        );
        let calls = target.plan_plex("http://plex:32400", "t", &sections, None);
        assert_eq!(
            urls(&calls),
            vec![
                "http://plex:32400/library/sections/1/refresh",
                "http://plex:32400/library/sections/2/refresh",
                "http://plex:32400/library/sections/3/refresh?path=%2Fmnt%2Flibrary",
            ]
        );
        // Three directories in one section, above the limit of 2.
        let calls = target.plan_plex(
            "http://plex:32400",
            "t",
            &sections,
            Some(&[
                directory("Movies/A"),
                directory("Movies/B"),
                directory("Movies/C"),
            ]),
        );
        assert!(urls(&calls).contains(&"http://plex:32400/library/sections/1/refresh".to_owned()));
    }

    #[test]
    fn plex_sections_parse_from_json() {
        let body = br#"{"MediaContainer":{"size":2,"Directory":[
            {"key":"1","type":"movie","title":"Movies","Location":[{"id":1,"path":"/m/Movies/"}]},
            {"key":7,"type":"show","title":"TV","Location":[{"id":2,"path":"/m/TV"},{"id":3,"path":"/n/TV"}]}]}}"#;
        assert_eq!(
            parse_plex_sections(body),
            Ok(vec![
                PlexSection {
                    key: "1".into(),
                    locations: vec!["/m/Movies".into()],
                },
                PlexSection {
                    key: "7".into(),
                    locations: vec!["/m/TV".into(), "/n/TV".into()],
                },
            ])
        );
        assert_eq!(
            parse_plex_sections(br#"{"MediaContainer":{"size":0}}"#),
            Ok(vec![])
        );
        assert!(parse_plex_sections(b"<MediaContainer/>").is_err());
    }
}
