//! Projections: read models kept up to date from the store's global log, each with a
//! checkpoint, and replay that rebuilds one from scratch.
//!
//! A [`Projector`] reads a batch of events after its checkpoint, then in one transaction of the
//! read model's database moves the checkpoint and applies the batch. Either both commit or
//! neither does, so a crash at any point never applies an event twice or skips one: after a
//! restart the projector continues from the last committed checkpoint. Moving the checkpoint
//! is a compare-and-set (`WHERE position = <where we started>`), so two projectors running the
//! same projection (two replicas, or a replay racing the live one) cannot both apply a batch:
//! the loser's transaction touches no checkpoint row and is rolled back unapplied.
//!
//! The checkpoint moves first in that transaction: on PostgreSQL a racing projector then waits
//! on the checkpoint row until the winner commits, finds it moved and backs off, before it has
//! written anything to the read model.

use std::future::Future;
use std::time::Duration;

use ferry_toolkit::sql::Database;
use sqlx::AnyConnection;

use crate::aggregate::Event;
use crate::error::Result;
use ferry_toolkit::now_millis;

use crate::store::{EventStore, Recorded, schema};

/// A read model fed by the events of one aggregate type.
pub trait Projection: Send + Sync {
    /// The events it reads (the aggregate's event type).
    type Event: Event;

    /// The checkpoint's name: stable, unique per read model.
    fn name(&self) -> &str;

    /// The aggregate type whose events it reads ([`crate::Aggregate::TYPE`]).
    fn aggregate_type(&self) -> &str;

    /// Applies one event to the read model, inside the transaction that also moves the
    /// checkpoint. Write only through `conn`: anything else would not roll back with it.
    fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &Recorded<Self::Event>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Applies a batch of events in order, inside the transaction that also moves the
    /// checkpoint past the last one. The default calls [`Projection::apply`] for each; override
    /// it to write a batch with fewer statements (say, one upsert per row of the read model
    /// instead of one per event), which is what makes a replay of millions fast.
    fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[Recorded<Self::Event>],
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            for event in events {
                self.apply(conn, event).await?;
            }
            Ok(())
        }
    }

    /// Empties the read model before a replay, in the transaction that resets the checkpoint.
    fn reset(&self, conn: &mut AnyConnection) -> impl Future<Output = Result<()>> + Send;
}

/// Where a catch-up or replay is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Events applied so far in this run.
    pub applied: u64,
    /// Events to apply in this run, as counted at its start (plus any that arrived since and
    /// were already applied).
    pub total: u64,
    /// The checkpoint: the global position of the last applied event.
    pub position: i64,
}

/// Runs one [`Projection`] from an [`EventStore`] into a read-model database (which may be the
/// store's own). The read-model database needs [`crate::PROJECTION_MIGRATIONS`].
#[derive(Debug)]
pub struct Projector<P> {
    store: EventStore,
    target: Database,
    projection: P,
    batch_size: usize,
}

impl<P: Projection> Projector<P> {
    /// A projector applying batches of 500 events.
    pub fn new(store: EventStore, target: Database, projection: P) -> Projector<P> {
        Projector {
            store,
            target,
            projection,
            batch_size: 500,
        }
    }

    /// Applies at most `events` per transaction (at least 1).
    pub fn with_batch_size(mut self, events: usize) -> Projector<P> {
        self.batch_size = events.max(1);
        self
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The checkpoint: the global position of the last event applied, 0 for none.
    pub async fn checkpoint(&self) -> Result<i64> {
        let name = self.projection.name();
        let found: Option<i64> = sqlx::query_scalar(schema::CHECKPOINT)
            .bind(name)
            .fetch_optional(self.target.pool())
            .await?;
        if let Some(position) = found {
            return Ok(position);
        }
        sqlx::query(schema::CREATE_CHECKPOINT)
            .bind(name)
            .bind(now_millis())
            .execute(self.target.pool())
            .await?;
        Ok(0)
    }

    /// Applies the events stored since the checkpoint, batch by batch, until there are none.
    /// Returns how many it applied.
    pub async fn catch_up(&self) -> Result<u64> {
        self.catch_up_with(|_| {}).await
    }

    /// [`Self::catch_up`], calling `progress` after every batch.
    pub async fn catch_up_with(&self, mut progress: impl FnMut(Progress) + Send) -> Result<u64> {
        let start = self.checkpoint().await?;
        let total = self
            .store
            .count_after(self.projection.aggregate_type(), start)
            .await?;
        let mut applied = 0u64;
        loop {
            match self.run_batch().await? {
                Batch::Applied { events: 0, .. } => break,
                Batch::Applied { events, position } => {
                    applied += events as u64;
                    progress(Progress {
                        applied,
                        total: total.max(applied),
                        position,
                    });
                }
                // Another projector moved the checkpoint; read again from where it is now.
                Batch::Raced => {}
            }
        }
        Ok(applied)
    }

    /// Rebuilds the read model: empties it and resets the checkpoint (one transaction), then
    /// applies every event of the store, calling `progress` after every batch. Safe to run
    /// twice, and safe while a live projector runs (see the module docs). A crash midway
    /// leaves a consistent read model at some checkpoint; the next catch-up finishes it.
    pub async fn replay(&self, progress: impl FnMut(Progress) + Send) -> Result<u64> {
        self.checkpoint().await?;
        let mut tx = self.target.begin().await?;
        let reset = async {
            sqlx::query(schema::RESET_CHECKPOINT)
                .bind(self.projection.name())
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
            self.projection.reset(&mut tx).await
        }
        .await;
        match reset {
            Ok(()) => tx.commit().await?,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        self.catch_up_with(progress).await
    }

    /// Keeps the read model up to date: catches up, then polls every `poll` for new events,
    /// until `shutdown` completes. A failed batch (say, the database is briefly unreachable)
    /// is logged and retried at the next poll; nothing was applied from it.
    pub async fn run(&self, poll: Duration, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.catch_up().await {
                tracing::warn!(projection = self.projection.name(), error = %e, "projection batch failed; retrying");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn run_batch(&self) -> Result<Batch> {
        let from = self.checkpoint().await?;
        let events = self
            .store
            .read_all::<P::Event>(self.projection.aggregate_type(), from, self.batch_size)
            .await?;
        let Some(last) = events.last() else {
            return Ok(Batch::Applied {
                events: 0,
                position: from,
            });
        };
        let to = last.position;
        let mut tx = self.target.begin().await?;
        let applied = async {
            let moved = sqlx::query(schema::ADVANCE_CHECKPOINT)
                .bind(self.projection.name())
                .bind(to)
                .bind(from)
                .bind(now_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if moved == 0 {
                return Ok(false);
            }
            self.projection.apply_batch(&mut tx, &events).await?;
            Ok(true)
        }
        .await;
        match applied {
            Ok(true) => {
                tx.commit().await?;
                Ok(Batch::Applied {
                    events: events.len(),
                    position: to,
                })
            }
            Ok(false) => {
                let _ = tx.rollback().await;
                Ok(Batch::Raced)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

enum Batch {
    Applied { events: usize, position: i64 },
    Raced,
}
