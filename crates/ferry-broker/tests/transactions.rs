//! Kafka transactions with librdkafka's transactional producer against the in-process broker:
//! commit, abort, abort-then-retry, the empty transaction, send-offsets-to-transaction; what
//! `read_committed` and `read_uncommitted` consumers see; fencing by a second instance; the broker
//! aborting a transaction past its timeout; the timeout limit.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

const T: Duration = Duration::from_secs(20);

fn txn_producer(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "2")
        .set("message.timeout.ms", "20000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("transactional producer")
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let res = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    res.into_iter().for_each(|r| {
        r.unwrap();
    });
}

async fn send(p: &FutureProducer, topic: &str, partition: i32, value: &str) {
    p.send(
        FutureRecord::to(topic)
            .partition(partition)
            .key(value)
            .payload(value),
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|(e, _)| panic!("send {value}: {e}"));
}

/// Every record of `topic`'s partitions from the beginning to the end the isolation level sees
/// (librdkafka's partition EOF: the last stable offset for read_committed), as partition -> values.
fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
) -> BTreeMap<i32, Vec<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader-no-commits")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut at_end = std::collections::BTreeSet::new();
    let deadline = Instant::now() + T;
    while at_end.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "{isolation} reader did not reach the end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                out.entry(m.partition()).or_default().push(v);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    out
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_aborted_retried_and_empty_transactions_as_each_isolation_level_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let b = broker.bootstrap_servers();
    create_topic(&b, "tx", 2).await;
    let p = txn_producer(&b, "tx-basic", &[]);
    p.init_transactions(T).unwrap();

    // Committed.
    p.begin_transaction().unwrap();
    for v in values("a", 3) {
        send(&p, "tx", 0, &v).await;
        send(&p, "tx", 1, &v).await;
    }
    p.commit_transaction(T).unwrap();
    // Aborted.
    p.begin_transaction().unwrap();
    for v in values("b", 3) {
        send(&p, "tx", 0, &v).await;
        send(&p, "tx", 1, &v).await;
    }
    p.abort_transaction(T).unwrap();
    // The aborted work, retried and committed.
    p.begin_transaction().unwrap();
    for v in values("c", 3) {
        send(&p, "tx", 0, &v).await;
    }
    p.commit_transaction(T).unwrap();
    // Empty.
    p.begin_transaction().unwrap();
    p.commit_transaction(T).unwrap();
    p.begin_transaction().unwrap();
    p.abort_transaction(T).unwrap();

    let committed = read_all(&b, "tx", 2, "read_committed");
    let mut p0 = values("a", 3);
    p0.extend(values("c", 3));
    assert_eq!(
        committed[&0], p0,
        "read_committed: committed records, in order"
    );
    assert_eq!(committed[&1], values("a", 3));
    let all = read_all(&b, "tx", 2, "read_uncommitted");
    let mut p0 = values("a", 3);
    p0.extend(values("b", 3));
    p0.extend(values("c", 3));
    assert_eq!(all[&0], p0, "read_uncommitted sees the aborted records too");

    // An open transaction holds read_committed readers back at its first offset.
    p.begin_transaction().unwrap();
    send(&p, "tx", 1, "open").await;
    let before = read_all(&b, "tx", 2, "read_committed");
    assert_eq!(
        before[&1],
        values("a", 3),
        "nothing of the open transaction"
    );
    assert_eq!(
        read_all(&b, "tx", 2, "read_uncommitted")[&1]
            .last()
            .unwrap(),
        "open"
    );
    p.commit_transaction(T).unwrap();
    assert_eq!(
        read_all(&b, "tx", 2, "read_committed")[&1].last().unwrap(),
        "open",
        "visible once committed"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_offsets_to_transaction_commits_the_group_offsets_with_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let b = broker.bootstrap_servers();
    create_topic(&b, "in", 1).await;
    create_topic(&b, "out", 1).await;
    let plain = common::producer(&b, "all");
    for v in values("i", 10) {
        plain
            .send(FutureRecord::to("in").key(&v).payload(&v), T)
            .await
            .unwrap();
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "eos")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&["in"]).unwrap();
    let p = txn_producer(&b, "tx-eos", &[]);
    p.init_transactions(T).unwrap();

    // Consume five, produce their transforms, commit the offsets in the same transaction.
    let take = |n: usize| {
        let mut got = Vec::new();
        let deadline = Instant::now() + T;
        while got.len() < n {
            assert!(Instant::now() < deadline, "consumed {got:?}");
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            }
        }
        got
    };
    let first = take(5);
    assert_eq!(first, values("i", 5));
    p.begin_transaction().unwrap();
    for v in &first {
        send(&p, "out", 0, &format!("{v}!")).await;
    }
    let position = consumer.position().unwrap();
    p.send_offsets_to_transaction(&position, &consumer.group_metadata().unwrap(), T)
        .unwrap();
    p.commit_transaction(T).unwrap();

    // The next five in a transaction that is aborted: neither output nor offsets count.
    let second = take(5);
    p.begin_transaction().unwrap();
    for v in &second {
        send(&p, "out", 0, &format!("{v}!")).await;
    }
    let position = consumer.position().unwrap();
    p.send_offsets_to_transaction(&position, &consumer.group_metadata().unwrap(), T)
        .unwrap();
    p.abort_transaction(T).unwrap();

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("in", 0);
    let committed = consumer.committed_offsets(tpl, T).unwrap();
    assert_eq!(
        committed.find_partition("in", 0).unwrap().offset(),
        Offset::Offset(5),
        "the committed transaction's offset, not the aborted one's"
    );
    let out = read_all(&b, "out", 1, "read_committed");
    let expected: Vec<String> = first.iter().map(|v| format!("{v}!")).collect();
    assert_eq!(out[&0], expected);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let b = broker.bootstrap_servers();
    create_topic(&b, "fence", 1).await;
    let first = txn_producer(&b, "tx-fence", &[]);
    first.init_transactions(T).unwrap();
    first.begin_transaction().unwrap();
    send(&first, "fence", 0, "zombie").await;

    // The new instance aborts the open transaction and bumps the epoch.
    let second = txn_producer(&b, "tx-fence", &[]);
    second.init_transactions(T).unwrap();
    second.begin_transaction().unwrap();
    send(&second, "fence", 0, "successor").await;
    second.commit_transaction(T).unwrap();

    let err = first
        .commit_transaction(T)
        .expect_err("the fenced instance cannot commit");
    match err {
        KafkaError::Transaction(e) => assert!(e.is_fatal(), "fencing is fatal: {e}"),
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(
        read_all(&b, "fence", 1, "read_committed")[&0],
        ["successor"]
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_past_its_timeout_is_aborted_by_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let b = broker.bootstrap_servers();
    create_topic(&b, "slow", 1).await;
    let p = txn_producer(
        &b,
        "tx-slow",
        &[
            ("transaction.timeout.ms", "1500"),
            ("message.timeout.ms", "1500"),
        ],
    );
    p.init_transactions(T).unwrap();
    p.begin_transaction().unwrap();
    send(&p, "slow", 0, "never").await;

    // The broker aborts it: the abort marker makes the last stable offset pass the record.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "probe")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let aborted = common::eventually(T, || {
        probe
            .fetch_watermarks("slow", 0, Duration::from_secs(2))
            .is_ok_and(|(_, high)| high == 2)
    })
    .await;
    assert!(
        aborted,
        "the last stable offset passed the aborted transaction"
    );
    assert!(!read_all(&b, "slow", 1, "read_committed").contains_key(&0));
    assert_eq!(read_all(&b, "slow", 1, "read_uncommitted")[&0], ["never"]);
    assert!(
        p.commit_transaction(T).is_err(),
        "the producer of a timed-out transaction is fenced"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_timeout_above_the_broker_maximum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.transaction_max_timeout = Duration::from_secs(30);
    let broker = common::start_with(config).await;
    let p = txn_producer(
        &broker.bootstrap_servers(),
        "tx-long",
        &[("transaction.timeout.ms", "60000")],
    );
    let err = p
        .init_transactions(T)
        .expect_err("60 s is above the 30 s maximum");
    assert!(
        err.to_string().to_lowercase().contains("timeout"),
        "INVALID_TRANSACTION_TIMEOUT: {err}"
    );
    broker.shutdown().await.unwrap();
}
