//! `ferry groups list|describe`: consumer groups, their members and assignments, committed offsets and lag.

use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_toolkit::kafka::{Admin, KafkaConfig, wire};

use crate::kafka::BrokersArg;

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
    match command {
        GroupsCommand::List(args) => list(&args.brokers.brokers).await,
        GroupsCommand::Describe(args) => describe(&args.brokers.brokers, &args.group).await,
    }
}

fn admin(brokers: &str) -> anyhow::Result<Admin> {
    let mut config = KafkaConfig::new(brokers);
    // librdkafka's read_committed default asks for committed offsets with require_stable, which
    // waits (until it times out) while a transaction has offsets of the group pending; a
    // describe shows the committed offsets and names the pending ones instead.
    config
        .consumer
        .insert("isolation.level".into(), "read_uncommitted".into());
    Admin::new(&config).context("cannot create a Kafka client")
}

async fn list(brokers: &str) -> anyhow::Result<()> {
    let groups = admin(brokers)?
        .groups()
        .await
        .with_context(|| format!("cannot list groups at {brokers}"))?;
    // Admin::groups describes consumer-protocol groups (KIP-848) with ListGroups v5 and
    // ConsumerGroupDescribe: librdkafka's DescribeGroups knows only classic groups.
    println!(
        "{:<32} {:<22} {:<9} {:<10} MEMBERS",
        "GROUP", "STATE", "TYPE", "PROTOCOL"
    );
    for g in groups {
        println!(
            "{:<32} {:<22} {:<9} {:<10} {}",
            g.name,
            g.state,
            g.protocol,
            g.assignor,
            g.members.len()
        );
    }
    Ok(())
}

fn partitions(list: &[(String, Vec<i32>)]) -> String {
    list.iter()
        .map(|(t, p)| format!("{t}{p:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A consumer-protocol group's header and members: each member's epoch and assignment, and
/// its target while it is still moving towards it.
fn print_consumer_group(group: &str, c: &wire::ConsumerGroup) {
    println!(
        "group {group}: protocol consumer (KIP-848), state {}, group epoch {}, assignment epoch {}, assignor {}",
        c.state, c.epoch, c.assignment_epoch, c.assignor
    );
    println!(
        "\n{:<40} {:>6} {:<22} ASSIGNMENT",
        "MEMBER", "EPOCH", "HOST"
    );
    for m in &c.members {
        let id = match &m.instance_id {
            Some(iid) => format!("{} ({iid})", m.id),
            None => m.id.clone(),
        };
        let mut line = format!(
            "{:<40} {:>6} {:<22} {}",
            id,
            m.epoch,
            m.host,
            partitions(&m.assignment)
        );
        if m.target != m.assignment || m.epoch != c.assignment_epoch {
            line.push_str(&format!("  -> target {}", partitions(&m.target)));
        }
        println!("{line}");
    }
}

async fn describe(brokers: &str, group: &str) -> anyhow::Result<()> {
    let admin = admin(brokers)?;
    if let Some(c) = wire::consumer_group(brokers, group)
        .await
        .context("cannot describe the consumer group")?
    {
        print_consumer_group(group, &c);
    } else {
        let groups = admin
            .groups()
            .await
            .with_context(|| format!("cannot describe {group}"))?;
        let Some(g) = groups.into_iter().find(|g| g.name == group) else {
            anyhow::bail!("no group {group}");
        };
        println!(
            "group {group}: protocol classic, state {}, assignor {}",
            g.state, g.assignor
        );
        println!("\n{:<48} {:<22} ASSIGNMENT", "MEMBER", "HOST");
        for m in &g.members {
            let parts: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, p)| format!("{t}{p:?}"))
                .collect();
            println!("{:<48} {:<22} {}", m.id, m.host, parts.join(" "));
        }
    }
    let offsets = admin
        .group_offsets(group)
        .await
        .context("cannot fetch committed offsets")?;
    println!(
        "\n{:<32} {:>9} {:>12} {:>12} {:>8}",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    );
    for o in &offsets {
        println!(
            "{:<32} {:>9} {:>12} {:>12} {:>8}",
            o.topic, o.partition, o.committed, o.end, o.lag
        );
    }
    // Offsets an open transaction will commit (send_offsets_to_transaction): librdkafka cannot
    // show them, OffsetFetch with require_stable can.
    if let Some(pending) = wire::pending_offsets(brokers, group, &[])
        .await
        .context("cannot ask for pending transactional offsets")?
        && !pending.is_empty()
    {
        let list: Vec<String> = pending.iter().map(|(t, p)| format!("{t}[{p}]")).collect();
        println!(
            "\npending transactional offsets (an open transaction commits them): {}",
            list.join(" ")
        );
    }
    Ok(())
}
