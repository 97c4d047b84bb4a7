//! The idempotent inbox: a handler's writes and the record "consumer group G processed message
//! X" commit in one transaction, so a message delivered again (after a crash, a rebalance, a
//! lost acknowledgement, a re-drive) is acknowledged without being applied again.
//!
//! The record is claimed first, by inserting `(group, message id)` into `ferry_inbox` at the
//! start of the transaction:
//! - already there (committed by an earlier delivery): the transaction is rolled back and the
//!   handler's work is skipped;
//! - being inserted by a concurrent delivery of the same message (two instances during a
//!   rebalance): the database makes the second insert wait for the first transaction, then
//!   skip if it committed or go on if it rolled back. On SQLite the transaction holds the write
//!   lock from its start, which serializes the two the same way.
//!
//! A handler that fails rolls its writes and the claim back together, so the next delivery
//! (the router's retry) runs it again.
//!
//! ```no_run
//! # use ferry_toolkit::{HandlerError, MessageContext, sql::{Database, inbox}};
//! # async fn handle(db: &Database, ctx: &MessageContext, user: String) -> Result<(), HandlerError> {
//! inbox::process_once(db, "users", ctx.message_id(), move |tx| {
//!     Box::pin(async move {
//!         sqlx::query("INSERT INTO users (name) VALUES ($1)").bind(user).execute(&mut *tx).await?;
//!         Ok(())
//!     })
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Pruning ([`prune`]) forgets records older than a horizon. It is safe as long as no message
//! older than the horizon can still arrive: choose a horizon longer than the broker's retention
//! and than the age of any dead letter you may re-drive.

use crate::sql::ExecuteWrite;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::AnyConnection;
use uuid::Uuid;

use super::{Database, now_millis};
use crate::error::{Error, Result};
use crate::handler::HandlerError;

/// Starts a transaction that records `(group, message_id)` as processed, or returns `None`
/// if that message was already processed by this group. Do the handler's writes in the
/// transaction and commit it; dropping it uncommitted rolls the record back too.
///
/// This is the borrowing-friendly form of [`process_once`]: the transaction is an ordinary
/// value, so the handler's code may borrow anything.
pub async fn claim(db: &Database, group: &str, message_id: Uuid) -> Result<Option<super::Tx>> {
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO ferry_inbox (consumer_group, message_id, processed_at) VALUES ($1, $2, $3)
         ON CONFLICT (consumer_group, message_id) DO NOTHING",
    )
    .bind(group)
    .bind(message_id.to_string())
    .bind(now_millis())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        tracing::debug!(group, %message_id, "already processed; skipped");
        return Ok(None);
    }
    Ok(Some(tx))
}

/// Runs `f` in a transaction that also records `(group, message_id)`, and commits both.
/// Returns `Ok(false)` without running `f` if this group already processed that message,
/// `Ok(true)` once `f` succeeded and the transaction committed.
///
/// `f` receives the transaction's connection and returns a boxed future borrowing it:
/// `move |tx| Box::pin(async move { ...; Ok(value) })`. The future may borrow only `tx`, so
/// move what it needs into the closure (clone it first); to borrow freely, use [`claim`].
///
/// If `f` fails, nothing is committed and its error comes back as [`Error::Handler`]; `?` in a
/// handler turns that back into the original [`HandlerError`], permanence included.
pub async fn process_once<F, T>(db: &Database, group: &str, message_id: Uuid, f: F) -> Result<bool>
where
    F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, HandlerError>> + Send,
    T: Send,
{
    let Some(mut tx) = claim(db, group, message_id).await? else {
        return Ok(false);
    };
    match f(&mut tx).await {
        Ok(_) => {
            tx.commit().await?;
            Ok(true)
        }
        Err(e) => {
            // Rolled back explicitly so the write lock (SQLite) is released before the retry
            // backoff, not whenever the transaction happens to be dropped.
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %rollback, "rollback after a handler error failed");
            }
            Err(Error::Handler(e))
        }
    }
}

/// Whether `group` has processed `message_id` (its record was committed and not pruned).
pub async fn is_processed(db: &Database, group: &str, message_id: Uuid) -> Result<bool> {
    let row =
        sqlx::query("SELECT 1 FROM ferry_inbox WHERE consumer_group = $1 AND message_id = $2")
            .bind(group)
            .bind(message_id.to_string())
            .fetch_optional(db.pool())
            .await?;
    Ok(row.is_some())
}

/// Deletes records processed more than `older_than` ago, in batches of 1,000 rows per
/// statement so handlers waiting to write are never held up for long. Returns how many were
/// deleted. See the module docs for choosing `older_than`.
pub async fn prune(db: &Database, older_than: Duration) -> Result<u64> {
    let horizon = now_millis() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM ferry_inbox WHERE (consumer_group, message_id) IN
                (SELECT consumer_group, message_id FROM ferry_inbox WHERE processed_at < $1 LIMIT 1000)",
        )
        .bind(horizon)
        .execute_write(db)
        .await?
        .rows_affected();
        deleted += n;
        if n < 1000 {
            if deleted > 0 {
                tracing::info!(deleted, older_than = ?older_than, "pruned inbox records");
            }
            return Ok(deleted);
        }
    }
}
