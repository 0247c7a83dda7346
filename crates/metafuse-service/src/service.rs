//! Starting the service and the state task that keeps the tree live.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metafuse_leader::Leader;
use metafuse_rules::{RelevantProperties, Rules};
use metafuse_source::{
    BootstrapReport, FetchedValues, MetadataSource, SourceError, TailEvent, redact_url,
};
use metafuse_state::{FetchPlan, Projection};
use metafuse_stream::{RedisSource, Strategy};
use metafuse_vfs::{ChangeBatch, ChangeCause, Library, SharedLibrary, TreeChanges};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::config::{RulesSource, ServiceConfig};
use crate::error::ServiceError;
use crate::inner::{Command, Inner, InnerParts, InvalidationSink};
use crate::rules_file::compile_text;
use crate::status::{Phase, Status};

/// Pause before a failed leader switch is tried again.
const LEADER_RETRY_DELAY: Duration = Duration::from_secs(5);
/// First pause between failed attempts to reach the source (start-up
/// bootstrap, resynchronisation); doubles up to the max.
const SOURCE_RETRY_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const SOURCE_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(5);

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

/// Where a leader's source is, credentials redacted, for messages.
fn source_location(leader: &Leader) -> String {
    redact_url(&leader.redis_url)
}

/// The one place a source is made from a leader: its Redis, for now.
async fn connect_source(
    leader: &Leader,
    config: &ServiceConfig,
    strategy: Strategy,
) -> Result<Box<dyn MetadataSource>, SourceError> {
    let mut source = RedisSource::connect(&leader.redis_url, &config.prefix, strategy).await?;
    source.set_block(config.tail_block);
    Ok(Box::new(source))
}

impl Service {
    /// Finds the source, bootstraps, builds the tree and starts following
    /// the source, the rules file and the leader. Returns once the tree is
    /// complete; waits as long as discovery needs to find a leader and while
    /// that leader's source is unreachable.
    pub async fn start(config: ServiceConfig) -> Result<Service, ServiceError> {
        let initial = initial_rules(&config.rules)?;
        let leader = metafuse_leader::discover(&config.discovery).await?;
        let relevant = initial.rules.relevant_properties();
        let (source, mut projection, report) =
            bootstrap_when_reachable(&leader, &config, &relevant).await?;
        tracing::info!(
            source = %source.kind(),
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
        let library = Library::from_projection(projection, Arc::new(initial.rules));
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
            runtime: tokio::runtime::Handle::current(),
        }));
        let state_task = StateTask {
            inner: inner.clone(),
            source,
            relevant,
            commands: command_receiver,
        };
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
        Arc::new(crate::backend::ServiceBackend {
            inner: self.inner.clone(),
        })
    }

    /// The id of the last event applied to the tree.
    pub fn last_applied_event_id(&self) -> String {
        self.inner.applied_event_id()
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

    /// Stops following the source, the rules file and the leader, and
    /// detaches the invalidation sinks (so a mount handle held by one can be
    /// unmounted). The tree stays readable.
    pub async fn shutdown(&self) {
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
) -> Result<(Box<dyn MetadataSource>, Projection, BootstrapReport), ServiceError> {
    let mut backoff = SOURCE_RETRY_FIRST_BACKOFF;
    let mut n_failed_attempts = 0_u64;
    loop {
        let attempt = async {
            let mut source = connect_source(leader, config, config.strategy).await?;
            let mut projection = Projection::new(relevant.clone());
            let report = source.bootstrap(&mut projection, &|_| {}).await?;
            Ok::<_, SourceError>((source, projection, report))
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
    relevant: RelevantProperties,
    commands: mpsc::Receiver<Command>,
}

enum Next {
    Command(Option<Command>),
    Tail(Result<TailEvent, SourceError>),
}

impl StateTask {
    async fn run(mut self) {
        loop {
            // `next_batch` is cancel-safe: a command pre-empting it loses nothing.
            let next = tokio::select! {
                biased;
                command = self.commands.recv() => Next::Command(command),
                event = self.source.next_batch(&self.relevant) => Next::Tail(event),
            };
            match next {
                Next::Command(None) => return,
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
            Command::ApplyRules(rules, reply) => {
                let result = self.apply_rules(rules).await;
                let _ = reply.send(result.map_err(|error| error.to_string()));
            }
            Command::FetchPlan(plan, reply) => {
                let result = self.fetch_plan(&plan).await;
                let _ = reply.send(result.map_err(|error| error.to_string()));
            }
            Command::SwitchLeader(leader) => self.switch_leader(leader).await,
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

    /// New rules: fetch what they newly need (outside the lock), then
    /// rebuild the tree with them, keeping inodes.
    async fn apply_rules(&mut self, rules: Rules) -> Result<(), SourceError> {
        let started = Instant::now();
        let new_relevant = rules.relevant_properties();
        // Track the union while fetching: if the fetch fails nothing the old
        // rules need has been dropped.
        let union =
            RelevantProperties::from_names(self.relevant.names().chain(new_relevant.names()));
        let plan = self
            .inner
            .library
            .update(|library| library.set_relevant_properties(union.clone()));
        self.relevant = union;
        if !plan.is_empty() {
            let fetched = self.fetch_plan(&plan).await?;
            let changes = self.inner.library.apply_batch_reporting(fetched.iter());
            self.inner.publish(ChangeCause::Rules, changes).await;
        }
        let changes = self.inner.library.replace_rules_reporting(Arc::new(rules));
        self.inner
            .library
            .update(|library| library.set_relevant_properties(new_relevant.clone()));
        self.relevant = new_relevant;
        let n_invalidations = changes.invalidations.len();
        self.inner.publish(ChangeCause::Rules, changes).await;
        tracing::info!(
            n_files = self.inner.library.read().file_count(),
            n_invalidations,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rules applied"
        );
        Ok(())
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
        let n_files = fresh.complete_count();
        let changes = self.swap_in_projection(fresh, &report);
        Self::publish_rebuild(&self.inner, ChangeCause::Resync, changes, &report).await;
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
        let mut source = connect_source(leader, &self.inner.config, Strategy::Auto).await?;
        let mut fresh = Projection::new(self.relevant.clone());
        let report = source.bootstrap(&mut fresh, &|_| {}).await?;
        let changes = self.swap_in_projection(fresh, &report);
        // The new source's first connection counts as a reconnect of the
        // one handle health reads.
        source.set_tail_status(self.inner.tail_status.clone());
        self.inner.set_event_id_order(source.event_id_order());
        self.source = source;
        *self.inner.leader.lock() = leader.clone();
        Self::publish_rebuild(&self.inner, ChangeCause::SourceSwitch, changes, &report).await;
        self.inner
            .leader_switches
            .send_modify(|switches| *switches += 1);
        tracing::info!(
            source = self.source.describe(),
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
