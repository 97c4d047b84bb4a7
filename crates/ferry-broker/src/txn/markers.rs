//! Completing a prepared transaction: write and fsync the commit/abort marker in every partition of
//! the transaction, make its consumer-group offsets visible (commit) or drop them (abort), then
//! persist CompleteCommit/CompleteAbort.
//!
//! Every step is idempotent, so a restart simply runs it again: a partition writes a marker only
//! for a transaction still open in it, and settling a group's pending offsets twice changes
//! nothing. A step that fails on storage is retried until it succeeds; a partition that no longer
//! exists (its topic was deleted) is skipped, as Kafka does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use super::now_ms;
use super::state::{self, TxnMeta, TxnState};
use crate::state::Shared;

/// Pause before retrying a step that failed on storage.
const RETRY: Duration = Duration::from_millis(500);

/// The coordinator epoch written into markers: one coordinator, never moved.
const COORDINATOR_EPOCH: i32 = 0;

/// Test hook for the crash tests: when this environment variable is set, the broker aborts its
/// process right after a commit decision is durable and before any marker is written, so a test
/// can check deterministically that a restart completes the commit (a SIGKILL from outside lands
/// in that window only by chance).
pub const CRASH_BEFORE_MARKERS_ENV: &str = "FERRY_TEST_TXN_CRASH_BEFORE_MARKERS";

fn crash_before_markers() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os(CRASH_BEFORE_MARKERS_ENV).is_some())
}

/// Runs the completion of `prepared` (a PrepareCommit or PrepareAbort metadata, already durable).
pub async fn complete(shared: Arc<Shared>, prepared: TxnMeta) {
    debug_assert!(prepared.state.is_prepared());
    let commit = prepared.state == TxnState::PrepareCommit;
    if commit && crash_before_markers() {
        // The one state only a restart can finish: the decision durable, no marker written.
        tracing::error!(transactional_id = %prepared.transactional_id, "{CRASH_BEFORE_MARKERS_ENV} is set: aborting the process before writing commit markers");
        std::process::abort();
    }
    join_all(
        prepared
            .partitions
            .iter()
            .map(|(topic, partition)| write_marker(&shared, &prepared, topic, *partition, commit)),
    )
    .await;
    for group in &prepared.groups {
        retry("settle transactional offsets", || {
            let store = shared.groups.store.clone();
            let group = group.clone();
            let producer_id = prepared.producer_id;
            async move {
                tokio::task::spawn_blocking(move || store.end_txn(&group, producer_id, commit))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
        })
        .await;
    }
    let done = state::complete(&prepared, now_ms());
    retry("persist the completed transaction", || {
        let store = shared.txns.store();
        let done = done.clone();
        async move {
            tokio::task::spawn_blocking(move || store.put(&done))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
    })
    .await;
    tracing::debug!(transactional_id = %done.transactional_id, state = done.state.name(), "transaction complete");
    shared.txns.persisted(done);
}

/// Writes and fsyncs one partition's marker, retrying on storage errors.
async fn write_marker(
    shared: &Arc<Shared>,
    meta: &TxnMeta,
    topic: &str,
    partition: i32,
    commit: bool,
) {
    let Some(log) = shared
        .store
        .topic(topic)
        .and_then(|t| u32::try_from(partition).ok().and_then(|p| t.partition(p)))
    else {
        tracing::warn!(
            topic,
            partition,
            "partition of a transaction is gone; no marker written"
        );
        return;
    };
    let (producer_id, epoch) = (meta.producer_id, meta.producer_epoch);
    retry("write a transaction marker", || {
        let log = log.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                match log.append_marker(producer_id, epoch, commit, COORDINATOR_EPOCH) {
                    Ok(Some(info)) => log.flush_to(info.end_offset).map_err(|e| e.to_string()),
                    Ok(None) => Ok(()),
                    Err(ferry_log::Error::Deleted(_)) => Ok(()),
                    Err(e @ ferry_log::Error::InvalidProducerEpoch { .. }) => {
                        // A newer epoch already wrote here: this decision was superseded.
                        tracing::warn!(error = %e, "stale transaction marker not written");
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .map_err(|e| e.to_string())?
        }
    })
    .await;
}

/// Runs `step` until it succeeds, pausing between attempts.
async fn retry<F, Fut>(what: &str, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    loop {
        match step().await {
            Ok(()) => return,
            Err(error) => {
                tracing::error!(%error, "cannot {what}; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
