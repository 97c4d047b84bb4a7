//! Crash safety: with acks=all, an acknowledged message survives the broker process being killed.
//!
//! Starts `ferry broker` as a child process, produces numbered messages to a 3-partition topic with acks=all,
//! and kills the broker with SIGKILL while messages are still in flight. After a restart on the same data
//! directory, every acknowledged message must be at exactly the partition and offset its acknowledgement named,
//! every partition's offsets must run densely from 0 (a torn tail is truncated, never left as a hole), and new
//! messages must continue right after the recovered ones.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{ChildBroker, eventually};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TOPIC: &str = "crash";
const PARTITIONS: i32 = 3;
/// The broker is killed once this many messages were acknowledged...
const KILL_AFTER_ACKS: usize = 20_000;
/// ...or this long after the first send, whichever comes first.
const KILL_AFTER: Duration = Duration::from_millis(1500);

/// Where the broker said an acknowledged message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    id: usize,
    partition: i32,
    offset: i64,
}

/// Records every delivery report; the delivery opaque is the message's number.
#[derive(Default)]
struct Acks {
    acked: Mutex<Vec<Ack>>,
    failed: Mutex<Vec<(usize, String)>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        match result {
            Ok(m) => self.acked.lock().unwrap().push(Ack {
                id,
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => self.failed.lock().unwrap().push((id, e.to_string())),
        }
    }
}

fn acks_all_producer(addr: &str) -> ThreadedProducer<Acks> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "10000")
        .set("retries", "5")
        // Bounded, so that killing the broker leaves a realistic amount in flight rather than a huge backlog.
        .set("queue.buffering.max.messages", "20000")
        .create_with_context(Acks::default())
        .expect("create producer")
}

fn payload(id: usize) -> String {
    format!("message {id:08}")
}

/// Sends message `id` to partition `id % PARTITIONS`; false when the local queue is full (try again later).
fn try_send(producer: &ThreadedProducer<Acks>, id: usize) -> bool {
    let payload = payload(id);
    let record = BaseRecord::<(), str, usize>::with_opaque_to(TOPIC, id)
        .payload(payload.as_str())
        .partition(id as i32 % PARTITIONS);
    match producer.send(record) {
        Ok(()) => true,
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => false,
        Err((e, _)) => panic!("cannot enqueue message {id}: {e}"),
    }
}

/// Reads every partition from the beginning to its end: per partition, (offset, payload) in order.
fn read_all(addr: &str) -> BTreeMap<i32, Vec<(i64, String)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        // librdkafka's assign() needs a group id even though this consumer never joins or commits.
        .set("group.id", "crash-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("create consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");

    let mut log: BTreeMap<i32, Vec<(i64, String)>> =
        (0..PARTITIONS).map(|p| (p, Vec::new())).collect();
    let mut at_end = vec![false; PARTITIONS as usize];
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.contains(&false) {
        assert!(
            Instant::now() < deadline,
            "reading the topic back took over a minute"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                at_end[m.partition() as usize] = false;
                let text = String::from_utf8(m.payload().unwrap_or_default().to_vec())
                    .expect("utf-8 payload");
                log.get_mut(&m.partition())
                    .expect("known partition")
                    .push((m.offset(), text));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            Some(Err(e)) => panic!("consume failed: {e}"),
        }
    }
    log
}

/// Offsets run 0, 1, 2, ... in every partition: nothing missing, nothing twice.
#[track_caller]
fn assert_dense(log: &BTreeMap<i32, Vec<(i64, String)>>) {
    for (partition, records) in log {
        for (expected, (offset, _)) in records.iter().enumerate() {
            assert_eq!(
                *offset, expected as i64,
                "partition {partition}: offsets must be dense from 0"
            );
        }
    }
}

