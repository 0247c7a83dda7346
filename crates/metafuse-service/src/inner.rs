//! The state shared by the service handle, its tasks and the API backend,
//! and the change feed they publish to.

use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use metafuse_leader::Leader;
use metafuse_rules::Rules;
use metafuse_source::{EventIdOrder, FetchedValues, TailStatus, TopologyReader};
use metafuse_state::FetchPlan;
use metafuse_vfs::{ChangeBatch, ChangeCause, Invalidation, SharedLibrary, TreeChanges};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::ServiceConfig;
use crate::status::Status;

/// Receives what the kernel must forget after each change (the mount's
/// `MountHandle::invalidate`). Called by a subscriber task of the change
/// feed, after the library lock is released.
pub type InvalidationSink = Box<dyn Fn(&[Invalidation]) + Send + Sync>;

/// Batches the change feed holds for a subscriber that falls behind; one
/// further behind is told it lagged (and by how much), never waited for.
const CHANGE_FEED_CAPACITY: usize = 1024;

/// What the state task is asked to do.
pub(crate) enum Command {
    Refresh(oneshot::Sender<Result<(), String>>),
    ApplyRules(Rules, oneshot::Sender<Result<(), String>>),
    SwitchLeader(Leader),
    FetchPlan(FetchPlan, oneshot::Sender<Result<FetchedValues, String>>),
    WriteCheckpoint(oneshot::Sender<Result<(), String>>),
    /// Fetch and apply these files the index does not list (found by the
    /// reconciliation after a snapshot).
    Reconcile(Vec<String>, oneshot::Sender<Result<(), String>>),
}

/// A subscriber of the change feed that is waited for: the kernel must have
/// been told about a change before anyone learns it is applied.
struct AcknowledgingSubscriber {
    task: JoinHandle<()>,
    /// The sequence of the last batch it handled.
    acknowledged: watch::Receiver<u64>,
}

/// State shared by the service handle, its tasks and the API backend.
pub(crate) struct Inner {
    pub(crate) library: SharedLibrary,
    pub(crate) status: Status,
    pub(crate) config: ServiceConfig,
    pub(crate) leader: Mutex<Leader>,
    pub(crate) commands: mpsc::Sender<Command>,
    changes: broadcast::Sender<Arc<ChangeBatch>>,
    n_batches_published: AtomicU64,
    acknowledging: Mutex<Vec<AcknowledgingSubscriber>>,
    /// The runtime the service started on, where subscriber tasks run
    /// (a sink may be attached from outside it).
    runtime: tokio::runtime::Handle,
    applied: watch::Sender<String>,
    /// How the source in use orders its event ids (for waiting on one).
    event_id_order: RwLock<EventIdOrder>,
    pub(crate) rules_checks: watch::Sender<u64>,
    /// Completed leader switches.
    pub(crate) leader_switches: watch::Sender<u64>,
    /// The rules text last read from or written to the file, so the poller
    /// only reacts to edits made by someone else.
    pub(crate) last_rules_text: Mutex<Option<String>>,
    /// The live tail's own report (connection, reconnects, last read, lag);
    /// every source, also after a leader switch, reports into this one handle.
    pub(crate) tail_status: TailStatus,
    /// Why the checkpoint found at start was not usable, if it was not.
    pub(crate) checkpoint_problem: Mutex<Option<String>>,
    /// Checkpoints written so far.
    pub(crate) checkpoints_written: watch::Sender<u64>,
    /// Reads the topology of the source in use (replaced on a leader
    /// switch), for health, stats and `/metrics`.
    pub(crate) source_topology: RwLock<Option<TopologyReader>>,
    /// Reads the change notifiers' counters for `/metrics`, once attached.
    pub(crate) notification_counts: RwLock<Option<NotificationCountsSource>>,
}

/// Reads the counters of whatever sends change notifications (the CLI's
/// notifier); the service only reports them.
pub type NotificationCountsSource = Box<dyn Fn() -> metafuse_api::NotificationCounts + Send + Sync>;

/// What [`Inner::new`] needs.
pub(crate) struct InnerParts {
    pub(crate) library: SharedLibrary,
    pub(crate) status: Status,
    pub(crate) config: ServiceConfig,
    pub(crate) leader: Leader,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) applied_event_id: String,
    pub(crate) event_id_order: EventIdOrder,
    pub(crate) last_rules_text: Option<String>,
    pub(crate) tail_status: TailStatus,
    pub(crate) source_topology: Option<TopologyReader>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) checkpoint_problem: Option<String>,
}

impl Inner {
    pub(crate) fn new(parts: InnerParts) -> Inner {
        Inner {
            library: parts.library,
            status: parts.status,
            config: parts.config,
            leader: Mutex::new(parts.leader),
            commands: parts.commands,
            changes: broadcast::Sender::new(CHANGE_FEED_CAPACITY),
            n_batches_published: AtomicU64::new(0),
            acknowledging: Mutex::new(Vec::new()),
            runtime: parts.runtime,
            applied: watch::Sender::new(parts.applied_event_id),
            event_id_order: RwLock::new(parts.event_id_order),
            rules_checks: watch::Sender::new(0),
            leader_switches: watch::Sender::new(0),
            last_rules_text: Mutex::new(parts.last_rules_text),
            tail_status: parts.tail_status,
            source_topology: RwLock::new(parts.source_topology),
            checkpoint_problem: Mutex::new(parts.checkpoint_problem),
            checkpoints_written: watch::Sender::new(0),
            notification_counts: RwLock::new(None),
        }
    }

