//! The reconciliation after a snapshot: files whose keys exist but which
//! `file:__index__` does not list are missed by a snapshot and seen by a
//! replay; this finds them (a paced walk of Redis, see
//! `metafuse_stream::Reconciler`) and adds them, so which strategy ran
//! never changes what is visible.
//!
//! At start it runs in the background (the tree serves at once) and hands
//! the files to the state task, which fetches and applies them like any
//! change. A rebuild (resynchronisation, leader switch) is reconciled
//! before it is swapped in, while the old tree still serves: swapping in a
//! tree without them would remove them and add them back moments later,
//! and the change feed would tell media servers both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metafuse_source::{BootstrapMethod, BootstrapReport, MetadataSource, SourceError};
use metafuse_state::Projection;
use metafuse_stream::Reconciler;
use tokio::task::JoinHandle;

use crate::inner::{Command, Inner};

/// HashIds handed to the state task at once: one fetch of a few thousand
/// keys, so the tail is never held up for long.
const FILES_PER_COMMAND: usize = 1_000;
/// First pause after a failed reconciliation; doubles up to the max.
const RETRY_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const RETRY_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether a tree built this way may lack files the index does not list:
/// a snapshot reads the index; a checkpoint may have been written by a
/// snapshot's tree before its reconciliation ended.
pub(crate) fn needs_reconciliation(method: BootstrapMethod) -> bool {
    method == BootstrapMethod::SNAPSHOT || method == BootstrapMethod::CHECKPOINT
}

/// A running reconciliation; dropping it stops it (a new tree or source
/// makes it moot, and the state task it feeds may be gone).
pub(crate) struct Reconciliation(JoinHandle<()>);

impl Drop for Reconciliation {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reconciling in the background; retried until it completes.
pub(crate) fn spawn(inner: Arc<Inner>, reconciler: Reconciler) -> Reconciliation {
    Reconciliation(tokio::spawn(run(inner, reconciler)))
}

async fn run(inner: Arc<Inner>, reconciler: Reconciler) {
    let started = Instant::now();
    let mut backoff = RETRY_FIRST_BACKOFF;
    loop {
        match reconcile_once(&inner, &reconciler).await {
            Ok(n_unindexed) => {
                report(&inner, n_unindexed, started.elapsed());
                return;
            }
            Err(_) if inner.commands.is_closed() => return,
            Err(error) => {
                tracing::warn!(
                    %error,
                    retry_in_ms = backoff.as_millis() as u64,
                    "reconciling with file:__index__ failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX_BACKOFF);
            }
        }
    }
}

/// Logs a completed reconciliation once and counts it.
pub(crate) fn report(inner: &Inner, n_unindexed: u64, elapsed: Duration) {
    let elapsed_ms = elapsed.as_millis() as u64;
    if n_unindexed > 0 {
        tracing::info!(
            n_unindexed,
            elapsed_ms,
            "reconciled with the keys in redis: files missing from file:__index__ added"
        );
    } else {
        tracing::debug!(elapsed_ms, "reconciled: every file is in file:__index__");
    }
    inner.status.record_reconciliation(n_unindexed);
}

/// Reconciles a rebuilt projection before it is swapped in, when it was
/// built in a way that may miss unindexed files and the source can find
/// them: their values are fetched now (newer than the rebuild's position;
/// the tail re-reads whatever changes after it). Returns how many files
/// were found and how long it took, when it ran.
pub(crate) async fn reconcile_rebuild(
    source: &mut dyn MetadataSource,
    reconciler: Option<&Reconciler>,
    report: &BootstrapReport,
    fresh: &mut Projection,
) -> Result<Option<(u64, Duration)>, SourceError> {
    let Some(reconciler) = reconciler.filter(|_| needs_reconciliation(report.strategy_used)) else {
        return Ok(None);
    };
    let started = Instant::now();
    let hash_ids = reconciler.unindexed_hash_ids().await?;
    let n_unindexed = hash_ids.len() as u64;
    let plan = Reconciler::fetch_plan(hash_ids, fresh.relevant());
    let values = source.fetch_plan(&plan).await?;
    fresh.apply_batch(values.iter());
    Ok(Some((n_unindexed, started.elapsed())))
}

/// Finds the unindexed files and has the state task fetch and apply them,
/// chunk by chunk; returns how many were found.
async fn reconcile_once(inner: &Inner, reconciler: &Reconciler) -> Result<u64, String> {
    let hash_ids = reconciler
        .unindexed_hash_ids()
        .await
        .map_err(|error| error.to_string())?;
    for chunk in hash_ids.chunks(FILES_PER_COMMAND) {
        inner
            .run_on_state_task(|reply| Command::Reconcile(chunk.to_vec(), reply))
            .await??;
    }
    Ok(hash_ids.len() as u64)
}
