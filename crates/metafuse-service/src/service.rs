//! Starting the service and the state task that keeps the tree live.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metafuse_leader::{Leader, SourceMode};
use metafuse_metacore::{MetaCoreConfig, MetaCoreSource};
use metafuse_rules::{RelevantProperties, Rules};
use metafuse_source::{
    BootstrapMethod, BootstrapReport, FetchedValues, MetadataSource, SourceError, TailEvent,
    Timings,
};
use metafuse_state::{Checkpoint, FetchPlan, Projection, encode_checkpoint};
use metafuse_stream::{Reconciler, RedisSource, Strategy};
use metafuse_vfs::{ChangeBatch, ChangeCause, Library, SharedLibrary, TreeChanges};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::checkpoint::{LoadedCheckpoint, checkpoint_path, load_checkpoint, write_atomically};
use crate::config::{RulesSource, ServiceConfig};
use crate::error::ServiceError;
use crate::inner::{Command, Inner, InnerParts, InvalidationSink};
use crate::reconcile::{Reconciliation, needs_reconciliation, reconcile_rebuild};
use crate::rules_file::compile_text;
use crate::status::{Phase, Status};

/// Pause before a failed leader switch is tried again.
const LEADER_RETRY_DELAY: Duration = Duration::from_secs(5);
/// First pause between failed attempts to reach the source (start-up
/// bootstrap, resynchronisation); doubles up to the max.
const SOURCE_RETRY_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const SOURCE_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Values newly needed by a rules change applied per write lock: small
/// enough that readers never wait long (a few ms), large enough that the
/// lock is not taken a million times.
const RULES_FETCH_SLICE: usize = 4_096;

/// A running service: a live tree fed from a metadata source.
pub struct Service {
    pub(crate) inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Service")
            .field("source", &source_location(&self.inner.leader.lock()))
            .field("last_event_id", &self.inner.applied_event_id())
            .finish()
    }
}

/// Where a leader's source is (its Redis or its meta-core API),
/// credentials redacted, for messages.
fn source_location(leader: &Leader) -> String {
    leader.location()
}

/// A source, and for Redis what finds the files its index lacks.
struct Connected {
    source: Box<dyn MetadataSource>,
    reconciler: Option<Reconciler>,
}

/// The one place a source is made from a leader: its Redis directly, or
/// meta-core's HTTP API and event stream, as discovery decided
/// (`leader.mode`, which `--source` can force).
async fn connect_source(
    leader: &Leader,
    config: &ServiceConfig,
    strategy: Strategy,
) -> Result<Connected, SourceError> {
    match leader.mode {
        SourceMode::Redis => {
            let mut source =
                RedisSource::connect(&leader.redis_url, &config.prefix, strategy).await?;
            source.set_block(config.tail_block);
            Ok(Connected {
                reconciler: Some(source.reconciler()),
                source: Box::new(source),
            })
        }
        SourceMode::MetaCore => {
            let api_url = leader
                .api_url
                .clone()
                .filter(|url| !url.trim().is_empty())
                .ok_or_else(|| SourceError::InvalidLocation {
                    message: "API mode needs the meta-core API URL, and discovery found none"
                        .to_owned(),
                })?;
            let source = MetaCoreSource::new(MetaCoreConfig {
                prefix: config.prefix.clone(),
                watchdog: config.metacore_watchdog,
                ..MetaCoreConfig::new(api_url)
            });
            // meta-core's `/meta` lists what its index holds; it offers no
            // other way to find files.
            Ok(Connected {
                source: Box::new(source),
                reconciler: None,
            })
        }
    }
}

