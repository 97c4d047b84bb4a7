//! Committed offsets survive a SIGKILL of the broker: the group resumes where it committed,
//! nothing is lost, and nothing is repeated beyond the uncommitted tail. On both group protocols:
//! classic and consumer (KIP-848, where commits carry the member epoch, OffsetCommit v9).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::ChildBroker;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};

const TOPIC: &str = "resume";
const MESSAGES: usize = 1000;

fn consumer(addr: &str, protocol: &str) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr)
        .set("group.id", format!("resumers-{protocol}"))
        .set("group.protocol", protocol)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100");
    // The consumer protocol's session timeout is the broker's, not the client's.
    if protocol == "classic" {
        config.set("session.timeout.ms", "6000");
    }
    config.create().unwrap()
}

/// Poll until `n` more records arrived (or 30 s), returning (partition, offset) pairs.
fn take(consumer: &BaseConsumer, n: usize) -> Vec<(i32, i64)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consumer error");
            got.push((m.partition(), m.offset()));
        }
    }
    got
}

#[test]
fn group_resumes_from_committed_offsets_after_sigkill() {
    resumes_after_sigkill("classic");
}

#[test]
fn consumer_protocol_group_resumes_from_committed_offsets_after_sigkill() {
    resumes_after_sigkill("consumer");
}

fn resumes_after_sigkill(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), &["--default-partitions", "3"]);

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..MESSAGES {
        let value = i.to_string();
        producer
            .send(
                BaseRecord::<str, str>::to(TOPIC)
                    .key(&value)
                    .payload(&value)
                    .partition((i % 3) as i32),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    drop(producer);

    // Consume 600, commit exactly those, then read 50 more without committing.
    let c = consumer(&broker.addr, protocol);
    c.subscribe(&[TOPIC]).unwrap();
    let first = take(&c, 600);
    assert_eq!(first.len(), 600);
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &first {
        let next = committed.entry(*p).or_insert(0);
        *next = (*next).max(o + 1);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, next) in &committed {
        tpl.add_partition_offset(TOPIC, *p, rdkafka::Offset::Offset(*next))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync)
        .expect("commit acknowledged");
    let tail = take(&c, 50);
    assert_eq!(tail.len(), 50);
    if protocol == "consumer" {
        assert!(
            broker.logged("member joined"),
            "the member joined through ConsumerGroupHeartbeat"
        );
    }
    drop(c);

    broker.kill();
    let broker = ChildBroker::start(dir.path(), &["--default-partitions", "3"]);
    let c = consumer(&broker.addr, protocol);
    c.subscribe(&[TOPIC]).unwrap();
    let rest = take(&c, MESSAGES - 600);

    // Resumed exactly at the committed offsets: every partition starts there.
    let mut firsts: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &rest {
        firsts.entry(*p).or_insert(*o);
    }
    for p in 0..3 {
        let size = (0..MESSAGES).filter(|i| i % 3 == p as usize).count() as i64;
        let at = committed.get(&p).copied().unwrap_or(0);
        let expected = (at < size).then_some(at);
        assert_eq!(
            firsts.get(&p).copied(),
            expected,
            "partition {p} resumes at its commit {at} (of {size})"
        );
    }
    // Nothing lost: before + after covers every record once; only the uncommitted tail repeats.
    let before: HashSet<(i32, i64)> = first.iter().copied().collect();
    let after: HashSet<(i32, i64)> = rest.iter().copied().collect();
    assert_eq!(rest.len(), after.len(), "no duplicates after the restart");
    assert!(
        before.is_disjoint(&after),
        "committed records are not read again"
    );
    assert_eq!(before.len() + after.len(), MESSAGES, "nothing lost");
    let repeated: HashSet<(i32, i64)> =
        tail.iter().copied().filter(|r| after.contains(r)).collect();
    assert_eq!(
        repeated.len(),
        tail.len(),
        "exactly the uncommitted tail is read again"
    );
}
