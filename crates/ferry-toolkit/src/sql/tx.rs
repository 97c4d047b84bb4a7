//! [`Tx`]: a command's transaction, whichever way the backend commits it.

use std::ops::{Deref, DerefMut};

use sqlx::AnyConnection;

use super::group::Turn;

/// A command's transaction from [`super::Database::begin`]. It dereferences to the connection,
/// so queries run on `&mut *tx` and helpers take `&mut AnyConnection`. Dropping it without
/// [`Tx::commit`] rolls its writes back.
pub struct Tx(Inner);

enum Inner {
    /// SQLite: a savepoint in the writer's shared transaction (group commit).
    Group(Turn),
    /// PostgreSQL: a transaction of its own on a pooled connection.
    Plain(sqlx::Transaction<'static, sqlx::Any>),
}

impl Tx {
    pub(super) fn group(turn: Turn) -> Tx {
        Tx(Inner::Group(turn))
    }

    pub(super) fn plain(tx: sqlx::Transaction<'static, sqlx::Any>) -> Tx {
        Tx(Inner::Plain(tx))
    }

    /// Commits, and returns once the writes are durable. On SQLite that is when the batch this
    /// command joined is committed; if that commit fails, every command of the batch gets an
    /// error, so an `Ok` here is always a durable write.
    pub async fn commit(self) -> sqlx::Result<()> {
        match self.0 {
            Inner::Group(turn) => turn.commit().await,
            Inner::Plain(tx) => tx.commit().await,
        }
    }

    /// Rolls this transaction's writes back (on SQLite only this command's savepoint; the
    /// batch goes on).
    pub async fn rollback(self) -> sqlx::Result<()> {
        match self.0 {
            Inner::Group(turn) => turn.rollback().await,
            Inner::Plain(tx) => tx.rollback().await,
        }
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            Inner::Group(turn) => turn.connection(),
            Inner::Plain(tx) => tx,
        }
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            Inner::Group(turn) => turn.connection_mut(),
            Inner::Plain(tx) => tx,
        }
    }
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Inner::Group(_) => "Tx(group commit)",
            Inner::Plain(_) => "Tx",
        })
    }
}
