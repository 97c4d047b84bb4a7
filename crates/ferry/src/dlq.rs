//! `ferry dlq list|redrive`: the dead-letter topics with their letters still pending, and sending
//! dead letters back to the topic they came from once their cause is fixed.
//!
//! A re-driven letter keeps its message id and is addressed to the consumer group that
//! dead-lettered it: the other groups of the topic skip it, so a re-drive never multiplies
//! letters. The re-drive's progress is a consumer group of its own, so running it again sends only
//! new letters, and `list` counts as pending only letters not re-driven yet.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_toolkit::kafka::{self, Admin, KafkaConfig};
use ferry_toolkit::{Error, Publisher};

use crate::kafka::BrokersArg;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the dead-letter topics with their letters pending (not re-driven yet) and held.
    List(ListArgs),
    /// Re-publish the pending dead letters of a `<topic>.dlq` topic to their original topic,
    /// each to the consumer group that dead-lettered it.
    Redrive(RedriveArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    brokers: BrokersArg,
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The dead-letter topic, e.g. `test.dlq`.
    topic: String,
    #[command(flatten)]
    brokers: BrokersArg,
}

/// A tool gives up on an unreachable broker after a few attempts instead of retrying forever.
fn config(brokers: &str) -> KafkaConfig {
    let mut config = KafkaConfig::new(brokers);
    config.connect_backoff.max_attempts = 3;
    config
}

pub async fn run(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List(args) => {
            let brokers = &args.brokers.brokers;
            let admin = Admin::new(&config(brokers)).context("cannot create a Kafka client")?;
            let topics = admin
                .dead_letter_topics()
                .await
                .with_context(|| format!("cannot list dead-letter topics at {brokers}"))?;
            println!("{:<40} {:>10} {:>10}", "TOPIC", "PENDING", "HELD");
            for t in topics {
                println!("{:<40} {:>10} {:>10}", t.topic, t.pending, t.held);
            }
            Ok(())
        }
        DlqCommand::Redrive(args) => {
            let config = config(&args.brokers.brokers);
            let publisher = Publisher::kafka(&config).context("cannot create a producer")?;
            let report = match kafka::redrive(&config, &args.topic, &publisher).await {
                Ok(report) => report,
                Err(e @ Error::InvalidTopic { .. }) => bail!("{e}"),
                Err(Error::UnknownTopic(missing)) if missing == args.topic => {
                    bail!("no topic {missing} (nothing was re-driven or created)")
                }
                Err(Error::UnknownTopic(missing)) => bail!(
                    "a letter in {} comes from {missing}, which does not exist; the letters before it \
                     were re-driven, it and the ones after it are pending",
                    args.topic
                ),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot re-drive {}", args.topic));
                }
            };
            println!(
                "re-drove {} dead letter(s) from {}; skipped {} without an original topic",
                report.redriven, args.topic, report.skipped
            );
            Ok(())
        }
    }
}
