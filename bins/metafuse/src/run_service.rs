//! What `mount` and `serve` share: start the service, serve the API,
//! optionally mount, wait for SIGINT/SIGTERM, stop cleanly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use metafuse_api::BackendSlot;
use metafuse_fuse::{MountHandle, MountOptions};
use metafuse_service::Service;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{CommonArgs, FileConfig, MountArgs, Settings, resolve};

/// Exit codes (documented in docs/configuration.md).
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_REDIS: u8 = 3;
pub const EXIT_MOUNT: u8 = 4;
pub const EXIT_API: u8 = 5;

/// A failure with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

fn failure(code: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { code, error }
}

pub fn settings(common: &CommonArgs, mount: &MountArgs) -> Result<Settings, Failure> {
    let file = match &common.config {
        Some(path) => FileConfig::load(path).map_err(failure(EXIT_CONFIG))?,
        None => FileConfig::default(),
    };
    resolve(common, mount, |name| std::env::var(name).ok(), &file).map_err(failure(EXIT_CONFIG))
}

/// Runs until a signal; `mountpoint` is `None` for `serve`.
pub fn run(settings: Settings, mountpoint: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(settings, mountpoint)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
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

async fn run_async(settings: Settings, mountpoint: Option<PathBuf>) -> Result<(), Failure> {
    if let Some(mountpoint) = &mountpoint
        && !mountpoint.is_dir()
    {
        return Err(Failure {
            code: EXIT_CONFIG,
            error: anyhow::anyhow!(
                "mountpoint {} does not exist or is not a directory",
                mountpoint.display()
            ),
        });
    }
    // Bind before the (possibly long) bootstrap so a taken port fails fast.
    let listener = match settings.api_listen {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|error| Failure {
            code: EXIT_API,
            error: anyhow::anyhow!("cannot listen for the api on {address}: {error}"),
        })?),
        None => None,
    };
    // The API answers from the start: health says `starting` while the
    // service waits for a leader or Redis and bootstraps.
    let backend = BackendSlot::empty();
    let api = ApiServer::start(listener, backend.clone());

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
            let handle = match metafuse_fuse::mount(service.library(), options) {
                Ok(handle) => handle,
                Err(error) => {
                    service.shutdown().await;
                    api.stop().await;
                    return Err(failure(EXIT_MOUNT)(anyhow::Error::new(error)));
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

    stop.await;
    service.shutdown().await;
    api.stop().await;
    if let Some(handle) = mount {
        unmount(handle)?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The HTTP API, when enabled, served until [`ApiServer::stop`].
struct ApiServer {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ApiServer {
    fn start(listener: Option<TcpListener>, backend: BackendSlot) -> Self {
        let stop = watch::Sender::new(false);
        let task = listener.map(|listener| {
            let address = listener
                .local_addr()
                .map(|address| address.to_string())
                .unwrap_or_default();
            tracing::info!(%address, "api listening");
            let mut stopped = stop.subscribe();
            tokio::spawn(metafuse_api::serve(listener, backend, async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            }))
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

fn unmount(handle: Arc<MountHandle>) -> Result<(), Failure> {
    // The service dropped its sink (holding the other reference) on shutdown.
    match Arc::try_unwrap(handle) {
        Ok(handle) => handle
            .unmount()
            .map_err(|error| failure(EXIT_MOUNT)(anyhow::Error::new(error))),
        Err(_) => Err(Failure {
            code: EXIT_MOUNT,
            error: anyhow::anyhow!("the mount is still in use; not unmounted"),
        }),
    }
}

/// A preset or rules problem is configuration (2); the rest is Redis (3).
fn start_failure(error: metafuse_service::ServiceError) -> Failure {
    let code = match error {
        metafuse_service::ServiceError::UnknownPreset(_)
        | metafuse_service::ServiceError::ReadRules { .. } => EXIT_CONFIG,
        _ => EXIT_REDIS,
    };
    Failure {
        code,
        error: error.into(),
    }
}
