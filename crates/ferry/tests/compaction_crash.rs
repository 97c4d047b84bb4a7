//! A broker killed (SIGKILL) in the middle of a clean comes back with either the old segment set
//! or the cleaned one, never a mix: the cleaner is stopped for good (test-only
//! `FERRY_TEST_CLEANER_PAUSE`) after writing its `.cleaned` file, or after renaming it to `.swap`
//! (the commit point), the process is killed there, and a restarted broker serves the partition.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ChildBroker, eventually};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "compacted";

type Rec = (i64, String, String);

fn create_topic(addr: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "4096")
        .set("min.cleanable.dirty.ratio", "0.01");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime
        .block_on(admin.create_topics(&[topic], &AdminOptions::new()))
        .unwrap();
    assert!(result[0].is_ok(), "{result:?}");
}

/// Produces `n` keyed records (acks=all, one at a time so each offset is known).
fn produce(addr: &str, n: usize) -> Vec<Rec> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..n {
        let key = format!("key-{}", i % 30);
        let value = format!("value-{i}");
        producer
            .send(BaseRecord::to(TOPIC).key(&key).payload(&value))
            .unwrap();
        // Waiting for each round keeps batches (and so segments) small enough to roll often.
        if i % 30 == 29 {
            producer.flush(Duration::from_secs(30)).unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    // Offsets are assigned in send order on one partition from one producer without retries.
    (0..n)
        .map(|i| (i as i64, format!("key-{}", i % 30), format!("value-{i}")))
        .collect()
}

fn read_all(addr: &str) -> Vec<Rec> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "compaction-crash-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "reading back took over 30 s");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => {}
        }
    }
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

/// The cleaned image of `model` up to `cut`: each key's latest record below `cut`, all from `cut`.
fn cleaned(model: &[Rec], cut: i64) -> Vec<Rec> {
    let mut latest = HashMap::new();
    for r in model.iter().filter(|r| r.0 < cut) {
        latest.insert(r.1.clone(), r.0);
    }
    model
        .iter()
        .filter(|r| r.0 >= cut || latest[&r.1] == r.0)
        .cloned()
        .collect()
}

fn crash_at(stage: &str) -> (Vec<Rec>, Vec<Rec>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let partition = data.join("topics").join(TOPIC).join("0");
    let suffix = format!(".log.{stage}");
    let broker = ChildBroker::start_with_env(
        data,
        &["--log-cleaner-backoff-ms", "100"],
        &[("FERRY_TEST_CLEANER_PAUSE", stage)],
    );
    create_topic(&broker.addr);
    let model = produce(&broker.addr, 900);
    assert!(
        eventually(Duration::from_secs(30), || !files_ending(
            &partition, &suffix
        )
        .is_empty()),
        "the cleaner never reached its {stage} file; the partition holds {:?}",
        files_ending(&partition, "")
    );
    broker.kill();

    // No cleaning after the restart: what is read is what recovery made of the interrupted clean.
    let broker = ChildBroker::start(data, &["--log-cleaner-backoff-ms", "3600000"]);
    let seen = read_all(&broker.addr);
    assert!(files_ending(&partition, ".cleaned").is_empty());
    assert!(files_ending(&partition, ".swap").is_empty());
    // The log end did not move: the next record gets the next offset.
    let next = produce_one(&broker.addr);
    assert_eq!(next, model.len() as i64);
    broker.kill();
    (model, seen)
}

fn produce_one(addr: &str) -> i64 {
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(
            producer.send(
                rdkafka::producer::FutureRecord::to(TOPIC)
                    .key("after")
                    .payload("restart"),
                Duration::from_secs(10),
            ),
        )
        .unwrap()
        .offset
}

#[test]
fn killed_after_writing_the_cleaned_file_keeps_the_old_segments() {
    let (model, seen) = crash_at("cleaned");
    assert_eq!(seen, model);
}

#[test]
fn killed_after_the_swap_commit_comes_back_with_the_cleaned_segments() {
    let (model, seen) = crash_at("swap");
    assert!(seen.len() < model.len(), "nothing was cleaned");
    let cut = model
        .iter()
        .map(|r| r.0)
        .find(|&c| cleaned(&model, c) == seen);
    assert!(
        cut.is_some(),
        "not a cleaned image of what was produced: {seen:?}"
    );
}
