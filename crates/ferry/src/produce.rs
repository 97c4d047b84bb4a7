//! `ferry produce TOPIC`: each line of stdin becomes one message (or `--value-file` one message of a
//! file's exact bytes), with a key, headers and CloudEvents attributes if asked; reports how many
//! the broker acknowledged.

use std::io::BufRead;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rdkafka::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::kafka::{self, Acks, BrokersArg, QuietContext};

/// How long librdkafka keeps retrying one message before reporting it failed.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to send to.
    topic: String,
    /// Key of every message (default: none, so the partitioner spreads them).
    #[arg(long, conflicts_with = "key_delimiter")]
    key: Option<String>,
    /// Split each line at the first DELIM into key and value (a line without it has no key).
    #[arg(long, value_name = "DELIM")]
    key_delimiter: Option<String>,
    /// A header on every message, NAME=VALUE (repeatable; the value may be empty).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Send one message whose value is this file's bytes, exactly (binary-safe), instead of
    /// reading lines from stdin.
    #[arg(long, value_name = "PATH", conflicts_with = "key_delimiter")]
    value_file: Option<std::path::PathBuf>,
    /// Make every message a CloudEvent of this type (binary content mode of the Kafka protocol
    /// binding): sets ce_specversion, ce_id (a new UUID v7 each), ce_source, ce_type, ce_time
    /// and, unless a --header sets it, content-type application/json.
    #[arg(long = "type", value_name = "TYPE")]
    ce_type: Option<String>,
    /// The CloudEvents source with --type.
    #[arg(
        long,
        value_name = "URI",
        default_value = "/ferry/cli",
        requires = "ce_type"
    )]
    source: String,
    /// Send every message to this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// When the broker answers: after fsync (all), after append (1), or never (0).
    #[arg(long, value_enum, default_value_t = Acks::All)]
    acks: Acks,
    #[command(flatten)]
    brokers: BrokersArg,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("{s:?} has an empty header name")),
        Some((name, value)) => Ok((name.to_owned(), value.to_owned())),
        None => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// The headers of one message: CloudEvents attributes first (with `--type`), then `--header`s.
fn headers_for(args: &ProduceArgs) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(ce_type) = &args.ce_type {
        let id = uuid::Uuid::now_v7().to_string();
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        for (key, value) in [
            ("ce_specversion", "1.0"),
            ("ce_id", id.as_str()),
            ("ce_source", args.source.as_str()),
            ("ce_type", ce_type.as_str()),
            ("ce_time", time.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if !args.headers.iter().any(|(n, _)| n == "content-type") {
            headers = headers.insert(Header {
                key: "content-type",
                value: Some("application/json"),
            });
        }
    }
    for (key, value) in &args.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
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

    let mut sent = 0u64;
    let send = |key: Option<&[u8]>, value: &[u8]| -> anyhow::Result<()> {
        let mut record = BaseRecord::to(&args.topic)
            .payload(value)
            .headers(headers_for(args));
        if let Some(key) = key.or(args.key.as_deref().map(str::as_bytes)) {
            record = record.key(key);
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        send_blocking(&producer, record, |_| {})
    };
    if let Some(path) = &args.value_file {
        let value =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        send(None, &value)?;
        sent += 1;
    }
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    while args.value_file.is_none() {
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
        let delimited = args.key_delimiter.as_deref().and_then(|d| {
            let d = d.as_bytes();
            (!d.is_empty())
                .then(|| line.windows(d.len()).position(|w| w == d))
                .flatten()
                .map(|at| (&line[..at], &line[at + d.len()..]))
        });
        match delimited {
            Some((key, value)) => send(Some(key), value)?,
            None => send(None, &line)?,
        }
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
