//! A tap: an observer that reads every topic matching a pattern, for views and audits (the
//! dashboard's live event stream and trace store). Unlike a [`crate::Router`] it dispatches
//! nothing: it hands batches of raw messages to one sink, in order per partition, and commits
//! a batch's offsets after the sink returned, so a restarted tap resumes where it stopped and
//! re-reads at most the batch in flight.
//!
//! New topics that match are picked up within a second (librdkafka re-reads metadata and the
//! group rebalances).

use std::collections::HashMap;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::partition::incoming;
use super::{KafkaConfig, LogContext};
use crate::error::Result;
use crate::transport::IncomingMessage;

/// The most messages handed to the sink at once.
const MAX_BATCH: usize = 1_000;

/// A running tap; [`TapHandle::shutdown`] stops it after the batch in flight.
#[derive(Debug)]
pub struct TapHandle {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TapHandle {
    /// Stops reading, lets the sink finish its batch, commits it.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Reads every topic whose name matches `pattern` (a regular expression, e.g. `^[^_].*`) as
/// consumer group `group`, from the earliest offset the first time, and calls `sink` with each
/// batch. Returns at once; the consumer connects in the background.
pub fn start_tap<F, Fut>(
    config: &KafkaConfig,
    group: &str,
    pattern: &str,
    mut sink: F,
) -> Result<TapHandle>
where
    F: FnMut(Vec<IncomingMessage>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut client = config.consumer_config(group);
    client.set("topic.metadata.refresh.interval.ms", "1000");
    let consumer: StreamConsumer<LogContext> = client.create_with_context(LogContext)?;
    // librdkafka treats a subscription starting with `^` as a regular expression.
    let pattern = if pattern.starts_with('^') {
        pattern.to_owned()
    } else {
        format!("^{pattern}")
    };
    consumer.subscribe(&[&pattern])?;
    let stop = CancellationToken::new();
    let token = stop.clone();
    let group = group.to_owned();
    let task = tokio::spawn(async move {
        tracing::info!(%group, %pattern, "tap started");
        loop {
            let first = tokio::select! {
                m = consumer.recv() => m,
                () = token.cancelled() => break,
            };
            let mut batch = Vec::new();
            let mut next = HashMap::new();
            let mut received = Some(first);
            while let Some(m) = received {
                match m {
                    Ok(m) => {
                        let m = incoming(&m);
                        next.insert((m.topic.clone(), m.partition), m.offset + 1);
                        batch.push(m);
                    }
                    Err(e) => tracing::debug!(%group, error = %e, "tap: consumer error"),
                }
                // Drain what is already buffered, without waiting, so the sink sees batches.
                received = if batch.len() < MAX_BATCH {
                    consumer.recv().now_or_never()
                } else {
                    None
                };
            }
            if batch.is_empty() {
                continue;
            }
            sink(batch).await;
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), offset) in next {
                let _ = offsets.add_partition_offset(&topic, partition, Offset::Offset(offset));
            }
            if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
                tracing::debug!(%group, error = %e, "tap: commit not sent");
            }
        }
        // Leave the group promptly so a restarted tap gets the partitions at once: unsubscribe,
        // then keep polling briefly so librdkafka can serve the revocation (a rebalance that a
        // new matching topic started is often in flight); closing without that waits seconds.
        consumer.unsubscribe();
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                if consumer.recv().await.is_err() {
                    // An error (the broker is gone) comes back at once: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
        .await;
        drop(consumer);
        tracing::info!(%group, "tap stopped");
    });
    Ok(TapHandle { stop, task })
}
