//! Crash safety of transactions: `ferry broker` is SIGKILLed while transactional producers are in
//! the middle of transactions and of commits (EndTxn sent, markers being written). After a
//! restart on the same data every transaction is wholly committed or wholly aborted across both
//! partitions, every commit a producer was told succeeded is there, an open transaction is aborted
//! at its timeout, the last stable offset catches up with the high watermark (every marker
//! written), a `read_committed` consumer agrees, and the transactional ids work again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ChildBroker, eventually};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "txn-crash";
const PARTITIONS: i32 = 2;
const PRODUCERS: usize = 3;
/// Records per transaction, spread over both partitions.
const PER_TXN: usize = 10;
/// The producers' transaction.timeout.ms: how long after the restart open transactions last.
const TXN_TIMEOUT_MS: &str = "3000";
const T: Duration = Duration::from_secs(10);

fn producer(addr: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", TXN_TIMEOUT_MS)
        .set("message.timeout.ms", TXN_TIMEOUT_MS)
        .set("linger.ms", "1")
        .create()
        .expect("transactional producer")
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, value: &str, partition: i32) {
    let mut record = BaseRecord::to(TOPIC)
        .payload(value)
        .key(value)
        .partition(partition);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Runs transactions numbered from `first` until told to stop or until the broker is gone.
/// Returns the numbers of the transactions whose commit was acknowledged.
fn run_transactions(addr: String, k: usize, first: usize, stop: Arc<AtomicBool>) -> Vec<usize> {
    let p = producer(&addr, &format!("crash-{k}"));
    let mut acked = Vec::new();
    if p.init_transactions(T).is_err() {
        return acked;
    }
    for j in first.. {
        if stop.load(Ordering::Relaxed) || p.begin_transaction().is_err() {
            break;
        }
        for m in 0..PER_TXN {
            send(&p, &format!("{k}/{j}/{m}"), (m % 2) as i32);
        }
        match p.commit_transaction(T) {
            Ok(()) => acked.push(j),
            Err(_) => break,
        }
    }
    acked
}

/// Every record from the beginning to the end the isolation level sees.
fn read_all(addr: &str, isolation: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "txn-crash-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while at_end.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "{isolation} reader did not reach the end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
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

/// (low, high) watermarks of every partition as the isolation level sees them.
fn watermarks(addr: &str, isolation: &str) -> Option<Vec<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "txn-crash-probe")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|p| {
            c.fetch_watermarks(TOPIC, p, Duration::from_secs(5))
                .ok()
                .map(|(_, h)| h)
        })
        .collect()
}

/// Auto-creates the topic (the broker runs with two partitions per new topic).
fn create_topic(addr: &str) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let created = eventually(T, || {
        p.client()
            .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
            .is_ok_and(|m| {
                m.topics()
                    .first()
                    .is_some_and(|t| t.partitions().len() == PARTITIONS as usize)
            })
    });
    assert!(created, "topic {TOPIC} was not created");
}

/// Kill rounds from outside, at random points of the producers' commits. The window between a
/// commit decision and its markers is hit deterministically by
/// `decided_commit_is_completed_by_the_restart_after_a_crash_before_its_markers`.
const ROUNDS: usize = 3;

#[test]
fn transactions_are_all_or_nothing_after_sigkill_mid_transaction_and_mid_commit() {
    let data = tempfile::tempdir().unwrap();
    let args = ["--default-partitions", "2"];
    let mut broker = ChildBroker::start(data.path(), &args);
    create_topic(&broker.addr);

    // One transaction left open on purpose: its records are acknowledged, it is never ended.
    let open = producer(&broker.addr, "crash-open");
    open.init_transactions(T).unwrap();
    open.begin_transaction().unwrap();
    for m in 0..PER_TXN {
        send(&open, &format!("open/0/{m}"), (m % 2) as i32);
    }
    open.flush(T).unwrap();

    let mut acked: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut rounds = 0;
    while rounds < ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(BTreeMap::new()));
        let workers: Vec<_> = (0..PRODUCERS)
            .map(|k| {
                let (addr, stop, done) = (broker.addr.clone(), stop.clone(), done.clone());
                std::thread::spawn(move || {
                    let first = rounds * 1_000_000;
                    let js = run_transactions(addr, k, first, stop);
                    done.lock().unwrap().insert(k, js);
                })
            })
            .collect();
        // Let commits get going, then kill the broker in the middle of them.
        std::thread::sleep(Duration::from_millis(700 + 150 * rounds as u64));
        broker.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        for (k, js) in done.lock().unwrap().iter() {
            acked.entry(*k).or_default().extend(js);
        }
        rounds += 1;

        broker = ChildBroker::start(data.path(), &args);
        check(&broker.addr, &acked);
    }
    drop(open);
    let acked_count: usize = acked.values().map(Vec::len).sum();
    assert!(
        acked_count >= PRODUCERS,
        "commits before the kills: {acked:?}"
    );

    // The coordinator's state is consistent: the ids initialise and commit again.
    let again = producer(&broker.addr, "crash-0");
    again.init_transactions(T).unwrap();
    again.begin_transaction().unwrap();
    send(&again, "after/0/0", 0);
    again.commit_transaction(T).unwrap();
    assert!(
        read_all(&broker.addr, "read_committed")
            .iter()
            .any(|v| v == "after/0/0")
    );
}

