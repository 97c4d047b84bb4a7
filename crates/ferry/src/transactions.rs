//! `ferry transactions list|describe`: the transactional ids a cluster's coordinators know, and one
//! transaction's state, producer, timeout and partitions (KIP-664's ListTransactions and
//! DescribeTransactions, which librdkafka has no API for; see `ferry_toolkit::kafka::wire`).

use anyhow::bail;
use clap::{Args, Subcommand};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::BrokersArg;
use ferry_toolkit::kafka::wire;

#[derive(Debug, Subcommand)]
pub enum TransactionsCommand {
    /// List transactional ids with their producer id and state.
    List(ListArgs),
    /// Show a transaction: state, producer id and epoch, timeout, start time, partitions.
    Describe(DescribeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these states (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort).
    #[arg(long = "state")]
    states: Vec<String>,
    /// Only transactions open for longer than this many milliseconds.
    #[arg(long)]
    min_duration_ms: Option<i64>,
    #[command(flatten)]
    brokers: BrokersArg,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The transactional id.
    transactional_id: String,
    #[command(flatten)]
    brokers: BrokersArg,
}

pub async fn run(command: TransactionsCommand) -> anyhow::Result<()> {
    match command {
        TransactionsCommand::List(args) => list(args).await,
        TransactionsCommand::Describe(args) => {
            describe(&args.brokers.brokers, &args.transactional_id).await
        }
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut bootstrap = wire::bootstrap(&args.brokers.brokers).await?;
    // Each broker lists the transactional ids it coordinates.
    let brokers = wire::all_brokers(&mut bootstrap).await?;
    let mut rows = Vec::new();
    for addr in brokers {
        let mut c = wire::Connection::open(&addr).await?;
        let v = c.version(ApiKey::ListTransactions, 1)?;
        if v == 0 && args.min_duration_ms.is_some() {
            bail!("{addr} cannot filter by duration (ListTransactions v1)");
        }
        let req = ListTransactionsRequest::default()
            .with_state_filters(
                args.states
                    .iter()
                    .cloned()
                    .map(StrBytes::from_string)
                    .collect(),
            )
            .with_duration_filter(args.min_duration_ms.unwrap_or(-1));
        let resp: ListTransactionsResponse = c.send(ApiKey::ListTransactions, v, &req).await?;
        if resp.error_code != 0 {
            bail!("ListTransactions at {addr}: error {}", resp.error_code);
        }
        if !resp.unknown_state_filters.is_empty() {
            let unknown: Vec<&str> = resp
                .unknown_state_filters
                .iter()
                .map(|s| s.as_str())
                .collect();
            bail!("unknown state(s): {}", unknown.join(", "));
        }
        for t in resp.transaction_states {
            rows.push((
                t.transactional_id.0.to_string(),
                t.producer_id.0,
                t.transaction_state.to_string(),
            ));
        }
    }
    rows.sort();
    println!("{:<40} {:>12} STATE", "TRANSACTIONAL ID", "PRODUCER ID");
    for (id, pid, state) in rows {
        println!("{id:<40} {pid:>12} {state}");
    }
    Ok(())
}

async fn describe(brokers: &str, transactional_id: &str) -> anyhow::Result<()> {
    let mut bootstrap = wire::bootstrap(brokers).await?;
    let coordinator = wire::transaction_coordinator(&mut bootstrap, transactional_id).await?;
    let mut c = wire::Connection::open(&coordinator).await?;
    let v = c.version(ApiKey::DescribeTransactions, 0)?;
    let req = DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
        StrBytes::from_string(transactional_id.to_owned()),
    )]);
    let resp: DescribeTransactionsResponse = c.send(ApiKey::DescribeTransactions, v, &req).await?;
    let Some(t) = resp.transaction_states.into_iter().next() else {
        bail!("no answer for {transactional_id:?}");
    };
    if t.error_code == 105 {
        bail!("transactional id {transactional_id:?} not found");
    }
    if t.error_code != 0 {
        bail!("DescribeTransactions: error {}", t.error_code);
    }
    println!("transactional id: {transactional_id}");
    println!("state:            {}", t.transaction_state.as_str());
    println!(
        "producer:         id {} epoch {}",
        t.producer_id.0, t.producer_epoch
    );
    println!("timeout:          {} ms", t.transaction_timeout_ms);
    if t.transaction_start_time_ms >= 0 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let open_ms = now_ms.saturating_sub(t.transaction_start_time_ms);
        println!("started:          {} ms ago", open_ms);
    }
    for topic in t.topics {
        let parts: Vec<String> = topic.partitions.iter().map(i32::to_string).collect();
        println!(
            "partitions:       {} [{}]",
            topic.topic.0.as_str(),
            parts.join(", ")
        );
    }
    Ok(())
}
