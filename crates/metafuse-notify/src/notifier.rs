//! The running notifier: a coalescing task fed by [`NotifierHandle::push`],
//! and one delivery task per target (a slow or failing server delays only
//! itself), each retrying with exponential backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metafuse_vfs::{ChangeBatch, ChangeCause};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::coalesce::{Coalescer, Flush};
use crate::http::HttpClient;
use crate::spec::NotifyConfig;
use crate::target::{Call, DeliveryError, Target, perform};

/// Batches waiting for the coalescing task. When it falls this far behind,
/// further batches are not queued: the library is marked "everything
/// changed" instead, so `push` never waits and nothing is lost.
const QUEUE_CAPACITY: usize = 1024;

/// Counters for `/metrics`, since the notifier started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifyMetrics {
    /// Requests (or program runs) that succeeded.
    pub sent: u64,
    /// Attempts that failed (each retry that fails counts).
    pub failed: u64,
    /// Changes that needed no request of their own: absorbed by a
    /// directory (or a library refresh) already pending.
    pub coalesced: u64,
    /// Requests given up after the last attempt.
    pub abandoned: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    coalesced: AtomicU64,
    abandoned: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NotifyMetrics {
        NotifyMetrics {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
        }
    }
}

/// Reads a notifier's counters from anywhere (cheap to clone).
#[derive(Clone, Debug)]
pub struct NotifyMetricsSource {
    counters: Arc<Counters>,
}

impl NotifyMetricsSource {
    /// The counters so far.
    pub fn snapshot(&self) -> NotifyMetrics {
        self.counters.snapshot()
    }
}

/// Starts notifiers.
#[derive(Debug)]
pub struct Notifier;

impl Notifier {
    /// Starts the tasks (on the current tokio runtime) that notify
    /// `config.targets` of the batches pushed to the returned handle.
    /// `media_path_prefix` is where the media servers see the mount: the
    /// virtual path `TV Shows/Dark` is sent as `{prefix}/TV Shows/Dark`.
    /// With no targets nothing is started and `push` does nothing.
    pub fn spawn(config: NotifyConfig, media_path_prefix: &str) -> NotifierHandle {
        let counters = Arc::new(Counters::default());
        let overflowed = Arc::new(AtomicBool::new(false));
        if config.targets.is_empty() {
            return NotifierHandle {
                sender: None,
                overflowed,
                counters,
                worker: None,
            };
        }
        let http = HttpClient::new(config.request_timeout);
        let mut deliveries = Vec::new();
        for spec in &config.targets {
            let (sender, receiver) = mpsc::unbounded_channel();
            let target = Target::new(spec.clone(), media_path_prefix, config.max_directories);
            let delivery = Delivery {
                target,
                http: http.clone(),
                config: config.clone(),
                counters: counters.clone(),
            };
            let task = tokio::spawn(delivery.run(receiver));
            deliveries.push((sender, task));
        }
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let worker = tokio::spawn(coalesce(
            receiver,
            Coalescer::new(config.debounce, config.max_delay),
            overflowed.clone(),
            counters.clone(),
            deliveries,
            config.request_timeout,
        ));
        tracing::info!(
            targets = %config.targets.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
            debounce_ms = config.debounce.as_millis() as u64,
            "notifications on"
        );
        NotifierHandle {
            sender: Some(sender),
            overflowed,
            counters,
            worker: Some(worker),
        }
    }
}

/// Feeds a running notifier; dropping it flushes what is pending at once.
#[derive(Debug)]
pub struct NotifierHandle {
    /// Each batch with the time it was pushed: the debounce counts from
    /// the change, not from when this task got round to it.
    sender: Option<mpsc::Sender<(Instant, Arc<ChangeBatch>)>>,
    overflowed: Arc<AtomicBool>,
    counters: Arc<Counters>,
    worker: Option<JoinHandle<()>>,
}

