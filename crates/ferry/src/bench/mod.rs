//! `ferry bench produce|consume|disk|group|up|dashboard|http|read-side|signup|dlq|compaction`: throughput and latency of a broker, measured with librdkafka (the client
//! most Ferry services use), next to this machine's fsynced disk bandwidth from the same run.
//!
//! Without `--brokers` the bench starts a broker in this process, on 127.0.0.1:0 with a temporary data
//! directory under `--dir`. The broker serves from the tokio runtime while librdkafka's threads and the bench's own
//! loops run on blocking threads, so they compete for the machine's cores as a broker and its clients would.
//! Every run uses a new topic, so runs against a long-lived broker do not see each other's messages.

mod compaction;
mod consume;
mod disk;
mod dlq;
mod group;
mod http;
mod live;
mod produce;
mod read_side;
mod signup;
mod txn;
mod up;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{ArgAction, Args, Subcommand};
use ferry_broker::{BrokerConfig, BrokerHandle};
use tempfile::TempDir;

use crate::kafka::{self, Acks, thousands};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce messages and report throughput, latency, and the ratio to the disk's fsynced bandwidth.
    Produce(ProduceBenchArgs),
    /// Produce messages (untimed), then time one consumer reading them all from the beginning.
    Consume(ConsumeBenchArgs),
    /// Measure fsynced sequential write bandwidth: 1 MiB appends, fdatasync after each.
    Disk(DiskArgs),
    /// Time a 3-member group's rebalance, and a group of consumers reading a topic.
    Group(GroupBenchArgs),
    /// Time `ferry up` until ready and read its memory while every service idles.
    Up(up::UpBenchArgs),
    /// Find the event rate the dashboard's live view keeps up with.
    Dashboard(live::LiveBenchArgs),
    /// Creates/s and latency through a system's HTTP command side at N connections, optionally
    /// beside another implementation of the same API.
    Http(http::HttpBenchArgs),
    /// Time from an HTTP create to the entity showing on the read side, at a fixed rate.
    ReadSide(read_side::ReadSideBenchArgs),
    /// Send 1,000 sign-ups at once to `ferry up` and read its peak memory.
    Signup(signup::SignupBenchArgs),
    /// Dead letters per second in a poison flood, and the delay of a good message behind it.
    Dlq(dlq::DlqBenchArgs),
    /// Compaction MiB/s, and produce latency on another topic while the cleaner runs.
    Compaction(compaction::CompactionBenchArgs),
}

#[derive(Debug, Args)]
pub struct GroupBenchArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: Load,
    /// Members of the consuming group.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Group protocol(s) of the join measurement: classic, consumer (KIP-848), or both side by side.
    #[arg(long, value_parser = ["classic", "consumer", "both"], default_value = "both")]
    protocol: String,
    /// Joins measured per protocol; the table shows the median.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

#[derive(Debug, Args)]
pub struct Target {
    /// Bootstrap servers of a running broker (default: start one in this process).
    #[arg(long, conflicts_with = "embedded")]
    brokers: Option<String>,
    /// Start a broker in this process on 127.0.0.1:0 with a temporary data directory (the default).
    #[arg(long)]
    embedded: bool,
    /// Directory for the embedded broker's temporary data and the disk measurement's file.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
}

/// What the producer sends and how.
#[derive(Debug, Clone, Args)]
pub struct Load {
    /// Number of messages.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Payload size of each message in bytes (no key).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Producer acks.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    acks: Acks,
    /// Producer linger.ms: how long a batch waits to fill.
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    /// Producer batch.size in bytes.
    #[arg(long, default_value_t = 1_048_576)]
    batch_bytes: usize,
    /// Producer clients sending at once, each its share of the messages (and of `--rate`). One
    /// librdkafka producer tops out near 1.3 million 100-byte messages/s on this 2-core machine, below
    /// what the broker and disk take, so the broker's own ceiling needs more than one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    producers: u32,
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages x {} B, {} partition(s), acks={}, linger.ms={}, batch.size={}, {} producer(s)",
            thousands(self.messages),
            self.size,
            self.partitions,
            self.acks.as_config(),
            self.linger_ms,
            self.batch_bytes,
            self.producers
        )
    }
}

