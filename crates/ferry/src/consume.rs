//! `ferry consume TOPIC`: print message values, one per line, or every field of each record with
//! `--format` (kcat's placeholders) or `--json` (see [`crate::record_format`]).
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
use crate::record_format;

/// Where `--offset` starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
    Offset(i64),
    /// The last N messages.
    Tail(i64),
    /// The first message at or after this time (ms since the epoch).
    Time(i64),
}

fn parse_start(s: &str) -> Result<StartAt, String> {
    let bad = || format!("{s:?} is not beginning, end, N, -N or @TIMESTAMP_MS");
    Ok(match s {
        "beginning" => StartAt::Beginning,
        "end" => StartAt::End,
        _ if s.starts_with('@') => StartAt::Time(s[1..].parse().map_err(|_| bad())?),
        _ if s.starts_with('-') => StartAt::Tail(s[1..].parse().map_err(|_| bad())?),
        _ => StartAt::Offset(s.parse().map_err(|_| bad())?),
    })
}

impl ConsumeArgs {
    fn start(&self) -> StartAt {
        match self.offset {
            Some(start) => start,
            None if self.from_beginning => StartAt::Beginning,
            None => StartAt::End,
        }
    }

    /// Writes one record as asked: its value and a newline, the `--format`, or `--json`.
    fn print<M: Message>(&self, out: &mut impl Write, message: &M) -> io::Result<()> {
        if let Some(format) = &self.format {
            format.write(out, message)
        } else if self.json {
            serde_json::to_writer(&mut *out, &record_format::to_json(message))?;
            out.write_all(b"\n")
        } else {
            out.write_all(message.payload().unwrap_or_default())?;
            out.write_all(b"\n")
        }
    }
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at each partition's first message (the same as `--offset beginning`).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Where to start in each partition: `beginning`, `end` (the default: only new messages), an
    /// offset `N`, `-N` (the last N messages), or `@T` (the first message at or after T, in
    /// milliseconds since the epoch). With `--group`, only `beginning` or `end`, for a group
    /// without committed offsets.
    #[arg(long, value_parser = parse_start, allow_hyphen_values = true)]
    offset: Option<StartAt>,
    /// Print each record with this kcat-style format instead of its value and a newline:
    /// %t topic, %p partition, %o offset, %T timestamp (ms), %k key, %K key length, %s value,
    /// %S value length, %h headers (name=value,...), %% percent; escapes \n \r \t \0 \\.
    #[arg(long, value_parser = record_format::Format::parse, conflicts_with = "json")]
    format: Option<record_format::Format>,
    /// Print each record as one JSON object per line (topic, partition, offset, timestamp, key,
    /// headers, value; bytes that are not UTF-8 as {"base64": ...}).
    #[arg(long)]
    json: bool,
    /// Read only this partition.
    #[arg(long, conflicts_with = "group")]
    partition: Option<i32>,
    /// Join this consumer group: share the partitions with its other members and commit what was printed.
    #[arg(long)]
    group: Option<String>,
    /// The group protocol with --group: `classic` (JoinGroup/SyncGroup, client-side assignor) or
    /// `consumer` (KIP-848: broker-side assignment, incremental rebalances).
    #[arg(long, value_parser = ["classic", "consumer"], default_value = "classic", requires = "group")]
    group_protocol: String,
    /// Stop after this many messages.
    #[arg(long, alias = "count")]
    max_messages: Option<u64>,
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
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let start = match args.start() {
            StartAt::Beginning => Offset::Beginning,
            StartAt::End => Offset::End,
            StartAt::Offset(n) => Offset::Offset(n),
            StartAt::Tail(n) => Offset::OffsetTail(n),
            // Looked up below, all partitions in one request.
            StartAt::Time(t) => Offset::Offset(t),
        };
        assignment
            .add_partition_offset(&args.topic, p, start)
            .context("bad partition")?;
    }
    if let StartAt::Time(t) = args.start() {
        let found = consumer
            .offsets_for_times(assignment, Duration::from_secs(10))
            .with_context(|| format!("cannot look up offsets at {t} ms in {}", args.topic))?;
        // A partition with nothing at or after that time starts at its end, as kcat does.
        assignment = TopicPartitionList::new();
        for e in found.elements() {
            let offset = match e.offset() {
                Offset::Offset(n) => Offset::Offset(n),
                _ => Offset::End,
            };
            assignment
                .add_partition_offset(e.topic(), e.partition(), offset)
                .context("bad partition")?;
        }
    }
    consumer
        .assign(&assignment)
        .context("cannot assign partitions")?;

    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut printed = 0u64;
    while args.max_messages.is_none_or(|n| printed < n) {
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
                if !reader_still_there(args.print(&mut out, &message))? {
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
    let reset = match args.start() {
        StartAt::Beginning => "earliest",
        StartAt::End => "latest",
        _ => anyhow::bail!(
            "with --group, --offset can only be beginning or end (the group's committed offsets decide where it resumes)"
        ),
    };
    let brokers = &args.brokers.brokers;
    let mut config = kafka::client_config(brokers);
    config
        .set("group.id", group)
        .set("group.protocol", &args.group_protocol)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
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
    while args.max_messages.is_none_or(|n| printed < n) {
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
            if !reader_still_there(out.flush())? {
                break;
            }
            continue;
        };
        match polled {
            Ok(message) => {
                at_end.remove(&message.partition());
                if !reader_still_there(args.print(&mut out, &message))? {
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
