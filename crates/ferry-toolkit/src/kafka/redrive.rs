//! Re-driving dead letters: reading `<topic>.dlq` and publishing each record back to its
//! original topic, addressed to the group that gave up on it (see [`crate::dlq`]).
//!
//! Progress is kept as the committed offsets of the consumer group `ferry-redrive.<dlq topic>`
//! ([`redrive_group`]), so running it twice does not send a dead letter back twice, and an
//! interrupted run resumes. The same offsets say which letters are still pending (not re-driven
//! yet): [`super::Admin::dead_letter_topics`]. A run re-drives what was in the dead-letter topic
//! when it started and returns; letters written while it runs (a handler that still fails) wait
//! for the next run, so a re-drive never chases its own tail.
//!
//! A re-drive never creates a topic: its client does not ask for auto-creation, an unknown
//! dead-letter topic is [`Error::UnknownTopic`] before anything is read, and a letter whose
//! original topic is gone stops the run there ([`Error::UnknownTopic`] naming that topic), with
//! the letters before it committed and it still pending.
//!
//! Letters go back in batches: every letter polled so far (up to [`BATCH`]) is handed to the
//! producer at once, every acknowledgement awaited, then the batch's offsets are committed
//! synchronously. A run in this process waits for another run on the same topic in this process
//! (two clicks on the dashboard's button re-drive once); runs in two processes at the same time
//! may both send a letter, which the addressed group's inbox absorbs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{KafkaConfig, LogContext, partition::incoming, wait_until_reachable};
use crate::dlq;
use crate::error::{Error, Result};
use crate::publisher::Publisher;
use crate::transport::{IncomingMessage, OutgoingMessage};

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
/// The most letters sent and committed together.
pub(crate) const BATCH: usize = 1000;
/// How long one metadata or offset round trip may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer group whose committed offsets are the re-drive progress of `dlq_topic`.
pub fn redrive_group(dlq_topic: &str) -> String {
    format!("ferry-redrive.{dlq_topic}")
}