#[derive(Debug, Args)]
pub struct ProduceBenchArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: Load,
    /// Send at this many messages per second instead of as fast as possible (for latency at a given load).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Also measure the disk (as `ferry bench disk`) and print produce MB/s as a share of it.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "true|false",
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    compare_disk: bool,
    /// MiB written by each run of the disk measurement.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    disk_mb: u64,
    /// Runs of the disk measurement; their median is compared.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    disk_runs: u64,
    /// Also send the same load in Kafka transactions (after the plain run, to another topic) and
    /// print messages/s and commit latency beside the plain figure.
    #[arg(long)]
    transactional: bool,
    /// Messages per transaction with `--transactional`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    txn_messages: u64,
}

#[derive(Debug, Args)]
pub struct ConsumeBenchArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: Load,
}

#[derive(Debug, Args)]
pub struct DiskArgs {
    /// MiB written by each run.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    mb: u64,
    /// How many times to measure; the median is reported, with the spread.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Directory on the filesystem to measure.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(args) => bench_produce(args).await,
        BenchCommand::Consume(args) => bench_consume(args).await,
        BenchCommand::Group(args) => bench_group(args).await,
        BenchCommand::Up(args) => blocking(move || up::bench(args)).await,
        BenchCommand::Dashboard(args) => live::bench(args).await,
        BenchCommand::ReadSide(args) => read_side::bench(args).await,
        BenchCommand::Http(args) => http::bench(args).await,
        BenchCommand::Signup(args) => signup::bench(args).await,
        BenchCommand::Dlq(args) => dlq::bench(args).await,
        BenchCommand::Compaction(args) => compaction::bench(args).await,
        BenchCommand::Disk(args) => {
            let report =
                blocking(move || disk::measure(&args.dir, args.mb, args.runs as usize)).await?;
            println!("disk: {report}");
            Ok(())
        }
    }
}

async fn bench_produce(args: ProduceBenchArgs) -> anyhow::Result<()> {
    let ProduceBenchArgs {
        target,
        load,
        rate,
        compare_disk,
        disk_mb,
        disk_runs,
        transactional,
        txn_messages,
    } = args;
    let broker = RunningBroker::start(&target).await?;
    let rate_text = rate
        .map(|r| format!(", at {} messages/s", thousands(r)))
        .unwrap_or_default();
    println!(
        "ferry bench produce: {load}{rate_text}; broker: {}",
        broker.describe()
    );

    let disk = if compare_disk {
        let dir = target.dir.clone();
        let report = blocking(move || disk::measure(&dir, disk_mb, disk_runs as usize)).await?;
        println!("disk:     {report}");
        Some(report)
    } else {
        None
    };

    let topic = create_bench_topic(&broker.brokers, load.partitions).await?;
    let report = {
        let (brokers, load) = (broker.brokers.clone(), load.clone());
        blocking(move || produce::produce(&brokers, &topic, &load, rate)).await
    };
    let txn_report = match (transactional, &report) {
        (true, Ok(_)) => {
            let topic = create_bench_topic(&broker.brokers, load.partitions).await?;
            let (brokers, load) = (broker.brokers.clone(), load.clone());
            Some(blocking(move || txn::produce(&brokers, &topic, &load, txn_messages)).await)
        }
        _ => None,
    };
    broker.stop().await?;
    let report = report?;

    let mb_per_s =
        report.acknowledged as f64 * load.size as f64 / 1e6 / report.elapsed.as_secs_f64();
    println!(
        "produce:  {} acknowledged, {} failed in {:.2} s: {} messages/s, {:.1} MB/s of payload",
        thousands(report.acknowledged),
        report.failed,
        report.elapsed.as_secs_f64(),
        thousands(report.messages_per_s() as u64),
        mb_per_s
    );
    let h = &report.latency_us;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "latency:  p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (enqueue to acknowledgement)",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    if let Some(disk) = disk {
        println!(
            "ratio:    {:.1}% of the disk's fsynced write bandwidth ({mb_per_s:.1} / {:.1} MB/s)",
            100.0 * mb_per_s / disk.mb_per_s(),
            disk.mb_per_s()
        );
    }
    if let Some(txn_report) = txn_report {
        let t = txn_report?;
        let ms = |q: f64| t.commit_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "transactional: {} messages in {} transactions of {txn_messages}: {} messages/s ({:.0}% of the plain {} messages/s); commit p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            thousands(t.messages),
            thousands(t.transactions),
            thousands(t.messages_per_s() as u64),
            100.0 * t.messages_per_s() / report.messages_per_s(),
            thousands(report.messages_per_s() as u64),
            ms(0.5),
            ms(0.99),
            t.commit_us.max() as f64 / 1000.0
        );
    }
    if let Some(error) = report.first_error {
        bail!("{} message(s) failed: {error}", report.failed);
    }
    Ok(())
}

