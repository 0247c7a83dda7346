//! What `mount` and `serve` share: start the service, serve the API,
//! optionally mount, wait for SIGINT/SIGTERM, stop cleanly.

use std::path::PathBuf;
use std::sync::Arc;

use metafuse_api::{ApiConfig, BackendSlot, NotificationCounts};
use metafuse_bytes::ByteSources;
use metafuse_fuse::{MountHandle, MountOptions};
use metafuse_leader::{BeaconAdvertiser, BeaconNode, Leader, LeaderSource, SERVICE_CAPABILITY};
use metafuse_notify::{Notifier, NotifierSpec, NotifyConfig};
use metafuse_service::{ChangeBatch, ChangeCause, Service};
use metafuse_service::{Registration, RegistrationConfig, local_hostname};
use metafuse_webdav::{TokenStore, WebdavAuth, WebdavServer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{CommonArgs, MountArgs, Settings, load_file_config, resolve};
use crate::exit::{CliError, ExitKind};
use crate::logging::init_logging;
use crate::sd_notify::{ServiceState, notify_service_manager};

/// Resolves the settings from the flags, the process environment and the
/// `--config` file.
pub fn settings(common: &CommonArgs, mount: &MountArgs) -> Result<Settings, CliError> {
    let file =
        load_file_config(common.config.as_deref()).map_err(CliError::of(ExitKind::Config))?;
    resolve(common, mount, |name| std::env::var(name).ok(), &file)
        .map_err(CliError::of(ExitKind::Config))
}

/// `metafuse mount` and `metafuse serve`: resolves the settings, sets up
/// logging, and runs until SIGINT/SIGTERM; `mountpoint` is `None` for `serve`.
pub fn run_service(
    common: &CommonArgs,
    mount: &MountArgs,
    mountpoint: Option<PathBuf>,
) -> Result<(), CliError> {
    let settings = settings(common, mount)?;
    init_logging(settings.log_format, "info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            CliError::new(
                ExitKind::Failed,
                anyhow::anyhow!("cannot start the async runtime: {error}"),
            )
        })?;
    runtime.block_on(run_async(settings, mountpoint))
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops metafuse");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; stopping"),
        _ = terminate.recv() => tracing::info!("SIGTERM received; stopping"),
    }
}

