//! The command handler: load, decide, append (with outbox rows and snapshot) in one
//! transaction, and retry on a concurrency conflict.
//!
//! cqrs-es leaves a conflict to the caller (its #160); here a conflict means "someone else
//! changed the aggregate since we read it", and because [`Aggregate::decide`] is pure, the
//! handler can simply reload and decide again. The retry count is bounded and the waits grow
//! with jitter, so a hot aggregate under many writers converges instead of retrying in
//! lockstep. A retried command may be refused on the new state (a second `DeletePost` racing
//! the first finds the post deleted), which is the right answer.
//!
//! Within one process (one handler and its clones) commands on the same stream also wait for
//! each other, in arrival order, so a hot aggregate does not burn transactions on conflicts
//! its own process could have avoided; conflicts then only come from other processes.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Event};
use crate::error::Error;
use crate::outbox::Outbox;
use crate::store::{AppendError, EventStore, Loaded, Metadata, Recorded};

/// Why a command failed: the aggregate refused it, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// The aggregate's rules refused the command (HTTP 4xx with the error's message).
    #[error(transparent)]
    Rejected(E),
    /// The store failed; [`Error::Conflict`] here means the conflict retries ran out.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> CommandError<E> {
    /// The domain error, if the aggregate refused the command.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            CommandError::Rejected(e) => Some(e),
            CommandError::Store(_) => None,
        }
    }

    /// Whether the command failed on a concurrency conflict that outlasted the retries.
    pub fn is_conflict(&self) -> bool {
        matches!(self, CommandError::Store(e) if e.is_conflict())
    }
}

/// What a successful command did.
pub struct Committed<A: Aggregate> {
    /// The stream the command ran on.
    pub stream_id: String,
    /// The stream's version after the command.
    pub version: i64,
    /// The events stored, in order; empty if the command decided nothing needed doing.
    pub events: Vec<Recorded<A::Event>>,
    /// The aggregate's state after the events.
    pub state: A,
    /// How many times the command was decided: 1, plus one per conflict retried.
    pub attempts: u32,
}

impl<A> fmt::Debug for Committed<A>
where
    A: Aggregate + fmt::Debug,
    A::Event: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("stream_id", &self.stream_id)
            .field("version", &self.version)
            .field("events", &self.events)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// Runs commands against one aggregate type. Cheap to clone.
