//! The consume side of the benchmarks: one librdkafka consumer with no group reads every partition from the
//! beginning, with fetch sizes and the local prefetch queue raised so the client is not the bottleneck.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::Progress;
use crate::kafka;

/// The run fails when no message arrives for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct ConsumeReport {
    pub messages: u64,
    pub payload_bytes: u64,
    /// From `assign` to the last expected message.
    pub elapsed: Duration,
}

/// Reads `expected` messages from partitions `0..partitions` of `topic`, starting at the beginning.
pub fn consume(brokers: &str, topic: &str, partitions: i32, expected: u64) -> anyhow::Result<ConsumeReport> {
    let mut config = kafka::client_config(brokers);
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Answer fetches as soon as there is anything; the data is all there, so responses come back full.
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // Prefetch up to 1 million messages / 512 MiB locally, so fetching overlaps with the application's polls.
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", "524288");
    let consumer = kafka::plain_consumer(&config)?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).context("bad partition")?;
    }

    let mut progress = Progress::new("consume", expected);
    let started = Instant::now();
    consumer.assign(&assignment).context("cannot assign partitions")?;
    let (mut messages, mut payload_bytes) = (0u64, 0u64);
    let mut last_message = Instant::now();
    while messages < expected {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                messages += 1;
                payload_bytes += message.payload_len() as u64;
                last_message = Instant::now();
                if messages % 65_536 == 0 {
                    progress.update(messages);
                }
            }
            Some(Err(e)) => return Err(e).context("consume failed"),
            None => {
                if last_message.elapsed() > STALL_TIMEOUT {
                    bail!("consumer stalled: {messages} of {expected} messages after {:?} without progress", STALL_TIMEOUT);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    progress.finish();
    Ok(ConsumeReport { messages, payload_bytes, elapsed })
}
