//! 100,000 messages with keys and headers through the broker with librdkafka, byte-exact and in
//! order per partition, across several topics and partitions.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

const TOPICS: &[(&str, i32)] = &[("alpha", 1), ("beta", 3), ("gamma", 4)];
const MESSAGES: usize = 100_000;

fn payload(i: usize) -> Vec<u8> {
    // Varied length and every byte value, so nothing depends on text or a fixed size.
    let len = 1 + (i * 7919) % 300;
    (0..len).map(|j| ((i + j * 31) % 256) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_messages_round_trip_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let bootstrap = broker.bootstrap_servers();

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = TOPICS
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.expect("topic created");
    }

    let producer = common::producer(&bootstrap, "all");
    let mut sent: HashMap<(String, i32), Vec<(usize, i64)>> = HashMap::new();
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(10_000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let (topic, partitions) = TOPICS[i % TOPICS.len()];
            let key = format!("key-{i}");
            let value = payload(i);
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "seq",
                    value: Some(&i.to_string()),
                })
                .insert(Header {
                    key: "bin",
                    value: Some(&[0u8, 255, 1, 254][..]),
                })
                .insert(Header::<&[u8]> {
                    key: "null",
                    value: None,
                });
            let partition = (i / TOPICS.len()) as i32 % partitions;
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&value)
                .headers(headers)
                .partition(partition);
            pending.push((i, topic, producer.send_result(record).expect("queued")));
        }
        for (i, topic, fut) in pending {
            let delivery = fut.await.expect("not cancelled").expect("delivered");
            sent.entry((topic.to_owned(), delivery.partition))
                .or_default()
                .push((i, delivery.offset));
        }
    }

    let parts: Vec<(&str, i32)> = TOPICS
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (*t, p)))
        .collect();
    let bootstrap2 = bootstrap.clone();
    let got = tokio::task::spawn_blocking(move || {
        common::consume_from_beginning(&bootstrap2, &parts, MESSAGES, Duration::from_secs(120))
    })
    .await
    .unwrap();
    assert_eq!(got.len(), MESSAGES, "every message consumed");

    let mut by_partition: HashMap<(String, i32), Vec<common::Got>> = HashMap::new();
    for g in got {
        by_partition
            .entry((g.topic.clone(), g.partition))
            .or_default()
            .push(g);
    }
    for (tp, mut expected) in sent {
        expected.sort_by_key(|(_, offset)| *offset);
        let got = &by_partition[&tp];
        assert_eq!(got.len(), expected.len(), "{tp:?}");
        for (n, ((i, offset), g)) in expected.iter().zip(got).enumerate() {
            assert_eq!(g.offset, *offset, "{tp:?} offsets in order");
            assert_eq!(g.offset, n as i64, "{tp:?} offsets dense from 0");
            assert_eq!(g.key.as_deref(), Some(format!("key-{i}").as_bytes()));
            assert_eq!(
                g.value.as_deref(),
                Some(&payload(*i)[..]),
                "{tp:?} payload of message {i}"
            );
            assert_eq!(
                g.headers,
                vec![
                    ("seq".to_owned(), Some(i.to_string().into_bytes())),
                    ("bin".to_owned(), Some(vec![0, 255, 1, 254])),
                    ("null".to_owned(), None),
                ]
            );
        }
        // Within a partition, producer order is log order.
        assert!(
            expected.windows(2).all(|w| w[0].0 < w[1].0),
            "{tp:?} in send order"
        );
    }
    broker.shutdown().await.unwrap();
}
