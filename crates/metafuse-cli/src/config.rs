//! Configuration layering (spec §8): flags > environment > TOML file
//! (`--config`) > defaults, with the reference's environment names. The one
//! place every binary's settings are resolved.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use metafuse_leader::DiscoveryConfig;
use metafuse_service::{Ownership, RULES_FILE_NAME, RulesSource, ServiceConfig};
use metafuse_stream::Strategy;
use serde::Deserialize;

use crate::logging::LogFormat;

/// Default API address: loopback, so the API is not exposed by accident.
pub const DEFAULT_API_HOST: &str = "127.0.0.1";
/// Default API port.
pub const DEFAULT_API_PORT: u16 = 3000;
/// Default root of the files' `filePath`s.
pub const DEFAULT_FILES_VOLUME: &str = "/files";
/// Default directory of the rules file.
pub const DEFAULT_CONFIG_DIR: &str = "/config";

/// Options shared by `mount` and `serve`.
#[derive(Debug, Default, Args)]
pub struct CommonArgs {
    /// Redis URL; skips leader discovery [env: REDIS_URL]
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Root under which files' `filePath`s are found [env: FILES_VOLUME] [default: /files]
    #[arg(long, value_name = "DIR")]
    pub files_root: Option<PathBuf>,
    /// Rules file, watched for edits [default: {CONFIG_DIR}/renaming-rules.json]
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    pub rules: Option<PathBuf>,
    /// Shipped rules preset instead of a file: default, plex or jellyfin
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Key prefix of `file:` keys [env: REDIS_PREFIX] [default: ""]
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Address of the HTTP API [env: API_HOST, API_PORT] [default: 127.0.0.1:3000]
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,
    /// Do not serve the HTTP API
    #[arg(long)]
    pub no_api: bool,
    /// Bootstrap strategy: auto, replay or snapshot [default: auto]
    #[arg(long, value_name = "S")]
    pub strategy: Option<String>,
    /// TOML configuration file (lowest precedence after the defaults)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log lines as text or JSON [env: METAFUSE_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Tell a media server or program about changes, e.g.
    /// `plex=URL,token=T` (repeatable) [env: METAFUSE_NOTIFY, `;`-separated]
    #[arg(long = "notify", value_name = "SPEC")]
    pub notify: Vec<String>,
    /// Path at which the media server sees the mount [env: METAFUSE_MEDIA_PATH_PREFIX] [default: the mountpoint]
    #[arg(long, value_name = "PATH")]
    pub media_path_prefix: Option<String>,
    /// Bearer token required by the API's changing routes [env: API_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// Serve a built dashboard (static files, SPA fallback) at `/` [env: METAFUSE_UI_DIR]
    #[arg(long, value_name = "DIR")]
    pub ui_dir: Option<PathBuf>,
    /// Do not register with meta-core: no heartbeat file under
    /// META_CORE_PATH/services, no beacon v2 advertisement
    #[arg(long)]
    pub no_register: bool,
    /// Serve the tree over WebDAV on this address [env: WEBDAV_PORT (host: WEBDAV_HOST, default 127.0.0.1)] [default: off]
    #[arg(long, value_name = "ADDR")]
    pub webdav_listen: Option<String>,
    /// Serve WebDAV without tokens (trusted networks only)
    #[arg(long)]
    pub webdav_no_auth: bool,
    /// Metadata source: redis or metacore [env: METAFUSE_SOURCE] [default: chosen by discovery]
    #[arg(long, value_name = "KIND")]
    pub source: Option<String>,
    /// Where the warm-restart checkpoint is kept [env: METAFUSE_STATE_DIR] [default: CONFIG_DIR]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Options only `mount` has.
#[derive(Debug, Default, Args)]
pub struct MountArgs {
    /// Owner of every node [env: PUID] [default: this process's uid]
    #[arg(long, value_name = "N")]
    pub uid: Option<u32>,
    /// Group of every node [env: PGID] [default: this process's gid]
    #[arg(long, value_name = "N")]
    pub gid: Option<u32>,
    /// Mode of files, octal [env: FUSE_FILE_MODE] [default: 644]
    #[arg(long, value_name = "OCTAL")]
    pub file_mode: Option<String>,
    /// Mode of directories, octal [env: FUSE_DIR_MODE] [default: 755]
    #[arg(long, value_name = "OCTAL")]
    pub dir_mode: Option<String>,
    /// Let other users (Plex, Jellyfin) read the mount
    #[arg(long)]
    pub allow_other: bool,
    /// Mount even on a non-empty directory (hiding what is there)
    #[arg(long)]
    pub allow_non_empty: bool,
}

/// The TOML file: every key optional, unknown keys rejected (a typo must
/// not be silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // the keys are documented in docs/configuration.md
pub struct FileConfig {
    pub redis_url: Option<String>,
    pub meta_core_url: Option<String>,
    pub meta_core_path: Option<PathBuf>,
    pub redis_prefix: Option<String>,
    pub files_volume: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub rules: Option<PathBuf>,
    pub preset: Option<String>,
    pub api_host: Option<String>,
    pub api_port: Option<u16>,
    pub api: Option<bool>,
    pub strategy: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub file_mode: Option<String>,
    pub dir_mode: Option<String>,
    pub allow_other: Option<bool>,
    pub log_format: Option<LogFormat>,
    pub notify: Option<Vec<String>>,
    pub media_path_prefix: Option<String>,
    pub api_token: Option<String>,
    pub ui_dir: Option<PathBuf>,
    pub register: Option<bool>,
    pub beacon_interface: Option<String>,
    pub beacon_port: Option<u16>,
    pub webdav_listen: Option<String>,
    pub webdav_no_auth: Option<bool>,
    pub source: Option<String>,
    pub allow_non_empty: Option<bool>,
    pub state_dir: Option<PathBuf>,
}

impl FileConfig {
    /// Reads and parses the TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// Everything `mount` and `serve` need, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What the service crate is started with.
    pub service: ServiceConfig,
    /// `None` with `--no-api`.
    pub api_listen: Option<SocketAddr>,
    /// Owner of every node, when set (the mount defaults to this process's).
    pub uid: Option<u32>,
    /// Group of every node, when set.
    pub gid: Option<u32>,
    /// Mode of files, at most `0o7777`.
    pub file_mode: u32,
    /// Mode of directories, at most `0o7777`.
    pub dir_mode: u32,
    /// Whether other users may read the mount.
    pub allow_other: bool,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Change-notification specs (`plex=URL,token=T`, `exec=PROGRAM`, ...)
    /// as given, in order: flags, else the environment, else the file.
    pub notify: Vec<String>,
    /// Where the media server sees the mount, for the notifications' paths.
    pub media_path_prefix: Option<String>,
    /// Bearer token for the API's changing routes.
    pub api_token: Option<String>,
    /// A built dashboard served at `/`.
    pub ui_dir: Option<PathBuf>,
    /// Whether to register: the heartbeat file under
    /// `META_CORE_PATH/services`, and the beacon v2 advertisement when the
    /// leader was found on the beacon.
    pub register: bool,
    /// Where WebDAV is served; `None` = off.
    pub webdav_listen: Option<SocketAddr>,
    /// WebDAV without tokens.
    pub webdav_no_auth: bool,
    /// `CONFIG_DIR`: the rules file's home, and the WebDAV token store's.
    pub config_dir: PathBuf,
    /// Mount even on a non-empty directory.
    pub allow_non_empty: bool,
}

/// Parses `644`, `0644` or `0o644`.
pub fn parse_mode(text: &str) -> anyhow::Result<u32> {
    let digits = text.trim().trim_start_matches("0o");
    let mode =
        u32::from_str_radix(digits, 8).with_context(|| format!("invalid octal mode {text:?}"))?;
    if mode > 0o7777 {
        bail!("invalid octal mode {text:?}: larger than 7777");
    }
    Ok(mode)
}

fn blank_to_none(value: Option<String>) -> Option<String> {
    value
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// Resolves flags > environment (`lookup`) > file > defaults.
pub fn resolve(
    common: &CommonArgs,
    mount: &MountArgs,
    lookup: impl Fn(&str) -> Option<String>,
    file: &FileConfig,
) -> anyhow::Result<Settings> {
    let env = |name: &str| blank_to_none(lookup(name));
    let env_parsed = |name: &str| -> anyhow::Result<Option<u32>> {
        env(name)
            .map(|text| {
                text.parse::<u32>()
                    .with_context(|| format!("invalid {name} {text:?}"))
            })
            .transpose()
    };

    let redis_url = common
        .redis_url
        .clone()
        .or_else(|| env("REDIS_URL"))
        .or_else(|| {
            // The cluster's seed nodes, `host:port,host:port`.
            env("REDIS_CLUSTER_NODES").map(|nodes| format!("redis+cluster://{nodes}"))
        })
        .or_else(|| file.redis_url.clone());
    let meta_core_url = env("META_CORE_URL").or_else(|| file.meta_core_url.clone());
    let meta_core_path = env("META_CORE_PATH")
        .map(PathBuf::from)
        .or_else(|| file.meta_core_path.clone());
    let prefix = common
        .prefix
        .clone()
        .or_else(|| lookup("REDIS_PREFIX"))
        .or_else(|| file.redis_prefix.clone())
        .unwrap_or_default();
    let files_root = common
        .files_root
        .clone()
        .or_else(|| env("FILES_VOLUME").map(PathBuf::from))
        .or_else(|| file.files_volume.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FILES_VOLUME));
    let config_dir = env("CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| file.config_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
    let default_rules_file = config_dir.join(RULES_FILE_NAME);
    // A flag of either kind beats the file's choice of either kind.
    let rules = match (&common.rules, &common.preset, &file.rules, &file.preset) {
        (Some(path), _, _, _) => RulesSource::File(path.clone()),
        (None, Some(name), _, _) => RulesSource::Preset {
            name: name.clone(),
            save_to: default_rules_file,
        },
        (None, None, Some(path), _) => RulesSource::File(path.clone()),
        (None, None, None, Some(name)) => RulesSource::Preset {
            name: name.clone(),
            save_to: default_rules_file,
        },
        (None, None, None, None) => RulesSource::File(default_rules_file),
    };
    let strategy_text = common
        .strategy
        .clone()
        .or_else(|| file.strategy.clone())
        .unwrap_or_else(|| "auto".to_owned());
    let strategy: Strategy = strategy_text.parse().map_err(anyhow::Error::msg)?;

    let api_enabled = !common.no_api && file.api.unwrap_or(true);
    let api_listen = if !api_enabled {
        None
    } else if let Some(address) = &common.api_listen {
        Some(
            address
                .parse()
                .with_context(|| format!("invalid --api-listen {address:?}: expected HOST:PORT"))?,
        )
    } else {
        let host = env("API_HOST")
            .or_else(|| file.api_host.clone())
            .unwrap_or_else(|| DEFAULT_API_HOST.to_owned());
        let port = match env("API_PORT") {
            Some(text) => text
                .parse::<u16>()
                .with_context(|| format!("invalid API_PORT {text:?}"))?,
            None => file.api_port.unwrap_or(DEFAULT_API_PORT),
        };
        let address = format!("{host}:{port}");
        Some(
            address
                .parse()
                .with_context(|| format!("invalid API_HOST/API_PORT {address:?}"))?,
        )
    };

    let uid = match mount.uid {
        Some(uid) => Some(uid),
        None => env_parsed("PUID")?.or(file.uid),
    };
    let gid = match mount.gid {
        Some(gid) => Some(gid),
        None => env_parsed("PGID")?.or(file.gid),
    };
    let mode = |flag: &Option<String>,
                name: &str,
                from_file: &Option<String>,
                default: u32|
     -> anyhow::Result<u32> {
        match flag
            .clone()
            .or_else(|| env(name))
            .or_else(|| from_file.clone())
        {
            Some(text) => parse_mode(&text).with_context(|| format!("reading the {name} setting")),
            None => Ok(default),
        }
    };
    let file_mode = mode(&mount.file_mode, "FUSE_FILE_MODE", &file.file_mode, 0o644)?;
    let dir_mode = mode(&mount.dir_mode, "FUSE_DIR_MODE", &file.dir_mode, 0o755)?;
    let allow_other = mount.allow_other || file.allow_other.unwrap_or(false);
    let log_format = match common.log_format {
        Some(format) => format,
        None => match env("METAFUSE_LOG_FORMAT") {
            Some(text) => text
                .parse()
                .map_err(|message: String| anyhow::anyhow!("METAFUSE_LOG_FORMAT: {message}"))?,
            None => file.log_format.unwrap_or_default(),
        },
    };
    let notify = if !common.notify.is_empty() {
        common.notify.clone()
    } else if let Some(text) = env("METAFUSE_NOTIFY") {
        split_notify_specs(&text)
    } else {
        file.notify.clone().unwrap_or_default()
    };
    let media_path_prefix = common
        .media_path_prefix
        .clone()
        .or_else(|| env("METAFUSE_MEDIA_PATH_PREFIX"))
        .or_else(|| file.media_path_prefix.clone());

    let api_token = common
        .api_token
        .clone()
        .or_else(|| env("API_TOKEN"))
        .or_else(|| file.api_token.clone());
    let ui_dir = common
        .ui_dir
        .clone()
        .or_else(|| env("METAFUSE_UI_DIR").map(PathBuf::from))
        .or_else(|| file.ui_dir.clone());
    let register = !common.no_register && file.register.unwrap_or(true);
    let webdav_address = match (&common.webdav_listen, env("WEBDAV_PORT")) {
        (Some(address), _) => Some(address.clone()),
        (None, Some(port)) => {
            let host = env("WEBDAV_HOST").unwrap_or_else(|| DEFAULT_API_HOST.to_owned());
            Some(format!("{host}:{port}"))
        }
        (None, None) => file.webdav_listen.clone(),
    };
    let webdav_listen = webdav_address
        .map(|address| {
            address
                .parse::<SocketAddr>()
                .with_context(|| format!("invalid WebDAV address {address:?}: expected HOST:PORT"))
        })
        .transpose()?;
    let webdav_no_auth = common.webdav_no_auth || file.webdav_no_auth.unwrap_or(false);
    let forced_mode = common
        .source
        .clone()
        .or_else(|| env("METAFUSE_SOURCE"))
        .or_else(|| file.source.clone())
        .map(|text| {
            text.parse::<metafuse_leader::SourceMode>()
                .map_err(|message| anyhow::anyhow!("invalid source {text:?}: {message}"))
        })
        .transpose()?;
    let allow_non_empty = mount.allow_non_empty || file.allow_non_empty.unwrap_or(false);

    let defaults = DiscoveryConfig::default();
    let beacon = defaults
        .beacon
        .clone()
        .map(|mut beacon| -> anyhow::Result<_> {
            if let Some(text) =
                env("METAFUSE_BEACON_INTERFACE").or_else(|| file.beacon_interface.clone())
            {
                beacon.interface = text.parse().with_context(|| {
                    format!("invalid beacon interface {text:?}: expected an IPv4 address")
                })?;
            }
            match env("METAFUSE_BEACON_PORT") {
                Some(text) => {
                    beacon.port = text
                        .parse()
                        .with_context(|| format!("invalid METAFUSE_BEACON_PORT {text:?}"))?;
                }
                None => beacon.port = file.beacon_port.unwrap_or(beacon.port),
            }
            Ok(beacon)
        });
    let discovery = DiscoveryConfig {
        redis_url,
        meta_core_url,
        meta_core_path: meta_core_path.unwrap_or(defaults.meta_core_path.clone()),
        forced_mode,
        beacon: beacon.transpose()?,
        ..defaults
    };
    let mut service = ServiceConfig::new(default_rules_file_placeholder(), files_root);
    service.discovery = discovery;
    service.prefix = prefix;
    service.strategy = strategy;
    service.rules = rules;
    service.ownership = Ownership {
        uid: uid.unwrap_or_else(current_uid),
        gid: gid.unwrap_or_else(current_gid),
        file_mode,
        dir_mode,
    };
    service.rules_poll_interval = Duration::from_secs(1);
    // The checkpoint lives beside the rules unless told otherwise.
    service.state_dir = Some(
        common
            .state_dir
            .clone()
            .or_else(|| env("METAFUSE_STATE_DIR").map(PathBuf::from))
            .or_else(|| file.state_dir.clone())
            .unwrap_or_else(|| config_dir.clone()),
    );
    Ok(Settings {
        service,
        api_listen,
        uid,
        gid,
        file_mode,
        dir_mode,
        allow_other,
        log_format,
        notify,
        media_path_prefix,
        api_token,
        ui_dir,
        register,
        webdav_listen,
        webdav_no_auth,
        config_dir,
        allow_non_empty,
    })
}

/// The source options of `metafuse-stats`, layered like `metafuse`'s:
/// flags > environment > TOML file (`--config`, the same file) > defaults.
#[derive(Debug, Default, Args)]
pub struct StatsSourceArgs {
    /// Redis URL (`redis://` or `rediss://`, password in the URL) [env: REDIS_URL]
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of the `file:` keys [env: REDIS_PREFIX] [default: ""]
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Rules file (JSON or TOML) whose relevant properties to load
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    pub rules: Option<PathBuf>,
    /// Shipped rules preset: default, plex or jellyfin [default: default]
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Bootstrap strategy: auto, replay or snapshot [default: auto]
    #[arg(long, value_name = "S")]
    pub strategy: Option<String>,
    /// TOML configuration file, the same as `metafuse --config FILE`
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Which rules `metafuse-stats` loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsRules {
    /// A rules file (JSON or TOML).
    File(PathBuf),
    /// A shipped preset.
    Preset(String),
}

/// `metafuse-stats`'s offline settings, resolved.
#[derive(Debug, Clone)]
pub struct StatsSettings {
    /// Where the library is; `None` when no layer gave one.
    pub redis_url: Option<String>,
    /// Prefix of the `file:` keys.
    pub prefix: String,
    /// The rules whose relevant properties are loaded.
    pub rules: StatsRules,
    /// How to bootstrap.
    pub strategy: Strategy,
}

/// Resolves `metafuse-stats`'s flags > environment (`lookup`) > file > defaults.
pub fn resolve_stats(
    arguments: &StatsSourceArgs,
    lookup: impl Fn(&str) -> Option<String>,
    file: &FileConfig,
) -> anyhow::Result<StatsSettings> {
    let redis_url = arguments
        .redis_url
        .clone()
        .or_else(|| blank_to_none(lookup("REDIS_URL")))
        .or_else(|| file.redis_url.clone());
    let prefix = arguments
        .prefix
        .clone()
        .or_else(|| lookup("REDIS_PREFIX"))
        .or_else(|| file.redis_prefix.clone())
        .unwrap_or_default();
    let rules = match (
        &arguments.rules,
        &arguments.preset,
        &file.rules,
        &file.preset,
    ) {
        (Some(path), _, _, _) => StatsRules::File(path.clone()),
        (None, Some(name), _, _) => StatsRules::Preset(name.clone()),
        (None, None, Some(path), _) => StatsRules::File(path.clone()),
        (None, None, None, Some(name)) => StatsRules::Preset(name.clone()),
        (None, None, None, None) => StatsRules::Preset("default".to_owned()),
    };
    let strategy = arguments
        .strategy
        .clone()
        .or_else(|| file.strategy.clone())
        .unwrap_or_else(|| "auto".to_owned())
        .parse()
        .map_err(anyhow::Error::msg)?;
    Ok(StatsSettings {
        redis_url,
        prefix,
        rules,
        strategy,
    })
}

/// Reads the `--config` file if one was given.
pub fn load_file_config(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    match path {
        Some(path) => FileConfig::load(path),
        None => Ok(FileConfig::default()),
    }
}

/// `METAFUSE_NOTIFY` holds several specs separated by `;` or newlines
/// (a spec itself uses commas).
fn split_notify_specs(text: &str) -> Vec<String> {
    text.split([';', '\n'])
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Replaced right after construction; `ServiceConfig::new` wants a path.
fn default_rules_file_placeholder() -> PathBuf {
    PathBuf::from(RULES_FILE_NAME)
}

fn owner_of_proc_self() -> Option<std::fs::Metadata> {
    // /proc/self belongs to this process's effective uid and gid.
    std::fs::metadata("/proc/self").ok()
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    owner_of_proc_self().map_or(0, |metadata| metadata.uid())
}

fn current_gid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    owner_of_proc_self().map_or(0, |metadata| metadata.gid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        }
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).expect("valid test toml")
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let settings = resolve(
            &CommonArgs::default(),
            &MountArgs::default(),
            environment(&[]),
            &FileConfig::default(),
        )
        .expect("resolves");
        assert_eq!(
            settings.api_listen,
            Some("127.0.0.1:3000".parse().expect("address"))
        );
        assert_eq!(settings.service.files_root, PathBuf::from("/files"));
        assert_eq!(
            settings.service.rules,
            RulesSource::File(PathBuf::from("/config/renaming-rules.json"))
        );
        assert_eq!(settings.service.prefix, "");
        assert_eq!((settings.file_mode, settings.dir_mode), (0o644, 0o755));
        assert_eq!(settings.service.discovery.redis_url, None);
        assert!(!settings.allow_other);
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        let toml = file(
            r#"redis_url = "redis://file:1/"
               redis_prefix = "file-"
               files_volume = "/from-file"
               api_port = 4000
               file_mode = "600"
               uid = 7"#,
        );
        let env = environment(&[
            ("REDIS_URL", "redis://env:2/"),
            ("REDIS_PREFIX", "env-"),
            ("API_PORT", "5000"),
            ("FUSE_FILE_MODE", "640"),
            ("PUID", "8"),
        ]);
        let from_env =
            resolve(&CommonArgs::default(), &MountArgs::default(), &env, &toml).expect("resolves");
        assert_eq!(
            from_env.service.discovery.redis_url.as_deref(),
            Some("redis://env:2/")
        );
        assert_eq!(from_env.service.prefix, "env-");
        assert_eq!(from_env.service.files_root, PathBuf::from("/from-file"));
        assert_eq!(
            from_env.api_listen,
            Some("127.0.0.1:5000".parse().expect("address"))
        );
        assert_eq!(from_env.file_mode, 0o640);
        assert_eq!(from_env.uid, Some(8));

        let flags = CommonArgs {
            redis_url: Some("redis://flag:3/".to_owned()),
            prefix: Some("flag-".to_owned()),
            api_listen: Some("0.0.0.0:6000".to_owned()),
            ..CommonArgs::default()
        };
        let mount = MountArgs {
            file_mode: Some("0o444".to_owned()),
            uid: Some(9),
            ..MountArgs::default()
        };
        let from_flags = resolve(&flags, &mount, &env, &toml).expect("resolves");
        assert_eq!(
            from_flags.service.discovery.redis_url.as_deref(),
            Some("redis://flag:3/")
        );
        assert_eq!(from_flags.service.prefix, "flag-");
        assert_eq!(
            from_flags.api_listen,
            Some("0.0.0.0:6000".parse().expect("address"))
        );
        assert_eq!(from_flags.file_mode, 0o444);
        assert_eq!(from_flags.uid, Some(9));
    }

    #[test]
    fn beacon_interface_and_port_are_layered() {
        let toml = file(
            r#"beacon_interface = "10.0.0.2"
               beacon_port = 9100"#,
        );
        let from_file = resolve(
            &CommonArgs::default(),
            &MountArgs::default(),
            environment(&[]),
            &toml,
        )
        .expect("resolves");
        let beacon = from_file.service.discovery.beacon.expect("beacon on");
        assert_eq!(beacon.interface, std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(beacon.port, 9100);
        assert_eq!(beacon.group, std::net::Ipv4Addr::new(239, 255, 99, 1));

        let env = environment(&[
            ("METAFUSE_BEACON_INTERFACE", "127.0.0.1"),
            ("METAFUSE_BEACON_PORT", "9200"),
        ]);
        let from_env =
            resolve(&CommonArgs::default(), &MountArgs::default(), env, &toml).expect("resolves");
        let beacon = from_env.service.discovery.beacon.expect("beacon on");
        assert_eq!(beacon.interface, std::net::Ipv4Addr::LOCALHOST);
        assert_eq!(beacon.port, 9200);

        let error = resolve(
            &CommonArgs::default(),
            &MountArgs::default(),
            environment(&[("METAFUSE_BEACON_INTERFACE", "eth0")]),
            &FileConfig::default(),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("eth0"), "{error:#}");
    }

    #[test]
    fn config_dir_places_the_rules_file_and_a_preset_saves_there() {
        let env = environment(&[("CONFIG_DIR", "/srv/cfg")]);
        let common = CommonArgs {
            preset: Some("plex".to_owned()),
            ..CommonArgs::default()
        };
        let settings =
            resolve(&common, &MountArgs::default(), env, &FileConfig::default()).expect("resolves");
        assert_eq!(
            settings.service.rules,
            RulesSource::Preset {
                name: "plex".to_owned(),
                save_to: PathBuf::from("/srv/cfg/renaming-rules.json")
            }
        );
    }

    #[test]
    fn notify_specs_and_media_prefix_are_layered() {
        let toml = file(
            r#"notify = ["plex=http://plex:32400,token=F"]
               media_path_prefix = "/from-file"
               log_format = "json""#,
        );
        let none = environment(&[]);
        let from_file =
            resolve(&CommonArgs::default(), &MountArgs::default(), &none, &toml).expect("ok");
        assert_eq!(from_file.notify, vec!["plex=http://plex:32400,token=F"]);
        assert_eq!(from_file.media_path_prefix.as_deref(), Some("/from-file"));
        assert_eq!(from_file.log_format, LogFormat::Json);

        let env = environment(&[
            ("METAFUSE_NOTIFY", "exec=/bin/true; webhook=http://hook/x\n"),
            ("METAFUSE_MEDIA_PATH_PREFIX", "/env"),
            ("METAFUSE_LOG_FORMAT", "text"),
        ]);
        let from_env =
            resolve(&CommonArgs::default(), &MountArgs::default(), &env, &toml).expect("ok");
        assert_eq!(
            from_env.notify,
            vec!["exec=/bin/true", "webhook=http://hook/x"]
        );
        assert_eq!(from_env.media_path_prefix.as_deref(), Some("/env"));
        assert_eq!(from_env.log_format, LogFormat::Text);

        let flags = CommonArgs {
            notify: vec!["jellyfin=http://j:8096,key=K".to_owned()],
            media_path_prefix: Some("/flag".to_owned()),
            log_format: Some(LogFormat::Json),
            ..CommonArgs::default()
        };
        let from_flags = resolve(&flags, &MountArgs::default(), &env, &toml).expect("ok");
        assert_eq!(from_flags.notify, vec!["jellyfin=http://j:8096,key=K"]);
        assert_eq!(from_flags.media_path_prefix.as_deref(), Some("/flag"));
        assert_eq!(from_flags.log_format, LogFormat::Json);
    }

    #[test]
    fn stats_settings_use_the_same_layers() {
        let toml = file(
            r#"redis_url = "redis://file:1/"
               redis_prefix = "file-"
               preset = "plex""#,
        );
        let from_file =
            resolve_stats(&StatsSourceArgs::default(), environment(&[]), &toml).expect("ok");
        assert_eq!(from_file.redis_url.as_deref(), Some("redis://file:1/"));
        assert_eq!(from_file.prefix, "file-");
        assert_eq!(from_file.rules, StatsRules::Preset("plex".to_owned()));

        let env = environment(&[("REDIS_URL", "redis://env:2/"), ("REDIS_PREFIX", "")]);
        let from_env = resolve_stats(&StatsSourceArgs::default(), &env, &toml).expect("ok");
        assert_eq!(from_env.redis_url.as_deref(), Some("redis://env:2/"));
        assert_eq!(from_env.prefix, "", "an empty REDIS_PREFIX is a prefix");

        let flags = StatsSourceArgs {
            redis_url: Some("redis://flag:3/".to_owned()),
            rules: Some(PathBuf::from("/r.json")),
            ..StatsSourceArgs::default()
        };
        let from_flags = resolve_stats(&flags, &env, &toml).expect("ok");
        assert_eq!(from_flags.redis_url.as_deref(), Some("redis://flag:3/"));
        assert_eq!(from_flags.rules, StatsRules::File(PathBuf::from("/r.json")));

        let defaults = resolve_stats(
            &StatsSourceArgs::default(),
            environment(&[]),
            &FileConfig::default(),
        )
        .expect("ok");
        assert_eq!(defaults.redis_url, None);
        assert_eq!(defaults.rules, StatsRules::Preset("default".to_owned()));
    }

    #[test]
    fn bad_values_are_reported_with_their_name() {
        let env = environment(&[("FUSE_DIR_MODE", "rwx")]);
        let error = resolve(
            &CommonArgs::default(),
            &MountArgs::default(),
            env,
            &FileConfig::default(),
        )
        .expect_err("must fail");
        assert!(format!("{error:#}").contains("FUSE_DIR_MODE"), "{error:#}");
        let no_api = CommonArgs {
            no_api: true,
            ..CommonArgs::default()
        };
        let settings = resolve(
            &no_api,
            &MountArgs::default(),
            environment(&[]),
            &FileConfig::default(),
        )
        .expect("ok");
        assert_eq!(settings.api_listen, None);
        assert!(
            toml::from_str::<FileConfig>("redis_ulr = \"x\"").is_err(),
            "typos are rejected"
        );
    }
}
