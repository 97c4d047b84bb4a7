//! `ferry consume TOPIC`: print message values, one per line.
//!
//! Without `--group` the consumer joins no group (a tool should not move a group's offsets): it assigns itself all
//! partitions, or the one asked for, and commits nothing. With `--group G` it joins group G like any member, gets
//! its share of the partitions, and commits the offsets of the messages it printed.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use crate::kafka::{self, BrokersArg};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at each partition's first message (default: only new messages).
    #[arg(long)]
    from_beginning: bool,
    /// Read only this partition.
    #[arg(long, conflicts_with = "group")]
    partition: Option<i32>,
    /// Join this consumer group: share the partitions with its other members and commit what was printed.
    #[arg(long)]
    group: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop once every partition has been read to its end.
    #[arg(long)]
    exit: bool,
    #[command(flatten)]
    brokers: BrokersArg,
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || consume(&args)).await?
}

fn consume(args: &ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = &args.group {
        return consume_in_group(args, group);
    }
    let brokers = &args.brokers.brokers;
    let mut config = kafka::client_config(brokers);
    config.set("enable.partition.eof", args.exit.to_string());
    let consumer = kafka::plain_consumer(&config)?;

    let partitions = match args.partition {
        Some(p) => {
            let all = kafka::partitions_of(consumer.client(), brokers, &args.topic)?;
            anyhow::ensure!(
                all.contains(&p),
                "topic {} has no partition {p} (it has {})",
                args.topic,
                all.len()
            );
            vec![p]
        }
        None => kafka::partitions_of(consumer.client(), brokers, &args.topic)?,
    };
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        assignment
            .add_partition_offset(&args.topic, p, start)
            .context("bad partition")?;
    }
    consumer
        .assign(&assignment)
        .context("cannot assign partitions")?;

    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut printed = 0u64;
    while args.count.is_none_or(|n| printed < n) {
        // Poll without waiting first; flush what we printed before we block, so a reader sees it promptly.
        let polled = match consumer.poll(Duration::ZERO) {
            Some(polled) => polled,
            None => {
                if !reader_still_there(out.flush())? {
                    return Ok(());
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(polled) => polled,
                    None => continue,
                }
            }
        };
        match polled {
            Ok(message) => {
                at_end.remove(&message.partition());
                let written = out
                    .write_all(message.payload().unwrap_or_default())
                    .and_then(|()| out.write_all(b"\n"));
                if !reader_still_there(written)? {
                    return Ok(());
                }
                printed += 1;
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if args.exit && at_end.len() == partitions.len() {
                    break;
                }
            }
            Err(e) => return Err(e).with_context(|| format!("cannot consume from {}", args.topic)),
        }
    }
    reader_still_there(out.flush())?;
    Ok(())
}

/// As a member of `group`: subscribe, print, and store each printed message's offset for the periodic commit
/// (and a final one on close), so a restart of the group resumes after what was printed.
fn consume_in_group(args: &ConsumeArgs, group: &str) -> anyhow::Result<()> {
    let brokers = &args.brokers.brokers;
    let mut config = kafka::client_config(brokers);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        )
        .set("enable.partition.eof", args.exit.to_string());
    let consumer: rdkafka::consumer::BaseConsumer<kafka::QuietContext> =
        rdkafka::consumer::BaseConsumer::from_config_and_context(&config, kafka::QuietContext)
            .context("cannot create a Kafka consumer")?;
    consumer
        .subscribe(&[&args.topic])
        .with_context(|| format!("cannot subscribe to {}", args.topic))?;
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut printed = 0u64;
    while args.count.is_none_or(|n| printed < n) {
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
            if !reader_still_there(out.flush())? {
                break;
            }
            continue;
        };
        match polled {
            Ok(message) => {
                at_end.remove(&message.partition());
                let written = out
                    .write_all(message.payload().unwrap_or_default())
                    .and_then(|()| out.write_all(b"\n"));
                if !reader_still_there(written)? {
                    break;
                }
                consumer
                    .store_offset_from_message(&message)
                    .context("cannot store the offset")?;
                printed += 1;
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
                if args.exit && assigned > 0 && at_end.len() >= assigned {
                    break;
                }
            }
            Err(e) => return Err(e).with_context(|| format!("cannot consume from {}", args.topic)),
        }
    }
    reader_still_there(out.flush())?;
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .or_else(|e| match e {
            // Nothing printed since the last commit.
            KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset) => Ok(()),
            e => Err(e),
        })
        .context("cannot commit the printed offsets")?;
    Ok(())
}

/// False when the reader went away (`ferry consume t | head`), which ends the command quietly.
fn reader_still_there(result: io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}