/// Runs in this process, one lock per dead-letter topic.
static RUNNING: LazyLock<parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// Sends every dead letter in `dlq_topic` back to its original topic with `publisher`,
/// dead-letter headers removed, the original message id kept, and addressed to the group named
/// in the letter (so only that group handles it again).
///
/// Errors: [`Error::InvalidTopic`] if `dlq_topic` is not a dead-letter topic's name,
/// [`Error::UnknownTopic`] if it (or a letter's original topic) does not exist; nothing is
/// created either way.
pub async fn redrive(
    config: &KafkaConfig,
    dlq_topic: &str,
    publisher: &Publisher,
) -> Result<RedriveReport> {
    dlq::original_topic(dlq_topic)?;
    let group = redrive_group(dlq_topic);
    let mut client_config = config.consumer_config(&group);
    client_config.set("allow.auto.create.topics", "false");
    let consumer: Arc<BaseConsumer<LogContext>> =
        Arc::new(client_config.create_with_context(LogContext)?);
    wait_until_reachable(consumer.clone(), config, None, &CancellationToken::new()).await?;

    let c = consumer.clone();
    let mut topics = blocking(move || existing_topics(&c)).await?;
    let Some(&partitions) = topics.get(dlq_topic) else {
        return Err(Error::UnknownTopic(dlq_topic.to_owned()));
    };

    let lock = RUNNING
        .lock()
        .entry(dlq_topic.to_owned())
        .or_default()
        .clone();
    let _running = lock.lock().await;

    let (c, topic) = (consumer.clone(), dlq_topic.to_owned());
    let mut remaining = blocking(move || assign_from_committed(&c, &topic, partitions)).await?;
    let mut report = RedriveReport::default();
    let mut last_progress = Instant::now();
    while !remaining.is_empty() {
        let c = consumer.clone();
        let ends = remaining.clone();
        let polled = blocking(move || Ok(poll_batch(&c, &ends))).await?;
        if polled.is_empty() {
            if last_progress.elapsed() > IDLE_LIMIT {
                return Err(Error::Timeout(IDLE_LIMIT));
            }
            continue;
        }
        last_progress = Instant::now();

        // Restore the batch, stopping before the first letter whose original topic is gone.
        let mut sends: Vec<(&IncomingMessage, OutgoingMessage)> = Vec::with_capacity(polled.len());
        let mut done: Vec<&IncomingMessage> = Vec::new();
        let mut missing = None;
        for record in &polled {
            let Some(original) = dlq::restore(record) else {
                tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, "dead letter names no original topic; left in place");
                report.skipped += 1;
                done.push(record);
                continue;
            };
            if !topics.contains_key(&original.topic) {
                let c = consumer.clone();
                topics = blocking(move || existing_topics(&c)).await?;
                if !topics.contains_key(&original.topic) {
                    missing = Some((record, original.topic));
                    break;
                }
            }
            sends.push((record, original));
        }

        // Every send is handed to the producer before any is awaited (`join_all` polls each
        // once, in order), so librdkafka batches them and a key's records keep their order.
        let results =
            futures::future::join_all(sends.into_iter().map(|(record, original)| async move {
                (record, publisher.send_raw(original).await)
            }))
            .await;
        // Per partition, the first offset not done (a failed send, a missing topic): commit
        // below it, so a later run picks it up again.
        let mut stop_at: HashMap<i32, i64> = HashMap::new();
        let mut first_error = None;
        for (record, result) in results {
            match result {
                Ok(_) => {
                    report.redriven += 1;
                    done.push(record);
                }
                Err(e) => {
                    tracing::warn!(dlq_topic, partition = record.partition, offset = record.offset, error = %e.error, "cannot re-drive a letter");
                    let at = stop_at.entry(record.partition).or_insert(record.offset);
                    *at = (*at).min(record.offset);
                    first_error.get_or_insert(e.error);
                }
            }
        }
        if let Some((record, _)) = &missing {
            let at = stop_at.entry(record.partition).or_insert(record.offset);
            *at = (*at).min(record.offset);
        }
        let mut next: HashMap<i32, i64> = HashMap::new();
        for record in &done {
            if stop_at
                .get(&record.partition)
                .is_some_and(|&s| record.offset > s)
            {
                continue;
            }
            let n = next.entry(record.partition).or_insert(record.offset + 1);
            *n = (*n).max(record.offset + 1);
        }
        if !next.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (&p, &offset) in &next {
                tpl.add_partition_offset(dlq_topic, p, Offset::Offset(offset))?;
            }
            let c = consumer.clone();
            blocking(move || Ok(c.commit(&tpl, CommitMode::Sync)?)).await?;
        }
        if let Some(error) = first_error {
            tracing::warn!(
                dlq_topic,
                redriven = report.redriven,
                "re-drive stopped: letters could not be sent"
            );
            return Err(error);
        }
        if let Some((record, topic)) = missing {
            tracing::warn!(dlq_topic, partition = record.partition, offset = record.offset, original_topic = %topic, redriven = report.redriven, "re-drive stopped: the letter's original topic does not exist");
            return Err(Error::UnknownTopic(topic));
        }
        remaining.retain(|(p, end)| next.get(p).is_none_or(|&n| n < *end));
    }
    tracing::info!(
        dlq_topic,
        redriven = report.redriven,
        skipped = report.skipped,
        "re-drive finished"
    );
    Ok(report)
}

/// Every topic the cluster has, with its partition count (a metadata request for all topics,
/// which never creates one).
fn existing_topics(consumer: &BaseConsumer<LogContext>) -> Result<HashMap<String, i32>> {
    let metadata = consumer.fetch_metadata(None, TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect())
}

/// Assigns each partition at the group's committed offset (or its start) and returns the
/// partitions that have records to re-drive, with the end offset to stop at.
fn assign_from_committed(
    consumer: &BaseConsumer<LogContext>,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i32, i64)>> {
    let mut wanted = TopicPartitionList::new();
    for p in 0..partitions {
        wanted.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(wanted, TIMEOUT)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = Vec::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
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

/// Up to [`BATCH`] records below their partition's end: waits up to 200 ms for the first, then
/// takes only what is already fetched.
fn poll_batch(consumer: &BaseConsumer<LogContext>, ends: &[(i32, i64)]) -> Vec<IncomingMessage> {
    let wanted: HashSet<i32> = ends.iter().map(|(p, _)| *p).collect();
    let end_of = |p: i32| ends.iter().find(|(q, _)| *q == p).map(|(_, e)| *e);
    let mut batch = Vec::new();
    let mut wait = Duration::from_millis(200);
    while batch.len() < BATCH {
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                // Letters written after the run started wait for the next run.
                if wanted.contains(&m.partition())
                    && end_of(m.partition()).is_some_and(|e| m.offset() < e)
                {
                    batch.push(incoming(&m));
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "re-drive consumer error"),
            None => break,
        }
        wait = Duration::ZERO;
    }
    batch
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}
