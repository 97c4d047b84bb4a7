//! `ferry bench dlq`: how fast a router dead-letters a flood of poison records, and how long a good
//! message produced right behind the flood waits before its handler runs.
//!
//! A toolkit router (the one every service runs) consumes the bench topic. Once it has joined its
//! group, the bench produces `--messages` poison records as fast as librdkafka sends them (acks=all),
//! then publishes one good message with the typed publisher. It reports the dead letters per second,
//! timed from the flood's first record produced to its last letter acknowledged in `<topic>.dlq`,
//! and the good message's delay, from the start of its publish to its handler call. With
//! `--backlog` the flood and the good message are on the topic before the router starts, and both
//! clocks start when it has joined. The router runs in this process, as services do under `ferry up`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ferry_toolkit::kafka::{self as toolkit_kafka, KafkaConfig};
use ferry_toolkit::{
    HandlerError, Message, MessageContext, Publisher, RetryPolicy, Router, handler_fn,
};
use parking_lot::Mutex;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use super::{RunningBroker, Target, blocking, create_bench_topic};
use crate::kafka::{self, thousands};

#[derive(Debug, Args)]
pub struct DlqBenchArgs {
    #[command(flatten)]
    target: Target,
    /// Poison records in the flood.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Payload size of each poison record in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Partitions of the bench topic (1: the whole flood sits in front of the good message).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// What is wrong with the poison records.
    #[arg(long, value_enum, default_value_t = Poison::Undecodable)]
    poison: Poison,
    /// Produce the flood and the good message before the router starts (a service coming back to
    /// a backlog), and time from its join instead of from the flood.
    #[arg(long)]
    backlog: bool,
}

/// The kinds of poison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Poison {
    /// Bytes without an envelope (what `ferry produce` of junk lines writes): dead-lettered undecoded.
    Undecodable,
    /// Well-formed messages the handler rejects with a permanent error.
    Rejected,
}

/// The bench's message type.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchMessage {
    id: u64,
    good: bool,
    #[serde(default)]
    pad: String,
}

impl Message for BenchMessage {
    const TYPE: &'static str = "ferry.bench.dlq";
    fn key(&self) -> String {
        self.id.to_string()
    }
}

/// Longest the bench waits for the router or the dead letters before it gives up.
const DEADLINE: Duration = Duration::from_secs(600);

pub async fn bench(args: DlqBenchArgs) -> anyhow::Result<()> {
    let broker = RunningBroker::start(&args.target).await?;
    println!(
        "ferry bench dlq: {} {:?} poison records x {} B, then one good message; {} partition(s){}; broker: {}",
        thousands(args.messages),
        args.poison,
        args.size,
        args.partitions,
        if args.backlog { ", as a backlog" } else { "" },
        broker.describe()
    );
    let topic = create_bench_topic(&broker.brokers, args.partitions).await?;
    let result = run(&broker.brokers, &topic, &args).await;
    broker.stop().await?;
    let report = result?;
    let letters_s = report.letters_done.as_secs_f64();
    println!(
        "flood:    {} records produced and acknowledged in {:.2} s",
        thousands(args.messages),
        report.flood_acked.as_secs_f64()
    );
    let (from, good_from) = if args.backlog {
        ("the router's join", "the router's join")
    } else {
        ("the first poison record produced", "its publish started")
    };
    println!(
        "dead letters: {} in {letters_s:.2} s: {} letters/s ({from} to the last letter acknowledged)",
        thousands(args.messages),
        thousands((args.messages as f64 / letters_s) as u64)
    );
    println!(
        "good message: handled {:.2} s after {good_from}, behind {} poison records",
        report.good_delay.as_secs_f64(),
        thousands(args.messages)
    );
    Ok(())
}

struct Report {
    flood_acked: Duration,
    letters_done: Duration,
    good_delay: Duration,
}