    /// A new receiver of the change feed: every batch published from now on.
    pub(crate) fn subscribe_changes(&self) -> broadcast::Receiver<Arc<ChangeBatch>> {
        self.changes.subscribe()
    }

    /// Adds a subscriber of the change feed that hands each batch's
    /// invalidations to `sink`; [`Self::publish`] waits for it.
    pub(crate) fn attach_invalidation_sink(&self, sink: InvalidationSink) {
        let mut receiver = self.changes.subscribe();
        let (acknowledge, acknowledged) = watch::channel(0);
        let task = self.runtime.spawn(async move {
            loop {
                match receiver.recv().await {
                    Ok(batch) => {
                        if !batch.invalidations.is_empty() {
                            sink(&batch.invalidations);
                        }
                        acknowledge.send_replace(batch.sequence);
                    }
                    // Cannot happen while the publisher waits for us after
                    // every batch; if it did, the later batches still come.
                    Err(broadcast::error::RecvError::Lagged(n_missed)) => {
                        tracing::warn!(n_missed, "the kernel invalidation subscriber lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        self.acknowledging
            .lock()
            .push(AcknowledgingSubscriber { task, acknowledged });
    }

    /// Stops the acknowledging subscribers and waits until their sinks are
    /// dropped (so a mount handle held by one can be unmounted).
    pub(crate) async fn detach_invalidation_sinks(&self) {
        let subscribers: Vec<AcknowledgingSubscriber> =
            self.acknowledging.lock().drain(..).collect();
        for subscriber in &subscribers {
            subscriber.task.abort();
        }
        for subscriber in subscribers {
            // A cancelled task reports a JoinError; that is the point.
            let _ = subscriber.task.await;
        }
    }

    /// Stops the acknowledging subscribers without waiting (for `Drop`).
    pub(crate) fn abort_invalidation_sinks(&self) {
        for subscriber in self.acknowledging.lock().iter() {
            subscriber.task.abort();
        }
    }

    /// Publishes one update of the tree to the change feed and returns once
    /// every acknowledging subscriber (the kernel) has handled it; never
    /// waits for the others. Nothing is published when nothing changed.
    pub(crate) async fn publish(&self, cause: ChangeCause, changes: TreeChanges) {
        if changes.is_empty() {
            return;
        }
        // Taken before sending: each of these was subscribed before the
        // batch went out, so each will see it.
        let mut acknowledgements: Vec<watch::Receiver<u64>> = self
            .acknowledging
            .lock()
            .iter()
            .map(|subscriber| subscriber.acknowledged.clone())
            .collect();
        let sequence = self
            .n_batches_published
            .fetch_add(1, AtomicOrdering::Relaxed)
            + 1;
        // An error only means nobody listens.
        let _ = self.changes.send(Arc::new(ChangeBatch {
            cause,
            changes: changes.paths,
            invalidations: changes.invalidations,
            sequence,
        }));
        for acknowledged in &mut acknowledgements {
            // An error means the subscriber was detached: nothing to wait for.
            let _ = acknowledged.wait_for(|handled| *handled >= sequence).await;
        }
    }

    /// Moves the applied position; call after [`Self::publish`] of the
    /// change that got there.
    pub(crate) fn set_applied(&self, event_id: String) {
        self.applied.send_replace(event_id);
    }

    /// A receiver marked changed whenever a position is applied.
    pub(crate) fn watch_applied(&self) -> watch::Receiver<String> {
        self.applied.subscribe()
    }

    /// The id of the last event applied to the tree.
    pub(crate) fn applied_event_id(&self) -> String {
        self.applied.borrow().clone()
    }

    /// The source in use from now on orders its ids this way.
    pub(crate) fn set_event_id_order(&self, order: EventIdOrder) {
        *self.event_id_order.write() = order;
    }

    /// Waits until `event_id` or a later event has been applied (and the
    /// kernel told), as the source in use orders its ids.
    pub(crate) async fn wait_until_applied(&self, event_id: &str) {
        let mut receiver = self.applied.subscribe();
        // The sender lives in `self`: this cannot fail.
        let _ = receiver
            .wait_for(|applied| {
                let order = *self.event_id_order.read();
                matches!(
                    order(applied, event_id),
                    Some(Ordering::Greater | Ordering::Equal)
                )
            })
            .await;
    }

    /// Runs a rules change on the state task and waits for it.
    pub(crate) async fn apply_rules(&self, rules: Rules) -> Result<(), String> {
        self.run_on_state_task(|reply| Command::ApplyRules(rules, reply))
            .await?
    }

    /// Rebuilds the state from a fresh snapshot and waits for it.
    pub(crate) async fn refresh(&self) -> Result<(), String> {
        self.run_on_state_task(Command::Refresh).await?
    }

    /// Fetches the current values a plan names, through the source in use.
    pub(crate) async fn fetch_plan(&self, plan: FetchPlan) -> Result<FetchedValues, String> {
        self.run_on_state_task(|reply| Command::FetchPlan(plan, reply))
            .await?
    }

    /// Sends a command that answers and waits for its answer.
    pub(crate) async fn run_on_state_task<Answer>(
        &self,
        command: impl FnOnce(oneshot::Sender<Answer>) -> Command,
    ) -> Result<Answer, String> {
        // Either channel closes only when the state task has ended.
        const STOPPING: &str = "the service is stopping";
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| STOPPING.to_owned())?;
        answer.await.map_err(|_| STOPPING.to_owned())
    }

    pub(crate) fn set_rules_error(&self, error: Option<String>) {
        self.status.moments.lock().rules_error = error;
    }
}
