//! Exactly-once consume-transform-produce ([`crate::Router::exactly_once`]): the transactional
//! producer of one router instance and the transaction that commits a batch.
//!
//! The model (Kafka's KIP-98 with KIP-447): one transactional producer per router instance
//! (`transactional.id` from the router), shared by the instance's partition workers. A worker
//! runs its batch's handlers first, outside any transaction (their publishes are captured, see
//! `crate::process`), then takes the producer's turn and runs one transaction: begin, produce
//! the captured outputs and the dead letters, wait for every acknowledgement,
//! `send_offsets_to_transaction` with the consumer's group metadata (so the broker refuses the
//! offsets of a member that lost the partition in a rebalance), commit. Handlers and retry
//! backoffs therefore never hold the producer or count against `transaction.timeout.ms`.
//!
//! Errors: an abortable one (a produce that failed, a commit the broker refused) aborts the
//! transaction and the same writes are tried again in a new transaction after the retry
//! policy's backoff; nothing of the aborted one is visible to `read_committed` readers. A fatal
//! one (the producer fenced by a newer instance with the same `transactional.id`) stops the
//! router: its partitions go to the other members, which continue from the last committed
//! transaction.
//!
//! Threads: librdkafka's transactional calls block (each takes a timeout), so each runs on the
//! blocking pool; produce acknowledgements are futures resolved by the producer's own thread.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::RouterContext;
use super::{KafkaConfig, LogContext};
use crate::error::{Error, Result};
use crate::process::Writes;

/// Test hook for the crash test: when this variable is set, the process aborts after a
/// transaction's outputs and offsets were sent and before it is committed.
pub const CRASH_BEFORE_COMMIT_ENV: &str = "FERRY_TOOLKIT_TEST_CRASH_BEFORE_COMMIT";

/// How long a transactional call may block.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a transaction did not commit.
#[derive(Debug)]
pub(super) enum TxnError {
    /// The transaction was aborted (or never began); its writes may be tried again.
    Aborted(KafkaError),
    /// The producer cannot go on (fenced by a newer instance, or in librdkafka's fatal state).
    Fatal(KafkaError),
}

/// The transactional producer of one router instance.
pub(super) struct Transactions {
    producer: FutureProducer<LogContext>,
    /// A producer has one transaction at a time: the partition workers take turns.
    turn: tokio::sync::Mutex<()>,
    transactional_id: String,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions")
            .field("transactional_id", &self.transactional_id)
            .finish_non_exhaustive()
    }
}

impl Transactions {
    /// Creates the producer (idempotent, acks=all, plus `transactional.id`); it connects lazily.
    pub(super) fn new(config: &KafkaConfig, transactional_id: &str) -> Result<Transactions> {
        let mut client = config.producer_config();
        client.set("transactional.id", transactional_id);
        Ok(Transactions {
            producer: client.create_with_context(LogContext)?,
            turn: tokio::sync::Mutex::new(()),
            transactional_id: transactional_id.to_owned(),
        })
    }

    /// The transactional id.
    pub(super) fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// Registers the transactional id with the broker's coordinator: this fences an older
    /// instance with the same id and aborts its open transaction.
    pub(super) async fn init(&self) -> Result<()> {
        let producer = self.producer.clone();
        blocking(move || producer.init_transactions(CALL_TIMEOUT))
            .await
            .map_err(Error::Kafka)
    }

    /// Produces `writes` and commits them with `topic`/`partition`'s offset `next_offset` in one
    /// transaction. On [`TxnError::Aborted`] nothing of it is committed.
    pub(super) async fn commit(
        &self,
        consumer: &Arc<BaseConsumer<RouterContext>>,
        topic: &str,
        partition: i32,
        next_offset: i64,
        writes: &Writes,
    ) -> std::result::Result<(), TxnError> {
        let _turn = self.turn.lock().await;
        let producer = self.producer.clone();
        blocking(move || producer.begin_transaction())
            .await
            .map_err(|e| self.classify(e))?;
        match self
            .produce_and_commit(consumer, topic, partition, next_offset, writes)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.abort(e).await),
        }
    }

    async fn produce_and_commit(
        &self,
        consumer: &Arc<BaseConsumer<RouterContext>>,
        topic: &str,
        partition: i32,
        next_offset: i64,
        writes: &Writes,
    ) -> std::result::Result<(), KafkaError> {
        // Every record is handed to librdkafka before any acknowledgement is awaited, so they
        // go out in as few produce requests as possible, in order per partition.
        let sends = writes.messages.iter().map(|message| {
            self.producer
                .send(super::sender::record(message), Timeout::Never)
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e)?;
        }

        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(topic, partition, Offset::Offset(next_offset))?;
        let producer = self.producer.clone();
        let consumer = consumer.clone();
        blocking(move || {
            // None only before the consumer joined a group, and workers exist only after that.
            let metadata = consumer
                .group_metadata()
                .ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
            producer.send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT)
        })
        .await?;

        if crash_before_commit() {
            tracing::error!(
                transactional_id = %self.transactional_id,
                "{CRASH_BEFORE_COMMIT_ENV} is set: aborting the process before the commit"
            );
            std::process::abort();
        }

        // A retriable commit error (a timeout) leaves the outcome open: librdkafka's contract is
        // to call commit again, which either finishes it or reports what happened.
        let mut tries = 0;
        loop {
            let producer = self.producer.clone();
            match blocking(move || producer.commit_transaction(CALL_TIMEOUT)).await {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 3 => {
                    tracing::warn!(error = %e, "transaction commit did not finish; retrying it");
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Aborts the open transaction after `error`, and says whether its writes may be retried.
    async fn abort(&self, error: KafkaError) -> TxnError {
        if self.is_fatal(&error) {
            return TxnError::Fatal(error);
        }
        tracing::warn!(transactional_id = %self.transactional_id, %error, "transaction failed; aborting it");
        let producer = self.producer.clone();
        match blocking(move || producer.abort_transaction(CALL_TIMEOUT)).await {
            Ok(()) => TxnError::Aborted(error),
            Err(abort_error) => match self.classify(abort_error) {
                TxnError::Fatal(e) => TxnError::Fatal(e),
                // Not even abort went through: only a fatal error or a broker that is down does
                // that; the next begin fails until it is back, and is retried.
                TxnError::Aborted(_) => TxnError::Aborted(error),
            },
        }
    }

    /// Whether `error` leaves the producer usable. A delivery error says little on its own, so
    /// the producer's own fatal state is checked too.
    fn classify(&self, error: KafkaError) -> TxnError {
        if self.is_fatal(&error) {
            TxnError::Fatal(error)
        } else {
            TxnError::Aborted(error)
        }
    }

    fn is_fatal(&self, error: &KafkaError) -> bool {
        matches!(error, KafkaError::Transaction(e) if e.is_fatal())
            || self.producer.client().fatal_error().is_some()
    }
}

fn crash_before_commit() -> bool {
    static SET: OnceLock<bool> = OnceLock::new();
    *SET.get_or_init(|| std::env::var_os(CRASH_BEFORE_COMMIT_ENV).is_some())
}

/// Runs a blocking librdkafka call on the blocking pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> std::result::Result<T, KafkaError> + Send + 'static,
) -> std::result::Result<T, KafkaError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        // Only a panic in librdkafka's binding gets here; report it as a failed call.
        Err(e) => {
            tracing::error!(error = %e, "transactional call panicked");
            Err(KafkaError::Global(RDKafkaErrorCode::Fail))
        }
    }
}
