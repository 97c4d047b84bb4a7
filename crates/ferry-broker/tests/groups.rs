//! Consumer groups with real librdkafka consumers: balanced, disjoint assignments; rebalance on
//! leave; eviction of a member that stops heartbeating; exactly-once consumption across the group.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

const TOPIC: &str = "grouped";
const PARTITIONS: i32 = 6;

/// A consumer-group member polling on its own thread.
struct Member {
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<(i32, i64)>>>,
    assignment: Arc<Mutex<Vec<i32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(bootstrap: &str, group: &str, instance_id: Option<&str>) -> Member {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "300")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "200")
            .set("fetch.wait.max.ms", "100");
        if let Some(id) = instance_id {
            config.set("group.instance.id", id);
        }
        let consumer: BaseConsumer = config.create().expect("consumer");
        consumer.subscribe(&[TOPIC]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let assignment = Arc::new(Mutex::new(Vec::new()));
        let (s, g, a) = (stop.clone(), got.clone(), assignment.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    g.lock().unwrap().push((m.partition(), m.offset()));
                }
                let mut parts: Vec<i32> = consumer
                    .assignment()
                    .map(|t| t.elements().iter().map(|e| e.partition()).collect())
                    .unwrap_or_default();
                parts.sort();
                *a.lock().unwrap() = parts;
            }
            // Dropping the consumer closes it: a dynamic member sends LeaveGroup, a static one does not.
            drop(consumer);
        });
        Member {
            stop,
            got,
            assignment,
            thread: Some(thread),
        }
    }

    fn assignment(&self) -> Vec<i32> {
        self.assignment.lock().unwrap().clone()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The members' assignments are disjoint and together cover every partition.
fn balanced(members: &[&Member]) -> bool {
    let all: Vec<i32> = members.iter().flat_map(|m| m.assignment()).collect();
    let unique: HashSet<i32> = all.iter().copied().collect();
    all.len() == PARTITIONS as usize
        && unique.len() == PARTITIONS as usize
        && members.iter().all(|m| !m.assignment().is_empty())
}

async fn produce(bootstrap: &str, from: usize, to: usize) {
    let producer = common::producer(bootstrap, "all");
    let mut pending = Vec::new();
    for i in from..to {
        let value = i.to_string();
        let record = FutureRecord::to(TOPIC)
            .key("k")
            .payload(&value)
            .partition(i as i32 % PARTITIONS);
        pending.push(producer.send_result(record).unwrap());
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_balances_rebalances_on_leave_and_evicts_silent_members() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let bootstrap = broker.bootstrap_servers();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();

    let mut a = Member::start(&bootstrap, "g1", None);
    let b = Member::start(&bootstrap, "g1", None);
    let mut c = Member::start(&bootstrap, "g1", Some("static-c"));
    assert!(
        common::eventually(Duration::from_secs(30), || balanced(&[&a, &b, &c])).await,
        "three members split six partitions: {:?} {:?} {:?}",
        a.assignment(),
        b.assignment(),
        c.assignment()
    );

    // No member fails: every message is consumed exactly once across the group.
    produce(&bootstrap, 0, 600).await;
    let total =
        || a.got.lock().unwrap().len() + b.got.lock().unwrap().len() + c.got.lock().unwrap().len();
    assert!(
        common::eventually(Duration::from_secs(30), || total() >= 600).await,
        "consumed {}",
        total()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = HashSet::new();
    for m in [&a, &b, &c] {
        for rec in m.got.lock().unwrap().iter() {
            assert!(seen.insert(*rec), "{rec:?} consumed twice");
        }
    }
    assert_eq!(seen.len(), 600);

    // A leaves: the other two take its partitions.
    a.stop();
    assert!(
        common::eventually(Duration::from_secs(30), || balanced(&[&b, &c])).await,
        "after a leave: {:?} {:?}",
        b.assignment(),
        c.assignment()
    );

    // C stops without leaving (a static member does not send LeaveGroup): it is evicted after
    // its 6 s session timeout, and B takes everything.
    let stopped = Instant::now();
    c.stop();
    assert!(
        common::eventually(Duration::from_secs(30), || b.assignment().len()
            == PARTITIONS as usize)
        .await,
        "after eviction: {:?}",
        b.assignment()
    );
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "C was removed after {waited:?}: by its session timeout, not a leave"
    );

    // B now consumes what is produced to every partition.
    let before = b.got.lock().unwrap().len();
    produce(&bootstrap, 600, 660).await;
    assert!(
        common::eventually(Duration::from_secs(20), || b.got.lock().unwrap().len()
            >= before + 60)
        .await,
        "B consumed {} new",
        b.got.lock().unwrap().len() - before
    );
    drop(b);
    broker.shutdown().await.unwrap();
}