impl Service {
    /// Finds the source, bootstraps, builds the tree and starts following
    /// the source, the rules file and the leader. Returns once the tree is
    /// complete; waits as long as discovery needs to find a leader and while
    /// that leader's source is unreachable.
    pub async fn start(config: ServiceConfig) -> Result<Service, ServiceError> {
        let initial = initial_rules(&config.rules)?;
        let checkpoint_file = config.state_dir.as_deref().map(checkpoint_path);
        // Read and decoded on a blocking thread while discovery runs: at a
        // million files that is ~100 MB and half a second of CPU, which
        // must not stall a runtime worker.
        let loading = checkpoint_file
            .clone()
            .map(|path| tokio::task::spawn_blocking(move || load_checkpoint(&path)));
        let leader = metafuse_leader::discover(&config.discovery).await?;
        let relevant = initial.rules.relevant_properties();
        let loaded = match loading {
            None => None,
            Some(loading) => Some(loading.await.unwrap_or_else(|error| {
                LoadedCheckpoint::Unusable(format!("loading the checkpoint failed: {error}"))
            })),
        };
        let mut checkpoint_problem = None;
        let mut checkpoint = match loaded {
            None | Some(LoadedCheckpoint::Absent) => None,
            Some(LoadedCheckpoint::Unusable(problem)) => {
                tracing::warn!("{problem}; bootstrapping in full");
                checkpoint_problem = Some(problem);
                None
            }
            Some(LoadedCheckpoint::Intact(checkpoint)) => Some(checkpoint),
        };
        let Ready {
            source,
            reconciler,
            mut projection,
            report,
            identity,
        } = bootstrap_when_reachable(&leader, &config, &relevant, &mut checkpoint).await?;
        tracing::info!(
            source = %source.kind(),
            location = source.describe(),
            strategy = report.strategy_used.name(),
            reason = report.reason,
            n_events = report.n_events,
            n_fetched = report.n_fetched,
            n_skipped = report.n_skipped,
            n_malformed = report.n_malformed,
            n_files = projection.complete_count(),
            elapsed_ms = report.elapsed.as_millis() as u64,
            "bootstrap done"
        );
        projection.record_bootstrap(report.strategy_used.name(), report.elapsed);
        let build_started = Instant::now();
        // A whole-tree build is CPU for a while (seconds at a million
        // files): off the runtime's workers.
        let rules = Arc::new(initial.rules);
        let library =
            tokio::task::spawn_blocking(move || Library::from_projection(projection, rules))
                .await
                // Only a panic of the build ends it early (a blocking task is
                // never cancelled while awaited): it stays a panic.
                .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        tracing::info!(
            n_files = library.file_count(),
            n_directories = library.directory_count(),
            elapsed_ms = build_started.elapsed().as_millis() as u64,
            "tree built"
        );

        let (commands, command_receiver) = mpsc::channel(16);
        let status = Status::default();
        status.record_bootstrap(&report);
        status.moments.lock().rules_error = initial.error;
        let inner = Arc::new(Inner::new(InnerParts {
            library: SharedLibrary::new(library),
            status,
            config: config.clone(),
            leader: leader.clone(),
            commands,
            applied_event_id: report.last_event_id.clone(),
            event_id_order: source.event_id_order(),
            last_rules_text: initial.text,
            tail_status: source.tail_status(),
            source_topology: source.topology(),
            runtime: tokio::runtime::Handle::current(),
            checkpoint_problem,
        }));
        let mut state_task = StateTask {
            inner: inner.clone(),
            source,
            reconciler,
            reconciliation: None,
            relevant,
            commands: command_receiver,
            identity,
            checkpoint_file,
        };
        state_task.reconcile_in_background(report.strategy_used);
        let mut tasks = vec![tokio::spawn(state_task.run())];
        tasks.push(tokio::spawn(follow_leader(inner.clone(), leader)));
        if let RulesSource::File(_) = &config.rules {
            tasks.push(tokio::spawn(follow_rules_file(inner.clone())));
        }
        Ok(Service {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    /// The shared tree (for the FUSE mount).
    pub fn library(&self) -> SharedLibrary {
        self.inner.library.clone()
    }

    /// The leader in use (its WebDAV URL serves bytes not on the files volume).
    pub fn leader(&self) -> Leader {
        self.inner.leader.lock().clone()
    }

    /// Reports the counters of a change notifier (`--notify`) at
    /// `/metrics` from now on.
    pub fn report_notifications(&self, counts: crate::inner::NotificationCountsSource) {
        *self.inner.notification_counts.write() = Some(counts);
    }

    /// Adds a receiver of kernel invalidations (the mount, attached after
    /// bootstrap): a subscriber of the change feed that is waited for, so
    /// once [`Self::wait_until_applied`] returns, it has been told.
    pub fn attach_invalidation_sink(&self, sink: InvalidationSink) {
        self.inner.attach_invalidation_sink(sink);
    }

    /// The change feed: every later update of the tree as the virtual paths
    /// it added, removed or changed, with its cause. Any number of
    /// subscribers; one that falls behind is told it lagged
    /// (`RecvError::Lagged`) and never holds the tail up. Bulk causes
    /// (rules, resynchronisation, leader switch) report the difference of
    /// the whole trees.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Arc<ChangeBatch>> {
        self.inner.subscribe_changes()
    }

    /// The HTTP API's view of this service.
    pub fn backend(&self) -> Arc<dyn metafuse_api::Backend> {
        Arc::new(crate::backend::ServiceBackend::new(self.inner.clone()))
    }

    /// The id of the last event applied to the tree.
    pub fn last_applied_event_id(&self) -> String {
        self.inner.applied_event_id()
    }

    /// The id of the last event applied, as it moves: every applied batch
    /// and every rebuild marks it changed (even with the same id), also
    /// when nothing visible changed.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<String> {
        self.inner.watch_applied()
    }

    /// Waits until the event `event_id` (for Redis an `XADD` id) or a later
    /// one has been applied and its invalidations delivered.
    pub async fn wait_until_applied(&self, event_id: &str) {
        self.inner.wait_until_applied(event_id).await;
    }

    /// How many leader switches have completed (the new leader's tree
    /// swapped in).
    pub fn leader_switches(&self) -> u64 {
        *self.inner.leader_switches.borrow()
    }

    /// Waits until more than `seen` leader switches have completed.
    pub async fn wait_for_leader_switch(&self, seen: u64) {
        let mut receiver = self.inner.leader_switches.subscribe();
        let _ = receiver.wait_for(|switches| *switches > seen).await;
    }

    /// How many times the rules file was found changed and examined.
    pub fn rules_file_checks(&self) -> u64 {
        *self.inner.rules_checks.borrow()
    }

    /// Waits until the rules file has been examined more than `seen` times.
    pub async fn wait_for_rules_file_check(&self, seen: u64) {
        let mut receiver = self.inner.rules_checks.subscribe();
        let _ = receiver.wait_for(|checks| *checks > seen).await;
    }

    /// Why the rules file on disk is not in force, if it is not.
    pub fn rules_file_error(&self) -> Option<String> {
        self.inner.status.moments.lock().rules_error.clone()
    }

    /// How the tree in use was built (`checkpoint`, `snapshot`, `replay`,
    /// `metacore-bootstrap`), as health and stats show it.
    pub fn bootstrap_method(&self) -> Option<String> {
        self.inner.status.moments.lock().strategy.clone()
    }

    /// Why a checkpoint found at start was not used, when it was unusable
    /// (truncated, corrupt, foreign) or did not fit the source.
    pub fn checkpoint_problem(&self) -> Option<String> {
        self.inner.checkpoint_problem.lock().clone()
    }

    /// How many checkpoints have been written (periodic, asked for, at
    /// shutdown).
    pub fn checkpoints_written(&self) -> u64 {
        *self.inner.checkpoints_written.borrow()
    }

    /// Waits until more than `seen` checkpoints have been written.
    pub async fn wait_for_checkpoint(&self, seen: u64) {
        let mut receiver = self.inner.checkpoints_written.subscribe();
        let _ = receiver.wait_for(|written| *written > seen).await;
    }

    /// Writes the warm-restart checkpoint now (when a state directory is
    /// configured); also done periodically and by [`Self::shutdown`].
    pub async fn write_checkpoint(&self) -> Result<(), String> {
        self.inner
            .run_on_state_task(Command::WriteCheckpoint)
            .await?
    }

    /// Writes a last checkpoint, then stops following the source, the rules
    /// file and the leader, and detaches the invalidation sinks (so a mount
    /// handle held by one can be unmounted). The tree stays readable.
    pub async fn shutdown(&self) {
        if self.inner.config.state_dir.is_some()
            && let Err(error) = self.write_checkpoint().await
        {
            tracing::warn!(%error, "could not write the checkpoint at shutdown");
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // A cancelled task reports a JoinError; that is the point.
            let _ = task.await;
        }
        self.inner.detach_invalidation_sinks().await;
        self.inner.status.set_phase(Phase::Stopped);
        tracing::info!("service stopped");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for task in self.tasks.lock().iter() {
            task.abort();
        }
        self.inner.abort_invalidation_sinks();
    }
}

struct InitialRules {
    rules: Rules,
    text: Option<String>,
    error: Option<String>,
}

/// Connects and bootstraps, waiting while the source is unreachable: a
/// service started before its Redis (a container starting first, a Redis
/// restarting) should wait for it, not exit. Anything else — a bad URL, a
/// reply we do not understand — fails at once.
async fn bootstrap_when_reachable(
    leader: &Leader,
    config: &ServiceConfig,
    relevant: &RelevantProperties,
    checkpoint: &mut Option<Box<Checkpoint>>,
) -> Result<Ready, ServiceError> {
    let mut backoff = SOURCE_RETRY_FIRST_BACKOFF;
    let mut n_failed_attempts = 0_u64;
    loop {
        let attempt = async {
            let Connected {
                mut source,
                reconciler,
            } = connect_source(leader, config, config.strategy).await?;
            let identity = source.identity().await?;
            if let Some((projection, report)) =
                resume_from_checkpoint(source.as_mut(), &identity, relevant, checkpoint).await?
            {
                return Ok(Ready {
                    source,
                    reconciler,
                    projection,
                    report,
                    identity,
                });
            }
            let mut projection = Projection::new(relevant.clone());
            let report = source.bootstrap(&mut projection, &|_| {}).await?;
            Ok::<_, SourceError>(Ready {
                source,
                reconciler,
                projection,
                report,
                identity,
            })
        };
        match attempt.await {
            Ok(ready) => {
                if n_failed_attempts > 0 {
                    tracing::info!(n_failed_attempts, "the source is reachable again");
                }
                return Ok(ready);
            }
            Err(cause) if cause.is_connection_error() => {
                if n_failed_attempts == 0 {
                    tracing::warn!(error = %cause, "the source is not reachable yet; waiting for it");
                }
                n_failed_attempts += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(SOURCE_RETRY_MAX_BACKOFF);
            }
            Err(cause) => {
                return Err(ServiceError::Bootstrap {
                    url: source_location(leader),
                    cause,
                });
            }
        }
    }
}

/// A source ready to tail and the state it starts from.
struct Ready {
    source: Box<dyn MetadataSource>,
    reconciler: Option<Reconciler>,
    projection: Projection,
    report: BootstrapReport,
    /// What identifies the data behind the source (for checkpoints).
    identity: String,
}

/// Takes the checkpoint as the starting state when it was written against
/// this source's data and relevant set and the source can still resume
/// after its position; then the tail catches up from there. Otherwise says
/// why not (the caller bootstraps in full) and drops it. A connection error
/// keeps the checkpoint for the next attempt.
async fn resume_from_checkpoint(
    source: &mut dyn MetadataSource,
    identity: &str,
    relevant: &RelevantProperties,
    checkpoint: &mut Option<Box<Checkpoint>>,
) -> Result<Option<(Projection, BootstrapReport)>, SourceError> {
    let started = Instant::now();
    let Some(candidate) = checkpoint.as_deref() else {
        return Ok(None);
    };
    let refusal = if candidate.source_identity != identity {
        Some(format!(
            "it was written against another source ({}; now {identity})",
            candidate.source_identity
        ))
    } else if !candidate.fits(identity, relevant) {
        Some("the rules need another set of properties".to_owned())
    } else if !source.position_reachable(&candidate.event_id).await? {
        Some(format!(
            "the source no longer holds every event after {} (trimmed or reset)",
            candidate.event_id
        ))
    } else {
        None
    };
    let Some(candidate) = checkpoint.take() else {
        return Ok(None);
    };
    if let Some(refusal) = refusal {
        tracing::info!("checkpoint not used: {refusal}; bootstrapping in full");
        return Ok(None);
    }
    let Checkpoint {
        event_id,
        projection,
        ..
    } = *candidate;
    source.resume_from(&event_id);
    let n_files = projection.complete_count();
    tracing::info!(
        event_id,
        n_files,
        "resuming from the checkpoint; catching up with the events after it"
    );
    let elapsed = started.elapsed();
    let report = BootstrapReport {
        strategy_used: BootstrapMethod::CHECKPOINT,
        reason: format!("checkpoint at event {event_id} of {n_files} files fits the source"),
        last_event_id: event_id,
        n_events: 0,
        n_fetched: 0,
        n_skipped: 0,
        n_malformed: 0,
        timings: Timings {
            decide: elapsed,
            ..Timings::default()
        },
        elapsed,
    };
    Ok(Some((projection, report)))
}

fn initial_rules(source: &RulesSource) -> Result<InitialRules, ServiceError> {
    match source {
        RulesSource::Preset { name, .. } => Ok(InitialRules {
            rules: Rules::preset(name)?,
            text: None,
            error: None,
        }),
        RulesSource::File(path) => match std::fs::read_to_string(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no rules file; using the default preset until one is saved");
                Ok(InitialRules {
                    rules: Rules::preset("default")?,
                    text: None,
                    error: None,
                })
            }
            Err(cause) => Err(ServiceError::ReadRules {
                path: path.clone(),
                cause,
            }),
            Ok(text) => match compile_text(&text) {
                Ok(rules) => {
                    tracing::info!(path = %path.display(), n_rules = rules.document().rules.len(), "rules loaded");
                    Ok(InitialRules {
                        rules,
                        text: Some(text),
                        error: None,
                    })
                }
                Err(errors) => {
                    // Serving with the default preset beats refusing to
                    // start; the file is kept for the user to fix.
                    let message = invalid_rules_file_message(path, &errors);
                    tracing::error!(
                        "{message}; using the default preset, the file is left unchanged"
                    );
                    Ok(InitialRules {
                        rules: Rules::preset("default")?,
                        text: Some(text),
                        error: Some(message),
                    })
                }
            },
        },
    }
}