async fn run_async(settings: Settings, mountpoint: Option<PathBuf>) -> Result<(), CliError> {
    if let Some(mountpoint) = &mountpoint
        && !mountpoint.is_dir()
    {
        return Err(CliError::new(
            ExitKind::Config,
            anyhow::anyhow!(
                "mountpoint {} does not exist or is not a directory",
                mountpoint.display()
            ),
        ));
    }
    // Bind before the (possibly long) bootstrap so a taken port fails fast.
    let listener = match settings.api_listen {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|error| {
            CliError::new(
                ExitKind::Api,
                anyhow::anyhow!("cannot listen for the api on {address}: {error}"),
            )
        })?),
        None => None,
    };
    // The API answers from the start: health says `starting` while the
    // service waits for a leader or Redis and bootstraps.
    let backend = BackendSlot::empty();
    let api_config = ApiConfig {
        api_token: settings.api_token.clone(),
        ui_dir: settings.ui_dir.clone(),
        ..ApiConfig::default()
    };
    // The token routes answer under the API whether or not WebDAV is served
    // by this process, so a dashboard can mint tokens in advance.
    let tokens = Arc::new(TokenStore::new(&settings.config_dir));
    metafuse_api::install_webdav_tokens(tokens.clone());
    let notify_targets = notify_targets(&settings.notify)?;
    let webdav_listener = match settings.webdav_listen {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|error| {
            CliError::new(
                ExitKind::Api,
                anyhow::anyhow!("cannot listen for webdav on {address}: {error}"),
            )
        })?),
        None => None,
    };
    let api_base_url = listener
        .as_ref()
        .and_then(|listener| listener.local_addr().ok())
        .map(reachable_base_url);
    let api = ApiServer::start(listener, backend.clone(), api_config);

    let stop = stop_signal();
    tokio::pin!(stop);
    let started = tokio::select! {
        started = Service::start(settings.service.clone()) => Some(started),
        () = &mut stop => None,
    };
    let service = match started {
        Some(Ok(service)) => Arc::new(service),
        Some(Err(error)) => {
            api.stop().await;
            return Err(start_failure(error));
        }
        None => {
            notify_service_manager(ServiceState::Stopping);
            api.stop().await;
            return Ok(());
        }
    };

    let mount = match &mountpoint {
        Some(mountpoint) => {
            let mut options = MountOptions::new(mountpoint, &settings.service.files_root);
            options.webdav_base_url = service.leader().webdav_url;
            options.uid = settings.uid;
            options.gid = settings.gid;
            // Both are ≤ 0o7777, checked when parsed.
            options.file_mode = settings.file_mode as u16;
            options.dir_mode = settings.dir_mode as u16;
            options.allow_other = settings.allow_other;
            options.allow_non_empty = settings.allow_non_empty;
            let handle = match metafuse_fuse::mount(service.library(), options) {
                Ok(handle) => handle,
                Err(error) => {
                    service.shutdown().await;
                    api.stop().await;
                    return Err(CliError::new(ExitKind::Mount, error));
                }
            };
            let handle = Arc::new(handle);
            let sink_handle = handle.clone();
            service.attach_invalidation_sink(Box::new(move |invalidations| {
                sink_handle.invalidate(invalidations)
            }));
            Some(handle)
        }
        None => None,
    };

    backend.fill(service.backend());

    let notifier = if notify_targets.is_empty() {
        None
    } else {
        // Where the media server sees the mount; the mountpoint itself
        // when both run on one machine.
        let media_path_prefix = settings.media_path_prefix.clone().unwrap_or_else(|| {
            mountpoint
                .as_ref()
                .map(|mountpoint| mountpoint.display().to_string())
                .unwrap_or_default()
        });
        let config = NotifyConfig {
            targets: notify_targets,
            ..NotifyConfig::default()
        };
        let handle = Notifier::spawn(config, &media_path_prefix);
        // Subscribed before the bootstrap refresh is pushed: a change from
        // now on is sent on its own (or absorbed by that refresh).
        let changes = service.subscribe_changes();
        // The bootstrap built the whole tree before anyone listened to the
        // feed: the media servers get one library-level refresh for it.
        handle.push(Arc::new(ChangeBatch {
            cause: ChangeCause::Bootstrap,
            changes: Vec::new(),
            invalidations: Vec::new(),
            sequence: 0,
        }));
        let metrics = handle.metrics_source();
        service.report_notifications(Box::new(move || {
            let counts = metrics.snapshot();
            NotificationCounts {
                sent: counts.sent,
                failed: counts.failed,
                coalesced: counts.coalesced,
                abandoned: counts.abandoned,
            }
        }));
        Some(handle.follow(changes))
    };

    let webdav_sources = match &webdav_listener {
        Some(_) => Some(
            ByteSources::new(
                settings.service.files_root.clone(),
                service.leader().webdav_url.as_deref(),
            )
            .map_err(CliError::of(ExitKind::Config))?,
        ),
        None => None,
    };
    let webdav = webdav_listener.zip(webdav_sources).map(|(listener, sources)| {
        let auth = if settings.webdav_no_auth {
            tracing::warn!("webdav serves without tokens (--webdav-no-auth): anyone who reaches it reads every file");
            WebdavAuth::NoAuth
        } else {
            WebdavAuth::Tokens(tokens.clone())
        };
        let server = Arc::new(WebdavServer::new(service.library(), sources, auth, ""));
        let address = listener
            .local_addr()
            .map(|address| address.to_string())
            .unwrap_or_default();
        tracing::info!(%address, "webdav listening");
        let stop = watch::Sender::new(false);
        let mut stopped = stop.subscribe();
        let task = tokio::spawn(async move {
            let serving = metafuse_webdav::serve(listener, server, async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            });
            if let Err(error) = serving.await {
                tracing::error!(%error, "webdav server failed");
            }
        });
        (stop, task)
    });

    let registration = match (&api_base_url, settings.register) {
        (Some(base_url), true) => Registration::start(RegistrationConfig::new(
            settings.service.discovery.meta_core_path.clone(),
            base_url.clone(),
        )),
        _ => None,
    };
    // Started (its first advertisement sent) before READY below.
    let advertiser = match (&api_base_url, settings.register) {
        (Some(base_url), true) => start_advertising(&settings, &service.leader(), base_url),
        _ => None,
    };
    if !settings.register {
        tracing::info!(
            "not registering (--no-register): no heartbeat file, no beacon advertisement"
        );
    }

    // Mounted, or answering with the live tree: what `Type=notify` waits for.
    notify_service_manager(ServiceState::Ready);

    stop.await;
    notify_service_manager(ServiceState::Stopping);
    // Dropping it says `bye`: neighbours forget us at once.
    drop(advertiser);
    if let Some(registration) = registration {
        registration.stop().await;
    }
    if let Some((stop, task)) = webdav {
        stop.send_replace(true);
        let _ = task.await;
    }
    service.shutdown().await;
    if let Some(notifier) = notifier {
        // The change feed's sender lives as long as the service value, so
        // the notifier would wait for it for ever: stop it. Changes still in
        // their debounce window are not sent; the media server's own
        // periodic scan covers them.
        notifier.abort();
        let _ = notifier.await;
    }
    api.stop().await;
    if let Some(handle) = mount {
        unmount(handle)?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Where others reach the API listening on `address`: this host's name
/// when it listens on every interface (`0.0.0.0` reaches nobody).
fn reachable_base_url(address: std::net::SocketAddr) -> String {
    if address.ip().is_unspecified() {
        format!("http://{}:{}", local_hostname(), address.port())
    } else {
        format!("http://{address}")
    }
}

/// Our beacon v2 `metamesh.service/meta-fuse` advertisement (spec §9),
/// when the leader was found on the beacon: the meta-cores that advertise
/// themselves there list the services they hear there, not heartbeat
/// files. Every interval until dropped, which says `bye`.
fn start_advertising(
    settings: &Settings,
    leader: &Leader,
    base_url: &str,
) -> Option<BeaconAdvertiser> {
    if leader.source != LeaderSource::Beacon {
        return None;
    }
    let beacon = settings.service.discovery.beacon.as_ref()?;
    let node = BeaconNode {
        name: "meta-fuse".to_owned(),
        instance: format!("meta-fuse-{}-{}", local_hostname(), std::process::id()),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        status: Some("running".to_owned()),
    };
    let instance = node.instance.clone();
    match metafuse_leader::advertise(
        beacon,
        node,
        vec![metafuse_leader::service_resource(base_url)],
    ) {
        Ok(advertiser) => {
            tracing::info!(
                %instance,
                base_url,
                "advertising {SERVICE_CAPABILITY} on the beacon {}:{}",
                beacon.group,
                beacon.port
            );
            Some(advertiser)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot advertise on the beacon; meta-core will not list us");
            None
        }
    }
}

/// The HTTP API, when enabled, served until [`ApiServer::stop`].
struct ApiServer {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ApiServer {
    fn start(listener: Option<TcpListener>, backend: BackendSlot, config: ApiConfig) -> Self {
        let stop = watch::Sender::new(false);
        let task = listener.map(|listener| {
            let address = listener
                .local_addr()
                .map(|address| address.to_string())
                .unwrap_or_default();
            tracing::info!(%address, "api listening");
            let mut stopped = stop.subscribe();
            tokio::spawn(metafuse_api::serve_with(
                listener,
                backend,
                config,
                async move {
                    let _ = stopped.wait_for(|stopped| *stopped).await;
                },
            ))
        });
        ApiServer { stop, task }
    }

    /// Stops accepting, lets requests in flight finish.
    async fn stop(self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

fn unmount(handle: Arc<MountHandle>) -> Result<(), CliError> {
    // The service dropped its sink (holding the other reference) on shutdown.
    match Arc::try_unwrap(handle) {
        Ok(handle) => handle.unmount().map_err(CliError::of(ExitKind::Mount)),
        Err(_) => Err(CliError::new(
            ExitKind::Mount,
            anyhow::anyhow!("the mount is still in use; not unmounted"),
        )),
    }
}

/// Parses the `--notify` specs; a bad one is a configuration error.
fn notify_targets(specs: &[String]) -> Result<Vec<NotifierSpec>, CliError> {
    specs
        .iter()
        .map(|spec| {
            spec.parse::<NotifierSpec>()
                .map_err(|error| CliError::new(ExitKind::Config, error))
        })
        .collect()
}

/// A preset or rules problem is configuration; the rest is the source.
fn start_failure(error: metafuse_service::ServiceError) -> CliError {
    let kind = match error {
        metafuse_service::ServiceError::UnknownPreset(_)
        | metafuse_service::ServiceError::ReadRules { .. } => ExitKind::Config,
        _ => ExitKind::Source,
    };
    CliError::new(kind, error)
}
