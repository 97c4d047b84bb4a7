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
pub fn consume(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: u64,
) -> anyhow::Result<ConsumeReport> {
    let mut config = kafka::client_config(brokers);
    config
        .set("group.id", "ferry-bench")
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
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .context("bad partition")?;
    }

    let mut progress = Progress::new("consume", expected);
    let started = Instant::now();
    consumer
        .assign(&assignment)
        .context("cannot assign partitions")?;
    let (mut messages, mut payload_bytes) = (0u64, 0u64);
    // (messages read, when) at the first empty poll since the count last moved; no clock read per message.
    let mut idle_since: Option<(u64, Instant)> = None;
    while messages < expected {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                messages += 1;
                payload_bytes += message.payload_len() as u64;
                if messages.is_multiple_of(65_536) {
                    progress.update(messages);
                }
            }
            Some(Err(e)) => return Err(e).context("consume failed"),
            None => match idle_since {
                Some((count, since)) if count == messages => {
                    if since.elapsed() > STALL_TIMEOUT {
                        bail!(
                            "consumer stalled: {messages} of {expected} messages, none for {STALL_TIMEOUT:?}"
                        );
                    }
                }
                _ => idle_since = Some((messages, Instant::now())),
            },
        }
    }
    let elapsed = started.elapsed();
    progress.finish();
    Ok(ConsumeReport {
        messages,
        payload_bytes,
        elapsed,
    })
}
