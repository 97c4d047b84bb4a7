//! The produce side of the benchmarks: a librdkafka producer sending fixed-size messages as fast as it may
//! (or at a fixed rate), timing each message from enqueue to its delivery report.

use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use super::{Load, Progress};
use crate::kafka::{self, QuietContext};
use crate::produce::{DeliveryCounter, send_blocking};

/// Longest a message may wait for its acknowledgement before it counts as failed.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ProduceReport {
    pub acknowledged: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// From the first send to the last delivery report.
    pub elapsed: Duration,
    /// Enqueue to delivery report, in microseconds, for acknowledged messages.
    pub latency_us: Histogram<u64>,
}

impl ProduceReport {
    pub fn messages_per_s(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64()
    }
}

/// Counts deliveries and records each acknowledged message's latency. The delivery opaque is the send time in
/// nanoseconds since `start`, so no allocation is made per message.
struct LatencyContext {
    start: Instant,
    counter: DeliveryCounter,
    latency_us: Mutex<Histogram<u64>>,
}

impl LatencyContext {
    fn now_ns(&self) -> usize {
        self.start.elapsed().as_nanos() as usize
    }
}

impl ClientContext for LatencyContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        QuietContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        QuietContext.error(error, reason);
    }
}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        if self.counter.record(result) {
            let micros = self.now_ns().saturating_sub(sent_ns) as u64 / 1000;
            self.latency_us
                .lock()
                .unwrap()
                .saturating_record(micros.max(1));
        }
    }
}

pub(super) fn producer_config(brokers: &str, load: &Load) -> ClientConfig {
    let mut config = kafka::client_config(brokers);
    config
        .set("acks", load.acks.as_config())
        .set("linger.ms", load.linger_ms.to_string())
        .set("batch.size", load.batch_bytes.to_string())
        // Let batch.size, not the message count or the 1 MB default frame limit, bound a batch.
        .set("batch.num.messages", "1000000")
        .set(
            "message.max.bytes",
            (load.batch_bytes + 64 * 1024).max(1_000_000).to_string(),
        )
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "none")
        .set(
            "message.timeout.ms",
            MESSAGE_TIMEOUT.as_millis().to_string(),
        );
    config
}

/// Sends `load.messages` messages of `load.size` bytes to `topic` from `load.producers` producers at
/// once and waits for every delivery report. With `rate`, sends at that many messages per second in
/// all instead of as fast as possible. The clock starts when every producer is connected.
pub fn produce(
    brokers: &str,
    topic: &str,
    load: &Load,
    rate: Option<u64>,
) -> anyhow::Result<ProduceReport> {
    let producers = u64::from(load.producers);
    let ready = Barrier::new(load.producers as usize);
    let reports = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..producers)
            .map(|i| {
                // The first producers take one message more when the count does not divide evenly.
                let share = load.messages / producers + u64::from(i < load.messages % producers);
                let rate = rate.map(|r| (r / producers).max(1));
                let ready = &ready;
                scope.spawn(move || produce_one(brokers, topic, load, share, rate, ready, i == 0))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("producer thread panicked"))
            .collect::<Vec<_>>()
    });
    let mut reports = reports.into_iter();
    let mut total = reports.next().expect("at least one producer")?;
    for report in reports {
        let report = report?;
        total.acknowledged += report.acknowledged;
        total.failed += report.failed;
        total.first_error = total.first_error.or(report.first_error);
        total.elapsed = total.elapsed.max(report.elapsed);
        total
            .latency_us
            .add(&report.latency_us)
            .context("merging latency histograms")?;
    }
    Ok(total)
}

/// One producer: `messages` messages, its progress shown if `show_progress`; timing starts when every
/// producer passed `ready`.
fn produce_one(
    brokers: &str,
    topic: &str,
    load: &Load,
    messages: u64,
    rate: Option<u64>,
    ready: &Barrier,
    show_progress: bool,
) -> anyhow::Result<ProduceReport> {
    let connected = connect(brokers, topic, load);
    // Wait even when connecting failed, so the other producers are not left at the barrier.
    ready.wait();
    let producer = connected?;
    let payload = payload(load.size);
    let context = producer.context().clone();

    let mut progress = show_progress.then(|| Progress::new("produce", messages));
    let started = Instant::now();
    for i in 0..messages {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, context.now_ns())
            .payload(&payload[..]);
        // A wait for queue space is the client's, not the broker's: restart the clock when the message gets in.
        send_blocking(&producer, record, |r| r.delivery_opaque = context.now_ns())?;
        if i.is_multiple_of(16_384)
            && let Some(progress) = progress.as_mut()
        {
            progress.update(context.counter.acknowledged());
        }
    }
    let deadline = Instant::now() + MESSAGE_TIMEOUT + Duration::from_secs(5);
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        // Wake up often enough for the progress line; flush returns early once everything was delivered.
        let _ = producer.flush(Duration::from_millis(250));
        if let Some(progress) = progress.as_mut() {
            progress.update(context.counter.acknowledged());
        }
    }
    let elapsed = started.elapsed();
    if let Some(progress) = progress.as_mut() {
        progress.finish();
    }

    let report = ProduceReport {
        acknowledged: context.counter.acknowledged(),
        failed: context.counter.failed(),
        first_error: context.counter.first_error(),
        elapsed,
        latency_us: context.latency_us.lock().unwrap().clone(),
    };
    anyhow::ensure!(
        producer.in_flight_count() == 0,
        "{} message(s) still unacknowledged after {:?}",
        producer.in_flight_count(),
        MESSAGE_TIMEOUT
    );
    Ok(report)
}

/// A producer with its latency context, connected and with `topic`'s metadata.
fn connect(
    brokers: &str,
    topic: &str,
    load: &Load,
) -> anyhow::Result<ThreadedProducer<LatencyContext>> {
    let context = LatencyContext {
        start: Instant::now(),
        counter: DeliveryCounter::default(),
        latency_us: Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).context("histogram bounds")?,
        ),
    };
    let producer =
        ThreadedProducer::from_config_and_context(&producer_config(brokers, load), context)
            .context("cannot create a Kafka producer")?;
    kafka::fetch_metadata(producer.client(), brokers, Some(topic))?;
    Ok(producer)
}

/// A printable payload of `size` bytes.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}
