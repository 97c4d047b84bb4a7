//! `ferry consume TOPIC`: print message values, one per line.
//!
//! The consumer joins no group (a tool should not move a group's offsets): it assigns itself all partitions, or
//! the one asked for, and commits nothing.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
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
    #[arg(long)]
    partition: Option<i32>,
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

/// False when the reader went away (`ferry consume t | head`), which ends the command quietly.
fn reader_still_there(result: io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}