pub struct CommandHandler<A> {
    store: EventStore,
    locks: Arc<StreamLocks>,
    outbox_topic: Option<Arc<str>>,
    snapshot_every: u64,
    max_retries: u32,
    retry_initial: Duration,
    retry_max: Duration,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for CommandHandler<A> {
    fn clone(&self) -> Self {
        CommandHandler {
            store: self.store.clone(),
            locks: self.locks.clone(),
            outbox_topic: self.outbox_topic.clone(),
            snapshot_every: self.snapshot_every,
            max_retries: self.max_retries,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> fmt::Debug for CommandHandler<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandHandler")
            .field("aggregate", &A::TYPE)
            .field("outbox_topic", &self.outbox_topic)
            .field("snapshot_every", &self.snapshot_every)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> CommandHandler<A> {
    /// The default number of retries after a conflict.
    pub const DEFAULT_MAX_RETRIES: u32 = 10;

    /// A handler over `store` with no outbox, no snapshots, and
    /// [`Self::DEFAULT_MAX_RETRIES`] conflict retries.
    pub fn new(store: EventStore) -> CommandHandler<A> {
        CommandHandler {
            store,
            locks: Arc::default(),
            outbox_topic: None,
            snapshot_every: 0,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            retry_initial: Duration::from_millis(1),
            retry_max: Duration::from_millis(50),
            aggregate: PhantomData,
        }
    }

    /// Writes every event to the outbox for `topic` in the transaction that stores it, via
    /// [`Event::publish`].
    pub fn with_outbox(mut self, topic: impl Into<String>) -> CommandHandler<A> {
        self.outbox_topic = Some(Arc::from(topic.into()));
        self
    }

    /// Takes a snapshot whenever a command crosses a multiple of `events` in the stream's
    /// version; 0 (the default) never does.
    pub fn with_snapshots_every(mut self, events: u64) -> CommandHandler<A> {
        self.snapshot_every = events;
        self
    }

    /// Retries a command at most `retries` times after a conflict (0: report the first
    /// conflict).
    pub fn with_max_retries(mut self, retries: u32) -> CommandHandler<A> {
        self.max_retries = retries;
        self
    }

    /// The wait before the first retry, and the cap of the doubling waits after it. Each wait
    /// is drawn between half and all of its nominal value, so writers that collided do not
    /// collide again in lockstep.
    pub fn with_retry_backoff(mut self, initial: Duration, max: Duration) -> CommandHandler<A> {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self
    }

    /// The store the handler writes to.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Loads the aggregate's current state.
    pub async fn load(&self, stream_id: &str) -> Result<Loaded<A>, Error> {
        self.store.load(stream_id).await
    }

    /// Runs `command` on the stream with fresh metadata (a new correlation id).
    pub async fn execute(
        &self,
        stream_id: &str,
        command: &A::Command,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        self.execute_with(stream_id, command, Metadata::default())
            .await
    }

    /// Runs `command` on the stream: load, decide, store the events (and their outbox rows
    /// and a due snapshot) in one transaction; on a conflict, reload and decide again, up to
    /// the retry limit.
    pub async fn execute_with(
        &self,
        stream_id: &str,
        command: &A::Command,
        mut metadata: Metadata,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        metadata.correlation_id.get_or_insert_with(Uuid::now_v7);
        let _turn = self.locks.lock(stream_id).await;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let loaded = self.store.load::<A>(stream_id).await?;
            let events = loaded
                .state
                .decide(command)
                .map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(Committed {
                    stream_id: stream_id.to_owned(),
                    version: loaded.version,
                    events: Vec::new(),
                    state: loaded.state,
                    attempts,
                });
            }
            match self.commit(stream_id, loaded, events, &metadata).await {
                Ok((version, events, state)) => {
                    return Ok(Committed {
                        stream_id: stream_id.to_owned(),
                        version,
                        events,
                        state,
                        attempts,
                    });
                }
                Err(e) if e.is_conflict() && attempts <= self.max_retries => {
                    // The winner may sit in the open group commit batch, not yet readable by
                    // the reload: wait for that batch first.
                    self.store.database().sync().await.map_err(Error::from)?;
                    let wait = self.backoff(attempts);
                    tracing::debug!(stream_id, attempts, ?wait, "conflict; retrying the command");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let nominal = self
            .retry_initial
            .saturating_mul(1 << exponent)
            .min(self.retry_max);
        nominal.mul_f64(0.5 + 0.5 * rand::rng().random::<f64>())
    }

    async fn commit(
        &self,
        stream_id: &str,
        loaded: Loaded<A>,
        events: Vec<A::Event>,
        metadata: &Metadata,
    ) -> Result<(i64, Vec<Recorded<A::Event>>, A), Error> {
        let Loaded {
            mut state, version, ..
        } = loaded;
        for event in &events {
            state.evolve(event);
        }
        let new_version = version + i64::try_from(events.len()).unwrap_or(i64::MAX);
        let snapshot_due = self.snapshot_every > 0
            && new_version as u64 / self.snapshot_every > version as u64 / self.snapshot_every;

        let mut tx = self.store.database().begin().await?;
        let written: Result<_, AppendError> = async {
            let recorded = self
                .store
                .append_in(&mut tx, stream_id, A::TYPE, version, events, metadata)
                .await?;
            if let Some(topic) = &self.outbox_topic {
                for r in &recorded {
                    let mut outbox = Outbox {
                        conn: &mut tx,
                        topic,
                        event_id: r.event_id,
                        version: r.version,
                        recorded_at: r.recorded_at,
                        metadata,
                        enqueued: 0,
                    };
                    r.event.publish(&mut outbox).await?;
                }
            }
            if snapshot_due {
                EventStore::save_snapshot_in(&mut tx, stream_id, new_version, &state).await?;
            }
            Ok(recorded)
        }
        .await;
        match written {
            Ok(recorded) => {
                tx.commit().await?;
                Ok((new_version, recorded, state))
            }
            Err(e) => {
                let seen = self.store.conflict_version_in(&mut tx, stream_id, &e).await;
                // A failed rollback only means the connection is gone, which rolls back too;
                // the original error is the one worth reporting.
                let _ = tx.rollback().await;
                Err(self.store.append_error(stream_id, version, e, seen).await)
            }
        }
    }
}

/// One async mutex per stream that has commands running in this process; an entry lives only
/// while someone holds or awaits it.
#[derive(Default)]
struct StreamLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

struct StreamTurn<'a> {
    locks: &'a StreamLocks,
    stream_id: &'a str,
    mutex: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl StreamLocks {
    async fn lock<'a>(&'a self, stream_id: &'a str) -> StreamTurn<'a> {
        let mutex = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(stream_id.to_owned())
            .or_default()
            .clone();
        let guard = mutex.clone().lock_owned().await;
        StreamTurn {
            locks: self,
            stream_id,
            mutex,
            guard: Some(guard),
        }
    }
}

impl Drop for StreamTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.0.lock().unwrap_or_else(|p| p.into_inner());
        // References are only taken under the map's lock, so this count is exact: the map's
        // and ours mean nobody else holds or awaits the stream.
        if Arc::strong_count(&self.mutex) == 2 {
            map.remove(self.stream_id);
        }
    }
}