/// What health and the logs say about a rules file that does not compile.
fn invalid_rules_file_message(path: &Path, errors: &[String]) -> String {
    format!(
        "rules file {} is invalid: {}",
        path.display(),
        errors.join("; ")
    )
}

/// Owns the source (and so the position) and serialises every change of
/// the library.
struct StateTask {
    inner: Arc<Inner>,
    source: Box<dyn MetadataSource>,
    /// Finds the files `source`'s index lacks (Redis only).
    reconciler: Option<Reconciler>,
    /// The reconciliation of the tree in use, while it runs (stopped with
    /// this task).
    reconciliation: Option<Reconciliation>,
    relevant: RelevantProperties,
    commands: mpsc::Receiver<Command>,
    /// What identifies the data behind `source`, written into checkpoints.
    identity: String,
    /// Where checkpoints go; `None` writes none.
    checkpoint_file: Option<std::path::PathBuf>,
}

enum Next {
    Command(Option<Command>),
    Tail(Result<TailEvent, SourceError>),
    CheckpointDue,
}

impl StateTask {
    async fn run(mut self) {
        let mut checkpoint_ticker = tokio::time::interval(self.inner.config.checkpoint_interval);
        checkpoint_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the state just loaded needs no copy.
        checkpoint_ticker.tick().await;
        let checkpointing = self.checkpoint_file.is_some();
        loop {
            // `next_batch` is cancel-safe: a command pre-empting it loses nothing.
            let next = tokio::select! {
                biased;
                command = self.commands.recv() => Next::Command(command),
                _ = checkpoint_ticker.tick(), if checkpointing => Next::CheckpointDue,
                event = self.source.next_batch(&self.relevant) => Next::Tail(event),
            };
            match next {
                Next::Command(None) => return,
                Next::CheckpointDue => {
                    if let Err(error) = self.write_checkpoint().await {
                        tracing::warn!(%error, "could not write the checkpoint; will retry");
                    }
                }
                Next::Command(Some(command)) => self.handle(command).await,
                Next::Tail(Ok(TailEvent::Batch(batch))) => {
                    // One lock: readers never see the batch without its counts.
                    let changes = self.inner.library.update(|library| {
                        let changes = library.apply_batch_reporting(batch.fetched());
                        library.record_events(batch.counts, &batch.last_event_id);
                        changes
                    });
                    self.inner.publish(ChangeCause::Event, changes).await;
                    self.inner.set_applied(batch.last_event_id);
                }
                Next::Tail(Ok(TailEvent::Resync { last_event_id })) => {
                    tracing::warn!(
                        last_event_id,
                        "the source lost events after our position; resynchronising"
                    );
                    self.resynchronise_until_done().await;
                }
                Next::Tail(Err(error)) => {
                    // Not a connection problem (those are retried inside):
                    // pause so a persistent error does not spin.
                    tracing::error!(%error, "reading the source failed; retrying");
                    tokio::time::sleep(SOURCE_RETRY_MAX_BACKOFF).await;
                }
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Refresh(reply) => {
                let result = self.resynchronise_once().await;
                let _ = reply.send(result.map_err(|error| error.to_string()));
            }
            Command::ApplyRules(rules, reply) => match self.apply_rules(rules).await {
                Ok(nested) => {
                    // Answered first: the new rules are in force already.
                    let _ = reply.send(Ok(()));
                    self.fetch_nested(nested).await;
                }
                Err(error) => {
                    let _ = reply.send(Err(error.to_string()));
                }
            },
            Command::FetchPlan(plan, reply) => {
                let result = self.fetch_plan(&plan).await;
                let _ = reply.send(result.map_err(|error| error.to_string()));
            }
            Command::SwitchLeader(leader) => self.switch_leader(leader).await,
            Command::WriteCheckpoint(reply) => {
                let result = self.write_checkpoint().await;
                let _ = reply.send(result.map_err(|error| error.to_string()));
            }
            Command::Reconcile(hash_ids, reply) => {
                let result = self.apply_unindexed(hash_ids).await;
                let _ = reply.send(result.map_err(|error| error.to_string()));
            }
        }
    }

    /// The tree at start was built by `method`: if it may lack files the
    /// index does not list, they are found in the background (the tree
    /// serves meanwhile) and applied like any change.
    fn reconcile_in_background(&mut self, method: BootstrapMethod) {
        if let Some(reconciler) = self.reconciler.clone()
            && needs_reconciliation(method)
        {
            self.reconciliation = Some(crate::reconcile::spawn(self.inner.clone(), reconciler));
        }
    }

    /// A rebuilt tree has been swapped in, reconciled before (see
    /// [`reconcile_rebuild`]) when `reconciled` says how many files it
    /// found: the background reconciliation of the old tree is moot.
    fn reconciled(&mut self, reconciled: Option<(u64, Duration)>) {
        self.reconciliation = None;
        if let Some((n_unindexed, elapsed)) = reconciled {
            crate::reconcile::report(&self.inner, n_unindexed, elapsed);
        }
    }

    /// Fetches every property a snapshot would of files the index does not
    /// list, through the source (here, so the values are applied in order
    /// with the tail's), and applies them like any change.
    async fn apply_unindexed(&mut self, hash_ids: Vec<String>) -> Result<(), SourceError> {
        let plan = Reconciler::fetch_plan(hash_ids, &self.relevant);
        let fetched = self.fetch_plan(&plan).await?;
        let changes = self.inner.library.apply_batch_reporting(fetched.iter());
        self.inner.publish(ChangeCause::Event, changes).await;
        Ok(())
    }

    /// Writes the projection and its position atomically. Encoded here,
    /// between two changes, so the position matches the projection; the
    /// file is written off the runtime's threads.
    async fn write_checkpoint(&mut self) -> Result<(), std::io::Error> {
        let Some(path) = self.checkpoint_file.clone() else {
            return Ok(());
        };
        let started = Instant::now();
        let event_id = self.inner.applied_event_id();
        let bytes = {
            let library = self.inner.library.read();
            encode_checkpoint(library.projection(), &event_id, &self.identity)
        };
        let n_bytes = bytes.len();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        self.inner
            .checkpoints_written
            .send_modify(|written| *written += 1);
        tracing::debug!(
            event_id,
            n_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "checkpoint written"
        );
        Ok(())
    }

    /// The identity after a rebuild (a Redis that restarted has another);
    /// kept as it was when the source cannot say.
    async fn refresh_identity(&mut self) {
        match self.source.identity().await {
            Ok(identity) => self.identity = identity,
            Err(error) => tracing::debug!(%error, "could not read the source identity"),
        }
    }

    /// Fetches through the source, once more if the connection failed (the
    /// source reconnects).
    async fn fetch_plan(&mut self, plan: &FetchPlan) -> Result<FetchedValues, SourceError> {
        match self.source.fetch_plan(plan).await {
            Err(error) if error.is_connection_error() => self.source.fetch_plan(plan).await,
            result => result,
        }
    }

    /// New rules: fetch what they newly need (no lock held), then build
    /// the projection they need and their tree beside the ones in force
    /// (readers keep going) and swap all in at once, keeping inodes.
    /// Nothing changes if the fetch fails. Returns the nested keys still
    /// to fetch (see [`Self::fetch_nested`]), once the new rules are in
    /// force.
    async fn apply_rules(&mut self, rules: Rules) -> Result<FetchPlan, SourceError> {
        let started = Instant::now();
        let new_relevant = rules.relevant_properties();
        // Planned against the union: the fetched values are applied under it
        // before what only the old rules needed is dropped.
        let union =
            RelevantProperties::from_names(self.relevant.names().chain(new_relevant.names()));
        let mut plan = self.inner.library.read().projection().plan_for(&union);
        // Nested keys (`extra/…` when `extra` became relevant) can only be
        // found in Redis by a SCAN of the whole keyspace (seconds at 100k
        // files), and rules read properties by exact name, so they never
        // change a path: fetched after the new rules are in force. The files
        // stay in that plan (meta-core finds nested values in each file's
        // document).
        let nested = if plan.nested_prefixes.is_empty() {
            FetchPlan::default()
        } else {
            FetchPlan {
                hash_ids: plan.hash_ids.clone(),
                properties: Vec::new(),
                nested_prefixes: std::mem::take(&mut plan.nested_prefixes),
            }
        };
        let fetched = if plan.is_empty() {
            FetchedValues::default()
        } else {
            self.fetch_plan(&plan).await?
        };
        let fetch_elapsed = started.elapsed();
        let changes = self
            .inner
            .library
            .replace_rules_and_projection_reporting(Arc::new(rules), |projection| {
                projection.rebuilt(&union, fetched.iter(), new_relevant.clone())
            });
        self.relevant = new_relevant;
        let n_invalidations = changes.invalidations.len();
        let swapped_elapsed = started.elapsed();
        self.inner.publish(ChangeCause::Rules, changes).await;
        tracing::info!(
            n_files = self.inner.library.read().file_count(),
            n_values_fetched = fetched.len(),
            n_invalidations,
            fetch_ms = fetch_elapsed.as_millis() as u64,
            rebuild_ms = (swapped_elapsed - fetch_elapsed).as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rules applied"
        );
        Ok(nested)
    }

    /// Fetches and applies the nested keys under names new rules made
    /// relevant (a `SCAN`; nothing when `plan` is empty), in slices, each
    /// under the write lock briefly. They never change a path, so the rules
    /// are in force before; a failure leaves them out, as a snapshot does,
    /// until the next resynchronisation.
    async fn fetch_nested(&mut self, plan: FetchPlan) {
        if plan.is_empty() {
            return;
        }
        let started = Instant::now();
        let fetched = match self.fetch_plan(&plan).await {
            Ok(fetched) => fetched,
            Err(error) => {
                tracing::warn!(%error, prefixes = ?plan.nested_prefixes, "fetching the nested keys of newly relevant names failed; they are left out");
                return;
            }
        };
        let values: Vec<_> = fetched.iter().collect();
        for slice in values.chunks(RULES_FETCH_SLICE) {
            let changes = self
                .inner
                .library
                .apply_batch_reporting(slice.iter().copied());
            self.inner.publish(ChangeCause::Rules, changes).await;
        }
        tracing::info!(
            n_values = values.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "nested keys of newly relevant names applied"
        );
    }

    /// One rebuild into a fresh projection while the old tree keeps
    /// serving, then an atomic swap.
    async fn resynchronise_once(&mut self) -> Result<(), SourceError> {
        self.inner.status.set_phase(Phase::Resynchronising);
        let result = self.resynchronise_attempt().await;
        self.inner.status.set_phase(Phase::Tailing);
        result
    }

    async fn resynchronise_attempt(&mut self) -> Result<(), SourceError> {
        let mut fresh = Projection::new(self.relevant.clone());
        let report = match self.source.bootstrap(&mut fresh, &|_| {}).await {
            // Once more: the source reconnects.
            Err(error) if error.is_connection_error() => {
                fresh = Projection::new(self.relevant.clone());
                self.source.bootstrap(&mut fresh, &|_| {}).await?
            }
            result => result?,
        };
        let reconciled = reconcile_rebuild(
            self.source.as_mut(),
            self.reconciler.as_ref(),
            &report,
            &mut fresh,
        )
        .await?;
        let n_files = fresh.complete_count();
        let changes = self.swap_in_projection(fresh, &report);
        Self::publish_rebuild(&self.inner, ChangeCause::Resync, changes, &report).await;
        self.reconciled(reconciled);
        self.refresh_identity().await;
        tracing::info!(
            n_files,
            n_events = report.n_events,
            n_fetched = report.n_fetched,
            last_event_id = report.last_event_id,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "resynchronised"
        );
        Ok(())
    }

    /// Swaps in a freshly bootstrapped projection (the tree is rebuilt
    /// beside the old one); returns what changed, for
    /// [`Self::publish_rebuild`].
    fn swap_in_projection(&self, mut fresh: Projection, report: &BootstrapReport) -> TreeChanges {
        fresh.record_bootstrap(report.strategy_used.name(), report.elapsed);
        self.inner.library.replace_projection_reporting(fresh)
    }

    /// Announces a rebuild: the change goes out (and the kernel is told)
    /// before the new position, so whoever waits for that position never
    /// sees a stale tree.
    /// (Takes the shared state alone: the task, holding the source, is not
    /// `Sync`, so it is not borrowed across the wait.)
    async fn publish_rebuild(
        inner: &Inner,
        cause: ChangeCause,
        changes: TreeChanges,
        report: &BootstrapReport,
    ) {
        inner.status.record_bootstrap(report);
        inner.publish(cause, changes).await;
        inner.set_applied(report.last_event_id.clone());
    }

    async fn resynchronise_until_done(&mut self) {
        let mut backoff = SOURCE_RETRY_FIRST_BACKOFF;
        loop {
            match self.resynchronise_once().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "resynchronisation failed; still serving the last good tree");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(SOURCE_RETRY_MAX_BACKOFF);
                }
            }
        }
    }

    /// A new leader: rebuild from its source while the old tree keeps
    /// serving, then swap the tree and the source.
    async fn switch_leader(&mut self, leader: Leader) {
        if !leader.differs_in_location(&self.inner.leader.lock()) {
            return;
        }
        self.inner.status.set_phase(Phase::SwitchingLeader);
        let result = self.switch_leader_attempt(&leader).await;
        self.inner.status.set_phase(Phase::Tailing);
        if let Err(error) = result {
            tracing::warn!(%error, source = source_location(&leader), "switching to the new leader failed; retrying later, still serving the last good tree");
            let commands = self.inner.commands.clone();
            tokio::spawn(async move {
                tokio::time::sleep(LEADER_RETRY_DELAY).await;
                let _ = commands.send(Command::SwitchLeader(leader)).await;
            });
        }
    }

    async fn switch_leader_attempt(&mut self, leader: &Leader) -> Result<(), SourceError> {
        let Connected {
            mut source,
            reconciler,
        } = connect_source(leader, &self.inner.config, Strategy::Auto).await?;
        let identity = source.identity().await?;
        let mut fresh = Projection::new(self.relevant.clone());
        let report = source.bootstrap(&mut fresh, &|_| {}).await?;
        let reconciled =
            reconcile_rebuild(source.as_mut(), reconciler.as_ref(), &report, &mut fresh).await?;
        let changes = self.swap_in_projection(fresh, &report);
        // The new source's first connection counts as a reconnect of the
        // one handle health reads.
        source.set_tail_status(self.inner.tail_status.clone());
        self.inner.set_event_id_order(source.event_id_order());
        *self.inner.source_topology.write() = source.topology();
        self.source = source;
        self.reconciler = reconciler;
        self.identity = identity;
        *self.inner.leader.lock() = leader.clone();
        Self::publish_rebuild(&self.inner, ChangeCause::SourceSwitch, changes, &report).await;
        self.reconciled(reconciled);
        self.inner
            .leader_switches
            .send_modify(|switches| *switches += 1);
        tracing::info!(
            source = %self.source.kind(),
            location = self.source.describe(),
            n_files = self.inner.library.read().file_count(),
            "switched to the new leader"
        );
        Ok(())
    }
}

