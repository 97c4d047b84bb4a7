//! One assigned partition's worker: a tokio task that reads the partition's own librdkafka
//! queue, processes one message at a time, and commits each message's offset once it is done
//! with (handled, skipped, or dead-lettered).
//!
//! Because every partition has its own queue and its own task, a message waiting in retry
//! backoff holds back only its partition; librdkafka keeps fetching for the others. The worker
//! learns that its queue has messages from librdkafka's non-empty callback (a [`Notify`]), so
//! it never blocks a runtime thread in librdkafka.
//!
//! Batches: the worker takes every message already queued (up to [`MAX_BATCH`] messages and
//! [`MAX_BATCH_BYTES`] of payload) and processes them in order. Dead letters are queued, not
//! sent one by one (see `crate::process`): at the end of the batch they go out together, and
//! the batch is committed once every letter is acknowledged. While no letter waits, each
//! handled message is committed at once, as it would be without batches.
//!
//! Exactly-once mode: the batch is processed the same way (handlers' publishes captured, dead
//! letters queued), then its outputs, letters and next offset commit in one transaction
//! (`eos.rs`). An aborted transaction is tried again with the same writes after the retry
//! policy's backoff; handlers are not run again. A fatal producer error stops the router.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::consumer::{RouterContext, Shared};
use super::eos::{Transactions, TxnError};
use crate::envelope::Headers;
use crate::process::{LetterBatch, Writes};
use crate::transport::IncomingMessage;

/// The most messages taken in one batch. A flood of 20,000 undecodable records is 20 batches:
/// 20 produce round trips instead of 20,000.
pub(crate) const MAX_BATCH: usize = 1000;
/// The most payload bytes taken in one batch (each dead letter holds a copy of its payload
/// until it is acknowledged). A single larger message is still taken, alone.
pub(crate) const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Runs until `stop` is cancelled (after finishing the message in hand) or the processing of
/// a message is abandoned. Returns the next offset it committed, if any, for the final
/// synchronous commit.
pub(super) async fn run(
    shared: Arc<Shared>,
    consumer: Arc<BaseConsumer<RouterContext>>,
    mut queue: PartitionQueue<RouterContext>,
    topic: String,
    partition: i32,
    stop: CancellationToken,
) -> Option<i64> {
    let ready = Arc::new(Notify::new());
    let notify = ready.clone();
    // Called on a librdkafka thread when the queue becomes non-empty. `notify_one` keeps a
    // permit if the worker is not waiting yet, so no wake-up is lost.
    queue.set_nonempty_callback(move || notify.notify_one());
    if let Some(transactions) = shared.transactions.clone() {
        return run_transactional(
            shared,
            consumer,
            queue,
            ready,
            transactions,
            topic,
            partition,
            stop,
        )
        .await;
    }

    // After a rebalance or a broker restart, the group's committed offset can lag behind what
    // this process already handled (a commit lost with the connection); do not handle those
    // messages a second time.
    let key = (topic.clone(), partition);
    let already_done = shared.done_offset(&key);
    let mut committed = None;
    let mut letters = LetterBatch::default();
    tracing::debug!(%topic, partition, ?already_done, "partition worker started");
    let commit_to = |next: i64, committed: &mut Option<i64>| {
        if committed.is_none_or(|c| next > c) {
            commit(&consumer, &topic, partition, next);
            *committed = Some(next);
            shared.set_done_offset(key.clone(), next);
        }
    };
    loop {
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = next(&queue, &ready) => message,
        };
        let batch = drain(&queue, first);
        // The next offset to commit once the letters in `letters` are acknowledged.
        let mut done_to = None;
        let mut abandoned = false;
        for message in batch {
            if stop.is_cancelled() {
                // Finish with what is processed; the rest is delivered again.
                break;
            }
            if let Some(done) = already_done
                && message.offset < done
            {
                tracing::debug!(%topic, partition, offset = message.offset, "already handled by this process, skipped");
                done_to = Some(done);
                if letters.is_empty() {
                    commit_to(done, &mut committed);
                }
                continue;
            }
            let outcome = shared
                .processor
                .process_batched(&message, &mut letters, &stop)
                .await;
            if !outcome.commits() {
                abandoned = true;
                break;
            }
            done_to = Some(message.offset + 1);
            if letters.is_empty() {
                commit_to(message.offset + 1, &mut committed);
            }
        }
        if !letters.is_empty() {
            // A message abandoned during a flush (the router stopping) already had its one
            // attempt at sending; otherwise send the batch's letters now.
            if !abandoned && shared.processor.flush(&mut letters, &stop).await.is_err() {
                abandoned = true;
            }
            // Commit below the first letter not acknowledged, if any.
            if let Some(unsent) = letters.first_offset() {
                done_to = done_to.map(|d| d.min(unsent));
            }
        }
        if let Some(next) = done_to {
            commit_to(next, &mut committed);
        }
        if abandoned || stop.is_cancelled() {
            break;
        }
    }
    tracing::debug!(%topic, partition, ?committed, "partition worker stopped");
    committed
}

