//! `ferry bench compaction`: how fast the log cleaner compacts a partition, and what a clean does
//! to the produce latency other clients see, measured over the network with librdkafka.
//!
//! Always runs its own broker in this process (the bench reads the partition's directory to see
//! when the clean has swapped its segments in, and sets the cleaner's check interval short). It
//! fills one partition of a `delete` topic with `--mib` of 100-byte records over `--keys` keys,
//! then, while a probe producer sends one acks=all record every 2 ms to another topic, switches
//! the topic to `cleanup.policy=compact`: the probe's latencies before the switch and while the
//! clean runs are reported side by side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ferry_broker::BrokerConfig;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rdkafka::admin::{AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::kafka::{self, thousands};

#[derive(Debug, Args)]
pub struct CompactionBenchArgs {
    /// MiB of records to write before the clean.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    mib: u64,
    /// Distinct keys among them (the clean keeps one record per key).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Seconds of probe latency measured before the clean.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Working directory for the broker's data (a temporary directory under it).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

const RECORD: usize = 100;
const PROBE_EVERY: Duration = Duration::from_millis(2);

pub async fn bench(args: CompactionBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(&args.dir).context("temporary directory")?;
    let config = BrokerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().join("broker"),
        cleaner_check_interval: Duration::from_millis(100),
        ..BrokerConfig::default()
    };
    let broker = ferry_broker::start(config)
        .await
        .context("cannot start the embedded broker")?;
    let brokers = broker.bootstrap_servers();
    println!(
        "ferry bench compaction: {} MiB of {RECORD}-byte records over {} keys in one partition; probe: one acks=all record every {} ms",
        args.mib,
        thousands(args.keys),
        PROBE_EVERY.as_millis()
    );
    let result = run(&brokers, dir.path(), &args).await;
    broker.shutdown().await.context("broker shutdown")?;
    result
}

async fn run(brokers: &str, dir: &Path, args: &CompactionBenchArgs) -> anyhow::Result<()> {
    let admin = kafka::admin_client(brokers)?;
    let topic = "bench-compacted";
    let probe_topic = "bench-probe";
    let big = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("segment.bytes", "16777216")
        .set("min.cleanable.dirty.ratio", "0.01");
    let probe = NewTopic::new(probe_topic, 1, TopicReplication::Fixed(1));
    for r in admin
        .create_topics([&big, &probe], &kafka::admin_options())
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create {t}: {e}"))?;
    }
    let partition_dir = dir.join("broker/topics").join(topic).join("0");

    // Fill.
    let filler: FutureProducer = kafka::client_config(brokers)
        .set("acks", "1")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "262144")
        .create()?;
    let records = args.mib * 1024 * 1024 / RECORD as u64;
    let value = vec![b'v'; RECORD - 16];
    let started = Instant::now();
    let mut pending = Vec::with_capacity(10_000);
    for i in 0..records {
        let key = format!("key-{:010}", i % args.keys);
        let sent = filler
            .send_result(FutureRecord::to(topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .context("queueing a record")?;
        pending.push(sent);
        if pending.len() == 10_000 {
            for delivery in pending.drain(..) {
                delivery.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    filler.flush(Duration::from_secs(30))?;
    let filled = dir_size(&partition_dir);
    println!(
        "filled {} records ({:.0} MiB on disk) in {:.1} s",
        thousands(records),
        filled as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    // Probe, idle then during the clean.
    let window = Arc::new(Mutex::new(Window::Idle));
    let idle = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let cleaning = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let probe_producer: FutureProducer = kafka::client_config(brokers)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let prober = {
        let (window, idle, cleaning, stop) =
            (window.clone(), idle.clone(), cleaning.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.is_cancelled() {
                tick.tick().await;
                let producer = probe_producer.clone();
                let (window, idle, cleaning) = (window.clone(), idle.clone(), cleaning.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let which = *window.lock();
                    let ok = producer
                        .send(
                            FutureRecord::to(probe_topic).key("p").payload("probe"),
                            Duration::from_secs(30),
                        )
                        .await
                        .is_ok();
                    let us = sent.elapsed().as_micros() as u64;
                    if ok {
                        let h = match which {
                            Window::Idle => &idle,
                            Window::Cleaning => &cleaning,
                            Window::After => return,
                        };
                        let _ = h.lock().record(us.max(1));
                    }
                });
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;

    *window.lock() = Window::Cleaning;
    let clean_started = Instant::now();
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    alter = alter
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "16777216")
        .set("min.cleanable.dirty.ratio", "0.01");
    for r in admin
        .alter_configs([&alter], &kafka::admin_options())
        .await?
    {
        r.map_err(|(res, e)| anyhow::anyhow!("cannot alter {res:?}: {e}"))?;
    }
    // The clean swaps its segments in at the end: the directory shrinks then.
    let deadline = Instant::now() + Duration::from_secs(600);
    while dir_size(&partition_dir) > filled / 2 {
        if Instant::now() > deadline {
            stop.cancel();
            bail!("the clean did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = clean_started.elapsed();
    *window.lock() = Window::After;
    stop.cancel();
    let _ = prober.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = dir_size(&partition_dir);
    println!(
        "clean: {:.0} MiB -> {:.1} MiB in {:.2} s (from the config change to the swap, cleaner check interval 100 ms included): {:.0} MiB/s",
        filled as f64 / 1048576.0,
        after as f64 / 1048576.0,
        took.as_secs_f64(),
        filled as f64 / 1048576.0 / took.as_secs_f64()
    );
    let (idle, cleaning) = (idle.lock(), cleaning.lock());
    let line = |name: &str, h: &Histogram<u64>| {
        println!(
            "probe produce latency {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} records)",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            thousands(h.len())
        );
    };
    line("idle      ", &idle);
    line("during the clean", &cleaning);
    if !idle.is_empty() && !cleaning.is_empty() {
        println!(
            "ratio during/idle: p50 {:.2}x, p99 {:.2}x",
            cleaning.value_at_quantile(0.5) as f64 / idle.value_at_quantile(0.5).max(1) as f64,
            cleaning.value_at_quantile(0.99) as f64 / idle.value_at_quantile(0.99).max(1) as f64
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Window {
    Idle,
    Cleaning,
    After,
}

/// Bytes of the partition's `.log` segment files (the indexes are preallocated).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