async fn run(brokers: &str, topic: &str, args: &DlqBenchArgs) -> anyhow::Result<Report> {
    let config = KafkaConfig::new(brokers);
    let publisher = Publisher::kafka(&config).context("cannot create a producer")?;
    let handled_good: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = handled_good.clone();
    let router = Router::new(format!("{topic}-router"))
        .subscribe(topic)
        .retry(RetryPolicy::no_retries())
        .handle(handler_fn(move |m: BenchMessage, _ctx: MessageContext| {
            if m.good {
                seen.lock().get_or_insert_with(Instant::now);
            }
            async move {
                if m.good {
                    Ok(())
                } else {
                    Err(HandlerError::permanent("poison"))
                }
            }
        }));
    let good = BenchMessage {
        id: u64::MAX,
        good: true,
        pad: String::new(),
    };

    // Live: the router is running when the flood arrives, and the good message follows it.
    // Backlog: flood and good message wait on the topic; the clock starts when the router joins.
    let (handle, started, flood_acked, good_sent) = if args.backlog {
        let flooding = Instant::now();
        flood(brokers, topic, args).await?;
        let flood_acked = flooding.elapsed();
        publish(&publisher, topic, good).await?;
        let handle = start(router, &config, &publisher).await?;
        let joined = Instant::now();
        (handle, joined, flood_acked, joined)
    } else {
        let handle = start(router, &config, &publisher).await?;
        let started = Instant::now();
        flood(brokers, topic, args).await?;
        let flood_acked = started.elapsed();
        let good_sent = Instant::now();
        publish(&publisher, topic, good).await?;
        (handle, started, flood_acked, good_sent)
    };

    let dlq = ferry_toolkit::dlq::topic_for(topic);
    let (brokers_owned, expected) = (brokers.to_owned(), args.messages as i64);
    let letters = blocking(move || wait_for_letters(&brokers_owned, &dlq, expected));
    let handled = async {
        loop {
            if let Some(at) = *handled_good.lock() {
                return Ok(at.saturating_duration_since(good_sent));
            }
            if good_sent.elapsed() > DEADLINE {
                bail!("the good message was not handled within {DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (letters_at, good_delay) = tokio::try_join!(letters, handled)?;
    handle.shutdown().await;
    Ok(Report {
        flood_acked,
        letters_done: letters_at.saturating_duration_since(started),
        good_delay,
    })
}

/// Starts the router and waits until it has joined its group and has its partitions.
async fn start(
    router: Router,
    config: &KafkaConfig,
    publisher: &Publisher,
) -> anyhow::Result<toolkit_kafka::RouterHandle> {
    let handle = toolkit_kafka::start_router(router, config, publisher.clone())
        .context("cannot start the router")?;
    let joining = Instant::now();
    while !handle.is_ready() || handle.assignment().is_empty() {
        if joining.elapsed() > DEADLINE {
            bail!("the router did not join its group");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(handle)
}

async fn publish(publisher: &Publisher, topic: &str, message: BenchMessage) -> anyhow::Result<()> {
    publisher
        .publish(topic, message)
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Produces the poison records, all enqueued before any acknowledgement is awaited.
async fn flood(brokers: &str, topic: &str, args: &DlqBenchArgs) -> anyhow::Result<()> {
    let mut config = kafka::client_config(brokers);
    config
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000");
    let producer: FutureProducer<kafka::QuietContext> = config
        .create_with_context(kafka::QuietContext)
        .context("cannot create a producer")?;
    let mut deliveries = Vec::with_capacity(args.messages as usize);
    for i in 0..args.messages {
        let key = i.to_string();
        let (payload, headers) = match args.poison {
            Poison::Undecodable => (vec![b'x'; args.size], OwnedHeaders::new()),
            Poison::Rejected => {
                let message = BenchMessage {
                    id: i,
                    good: false,
                    pad: "x".repeat(args.size.saturating_sub(30)),
                };
                let id = uuid_v7_text(i);
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: ferry_toolkit::header::MESSAGE_ID,
                        value: Some(&id),
                    })
                    .insert(Header {
                        key: ferry_toolkit::header::TYPE,
                        value: Some(BenchMessage::TYPE),
                    });
                (serde_json::to_vec(&message)?, headers)
            }
        };
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((e, _)) => bail!("cannot enqueue a poison record: {e}"),
        }
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("a poison record was not acknowledged: {e}"),
            Err(_) => bail!("the producer went away"),
        }
    }
    Ok(())
}

/// A distinct, well-formed message id per poison record.
fn uuid_v7_text(i: u64) -> String {
    format!("01900000-0000-7000-8000-{:012x}", i & 0xffff_ffff_ffff)
}

/// Waits until `dlq` holds `expected` letters; returns when it saw them.
fn wait_for_letters(brokers: &str, dlq: &str, expected: i64) -> anyhow::Result<Instant> {
    let consumer = kafka::plain_consumer(&kafka::client_config(brokers))?;
    let started = Instant::now();
    loop {
        let metadata = consumer
            .fetch_metadata(Some(dlq), kafka::METADATA_TIMEOUT)
            .context("cannot read the dead-letter topic")?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let mut held = 0;
        for p in 0..partitions {
            if let Ok((low, high)) = consumer.fetch_watermarks(dlq, p, kafka::METADATA_TIMEOUT) {
                held += high - low;
            }
        }
        if held >= expected {
            return Ok(Instant::now());
        }
        if started.elapsed() > DEADLINE {
            bail!("only {held} of {expected} dead letters within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
