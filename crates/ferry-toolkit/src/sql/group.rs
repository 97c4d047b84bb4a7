//! Group commit on SQLite: concurrent command transactions share one transaction, one commit
//! and one fsync.
//!
//! SQLite has one writer at a time, and with `synchronous=FULL` every commit is an fsync, so
//! one transaction per command caps a service at one command per fsync. Here the single writer
//! connection keeps a *shared* transaction open while commands take turns on it:
//!
//! - A command's turn ([`Turn`], behind [`super::Tx`]) holds the writer (a fair, first come
//!   first served async mutex) and runs inside its own `SAVEPOINT`. A failed or abandoned
//!   command rolls back to its savepoint, so only its own writes are undone and only it sees
//!   the error.
//! - A command that commits releases its savepoint, joins the open batch and gives the writer
//!   up. The batch is committed (`COMMIT`, the one fsync) as soon as no other command waits for
//!   the writer, or when it holds [`MAX_BATCH`] commands; the commit runs on a task of its own
//!   that holds the writer, so a caller that goes away cannot leave it half done.
//! - [`super::Tx::commit`] returns only once its batch is durable, with the batch's result: if
//!   the commit fails, every command in the batch gets an error, none a success.
//!
//! A command that sees writes of an earlier command of its batch is answered with it or after
//! it, never before, so no client can observe a write that is later lost.
//!
//! Cancellation: a turn dropped half-way (a handler's future dropped, `?` before commit) leaves
//! its savepoint flagged open; a flusher task is queued on the writer, and whoever takes the
//! writer next rolls that savepoint back first and then commits the batch if it is due.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

/// The most commands one batch holds before it is committed even though others wait. Bounds
/// the time the first command of a batch waits for the commit (each command's turn is tens of
/// microseconds on SQLite, so 64 keep it to a few milliseconds beyond the fsync).
pub(crate) const MAX_BATCH: usize = 64;

/// How long a batch of only lazy members ([`Turn::commit_lazily`]) waits for a command to
/// commit it before it is committed on its own.
const LAZY_DELAY: Duration = Duration::from_millis(2);

/// What a batch member learns: durable, or why not.
type Outcome = Result<(), Arc<str>>;

/// The single writer connection and the batch open on it.
pub(crate) struct GroupWriter {
    /// A pool of one connection; the writer takes it at first use and keeps it.
    pool: AnyPool,
    state: Arc<Mutex<State>>,
    /// Commands waiting for their turn: while any do, a finished turn hands the open batch on
    /// instead of committing it.
    waiting: AtomicUsize,
}

#[derive(Default)]
struct State {
    conn: Option<PoolConnection<Any>>,
    /// A `BEGIN IMMEDIATE` is open (the batch).
    in_transaction: bool,
    /// A command's savepoint may be open: set before `SAVEPOINT`, cleared once it is released
    /// or rolled back, so a turn abandoned at any point is rolled back by the next holder.
    savepoint_open: bool,
    /// Commands whose savepoints were released into the open batch, waiting for its commit.
    members: Vec<oneshot::Sender<Outcome>>,
    /// How many of `members` want their batch committed as soon as the writer is free (the
    /// others, [`Turn::commit_lazily`], ride along with the next commit).
    eager: usize,
    /// A flusher task is queued on the writer already.
    flush_queued: bool,
    closed: bool,
}

