//! `ferry groups list|describe`: consumer groups, their members and assignments, committed offsets and lag.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{self, BrokersArg};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List the consumer groups with their state and member count.
    List(ListArgs),
    /// Show a group's members, their assignments, and its committed offsets with lag.
    Describe(DescribeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    brokers: BrokersArg,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The group.
    group: String,
    #[command(flatten)]
    brokers: BrokersArg,
}

pub async fn run(command: GroupsCommand) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || match command {
        GroupsCommand::List(args) => list(&args.brokers.brokers),
        GroupsCommand::Describe(args) => describe(&args.brokers.brokers, &args.group),
    })
    .await?
}

fn list(brokers: &str) -> anyhow::Result<()> {
    let consumer = kafka::plain_consumer(&kafka::client_config(brokers))?;
    let groups = consumer
        .fetch_group_list(None, TIMEOUT)
        .with_context(|| format!("cannot list groups at {brokers}"))?;
    println!("{:<32} {:<22} {:<10} MEMBERS", "GROUP", "STATE", "PROTOCOL");
    for g in groups.groups() {
        println!(
            "{:<32} {:<22} {:<10} {}",
            g.name(),
            g.state(),
            g.protocol(),
            g.members().len()
        );
    }
    Ok(())
}

/// The (topic, partitions) of a member's assignment, decoded from the consumer protocol.
fn assignment(bytes: Option<&[u8]>) -> Vec<(String, Vec<i32>)> {
    let Some(bytes) = bytes.filter(|b| b.len() >= 2) else {
        return Vec::new();
    };
    let mut buf = Bytes::copy_from_slice(bytes);
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    match ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn describe(brokers: &str, group: &str) -> anyhow::Result<()> {
    let mut config = kafka::client_config(brokers);
    config.set("group.id", group);
    let consumer = kafka::plain_consumer(&config)?;
    let groups = consumer
        .fetch_group_list(Some(group), TIMEOUT)
        .with_context(|| format!("cannot describe {group}"))?;
    let Some(g) = groups.groups().iter().find(|g| g.name() == group) else {
        anyhow::bail!("no group {group}");
    };
    println!(
        "group {group}: state {}, protocol {} {}",
        g.state(),
        g.protocol_type(),
        g.protocol()
    );
    println!("\n{:<48} {:<22} ASSIGNMENT", "MEMBER", "HOST");
    for m in g.members() {
        let parts: Vec<String> = assignment(m.assignment())
            .into_iter()
            .map(|(t, p)| format!("{t}{p:?}"))
            .collect();
        println!("{:<48} {:<22} {}", m.id(), m.client_host(), parts.join(" "));
    }
    // Committed offsets: ask for every partition of every topic and keep those the group committed.
    let metadata = kafka::fetch_metadata(consumer.client(), brokers, None)?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    let committed = consumer
        .committed_offsets(tpl, TIMEOUT)
        .context("cannot fetch committed offsets")?;
    println!(
        "\n{:<32} {:>9} {:>12} {:>12} {:>8}",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    );
    for e in committed.elements() {
        let Offset::Offset(at) = e.offset() else {
            continue;
        };
        let (_, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
            .unwrap_or((0, at));
        println!(
            "{:<32} {:>9} {:>12} {:>12} {:>8}",
            e.topic(),
            e.partition(),
            at,
            high,
            (high - at).max(0)
        );
    }
    Ok(())
}
