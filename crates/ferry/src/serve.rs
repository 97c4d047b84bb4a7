//! `ferry broker` and `ferry up`: run the built-in broker in this process until Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgAction, Args};
use ferry_broker::{BrokerConfig, BrokerHandle};

/// The single source of the broker's defaults, shown by `--help`.
fn defaults() -> BrokerConfig {
    BrokerConfig::default()
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Address to listen on; port 0 picks a free port (the "listening on" line tells which).
    #[arg(long, default_value_t = defaults().listen)]
    listen: SocketAddr,
    /// Directory holding the topics' logs; created if missing, recovered if it exists.
    #[arg(long, default_value_os_t = defaults().data_dir)]
    data: PathBuf,
    /// Create a topic the first time a client produces to it or asks for it.
    #[arg(long, default_value_t = defaults().auto_create_topics, action = ArgAction::Set, value_name = "true|false")]
    auto_create_topics: bool,
    /// Partition count of auto-created topics.
    #[arg(long, default_value_t = defaults().default_partitions,
          value_parser = clap::value_parser!(u32).range(1..))]
    default_partitions: u32,
    /// Largest request accepted, in bytes; a larger one closes the connection.
    #[arg(long, default_value_t = defaults().max_request_bytes)]
    max_request_bytes: usize,
    /// Host name clients are told to connect to (default: the listen address, or 127.0.0.1 for 0.0.0.0).
    #[arg(long)]
    advertised_host: Option<String>,
}

impl BrokerArgs {
    fn into_config(self) -> BrokerConfig {
        BrokerConfig {
            listen: self.listen,
            advertised_host: self.advertised_host,
            data_dir: self.data,
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.default_partitions,
            max_request_bytes: self.max_request_bytes,
            ..defaults()
        }
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory for everything ferry keeps: the broker's logs go to <DATA>/broker.
    #[arg(long, default_value = "./ferry-data")]
    data: PathBuf,
}

pub async fn broker(args: BrokerArgs) -> anyhow::Result<()> {
    let handle = start(args.into_config()).await?;
    // Tests and scripts read this exact line to learn the port when listening on port 0.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ferry broker listening on {}", handle.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    run_until_signal(handle).await
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let config = BrokerConfig {
        data_dir: args.data.join("broker"),
        ..defaults()
    };
    let data_dir = config.data_dir.clone();
    let handle = start(config).await?;
    let rows = [("SERVICE", "ADDRESS", "NOTES"), ("broker", &*handle.bootstrap_servers(), "Kafka protocol")];
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ferry is up (data in {}); press Ctrl-C to stop.\n", args.data.display())?;
    for (service, address, notes) in rows {
        writeln!(stdout, "  {service:<10} {address:<22} {notes}")?;
    }
    writeln!(stdout)?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(data = %data_dir.display(), "broker up");
    run_until_signal(handle).await
}

async fn start(config: BrokerConfig) -> anyhow::Result<BrokerHandle> {
    let data_dir = config.data_dir.clone();
    ferry_broker::start(config)
        .await
        .with_context(|| format!("cannot start the broker (data in {})", data_dir.display()))
}

async fn run_until_signal(handle: BrokerHandle) -> anyhow::Result<()> {
    shutdown_signal().await?;
    tracing::info!("shutting down");
    handle.shutdown().await.context("broker shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, the two ways a terminal or a supervisor asks us to stop.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("cannot listen for Ctrl-C")?;
    Ok(())
}