impl NotifierHandle {
    /// Hands over one batch of the change feed. Never waits: if the
    /// notifier is far behind, the batch becomes a library-wide refresh.
    pub fn push(&self, batch: Arc<ChangeBatch>) {
        let Some(sender) = &self.sender else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full((_, batch))) =
            sender.try_send((Instant::now(), batch))
        {
            self.counters
                .coalesced
                .fetch_add(batch.changes.len() as u64, Ordering::Relaxed);
            if !self.overflowed.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "notifications behind by {QUEUE_CAPACITY} batches; sending a library refresh instead"
                );
            }
        }
    }

    /// The counters so far.
    pub fn metrics(&self) -> NotifyMetrics {
        self.counters.snapshot()
    }

    /// A reader of the counters that outlives moving the handle into a
    /// task (for `/metrics`).
    pub fn metrics_source(&self) -> NotifyMetricsSource {
        NotifyMetricsSource {
            counters: self.counters.clone(),
        }
    }

    /// Follows a change feed until it closes, then shuts down (sending
    /// what is pending). Batches missed because the receiver lagged become
    /// one library-wide refresh: nothing changed is ever left unsent.
    pub fn follow(self, mut changes: broadcast::Receiver<Arc<ChangeBatch>>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(batch) => self.push(batch),
                    Err(broadcast::error::RecvError::Lagged(n_missed)) => {
                        tracing::warn!(
                            n_missed,
                            "notifications missed change batches; refreshing the whole library"
                        );
                        self.counters
                            .coalesced
                            .fetch_add(n_missed, Ordering::Relaxed);
                        self.push(Arc::new(ChangeBatch {
                            cause: ChangeCause::Resync,
                            changes: Vec::new(),
                            invalidations: Vec::new(),
                            sequence: 0,
                        }));
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            self.shutdown().await;
        })
    }

    /// Whether any target is configured.
    pub fn is_enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Sends what is pending now (without its debounce) and waits for the
    /// deliveries, each bounded by one request timeout once its queue is
    /// done (at shutdown).
    pub async fn shutdown(mut self) {
        self.sender = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.await;
        }
    }
}

async fn coalesce(
    mut receiver: mpsc::Receiver<(Instant, Arc<ChangeBatch>)>,
    mut coalescer: Coalescer,
    overflowed: Arc<AtomicBool>,
    counters: Arc<Counters>,
    deliveries: Vec<(mpsc::UnboundedSender<Flush>, JoinHandle<()>)>,
    request_timeout: Duration,
) {
    let dispatch = |flush: Flush| {
        tracing::debug!(?flush, "notifying");
        for (sender, _) in &deliveries {
            let _ = sender.send(flush.clone());
        }
    };
    loop {
        let deadline = coalescer.next_deadline();
        tokio::select! {
            received = receiver.recv() => match received {
                Some((pushed_at, batch)) => {
                    let n_coalesced = coalescer.add_batch(&batch, pushed_at);
                    counters.coalesced.fetch_add(n_coalesced, Ordering::Relaxed);
                }
                None => break,
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                if let Some(flush) = coalescer.take_due(Instant::now()) {
                    dispatch(flush);
                }
            }
        }
        if overflowed.swap(false, Ordering::Relaxed) {
            coalescer.pend_everything(Instant::now());
        }
    }
    if !coalescer.is_empty() {
        dispatch(coalescer.take_all());
    }
    for (sender, task) in deliveries {
        drop(sender);
        let abort = task.abort_handle();
        if tokio::time::timeout(request_timeout, task).await.is_err() {
            abort.abort();
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

struct Delivery {
    target: Target,
    http: HttpClient,
    config: NotifyConfig,
    counters: Arc<Counters>,
}

impl Delivery {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Flush>) {
        while let Some(mut flush) = receiver.recv().await {
            // What queued up while the previous delivery retried goes as one.
            while let Ok(more) = receiver.try_recv() {
                flush = flush.merge(more);
            }
            self.deliver(&flush).await;
        }
    }

    async fn deliver(&mut self, flush: &Flush) {
        let mut attempt = 1;
        let calls = loop {
            match self.target.plan(flush, &self.http).await {
                Ok(calls) => break calls,
                Err(error) => {
                    if !self.after_failure(&error, &mut attempt).await {
                        return;
                    }
                }
            }
        };
        for call in calls {
            let mut attempt = 1;
            loop {
                match perform(&call, &self.http, self.config.request_timeout).await {
                    Ok(()) => {
                        self.counters.sent.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(target = %self.target.spec, call = %describe(&call), "notified");
                        break;
                    }
                    Err(error) => {
                        self.target.forget_discoveries();
                        if !self.after_failure(&error, &mut attempt).await {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Counts a failed attempt; waits before the next one and returns
    /// true, or gives up (counted, logged) and returns false.
    async fn after_failure(&self, error: &DeliveryError, attempt: &mut u32) -> bool {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        if *attempt >= self.config.max_attempts {
            self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
            tracing::error!(target = %self.target.spec, %error, attempts = *attempt, "notification abandoned");
            return false;
        }
        let backoff = self
            .config
            .retry_initial
            .saturating_mul(1 << (*attempt - 1).min(20))
            .min(self.config.retry_max);
        tracing::warn!(target = %self.target.spec, %error, attempt = *attempt, ?backoff, "notification failed; retrying");
        *attempt += 1;
        tokio::time::sleep(backoff).await;
        true
    }
}

fn describe(call: &Call) -> String {
    match call {
        Call::Http(call) => format!("{} {}", call.method, call.url),
        Call::Exec {
            program, arguments, ..
        } => format!("{program} ({} arguments)", arguments.len()),
    }
}
