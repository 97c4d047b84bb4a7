//! `ferry bench produce --transactional`: the same load sent in Kafka transactions of N messages
//! (one transactional producer per `--producers`), timing each commit from the last message's
//! enqueue to `commit_transaction`'s return: the delivery of the transaction's last messages,
//! EndTxn, and the broker writing and fsyncing the markers.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use super::Load;
use super::produce::payload;
use crate::kafka::{self, QuietContext};
use crate::produce::send_blocking;

/// Longest an init, a commit or the flush before it may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Quiet logging; a failed delivery fails the transaction, which `commit_transaction` reports.
struct TxnContext;

impl ClientContext for TxnContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        QuietContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        QuietContext.error(error, reason);
    }
}

impl ProducerContext for TxnContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

#[derive(Debug)]
pub struct TxnReport {
    pub messages: u64,
    pub transactions: u64,
    /// From the first begin to the last commit.
    pub elapsed: Duration,
    /// `commit_transaction` call to return, in microseconds.
    pub commit_us: Histogram<u64>,
}

impl TxnReport {
    pub fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `load.messages` to `topic` in transactions of `per_txn` messages from `load.producers`
/// transactional producers at once.
pub fn produce(brokers: &str, topic: &str, load: &Load, per_txn: u64) -> anyhow::Result<TxnReport> {
    let producers = u64::from(load.producers);
    let ready = Barrier::new(load.producers as usize);
    let run = format!("ferry-bench-{}", std::process::id());
    let reports = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..producers)
            .map(|i| {
                let share = load.messages / producers + u64::from(i < load.messages % producers);
                let (ready, id) = (&ready, format!("{run}-{i}"));
                scope.spawn(move || produce_one(brokers, topic, load, share, per_txn, &id, ready))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("transactional producer thread panicked"))
            .collect::<Vec<_>>()
    });
    let mut total: Option<TxnReport> = None;
    for report in reports {
        let report = report?;
        match total.as_mut() {
            None => total = Some(report),
            Some(t) => {
                t.messages += report.messages;
                t.transactions += report.transactions;
                t.elapsed = t.elapsed.max(report.elapsed);
                t.commit_us
                    .add(&report.commit_us)
                    .context("merging histograms")?;
            }
        }
    }
    total.context("no producer")
}

fn produce_one(
    brokers: &str,
    topic: &str,
    load: &Load,
    messages: u64,
    per_txn: u64,
    transactional_id: &str,
    ready: &Barrier,
) -> anyhow::Result<TxnReport> {
    let connected = connect(brokers, topic, load, transactional_id);
    ready.wait();
    let producer = connected?;
    let payload = payload(load.size);
    let mut commit_us =
        Histogram::new_with_bounds(1, 3_600_000_000, 3).context("histogram bounds")?;
    let mut sent = 0;
    let mut transactions = 0;
    let started = Instant::now();
    while sent < messages {
        producer.begin_transaction().context("begin_transaction")?;
        let n = per_txn.min(messages - sent);
        for _ in 0..n {
            let record = BaseRecord::<(), [u8], ()>::to(topic).payload(&payload[..]);
            send_blocking(&producer, record, |_| {})?;
        }
        let commit = Instant::now();
        // The rdkafka crate's commit_transaction first flushes, polling in 100 ms steps that the
        // ThreadedProducer's own poll thread makes it sleep through; waiting here in short steps
        // first leaves it nothing to wait for, so the figure is the broker's, not that sleep.
        let deadline = commit + TIMEOUT;
        while producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        producer
            .commit_transaction(TIMEOUT)
            .context("commit_transaction")?;
        commit_us.saturating_record((commit.elapsed().as_micros() as u64).max(1));
        sent += n;
        transactions += 1;
    }
    Ok(TxnReport {
        messages: sent,
        transactions,
        elapsed: started.elapsed(),
        commit_us,
    })
}

fn connect(
    brokers: &str,
    topic: &str,
    load: &Load,
    transactional_id: &str,
) -> anyhow::Result<ThreadedProducer<TxnContext>> {
    let mut config = super::produce::producer_config(brokers, load);
    config
        .set("transactional.id", transactional_id)
        // Transactions need acks=all (librdkafka refuses anything else with idempotence).
        .set("acks", "all");
    let producer = ThreadedProducer::from_config_and_context(&config, TxnContext)
        .context("cannot create a transactional producer")?;
    kafka::fetch_metadata(producer.client(), brokers, Some(topic))?;
    producer
        .init_transactions(TIMEOUT)
        .context("init_transactions")?;
    Ok(producer)
}
