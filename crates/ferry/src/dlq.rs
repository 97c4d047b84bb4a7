//! `ferry dlq redrive TOPIC.dlq`: send dead letters back to the topic they came from, once their
//! cause is fixed. The original message id is kept, so idempotent handlers apply each once; the
//! re-drive's progress is a consumer group of its own, so running it again sends only new ones.

use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_toolkit::Publisher;
use ferry_toolkit::kafka::{self, KafkaConfig};

use crate::kafka::BrokersArg;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Re-publish every dead letter in a `<topic>.dlq` topic to its original topic.
    Redrive(RedriveArgs),
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The dead-letter topic, e.g. `test.dlq`.
    topic: String,
    #[command(flatten)]
    brokers: BrokersArg,
}

pub async fn run(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Redrive(args) => {
            let config = KafkaConfig::new(&args.brokers.brokers);
            let publisher = Publisher::kafka(&config).context("cannot create a producer")?;
            let report = kafka::redrive(&config, &args.topic, &publisher)
                .await
                .with_context(|| format!("cannot re-drive {}", args.topic))?;
            println!(
                "re-drove {} dead letter(s) from {}; skipped {} without an original topic",
                report.redriven, args.topic, report.skipped
            );
            Ok(())
        }
    }
}