async fn follow_leader(inner: Arc<Inner>, leader: Leader) {
    let mut watcher = metafuse_leader::watch(inner.config.discovery.clone(), leader);
    while let Some(leader) = watcher.changed().await {
        if inner
            .commands
            .send(Command::SwitchLeader(leader))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Polls the rules file; a valid edit is applied, an invalid one reported
/// and left alone.
async fn follow_rules_file(inner: Arc<Inner>) {
    let path = inner.config.rules.file_path().clone();
    let mut ticker = tokio::time::interval(inner.config.rules_poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Content, not mtime, decides: editors and `cp` may keep the mtime
        // within one second, and reading a rules file is cheap.
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            // A deleted file keeps the rules in force.
            Err(_) => continue,
        };
        {
            let mut last_rules_text = inner.last_rules_text.lock();
            if last_rules_text.as_deref() == Some(text.as_str()) {
                continue;
            }
            *last_rules_text = Some(text.clone());
        }
        match compile_text(&text) {
            Err(errors) => {
                let message = invalid_rules_file_message(&path, &errors);
                tracing::error!(
                    "{message}; keeping the rules in force, the file is left unchanged"
                );
                inner.set_rules_error(Some(message));
            }
            Ok(rules) => match inner.apply_rules(rules).await {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "rules file changed; new rules applied");
                    inner.set_rules_error(None);
                }
                Err(error) => {
                    let message = format!(
                        "rules file {} is valid but could not be applied: {error}",
                        path.display()
                    );
                    tracing::warn!("{message}; will retry");
                    inner.set_rules_error(Some(message));
                    // Forget it so the next poll tries again.
                    *inner.last_rules_text.lock() = None;
                }
            },
        }
        inner.rules_checks.send_modify(|checks| *checks += 1);
    }
}
