//! Re-driving dead letters: reading `<topic>.dlq` and publishing each record back to its
//! original topic.
//!
//! Progress is kept as the committed offsets of the consumer group `ferry-redrive.<dlq topic>`,
//! so running it twice does not send a dead letter back twice, and an interrupted run resumes.
//! A run re-drives what was in the dead-letter topic when it started and returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{KafkaConfig, LogContext, partition::incoming, wait_until_reachable};
use crate::dlq;
use crate::error::{Error, Result};
use crate::publisher::Publisher;

/// What a re-drive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Dead letters sent back to their original topic.
    pub redriven: u64,
    /// Records that name no original topic and were left where they are.
    pub skipped: u64,
}

/// How long a re-drive waits for the next record it knows is there before giving up.
const IDLE_LIMIT: Duration = Duration::from_secs(15);

/// Sends every dead letter in `dlq_topic` back to its original topic with `publisher`,
/// dead-letter headers removed and the original message id kept (so handlers that de-duplicate
/// by id apply it once).
pub async fn redrive(
    config: &KafkaConfig,
    dlq_topic: &str,
    publisher: &Publisher,
) -> Result<RedriveReport> {
    let group = format!("ferry-redrive.{dlq_topic}");
    let consumer: Arc<BaseConsumer<LogContext>> = Arc::new(
        config
            .consumer_config(&group)
            .create_with_context(LogContext)?,
    );
    wait_until_reachable(consumer.clone(), config, None, &CancellationToken::new()).await?;

    let topic = dlq_topic.to_owned();
    let c = consumer.clone();
    let mut remaining = blocking(move || assign_from_committed(&c, &topic)).await?;
    let mut report = RedriveReport::default();
    let mut last_progress = Instant::now();
    while !remaining.is_empty() {
        let c = consumer.clone();
        let polled = blocking(move || {
            Ok(c.poll(Duration::from_millis(200))
                .map(|m| m.map(|m| incoming(&m))))
        })
        .await?;
        let record = match polled {
            Some(Ok(record)) => record,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "re-drive consumer error");
                continue;
            }
            None if last_progress.elapsed() > IDLE_LIMIT => return Err(Error::Timeout(IDLE_LIMIT)),
            None => continue,
        };
        last_progress = Instant::now();
        match dlq::restore(&record) {
            Some(original) => {
                let to = original.topic.clone();
                publisher.send_raw(original).await.map_err(|e| e.error)?;
                tracing::info!(from = %record.topic, partition = record.partition, offset = record.offset, %to, "re-driven");
                report.redriven += 1;
            }
            None => {
                tracing::warn!(topic = %record.topic, offset = record.offset, "dead letter names no original topic; left in place");
                report.skipped += 1;
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &record.topic,
            record.partition,
            Offset::Offset(record.offset + 1),
        )?;
        let c = consumer.clone();
        blocking(move || Ok(c.commit(&tpl, CommitMode::Sync)?)).await?;
        if let Some(end) = remaining
            .iter()
            .position(|(p, end)| *p == record.partition && record.offset + 1 >= *end)
        {
            remaining.swap_remove(end);
        }
    }
    tracing::info!(
        dlq_topic,
        redriven = report.redriven,
        skipped = report.skipped,
        "re-drive finished"
    );
    Ok(report)
}

/// Assigns each partition at the group's committed offset (or its start) and returns the
/// partitions that have records to re-drive, with the end offset to stop at.
fn assign_from_committed(
    consumer: &BaseConsumer<LogContext>,
    topic: &str,
) -> Result<Vec<(i32, i64)>> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()) as i32;
    let mut wanted = TopicPartitionList::new();
    for p in 0..partitions {
        wanted.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(wanted, timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = Vec::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let start = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= low => o,
            _ => low,
        };
        if start < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            remaining.push((p, high));
        }
    }
    if tpl.count() > 0 {
        consumer.assign(&tpl)?;
    }
    Ok(remaining)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}
