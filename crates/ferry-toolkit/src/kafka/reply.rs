//! The Kafka reply reader of a [`Requester`].
//!
//! It reads every partition of the reply topic from the end as it was when the requester
//! started (explicit offsets, no consumer group, nothing committed: replies are only useful to
//! the process that is waiting for them), on its own OS thread, and hands each record to the
//! requester's pending map.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{KafkaConfig, LogContext, partition::incoming, wait_until_reachable};
use crate::error::{Error, Result};
use crate::publisher::Publisher;
use crate::request::{Pending, Requester};

/// Starts a requester whose replies come back on `reply_topic` (created if it does not exist).
/// Returns once the reply reader is positioned, so no reply to a request made afterwards can
/// be missed. Waits for the broker like a router does.
pub async fn start_requester(
    config: &KafkaConfig,
    publisher: Publisher,
    reply_topic: &str,
) -> Result<Requester> {
    // A throwaway group id: librdkafka wants one, but this consumer never joins or commits.
    let group = format!("ferry-requester-{}", Uuid::now_v7());
    let consumer: Arc<BaseConsumer<LogContext>> = Arc::new(
        config
            .consumer_config(&group)
            .create_with_context(LogContext)?,
    );
    let stop = CancellationToken::new();
    wait_until_reachable(consumer.clone(), config, None, &stop).await?;

    let topic = reply_topic.to_owned();
    let positioning = consumer.clone();
    tokio::task::spawn_blocking(move || position_at_end(&positioning, &topic))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;

    let pending = Arc::new(Pending::default());
    let reader_pending = pending.clone();
    let reader_stop = stop.clone();
    std::thread::Builder::new()
        .name(format!("ferry-replies-{reply_topic}"))
        .spawn(move || {
            while !reader_stop.is_cancelled() {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => reader_pending.deliver(incoming(&message)),
                    Some(Err(e)) => tracing::debug!(error = %e, "reply reader error"),
                    None => {}
                }
            }
        })?;
    tracing::info!(reply_topic, "requester ready");
    Ok(Requester::new(
        publisher,
        reply_topic.to_owned(),
        pending,
        stop,
    ))
}

/// Assigns every partition of `topic` at its current end offset.
fn position_at_end(consumer: &BaseConsumer<LogContext>, topic: &str) -> Result<()> {
    let timeout = Duration::from_secs(5);
    // The first metadata request may be the one that auto-creates the topic; ask again until
    // it has partitions.
    let mut partitions = 0;
    for _ in 0..20 {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        if partitions > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if partitions == 0 {
        return Err(Error::Config(format!(
            "reply topic {topic} has no partitions"
        )));
    }
    let mut tpl = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        tpl.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;
    Ok(())
}