/// Every acknowledged message is in the log at the offset its acknowledgement gave.
#[track_caller]
fn assert_acked_present(log: &BTreeMap<i32, Vec<(i64, String)>>, acked: &[Ack]) {
    for ack in acked {
        let records = &log[&ack.partition];
        let found = records
            .get(ack.offset as usize)
            .map(|(_, text)| text.as_str());
        assert_eq!(
            found,
            Some(payload(ack.id).as_str()),
            "acknowledged message {} (partition {}, offset {}) is missing after the crash; partition holds {} records",
            ack.id,
            ack.partition,
            ack.offset,
            records.len()
        );
    }
}

#[test]
fn acknowledged_messages_survive_sigkill_and_offsets_stay_dense() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let partitions = PARTITIONS.to_string();
    let broker_args = ["--default-partitions", partitions.as_str()];

    // 1. Produce with acks=all and kill the broker mid-stream.
    let broker = ChildBroker::start(data, &broker_args);
    let producer = acks_all_producer(&broker.addr);
    let started = Instant::now();
    let mut next_id = 0;
    loop {
        let acked = producer.context().acked.lock().unwrap().len();
        if acked >= KILL_AFTER_ACKS || (acked > 0 && started.elapsed() >= KILL_AFTER) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no message acknowledged within 30 s; failures: {:?}",
            producer.context().failed.lock().unwrap().first()
        );
        if try_send(&producer, next_id) {
            next_id += 1;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let in_flight_at_kill = producer.in_flight_count();
    broker.kill();
    // No acknowledgement can arrive from a dead broker; fail what is left at once instead of retrying it.
    producer.purge(PurgeConfig::default().queue().inflight());
    let _ = producer.flush(Duration::from_secs(10));
    let acked = producer.context().acked.lock().unwrap().clone();
    let failed = producer.context().failed.lock().unwrap().len();
    drop(producer);
    assert_eq!(
        acked.len() + failed,
        next_id,
        "every message sent got exactly one delivery report"
    );
    eprintln!(
        "sent {next_id}, acknowledged {} before SIGKILL ({in_flight_at_kill} in flight at the kill), {failed} failed",
        acked.len()
    );

    // 2. Restart on the same data: every acknowledged message is there, offsets are dense.
    let broker = ChildBroker::start(data, &broker_args);
    let log = read_all(&broker.addr);
    assert_dense(&log);
    assert_acked_present(&log, &acked);
    for (partition, records) in &log {
        for (offset, text) in records {
            let id: usize = text
                .strip_prefix("message ")
                .and_then(|n| n.parse().ok())
                .expect("a message we sent");
            assert_eq!(
                id as i32 % PARTITIONS,
                *partition,
                "message at {partition}/{offset} is in the wrong partition"
            );
        }
    }
    let recovered: usize = log.values().map(Vec::len).sum();
    eprintln!(
        "recovered {recovered} messages ({} acknowledged)",
        acked.len()
    );

    // 3. New messages continue right after the recovered ones.
    const MORE: usize = 300;
    let producer = acks_all_producer(&broker.addr);
    for id in next_id..next_id + MORE {
        assert!(
            eventually(Duration::from_secs(10), || try_send(&producer, id)),
            "producer queue stayed full"
        );
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("flush after restart");
    let failures = producer.context().failed.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "messages failed after the restart: {:?}",
        &failures[..failures.len().min(5)]
    );
    let mut more = producer.context().acked.lock().unwrap().clone();
    assert_eq!(more.len(), MORE);
    more.sort_by_key(|a| (a.partition, a.offset));
    for p in 0..PARTITIONS {
        let offsets: Vec<i64> = more
            .iter()
            .filter(|a| a.partition == p)
            .map(|a| a.offset)
            .collect();
        let first = log[&p].len() as i64;
        let expected: Vec<i64> = (first..first + offsets.len() as i64).collect();
        assert_eq!(
            offsets, expected,
            "partition {p}: offsets after the restart must continue at {first}"
        );
    }
    drop(producer);

    let log = read_all(&broker.addr);
    assert_dense(&log);
    assert_acked_present(&log, &acked);
    assert_acked_present(&log, &more);
}