/// The exactly-once worker: one transaction per batch. Returns `None`: its offsets are committed
/// by its transactions, never by the final commit.
#[allow(clippy::too_many_arguments)]
async fn run_transactional(
    shared: Arc<Shared>,
    consumer: Arc<BaseConsumer<RouterContext>>,
    queue: PartitionQueue<RouterContext>,
    ready: Arc<Notify>,
    transactions: Arc<Transactions>,
    topic: String,
    partition: i32,
    stop: CancellationToken,
) -> Option<i64> {
    tracing::debug!(%topic, partition, "exactly-once partition worker started");
    loop {
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = next(&queue, &ready) => message,
        };
        let batch = drain(&queue, first);
        let mut letters = LetterBatch::default();
        let mut done_to = None;
        let mut abandoned = false;
        for message in batch {
            if stop.is_cancelled() {
                // Commit what is processed; the rest is delivered again.
                break;
            }
            let outcome = shared
                .processor
                .process_batched(&message, &mut letters, &stop)
                .await;
            if !outcome.commits() {
                abandoned = true;
                break;
            }
            done_to = Some(message.offset + 1);
        }
        if let Some(next) = done_to {
            let writes = letters.take_writes();
            let committed = commit_transaction(
                &shared,
                &consumer,
                &transactions,
                (&topic, partition, next),
                &writes,
                &stop,
            )
            .await;
            if !committed {
                break;
            }
        }
        if abandoned || stop.is_cancelled() {
            break;
        }
    }
    tracing::debug!(%topic, partition, "exactly-once partition worker stopped");
    None
}

/// Commits one batch's transaction, trying an aborted one again until it commits or the worker
/// stops. `false`: not committed (the batch is delivered again to whoever owns the partition
/// next), and the worker must stop.
async fn commit_transaction(
    shared: &Shared,
    consumer: &Arc<BaseConsumer<RouterContext>>,
    transactions: &Transactions,
    (topic, partition, next): (&str, i32, i64),
    writes: &Writes,
    stop: &CancellationToken,
) -> bool {
    let retry = shared.processor.retry();
    let mut attempt = 1;
    loop {
        match transactions
            .commit(consumer, topic, partition, next, writes)
            .await
        {
            Ok(()) => {
                writes.committed(shared.processor.by());
                tracing::debug!(
                    topic,
                    partition,
                    next,
                    records = writes.messages.len(),
                    "transaction committed"
                );
                return true;
            }
            Err(TxnError::Fatal(e)) => {
                shared.fail(&format!(
                    "transactional producer {:?} cannot go on (fenced by a newer instance?): {e}",
                    transactions.transactional_id()
                ));
                return false;
            }
            Err(TxnError::Aborted(e)) => {
                if stop.is_cancelled() {
                    tracing::warn!(topic, partition, error = %e, "transaction aborted while stopping; the batch stays uncommitted");
                    return false;
                }
                // The policy's attempt limit is for handlers; a transaction is retried until
                // it commits, as dead letters are sent until they are acknowledged.
                let delay = retry.delay(attempt, &mut rand::rng());
                tracing::warn!(topic, partition, error = %e, retry_in = ?delay, "transaction aborted; retrying it");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return false,
                }
                attempt += 1;
            }
        }
    }
}

/// `first` and every message already in the queue after it, within the batch limits.
fn drain(queue: &PartitionQueue<RouterContext>, first: IncomingMessage) -> Vec<IncomingMessage> {
    let mut bytes = first.payload.len();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        // A zero timeout: only what is already queued.
        match queue.poll(Duration::ZERO) {
            Some(Ok(message)) => {
                let message = incoming(&message);
                bytes += message.payload.len();
                batch.push(message);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "partition queue error"),
            None => break,
        }
    }
    batch
}

/// The next message of the queue, waiting for librdkafka's wake-up when it is empty.
async fn next(queue: &PartitionQueue<RouterContext>, ready: &Notify) -> IncomingMessage {
    loop {
        // A zero timeout: librdkafka only pops what is already queued, so this never blocks.
        match queue.poll(Duration::ZERO) {
            Some(Ok(message)) => return incoming(&message),
            Some(Err(e)) => tracing::warn!(error = %e, "partition queue error"),
            None => ready.notified().await,
        }
    }
}

/// Commits `next_offset` without waiting; the final commit on revoke or shutdown is
/// synchronous, so a lost asynchronous one costs at most a redelivery.
fn commit(consumer: &BaseConsumer<RouterContext>, topic: &str, partition: i32, next_offset: i64) {
    let mut tpl = TopicPartitionList::new();
    if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset)) {
        tracing::error!(error = %e, "cannot build commit");
        return;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, topic, partition, next_offset, "commit not sent");
    }
}

/// Copies a librdkafka message into the transport-neutral shape.
pub(super) fn incoming(message: &BorrowedMessage<'_>) -> IncomingMessage {
    let headers: Headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    IncomingMessage {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        headers,
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}
