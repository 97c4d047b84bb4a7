//! Rebuilding the read model from the event store: the one code path behind the query
//! service's `RestoreReadDb` jobs and `ferry replay posts`.
//!
//! The rebuild pages through every stored post event in global order and applies them with
//! the read model's version check (module `read_model`): a page per transaction, each post's
//! events in the page as one run (one check, consecutive likes summed). So it is
//! - idempotent: what the read model has is skipped, what it lacks is added, in order; a
//!   second run applies nothing;
//! - safe while commands arrive: the consumer applies new events as usual, and whichever of the
//!   two comes second for an event finds it applied;
//! - safe against a wiped read model: it simply applies everything (and a live event that
//!   arrives first for some post is a gap, which the consumer fills from the store itself);
//! - resumable: a crash loses at most the page in hand; running it again finishes the job.
//!
//! With [`RebuildOptions::reset`] it empties the read model first, for a rebuild from scratch
//! (say the read model is suspected to be wrong, not just behind). Lookups then see a partial
//! read model until it ends.

use std::collections::HashMap;

use ferry_es::Recorded;
use ferry_toolkit::sql::Database;
use posts_domain::PostEvent;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Error;
use crate::read_model;
use crate::source::EventSource;

/// How to rebuild.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Empty the read model first. Default: no (only add what it lacks).
    pub reset: bool,
    /// Events per transaction. Default 500.
    pub batch_size: usize,
    /// Stops the rebuild between two batches with [`Error::Cancelled`]; the read model stays
    /// consistent, and a later rebuild finishes the job.
    pub cancel: CancellationToken,
}

impl Default for RebuildOptions {
    fn default() -> RebuildOptions {
        RebuildOptions {
            reset: false,
            batch_size: 500,
            cancel: CancellationToken::new(),
        }
    }
}

/// Where a rebuild is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildProgress {
    /// Events read from the event store so far.
    pub read: u64,
    /// Events to read: the store's count at the start (more if commands arrived since).
    pub total: u64,
    /// Events applied to the read model (including those a gap's catch-up applied).
    pub applied: u64,
    /// Events the read model already had.
    pub skipped: u64,
    /// The global position of the last event read.
    pub position: i64,
}

/// Rebuilds the read model in `read_model` (the query service's database, migrated here if
/// needed) from `source`, calling `progress` at the start and after every batch.
///
/// Every event goes through the read model's per-post version check, in the transaction of its
/// change: what the read model has is skipped, what it lacks is applied in order. So it is safe
/// to run twice (the second run applies nothing) and while the services run (the consumer and
/// the rebuild never both apply an event); a crash or [`Error::Cancelled`] leaves a consistent
/// read model that the next run completes. With [`RebuildOptions::reset`] the read model is
/// emptied first.
pub async fn rebuild_read_model(
    source: &EventSource,
    read_model: &Database,
    options: &RebuildOptions,
    mut progress: impl FnMut(&RebuildProgress) + Send,
) -> Result<RebuildProgress, Error> {
    if options.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    read_model::migrate(read_model).await?;
    if options.reset {
        read_model::reset(read_model).await?;
    }
    let total = source.count(0).await?;
    let mut done = RebuildProgress {
        total,
        ..RebuildProgress::default()
    };
    progress(&done);
    let batch_size = options.batch_size.max(1);
    loop {
        if options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let events = source.page(done.position, batch_size).await?;
        let Some(last) = events.last() else { break };
        let last_position = last.position;
        let (applied, skipped, gaps) = apply_batch(read_model, &events).await?;
        done.applied += applied;
        done.skipped += skipped;
        for post_id in gaps {
            done.applied += read_model::sync_post(source, read_model, post_id)
                .await?
                .applied;
        }
        done.read += events.len() as u64;
        done.total = done.total.max(done.read);
        done.position = last_position;
        progress(&done);
    }
    Ok(done)
}

/// Applies a batch in one transaction, one run per post; answers the events applied and
/// skipped, and the posts with a gap (only when the read model went back under us, a
/// concurrent reset: their earlier events were in batches already read), which the caller
/// catches up after the commit.
///
/// Runs go in post id order, so two rebuilds (or a rebuild and a reset) on PostgreSQL take
/// the posts' version rows in the same order and wait for each other instead of deadlocking;
/// a deadlock or serialization failure all the same (another writer's order) is retried.
async fn apply_batch(
    read_model: &Database,
    events: &[Recorded<PostEvent>],
) -> Result<(u64, u64, Vec<Uuid>), Error> {
    let mut runs = runs(events);
    // By the version row's key as PostgreSQL orders it with `COLLATE "C"` (byte order, which
    // for UUIDs in text is their order).
    runs.sort_by_key(|run| run[0].1.post_id());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut applied, mut skipped, mut gaps) = (0, 0, Vec::new());
        let result: Result<(), Error> = async {
            let mut tx = read_model.begin().await?;
            for run in &runs {
                let outcome = read_model::apply_run_in(&mut tx, run).await?;
                applied += outcome.applied;
                skipped += outcome.skipped;
                if outcome.gap.is_some() {
                    gaps.push(run[0].1.post_id());
                }
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => return Ok((applied, skipped, gaps)),
            Err(Error::Database(e)) if attempt < 5 && is_transient(&e) => {
                tracing::debug!(error = %e, attempt, "read-model batch lost a race; retrying");
            }
            Err(e) => return Err(e),
        }
    }
}

/// A PostgreSQL deadlock or serialization failure: the transaction was rolled back, and
/// running it again may well succeed.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

/// The events split into runs of one post's consecutive versions, in order of first
/// appearance. (Applying posts in another order than the global one changes nothing: each
/// post's rows are its own.)
fn runs(events: &[Recorded<PostEvent>]) -> Vec<Vec<(i64, &PostEvent)>> {
    let mut runs: Vec<Vec<(i64, &PostEvent)>> = Vec::new();
    let mut open: HashMap<Uuid, usize> = HashMap::new();
    for e in events {
        let post_id = e.event.post_id();
        match open.get(&post_id) {
            Some(&i) if runs[i].last().is_some_and(|(v, _)| *v + 1 == e.version) => {
                runs[i].push((e.version, &e.event));
            }
            _ => {
                open.insert(post_id, runs.len());
                runs.push(vec![(e.version, &e.event)]);
            }
        }
    }
    runs
}