async fn bench_consume(args: ConsumeBenchArgs) -> anyhow::Result<()> {
    let ConsumeBenchArgs { target, load } = args;
    let broker = RunningBroker::start(&target).await?;
    println!("ferry bench consume: {load}; broker: {}", broker.describe());
    let topic = create_bench_topic(&broker.brokers, load.partitions).await?;
    let result = {
        let brokers = broker.brokers.clone();
        blocking(move || {
            let produced = produce::produce(&brokers, &topic, &load, None)?;
            println!(
                "produce:  {} acknowledged in {:.2} s (not timed)",
                thousands(produced.acknowledged),
                produced.elapsed.as_secs_f64()
            );
            if let Some(error) = produced.first_error {
                bail!("{} message(s) failed: {error}", produced.failed);
            }
            consume::consume(&brokers, &topic, load.partitions, produced.acknowledged)
        })
        .await
    };
    broker.stop().await?;
    let report = result?;
    let secs = report.elapsed.as_secs_f64();
    println!(
        "consume:  {} messages in {secs:.2} s: {} messages/s, {:.1} MB/s of payload",
        thousands(report.messages),
        thousands((report.messages as f64 / secs) as u64),
        report.payload_bytes as f64 / 1e6 / secs
    );
    Ok(())
}

async fn bench_group(args: GroupBenchArgs) -> anyhow::Result<()> {
    let GroupBenchArgs {
        target,
        load,
        members,
        protocol,
        rounds,
    } = args;
    let protocols: Vec<&'static str> = match protocol.as_str() {
        "classic" => vec!["classic"],
        "consumer" => vec!["consumer"],
        _ => vec!["classic", "consumer"],
    };
    let broker = RunningBroker::start(&target).await?;
    println!(
        "ferry bench group: {load}, {members} members; broker: {}",
        broker.describe()
    );
    let mut join_topics = Vec::new();
    for _ in &protocols {
        join_topics.push(create_bench_topic(&broker.brokers, 6).await?);
    }
    let topic = create_bench_topic(&broker.brokers, load.partitions).await?;
    let result = {
        let brokers = broker.brokers.clone();
        blocking(move || {
            println!(
                "a third member joins a 2-member group (6 partitions, 1 message/ms), median of {rounds}:"
            );
            println!(
                "{:<10} {:>22} {:>22} {:>22}",
                "protocol", "join -> consumes (ms)", "others' pause (ms)", "all consume (ms)"
            );
            for (protocol, join_topic) in protocols.iter().zip(&join_topics) {
                let mut runs = Vec::new();
                for _ in 0..rounds {
                    runs.push(group::join(&brokers, join_topic, protocol)?);
                }
                let median = |f: fn(&group::JoinFigures) -> Duration| {
                    let mut v: Vec<Duration> = runs.iter().map(f).collect();
                    v.sort();
                    v[v.len() / 2].as_millis()
                };
                println!(
                    "{:<10} {:>22} {:>22} {:>22}",
                    protocol,
                    median(|f| f.join_to_consume),
                    median(|f| f.others_pause),
                    median(|f| f.all_consume)
                );
            }
            let produced = produce::produce(&brokers, &topic, &load, None)?;
            if let Some(error) = produced.first_error {
                bail!("{} message(s) failed: {error}", produced.failed);
            }
            let elapsed = group::consume(&brokers, &topic, members, produced.acknowledged)?;
            Ok((produced.acknowledged, elapsed))
        })
        .await
    };
    broker.stop().await?;
    let (messages, elapsed) = result?;
    let secs = elapsed.as_secs_f64();
    println!(
        "group consume: {} messages by {members} members in {secs:.2} s (join included): {} messages/s",
        thousands(messages),
        thousands((messages as f64 / secs) as u64)
    );
    Ok(())
}