/// After a restart: every transaction settles (the LSO reaches the high watermark), each is
/// wholly visible or not at all to `read_committed`, every acknowledged commit is there, and the
/// transaction left open is not.
fn check(addr: &str, acked: &BTreeMap<usize, Vec<usize>>) {
    // Prepared transactions are completed at start, open ones aborted at their timeout: then
    // the last stable offset is the high watermark everywhere.
    let settled = eventually(Duration::from_secs(30), || {
        let committed = watermarks(addr, "read_committed");
        committed.is_some() && committed == watermarks(addr, "read_uncommitted")
    });
    assert!(
        settled,
        "the last stable offset never caught up with the high watermark"
    );

    let mut txns: BTreeMap<(String, usize), BTreeSet<usize>> = BTreeMap::new();
    for v in read_all(addr, "read_committed") {
        let parts: Vec<&str> = v.split('/').collect();
        let (k, j, m) = (
            parts[0].to_owned(),
            parts[1].parse().unwrap(),
            parts[2].parse().unwrap(),
        );
        assert!(txns.entry((k, j)).or_default().insert(m), "{v} read twice");
    }
    for ((k, j), ms) in &txns {
        assert_ne!(
            k, "open",
            "records of the transaction left open are visible"
        );
        assert_eq!(
            ms.len(),
            PER_TXN,
            "transaction {k}/{j} is partly visible: {ms:?}"
        );
    }
    for (k, js) in acked {
        for j in js {
            assert!(
                txns.contains_key(&(k.to_string(), *j)),
                "acknowledged commit {k}/{j} is missing"
            );
        }
    }
    let uncommitted = read_all(addr, "read_uncommitted");
    assert!(uncommitted.iter().any(|v| v.starts_with("open/")));
    eprintln!(
        "{} commits acknowledged so far; {} transactions committed; {} records written in all",
        acked.values().map(Vec::len).sum::<usize>(),
        txns.len(),
        uncommitted.len()
    );
}

/// The broker dies (by a test hook) right after a commit decision is durable and before any
/// marker is written; the restart must complete the commit: every record visible to a
/// read_committed reader, and the coordinator usable again.
#[test]
fn decided_commit_is_completed_by_the_restart_after_a_crash_before_its_markers() {
    let data = tempfile::tempdir().unwrap();
    let args = ["--default-partitions", "2"];
    let broker = ChildBroker::start_with_env(
        data.path(),
        &args,
        &[("FERRY_TEST_TXN_CRASH_BEFORE_MARKERS", "1")],
    );
    create_topic(&broker.addr);
    let p = producer(&broker.addr, "decided");
    p.init_transactions(T).unwrap();
    p.begin_transaction().unwrap();
    for m in 0..PER_TXN {
        send(&p, &format!("decided/{m}"), (m % 2) as i32);
    }
    p.flush(T).unwrap();
    // The broker aborts itself while answering EndTxn: the client never hears back.
    assert!(
        p.commit_transaction(Duration::from_secs(5)).is_err(),
        "the commit cannot be confirmed by a broker that died before its markers"
    );
    drop(p);
    broker.kill();

    let broker = ChildBroker::start(data.path(), &args);
    assert!(
        eventually(Duration::from_secs(20), || broker.logged("PrepareCommit")),
        "the restart found the decided commit"
    );
    let expected: BTreeSet<String> = (0..PER_TXN).map(|m| format!("decided/{m}")).collect();
    assert!(
        eventually(Duration::from_secs(30), || {
            read_all(&broker.addr, "read_committed")
                .into_iter()
                .collect::<BTreeSet<_>>()
                == expected
        }),
        "a read_committed reader sees the whole committed transaction after the restart"
    );
    // The id initialises and commits again.
    let again = producer(&broker.addr, "decided");
    again.init_transactions(T).unwrap();
    again.begin_transaction().unwrap();
    send(&again, "decided/again", 0);
    again.commit_transaction(T).unwrap();
}
