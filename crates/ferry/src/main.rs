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
mod dlq;
mod groups;
mod kafka;
mod produce;
mod record_format;
mod replay;
mod serve;
mod services;
mod topics;
mod transactions;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Event-driven microservices that run with one command.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the built-in Kafka-compatible broker until Ctrl-C or SIGTERM.
    Broker(serve::BrokerArgs),
    /// Start the broker and every service, and print where each listens.
    Up(serve::UpArgs),
    /// Run one service alone (the deployment shape).
    Run(services::RunArgs),
    /// List, create and describe topics.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Send each line of stdin as one message.
    Produce(produce::ProduceArgs),
    /// Print the values of a topic's messages, one per line.
    Consume(consume::ConsumeArgs),
    /// Work with dead-letter topics.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// List consumer groups, or describe one: members, assignments, committed offsets and lag.
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// List Kafka transactions, or describe one: state, producer, timeout, partitions.
    #[command(subcommand)]
    Transactions(transactions::TransactionsCommand),
    /// Measure produce and consume throughput and the disk's fsynced write bandwidth.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Rebuild a read model from its event store (safe to run twice and while services run).
    #[command(subcommand)]
    Replay(replay::ReplayCommand),
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    // A server logs what it does; a tool or a benchmark shows only warnings, so its own output stays readable.
    let default_filter = match cli.command {
        Command::Broker(_) | Command::Up(_) | Command::Run(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // One process holds every service's connections, the broker's, and the log's segment files,
    // while the soft limit on open files is often 1,024: take all the system allows.
    match ferry_service::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tool = matches!(
        cli.command,
        Command::Topics(_)
            | Command::Produce(_)
            | Command::Consume(_)
            | Command::Groups(_)
            | Command::Transactions(_)
            | Command::Dlq(_)
    );
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        // `ferry topics describe t | head`: the reader is gone, which is not an error of ours.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // A tool that failed because nothing answers at the broker address says that, with
            // what to do, instead of librdkafka's "Local: Broker transport failure".
            let brokers = brokers_arg();
            let unreachable = tool
                && runtime
                    .block_on(ferry_service::ready::broker_reachable(&brokers))
                    .is_err();
            if unreachable {
                eprintln!("error: {}", kafka::unreachable(&brokers));
            } else {
                eprintln!("error: {}", one_line(&e));
            }
            ExitCode::FAILURE
        }
    }
}

/// `println!` panics when stdout is a pipe whose reader has gone (`ferry topics describe t |
/// head`); Rust ignores SIGPIPE, and the workspace forbids the `unsafe` that would restore it.
/// Such a panic ends the process quietly and successfully, as `cat` would; any other panic is
/// reported as usual.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Whether `error` comes from writing to a pipe whose reader has gone.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The broker list a tool used, as clap resolved it: `--brokers`, else `FERRY_BROKERS`, else the
/// default.
fn brokers_arg() -> String {
    let mut args =
        std::env::args().skip_while(|a| a != "--brokers" && !a.starts_with("--brokers="));
    match args.next() {
        Some(a) if a.starts_with("--brokers=") => a["--brokers=".len()..].to_string(),
        Some(_) => args.next().unwrap_or_default(),
        None => std::env::var("FERRY_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string()),
    }
}

/// The error and its causes on one line. Many errors already include their cause in their message (librdkafka's
/// `KafkaError`, thiserror's `"...: {source}"`), so a cause that the line already ends with is not repeated.
pub(crate) fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Broker(args) => serve::broker(args).await,
        Command::Up(args) => serve::up(args).await,
        Command::Run(args) => services::run(args).await,
        Command::Topics(command) => topics::run(command).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(args).await,
        Command::Groups(command) => groups::run(command).await,
        Command::Transactions(command) => transactions::run(command).await,
        Command::Dlq(command) => dlq::run(command).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Replay(command) => replay::run(command).await,
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let error =
            anyhow::Error::new(io).context("cannot listen on 127.0.0.1:9092: address in use");
        let error = error.context("cannot start the broker");
        assert_eq!(
            one_line(&error),
            "cannot start the broker: cannot listen on 127.0.0.1:9092: address in use"
        );
    }
}
