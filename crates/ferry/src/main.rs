//! The `ferry` command: the built-in broker, `ferry up`, kcat-like client tools and benchmarks in one binary.
//!
//! This is the edge of the system, so errors are `anyhow` and end as one line on stderr with a non-zero exit code.
//! Logs (tracing, including librdkafka's own lines at debug level) go to stderr as well, so that stdout carries
//! only what a script may want to read: the broker's "listening on" line, consumed values, tables and reports.
//!
//! Everything runs on one multi-threaded tokio runtime. The broker (when started in this process) serves from
//! tokio tasks; the client tools and benchmarks use librdkafka, whose blocking calls run on blocking threads so they
//! never hold up the broker's tasks.

mod bench;
mod consume;
mod kafka;
mod produce;
mod serve;
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Event-driven microservices that run with one command.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the built-in Kafka-compatible broker until Ctrl-C or SIGTERM.
    Broker(serve::BrokerArgs),
    /// Start everything (for now: the broker) and print where it listens.
    Up(serve::UpArgs),
    /// List, create and describe topics.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Send each line of stdin as one message.
    Produce(produce::ProduceArgs),
    /// Print the values of a topic's messages, one per line.
    Consume(consume::ConsumeArgs),
    /// Measure produce and consume throughput and the disk's fsynced write bandwidth.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Broker(args) => serve::broker(args).await,
        Command::Up(args) => serve::up(args).await,
        Command::Topics(command) => topics::run(command).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(args).await,
        Command::Bench(command) => bench::run(command).await,
    }
}
