//! The query service's `RestoreReadDb` jobs: each rebuild ([`crate::rebuild_read_model`]) runs
//! as a job with an id and a progress report, one job at a time, in the background.
//!
//! Jobs live in memory: the process that runs a job reports it, and forgets it when it stops
//! (or after [`KEEP`] newer jobs). A job cut short by a shutdown or a crash leaves a consistent
//! read model; requesting another rebuild finishes the work, which is why nothing here needs to
//! be durable.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ferry_toolkit::sql::Database;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::rebuild::{RebuildOptions, RebuildProgress, rebuild_read_model};
use crate::source::EventSource;

/// How many finished jobs are remembered.
const KEEP: usize = 32;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) enum JobState {
    /// Waiting for the job before it.
    Queued,
    /// Rebuilding.
    Running,
    /// Finished: the read model has every event stored when it ended.
    Done,
    /// Stopped by an error (or a shutdown); the read model is consistent, but may lack events.
    Failed,
}

/// A job's report: `GET /api/v1/RestoreReadDb/{job}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobView {
    /// The job's id.
    pub job: Uuid,
    /// Where it is.
    pub state: JobState,
    /// Whether it empties the read model first.
    pub reset: bool,
    /// Its progress.
    #[serde(flatten)]
    pub progress: RebuildProgress,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For people.
    pub message: String,
}

impl JobView {
    fn new(job: Uuid, reset: bool) -> JobView {
        let mut view = JobView {
            job,
            state: JobState::Queued,
            reset,
            progress: RebuildProgress::default(),
            error: None,
            message: String::new(),
        };
        view.describe();
        view
    }

    fn describe(&mut self) {
        let p = &self.progress;
        self.message = match self.state {
            JobState::Queued => "Read database restore queued.".to_owned(),
            JobState::Running => format!(
                "Restoring the read database: {} of {} event(s) read.",
                p.read, p.total
            ),
            JobState::Done => format!(
                "Read database restore completed successfully! ({} event(s) read, {} applied, {} already there)",
                p.read, p.applied, p.skipped
            ),
            JobState::Failed => format!(
                "Read database restore failed after {} of {} event(s); request it again to finish.",
                p.read, p.total
            ),
        };
    }
}

/// The jobs of one query service. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Jobs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: EventSource,
    db: Database,
    shutdown: CancellationToken,
    /// The jobs, oldest first.
    jobs: Mutex<VecDeque<JobView>>,
    /// Held by the running job, so jobs run one at a time, in the order they were submitted.
    turn: tokio::sync::Mutex<()>,
}

impl Jobs {
    pub(crate) fn new(source: EventSource, db: Database, shutdown: CancellationToken) -> Jobs {
        Jobs {
            inner: Arc::new(Inner {
                source,
                db,
                shutdown,
                jobs: Mutex::new(VecDeque::new()),
                turn: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Job `id`'s report, if this process knows the job.
    pub(crate) fn get(&self, id: Uuid) -> Option<JobView> {
        self.lock().iter().find(|j| j.job == id).cloned()
    }

    /// Every known job, newest first.
    pub(crate) fn list(&self) -> Vec<JobView> {
        self.lock().iter().rev().cloned().collect()
    }

    /// Queues job `id` and starts it in the background, unless it is known and not failed
    /// (a redelivered request): then it answers the job as it is. A failed job runs again.
    pub(crate) fn submit(&self, id: Uuid, reset: bool) -> JobView {
        let view = {
            let mut jobs = self.lock();
            match jobs.iter_mut().find(|j| j.job == id) {
                Some(known) if known.state != JobState::Failed => return known.clone(),
                Some(failed) => {
                    *failed = JobView::new(id, reset);
                    failed.clone()
                }
                None => {
                    let view = JobView::new(id, reset);
                    jobs.push_back(view.clone());
                    view
                }
            }
        };
        let jobs = self.clone();
        tokio::spawn(async move { jobs.run(id, reset).await });
        view
    }

    /// Waits for the running job to stop (it stops soon once the service's token is
    /// cancelled).
    pub(crate) async fn stopped(&self) {
        drop(self.inner.turn.lock().await);
    }

    async fn run(&self, id: Uuid, reset: bool) {
        let _turn = self.inner.turn.lock().await;
        self.update(id, |j| j.state = JobState::Running);
        let options = RebuildOptions {
            reset,
            cancel: self.inner.shutdown.clone(),
            ..RebuildOptions::default()
        };
        tracing::info!(job = %id, reset, "read model rebuild started");
        let result = rebuild_read_model(&self.inner.source, &self.inner.db, &options, |p| {
            self.update(id, |j| j.progress = *p);
        })
        .await;
        match result {
            Ok(p) => {
                tracing::info!(job = %id, read = p.read, applied = p.applied, skipped = p.skipped, "read model rebuild done");
                self.update(id, |j| {
                    j.progress = p;
                    j.state = JobState::Done;
                });
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "read model rebuild failed");
                self.update(id, |j| {
                    j.state = JobState::Failed;
                    j.error = Some(e.to_string());
                });
            }
        }
    }

    fn update(&self, id: Uuid, change: impl FnOnce(&mut JobView)) {
        let mut jobs = self.lock();
        if let Some(job) = jobs.iter_mut().find(|j| j.job == id) {
            change(job);
            job.describe();
        }
        // Forget the oldest finished jobs beyond KEEP.
        while jobs.len() > KEEP
            && jobs
                .front()
                .is_some_and(|j| matches!(j.state, JobState::Done | JobState::Failed))
        {
            jobs.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<JobView>> {
        self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}
