//! `ferry topics list|create|describe`: topic administration over the Kafka protocol.

use anyhow::Context;
use clap::{Args, Subcommand};
use rdkafka::admin::ResourceSpecifier;
use rdkafka::consumer::Consumer;
use std::io::Write;

use crate::kafka::{self, BrokersArg, METADATA_TIMEOUT};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// List the topics and their partition counts.
    List(ListArgs),
    /// Create a topic.
    Create(CreateArgs),
    /// Show a topic's partitions with their earliest and latest offsets, and its configuration.
    Describe(DescribeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    brokers: BrokersArg,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the new topic.
    name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// A topic configuration entry, e.g. `--config retention.ms=3600000`; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
    #[command(flatten)]
    brokers: BrokersArg,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Name of the topic.
    name: String,
    #[command(flatten)]
    brokers: BrokersArg,
}

/// `KEY=VALUE` with a KEY Kafka knows as a topic config; otherwise the error names the key and
/// lists the valid ones (a broker would refuse it anyway, later and less clearly).
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => {
            if ferry_log::topic_config(k).is_none() {
                let valid: Vec<&str> = ferry_log::TOPIC_CONFIGS.iter().map(|c| c.name).collect();
                return Err(format!(
                    "unknown topic config {k:?}; valid keys: {}",
                    valid.join(", ")
                ));
            }
            Ok((k.to_owned(), v.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

pub async fn run(command: TopicsCommand) -> anyhow::Result<()> {
    match command {
        TopicsCommand::List(args) => {
            tokio::task::spawn_blocking(move || list(&args.brokers.brokers)).await?
        }
        TopicsCommand::Create(args) => create(args).await,
        TopicsCommand::Describe(args) => describe(args).await,
    }
}

fn list(brokers: &str) -> anyhow::Result<()> {
    let consumer = kafka::plain_consumer(&kafka::client_config(brokers))?;
    let metadata = kafka::fetch_metadata(consumer.client(), brokers, None)?;
    let mut topics: Vec<(&str, usize)> = metadata
        .topics()
        .iter()
        .map(|t| (t.name(), t.partitions().len()))
        .collect();
    topics.sort_unstable();
    let width = topics
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0)
        .max("TOPIC".len());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<width$}  PARTITIONS", "TOPIC")?;
    for (name, partitions) in topics {
        writeln!(out, "{name:<width$}  {partitions}")?;
    }
    Ok(())
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let brokers = &args.brokers.brokers;
    let admin = kafka::admin_client(brokers)?;
    // Fail fast with a clear message when nothing answers, rather than after the admin request's timeout.
    let admin = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || kafka::fetch_metadata(admin.inner(), &brokers, None).map(|_| admin)
    })
    .await??;
    kafka::create_topic(&admin, &args.name, args.partitions, &args.configs).await?;
    println!(
        "created topic {} with {} partition(s)",
        args.name, args.partitions
    );
    Ok(())
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let DescribeArgs { name, brokers } = args;
    let brokers = brokers.brokers;
    // Metadata and watermarks come from a consumer-type client: it never asks the broker to auto-create the topic.
    let partitions = tokio::task::spawn_blocking({
        let (name, brokers) = (name.clone(), brokers.clone());
        move || -> anyhow::Result<Vec<(i32, i64, i64)>> {
            let consumer = kafka::plain_consumer(&kafka::client_config(&brokers))?;
            let client = consumer.client();
            let ids = kafka::partitions_of(client, &brokers, &name)?;
            ids.into_iter()
                .map(|id| {
                    let (low, high) = client
                        .fetch_watermarks(&name, id, METADATA_TIMEOUT)
                        .with_context(|| format!("cannot get the offsets of {name}/{id}"))?;
                    Ok((id, low, high))
                })
                .collect()
        }
    })
    .await??;

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "topic {name}: {} partition(s)\n", partitions.len())?;
        writeln!(out, "  PARTITION  EARLIEST  LATEST  MESSAGES")?;
        for (id, low, high) in &partitions {
            writeln!(out, "  {id:<9}  {low:<8}  {high:<6}  {}", high - low)?;
        }
        out.flush()?;
    }

    let admin = kafka::admin_client(&brokers)?;
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(&name)], &kafka::admin_options())
        .await
        .with_context(|| format!("cannot describe the configuration of {name}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n  CONFIG")?;
    for result in results {
        let resource = result.map_err(|code| {
            anyhow::anyhow!("cannot describe the configuration of {name}: {code}")
        })?;
        let mut entries: Vec<_> = resource.entries.iter().collect();
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            let value = if entry.is_sensitive {
                "(sensitive)"
            } else {
                entry.value.as_deref().unwrap_or("(null)")
            };
            let origin = if entry.is_default { "" } else { "  (set)" };
            writeln!(out, "  {} = {value}{origin}", entry.name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_key_value;

    #[track_caller]
    fn check(input: &str, expected: Result<(&str, &str), ()>) {
        let got = parse_key_value(input);
        match expected {
            Ok((k, v)) => assert_eq!(got, Ok((k.to_owned(), v.to_owned()))),
            Err(()) => assert!(got.is_err(), "{input:?} should be rejected, got {got:?}"),
        }
    }

    #[test]
    fn config_entries_split_at_the_first_equals_sign() {
        check("retention.ms=1000", Ok(("retention.ms", "1000")));
        check("compression.type=a=b", Ok(("compression.type", "a=b")));
        check("foo=bar", Err(()));
        check("cleanup.policy=", Ok(("cleanup.policy", "")));
        check("=x", Err(()));
        check("novalue", Err(()));
    }
}