/// The broker a bench talks to: one it started in this process, or one given with `--brokers`.
struct RunningBroker {
    brokers: String,
    embedded: Option<(BrokerHandle, TempDir)>,
}

impl RunningBroker {
    async fn start(target: &Target) -> anyhow::Result<Self> {
        if let Some(brokers) = &target.brokers {
            return Ok(Self {
                brokers: brokers.clone(),
                embedded: None,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("ferry-bench-")
            .tempdir_in(&target.dir)
            .with_context(|| {
                format!("cannot create a data directory in {}", target.dir.display())
            })?;
        let handle = start_embedded_broker(dir.path()).await?;
        Ok(Self {
            brokers: handle.bootstrap_servers(),
            embedded: Some((handle, dir)),
        })
    }

    fn describe(&self) -> String {
        match &self.embedded {
            Some((_, dir)) => format!(
                "embedded at {}, data in {}",
                self.brokers,
                dir.path().display()
            ),
            None => self.brokers.clone(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        if let Some((handle, dir)) = self.embedded {
            handle
                .shutdown()
                .await
                .context("embedded broker shutdown")?;
            drop(dir);
        }
        Ok(())
    }
}

/// A broker in this process on 127.0.0.1:0, its data in `dir/broker`.
async fn start_embedded_broker(dir: &Path) -> anyhow::Result<BrokerHandle> {
    let config = BrokerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.join("broker"),
        // `bench group` compares the protocols: consumer-protocol members heartbeat as often as
        // its classic members (heartbeat.interval.ms 250) instead of Kafka's default 5 s.
        consumer_heartbeat_interval: Duration::from_millis(250),
        ..BrokerConfig::default()
    };
    ferry_broker::start(config)
        .await
        .context("cannot start the embedded broker")
}

async fn create_bench_topic(brokers: &str, partitions: i32) -> anyhow::Result<String> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let topic = format!("ferry-bench-{millis}");
    let admin = kafka::admin_client(brokers)?;
    kafka::create_topic(&admin, &topic, partitions, &[]).await?;
    Ok(topic)
}

/// Runs blocking work (librdkafka calls, disk writes) off the async workers that serve the embedded broker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("benchmark thread failed")?
}

/// A progress line on stderr, drawn only when stderr is a terminal and at most five times a second.
struct Progress {
    label: &'static str,
    total: u64,
    enabled: bool,
    last_draw: Option<Instant>,
}

impl Progress {
    fn new(label: &'static str, total: u64) -> Self {
        Self {
            label,
            total,
            enabled: std::io::stderr().is_terminal(),
            last_draw: None,
        }
    }

    fn update(&mut self, done: u64) {
        if !self.enabled
            || self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        let share = done.min(self.total) as f64 / self.total.max(1) as f64;
        let filled = (share * 30.0) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {:>5.1}% {}/{}",
            self.label,
            "#".repeat(filled),
            "-".repeat(30 - filled),
            share * 100.0,
            thousands(done),
            thousands(self.total)
        );
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
