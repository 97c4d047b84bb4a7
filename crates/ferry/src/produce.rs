//! `ferry produce TOPIC`: each line of stdin becomes one message; reports how many the broker acknowledged.

use std::io::BufRead;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rdkafka::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::kafka::{self, Acks, BrokersArg, QuietContext};

/// How long librdkafka keeps retrying one message before reporting it failed.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to send to.
    topic: String,
    /// Key of every message (default: none, so the partitioner spreads them).
    #[arg(long)]
    key: Option<String>,
    /// Send every message to this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// When the broker answers: after fsync (all), after append (1), or never (0).
    #[arg(long, value_enum, default_value_t = Acks::All)]
    acks: Acks,
    #[command(flatten)]
    brokers: BrokersArg,
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || produce_stdin(&args)).await?
}

/// Counts delivery reports; keeps the first failure to show it.
#[derive(Debug, Default)]
pub struct DeliveryCounter {
    acknowledged: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryCounter {
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap().clone()
    }

    /// Records one delivery report; true when the broker acknowledged the message.
    pub fn record(&self, result: &DeliveryResult<'_>) -> bool {
        match result {
            Ok(_) => {
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| error.to_string());
                false
            }
        }
    }
}

impl ClientContext for DeliveryCounter {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        QuietContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        QuietContext.error(error, reason);
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.record(result);
    }
}

/// Enqueues a record, waiting while librdkafka's local queue is full (its background thread drains it).
pub fn send_blocking<C, K, P>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
    mut on_retry: impl FnMut(&mut BaseRecord<'_, K, P, C::DeliveryOpaque>),
) -> anyhow::Result<()>
where
    C: ProducerContext + 'static,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), mut back)) => {
                std::thread::sleep(Duration::from_millis(1));
                on_retry(&mut back);
                record = back;
            }
            Err((e, _)) => return Err(e).context("cannot enqueue a message"),
        }
    }
}

fn produce_stdin(args: &ProduceArgs) -> anyhow::Result<()> {
    let brokers = &args.brokers.brokers;
    let mut config = kafka::client_config(brokers);
    config
        .set("acks", args.acks.as_config())
        .set(
            "message.timeout.ms",
            MESSAGE_TIMEOUT.as_millis().to_string(),
        )
        .set("linger.ms", "5");
    let producer: ThreadedProducer<DeliveryCounter> =
        ThreadedProducer::from_config_and_context(&config, DeliveryCounter::default())
            .context("cannot create a Kafka producer")?;
    kafka::fetch_metadata(producer.client(), brokers, None)?;

    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    let mut sent = 0u64;
    loop {
        line.clear();
        if stdin
            .read_until(b'\n', &mut line)
            .context("cannot read stdin")?
            == 0
        {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let mut record = BaseRecord::to(&args.topic).payload(&line[..]);
        if let Some(key) = &args.key {
            record = record.key(key.as_bytes());
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        send_blocking(&producer, record, |_| {})?;
        sent += 1;
    }
    // Every message either gets a delivery report within MESSAGE_TIMEOUT or flush gives up shortly after.
    let flushed = producer.flush(MESSAGE_TIMEOUT + Duration::from_secs(5));

    let counter = producer.context();
    let (acknowledged, failed) = (counter.acknowledged(), counter.failed());
    let what = if args.acks == Acks::None {
        "sent"
    } else {
        "acknowledged"
    };
    println!(
        "produced {sent} message(s) to {}: {acknowledged} {what}, {failed} failed",
        args.topic
    );
    if let Some(error) = counter.first_error() {
        bail!("{failed} of {sent} message(s) failed: {error}");
    }
    flushed.context("not every message was delivered in time")?;
    if acknowledged != sent {
        bail!("only {acknowledged} of {sent} message(s) were acknowledged");
    }
    Ok(())
}
