//! The admin view of a group while it has transactional offsets pending: librdkafka's default
//! read_committed OffsetFetch asks for stable offsets only and waits until the transaction ends,
//! so the dashboard's group table stalled behind any open exactly-once transaction.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferry_toolkit::kafka::Admin;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_are_shown_while_a_transaction_holds_offsets_pending() {
    let broker = TestBroker::start();
    let b = broker.bootstrap();
    let topic = unique("in");
    let group = unique("g");
    create_topic(&b, &topic, 1).await;
    let plain: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .unwrap();
    for i in 0..3 {
        let v = format!("m{i}");
        plain
            .send(FutureRecord::to(&topic).key(&v).payload(&v), T)
            .await
            .unwrap();
    }
    // A member of the group commits its position only through a transaction left open.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + T;
    while read < 3 {
        assert!(Instant::now() < deadline, "read {read} of 3");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m.unwrap();
            read += 1;
        }
    }
    let txn: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("transactional.id", unique("tx"))
        .create()
        .unwrap();
    txn.init_transactions(T).unwrap();
    txn.begin_transaction().unwrap();
    let position = consumer.position().unwrap();
    txn.send_offsets_to_transaction(&position, &consumer.group_metadata().unwrap(), T)
        .unwrap();

    let admin = Admin::new(&kafka(&b)).unwrap();
    let started = Instant::now();
    let offsets = tokio::time::timeout(T, admin.groups_offsets(std::slice::from_ref(&group)))
        .await
        .expect("the view answers while offsets are pending")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in {:?}",
        started.elapsed()
    );
    assert!(
        offsets[0].is_empty(),
        "nothing is committed yet: {:?}",
        offsets[0]
    );

    txn.commit_transaction(T).unwrap();
    let offsets = admin
        .groups_offsets(std::slice::from_ref(&group))
        .await
        .unwrap();
    assert_eq!(
        offsets[0].iter().map(|o| o.committed).collect::<Vec<_>>(),
        [3],
        "{:?}",
        offsets[0]
    );
}