impl GroupWriter {
    pub(crate) fn new(pool: AnyPool) -> Arc<GroupWriter> {
        Arc::new(GroupWriter {
            pool,
            state: Arc::default(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Waits for the writer, then opens the batch if none is open and a savepoint for this
    /// command.
    pub(crate) async fn begin(self: &Arc<Self>) -> sqlx::Result<Turn> {
        let guard = {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(&self.waiting);
            self.state.clone().lock_owned().await
        };
        let mut turn = Turn {
            writer: self.clone(),
            state: Some(guard),
        };
        let state = turn.state_mut();
        state.cleanup().await;
        if state.closed {
            return Err(sqlx::Error::PoolClosed);
        }
        if state.conn.is_none() {
            state.conn = Some(self.pool.acquire().await?);
        }
        if !state.in_transaction {
            state.in_transaction = true;
            if let Err(e) = state.conn().execute("BEGIN IMMEDIATE").await {
                state.in_transaction = false;
                return Err(e);
            }
        }
        state.savepoint_open = true;
        if let Err(e) = state.conn().execute("SAVEPOINT ferry_command").await {
            // Without a savepoint this command cannot be undone alone: end the batch.
            state.abort(&format!("cannot open a savepoint: {e}")).await;
            return Err(e);
        }
        Ok(turn)
    }

    /// Commits the open batch, rolls back an abandoned savepoint first, and gives the
    /// connection back; later [`GroupWriter::begin`]s fail. For [`super::Database::close`].
    pub(crate) async fn close(&self) {
        let mut state = self.state.lock().await;
        state.cleanup().await;
        state.flush().await;
        state.closed = true;
        if let Some(conn) = state.conn.take() {
            let _ = conn.close().await;
        }
        drop(state);
        self.pool.close().await;
    }
}

/// Counts a task as waiting for the writer until it has it (or gave up waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One command's turn on the writer: its savepoint inside the shared transaction.
pub(crate) struct Turn {
    writer: Arc<GroupWriter>,
    /// Present until the turn ends; a turn dropped while it is present was abandoned.
    state: Option<OwnedMutexGuard<State>>,
}

impl Turn {
    fn state_mut(&mut self) -> &mut State {
        self.state.as_mut().expect("a live turn holds the writer")
    }

    pub(crate) fn connection(&self) -> &AnyConnection {
        self.state
            .as_ref()
            .and_then(|s| s.conn.as_deref())
            .expect("a live turn holds the writer connection")
    }

    pub(crate) fn connection_mut(&mut self) -> &mut AnyConnection {
        self.state_mut().conn()
    }

    /// Releases the savepoint into the batch and waits until the batch is durable.
    pub(crate) async fn commit(self) -> sqlx::Result<()> {
        self.commit_as(true).await
    }

    /// Like [`Turn::commit`], but this write alone does not make the batch commit: it waits
    /// (at most [`LAZY_DELAY`]) for a command's commit to carry it. For bookkeeping whose
    /// durability nobody is waiting on at once (the relay marking rows sent), so it does not
    /// cost an fsync of its own between two commands.
    pub(crate) async fn commit_lazily(self) -> sqlx::Result<()> {
        self.commit_as(false).await
    }

    async fn commit_as(mut self, eager: bool) -> sqlx::Result<()> {
        let state = self.state_mut();
        if let Err(e) = state.conn().execute("RELEASE ferry_command").await {
            state.cleanup().await;
            self.finish();
            return Err(e);
        }
        state.savepoint_open = false;
        let (done, durable) = oneshot::channel();
        state.members.push(done);
        state.eager += usize::from(eager);
        self.finish();
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(batch_error(&why)),
            Err(_) => Err(batch_error("the batch was abandoned before its commit")),
        }
    }

    /// Rolls this command's writes back; the rest of the batch goes on.
    pub(crate) async fn rollback(mut self) -> sqlx::Result<()> {
        let state = self.state_mut();
        let result = match state.rollback_savepoint().await {
            Ok(()) => Ok(()),
            Err(e) => {
                state
                    .abort(&format!("cannot roll a command back: {e}"))
                    .await;
                Err(e)
            }
        };
        self.finish();
        result
    }

    /// Gives the writer up: commits the batch on a task of its own if no one waits or it is
    /// full, else leaves it open for the next turn (with a flusher queued behind the waiters,
    /// in case they all give up).
    fn finish(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        if !state.in_transaction && !state.savepoint_open {
            return;
        }
        let free = self.writer.waiting.load(Ordering::SeqCst) == 0;
        let due = state.members.len() >= MAX_BATCH
            || (free && (state.eager > 0 || state.members.is_empty()));
        if due && !state.savepoint_open {
            tokio::spawn(async move {
                state.flush().await;
            });
        } else if free && !state.savepoint_open {
            // Only lazy members: the next command's commit carries them, or the delay ends.
            queue_flusher(&self.writer, &mut state, LAZY_DELAY);
        } else {
            queue_flusher(&self.writer, &mut state, Duration::ZERO);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Abandoned mid-turn: the savepoint (flagged open) is rolled back by the next holder.
        if let Some(mut state) = self.state.take()
            && (state.savepoint_open || state.in_transaction)
        {
            queue_flusher(&self.writer, &mut state, Duration::ZERO);
        }
    }
}

/// Queues a task that takes the writer after everyone already waiting, cleans up and commits
/// what is open; without it, a batch whose last turn was abandoned would never commit.
fn queue_flusher(writer: &Arc<GroupWriter>, state: &mut State, after: Duration) {
    if state.flush_queued {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime (shutting down): the next turn cleans up and commits.
        return;
    };
    state.flush_queued = true;
    let writer = writer.clone();
    runtime.spawn(async move {
        if !after.is_zero() {
            tokio::time::sleep(after).await;
        }
        let mut state = writer.state.clone().lock_owned().await;
        state.flush_queued = false;
        state.cleanup().await;
        state.flush().await;
    });
}

impl State {
    fn conn(&mut self) -> &mut AnyConnection {
        self.conn
            .as_deref_mut()
            .expect("the writer connection is open during a turn")
    }

    async fn rollback_savepoint(&mut self) -> sqlx::Result<()> {
        if !self.savepoint_open {
            return Ok(());
        }
        self.conn().execute("ROLLBACK TO ferry_command").await?;
        self.conn().execute("RELEASE ferry_command").await?;
        self.savepoint_open = false;
        Ok(())
    }

    /// Rolls back a savepoint an abandoned turn left open; if that fails the batch is aborted.
    async fn cleanup(&mut self) {
        if let Err(e) = self.rollback_savepoint().await {
            self.abort(&format!("cannot roll an abandoned command back: {e}"))
                .await;
        }
    }

    /// Commits the batch and tells its members.
    async fn flush(&mut self) {
        if !self.in_transaction {
            return;
        }
        match self.conn().execute("COMMIT").await {
            Ok(_) => {
                self.in_transaction = false;
                crate::ops::metrics::group_commit(self.members.len());
                self.eager = 0;
                for member in self.members.drain(..) {
                    let _ = member.send(Ok(()));
                }
            }
            Err(e) => self.abort(&format!("commit failed: {e}")).await,
        }
    }

    /// The shared transaction is in a state no command can vouch for: roll all of it back,
    /// and every waiting member gets `why`. If even that fails, the connection is closed
    /// (which rolls back) and the next turn opens a new one.
    async fn abort(&mut self, why: &str) {
        tracing::error!(
            error = why,
            members = self.members.len(),
            "group commit batch rolled back"
        );
        self.savepoint_open = false;
        if self.in_transaction {
            self.in_transaction = false;
            if let Some(conn) = self.conn.as_deref_mut()
                && conn.execute("ROLLBACK").await.is_err()
                && let Some(conn) = self.conn.take()
            {
                let _ = conn.close().await;
            }
        }
        self.eager = 0;
        let why: Arc<str> = why.into();
        for member in self.members.drain(..) {
            let _ = member.send(Err(why.clone()));
        }
    }
}

/// What a command gets when its batch did not commit (shared by every member, so not the
/// original `sqlx::Error`, which cannot be cloned).
fn batch_error(why: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(format!(
        "the group commit of this command's batch failed: {why}"
    )))
}
