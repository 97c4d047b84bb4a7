//! Compacted topics through real clients: librdkafka produces (lz4-compressed) to a
//! `cleanup.policy=compact` topic, the broker's cleaner compacts it in the background, and a
//! consumer reading from the beginning sees the latest record per key at its original offset.

mod common;

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// (offset, key, value) as produced or consumed.
type Rec = (i64, Vec<u8>, Option<Vec<u8>>);

async fn start() -> (tempfile::TempDir, ferry_broker::BrokerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.cleaner_check_interval = Duration::from_millis(100);
    let broker = common::start_with(config).await;
    (dir, broker)
}

async fn create_compacted(bootstrap: &str, topic: &str, extra: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "2048")
        .set("min.cleanable.dirty.ratio", "0.01");
    for (k, v) in extra {
        new = new.set(k, v);
    }
    let result = admin
        .create_topics(&[new], &AdminOptions::new())
        .await
        .unwrap();
    assert!(result[0].is_ok(), "{result:?}");
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.codec", "lz4")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

async fn send(p: &FutureProducer, topic: &str, key: &str, value: Option<&str>) -> i64 {
    let mut record = FutureRecord::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    p.send(record, Duration::from_secs(10))
        .await
        .unwrap()
        .offset
}

/// Everything in partition 0 from `offset` to the end, read with librdkafka.
fn consume_from(bootstrap: &str, topic: &str, offset: Offset) -> Vec<Rec> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "compaction-test")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, offset).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                m.key().unwrap().to_vec(),
                m.payload().map(<[u8]>::to_vec),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    panic!("did not reach the end of {topic}");
}

/// The latest-per-key model: below `cut` only each key's last record (below `cut`), from it on all.
fn expected(model: &[Rec], cut: i64) -> Vec<Rec> {
    let mut latest = std::collections::HashMap::new();
    for r in model.iter().filter(|r| r.0 < cut) {
        latest.insert(r.1.clone(), r.0);
    }
    model
        .iter()
        .filter(|r| r.0 >= cut || latest[&r.1] == r.0)
        .cloned()
        .collect()
}

/// Polls until what a consumer sees from the beginning satisfies `done`.
async fn wait_for(bootstrap: &str, topic: &str, done: impl Fn(&[Rec]) -> bool) -> Vec<Rec> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = consume_from(bootstrap, topic, Offset::Beginning);
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "condition never held; saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_read_from_the_beginning_holds_the_latest_record_per_key() {
    let (_dir, broker) = start().await;
    let bootstrap = broker.bootstrap_servers();
    create_compacted(&bootstrap, "state", &[]).await;
    let p = producer(&bootstrap);
    let mut model = Vec::new();
    for i in 0..1500 {
        let key = format!("key-{}", (i * 7919) % 40);
        let value = format!("value-{i}");
        let offset = send(&p, "state", &key, Some(&value)).await;
        model.push((offset, key.into_bytes(), Some(value.into_bytes())));
    }
    model.sort();
    // Offsets never move: what the consumer sees is the model cut at some clean point.
    let seen = wait_for(&bootstrap, "state", |seen| seen.len() < model.len() / 2).await;
    let cut = model
        .iter()
        .map(|r| r.0)
        .find(|&c| expected(&model, c) == seen);
    assert!(
        cut.is_some(),
        "not the latest per key at their offsets: {seen:?}"
    );
    // Every key's latest record is there.
    for key in 0..40 {
        let key = format!("key-{key}").into_bytes();
        let last = model.iter().rev().find(|r| r.1 == key).unwrap();
        assert!(seen.contains(last), "{key:?}");
    }
    // A consumer placed on an offset that was cleaned away continues at the next survivor.
    let gone = model
        .iter()
        .map(|r| r.0)
        .find(|o| !seen.iter().any(|s| s.0 == *o))
        .unwrap();
    let next = seen.iter().find(|s| s.0 > gone).unwrap();
    let from_gone = consume_from(&bootstrap, "state", Offset::Offset(gone));
    assert_eq!(from_gone.first(), Some(next));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_stay_for_delete_retention_then_go() {
    let (_dir, broker) = start().await;
    let bootstrap = broker.bootstrap_servers();
    create_compacted(&bootstrap, "graves", &[("delete.retention.ms", "3000")]).await;
    let p = producer(&bootstrap);
    send(&p, "graves", "a", Some("1")).await;
    let b = send(&p, "graves", "b", Some("2")).await;
    let tombstone = send(&p, "graves", "a", None).await;
    let filler = |n: usize| {
        let p = p.clone();
        async move {
            for i in 0..n {
                send(&p, "graves", &format!("f{}", i % 3), Some(&"x".repeat(100))).await;
            }
        }
    };
    filler(60).await;
    // Cleaned once: a's value is gone, its tombstone is still there for consumers to see.
    let seen = wait_for(&bootstrap, "graves", |seen| {
        !seen.iter().any(|r| r.1 == b"a" && r.2.is_some())
    })
    .await;
    assert!(seen.contains(&(tombstone, b"a".to_vec(), None)), "{seen:?}");
    let cleaned_at = Instant::now();
    // Once delete.retention.ms has passed, a later clean (triggered by new dirty data) removes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        filler(20).await;
        let seen = consume_from(&bootstrap, "graves", Offset::Beginning);
        if !seen.iter().any(|r| r.1 == b"a") {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "tombstone never removed: {seen:?}"
        );
    };
    assert!(
        cleaned_at.elapsed() >= Duration::from_millis(1500),
        "tombstone removed after {:?}, before delete.retention.ms",
        cleaned_at.elapsed()
    );
    assert!(seen.contains(&(b, b"b".to_vec(), Some(b"2".to_vec()))));
    broker.shutdown().await.unwrap();
}

fn keyless_batch() -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let keyless = Record {
        key: None,
        offset: 1,
        ..record.clone()
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record, &keyless],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_record_to_compacted_topic_is_rejected() {
    let (_dir, broker) = start().await;
    let bootstrap = broker.bootstrap_servers();
    create_compacted(&bootstrap, "keyed", &[]).await;

    // librdkafka: the keyless record fails with INVALID_RECORD, a keyed one is accepted.
    let p = producer(&bootstrap);
    let failed = p
        .send(
            FutureRecord::<(), _>::to("keyed").payload("no key"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    assert_eq!(
        failed.0,
        KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord)
    );
    send(&p, "keyed", "k", Some("v")).await;

    // On the wire (Produce v8+): the partition fails with INVALID_RECORD and record_errors names
    // the keyless record by its index in the batch; nothing of the batch is written.
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("keyed")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(keyless_batch())),
                ]),
        ]);
    let version = 9;
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .encode(&mut buf, ApiKey::Produce.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).await.unwrap();
    let len = s.read_i32().await.unwrap();
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(version)).unwrap();
    let resp = ProduceResponse::decode(&mut body, version).unwrap();
    assert!(!body.has_remaining());
    let part = &resp.responses[0].partition_responses[0];
    assert_eq!(part.error_code, 87, "INVALID_RECORD");
    assert_eq!(part.record_errors.len(), 1);
    assert_eq!(part.record_errors[0].batch_index, 1);
    assert!(part.error_message.is_some());

    let seen = consume_from(&bootstrap, "keyed", Offset::Beginning);
    assert_eq!(seen, vec![(0, b"k".to_vec(), Some(b"v".to_vec()))]);
    broker.shutdown().await.unwrap();
}
