//! `ferry bench group`: how long a consumer group takes to rebalance, and how fast a group of
//! consumers reads a topic.
//!
//! A member joining: two members consume a 6-partition topic that a producer keeps writing to
//! (one message per ms); a third member subscribes at t0. Figures: t0 until the new member
//! receives its first message; the longest gap the two other members see between two messages
//! around the join (the pause a rebalance makes them take: the classic protocol's eager
//! rebalance stops everyone, the consumer protocol (KIP-848) moves only the partitions the new
//! member gets); and t0 until all three consume again. Run on each protocol, side by side.
//! Group throughput: the messages are produced first (not timed), then `members` consumers in one
//! group read them all; timed from the first subscribe to the last message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn member(brokers: &str, group: &str, topic: &str, protocol: &str) -> anyhow::Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50");
    // The consumer protocol's session timeout and heartbeat interval are the broker's.
    if protocol == "classic" {
        config
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "250");
    }
    let c: BaseConsumer = config.create().context("cannot create a consumer")?;
    c.subscribe(&[topic]).context("cannot subscribe")?;
    Ok(c)
}

/// Poll `consumer` on a thread until `stop`, recording when (ms since the epoch) each message
/// stamped after `since_ms` arrived, and the arrival of the last message before it.
fn run_member(
    consumer: BaseConsumer,
    since_ms: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
) {
    let mut last_before = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let now = now_ms();
            let stamp = m.timestamp().to_millis().unwrap_or(0);
            let since = since_ms.load(Ordering::Relaxed) as i64;
            if since > 0 && stamp >= since {
                let mut a = arrivals.lock().expect("not poisoned");
                if a.is_empty() && last_before > 0 {
                    a.push(last_before);
                }
                a.push(now);
            } else {
                last_before = now;
            }
        }
    }
}

/// What a member joining a 2-member group costs, on one protocol.
#[derive(Debug, Clone, Copy)]
pub struct JoinFigures {
    /// From the new member's subscribe until it receives its first message.
    pub join_to_consume: Duration,
    /// Longest gap between two messages at either of the two members already there, from their
    /// last message before the join until 100 ms after everyone consumes again (their normal gap
    /// is a few ms: the producer writes one message per ms). Both protocols revoke within that
    /// window: at the old members' first heartbeat after the join.
    pub others_pause: Duration,
    /// From the subscribe until all three members have received a message produced after it.
    pub all_consume: Duration,
}

/// A third member joins a two-member group (6 partitions, `protocol` "classic" or "consumer")
/// while a producer writes one message per ms.
pub fn join(brokers: &str, topic: &str, protocol: &str) -> anyhow::Result<JoinFigures> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let producer = producer.clone();
        let topic = topic.to_owned();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = i.to_string();
                let _ = producer.send(
                    BaseRecord::<str, str>::to(&topic)
                        .key(&key)
                        .payload("x")
                        .timestamp(now_ms()),
                );
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let since = Arc::new(AtomicU64::new(0));
    let group = format!("bench-join-{protocol}-{}", now_ms());
    let mut threads = Vec::new();
    let mut arrivals: Vec<Arc<Mutex<Vec<i64>>>> = Vec::new();
    let spawn = |threads: &mut Vec<_>| -> anyhow::Result<Arc<Mutex<Vec<i64>>>> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let c = member(brokers, &group, topic, protocol)?;
        let (s, g, st) = (since.clone(), got.clone(), stop.clone());
        threads.push(std::thread::spawn(move || run_member(c, s, g, st)));
        Ok(got)
    };
    for _ in 0..2 {
        arrivals.push(spawn(&mut threads)?);
    }
    // Let the two settle into a stable group.
    std::thread::sleep(Duration::from_secs(4));
    let t0 = now_ms();
    since.store(t0 as u64, Ordering::Relaxed);
    let started = Instant::now();
    arrivals.push(spawn(&mut threads)?);
    let first_after = |a: &Arc<Mutex<Vec<i64>>>| {
        a.lock()
            .expect("not poisoned")
            .iter()
            .copied()
            .find(|&t| t >= t0)
    };
    let deadline = started + Duration::from_secs(60);
    while arrivals.iter().any(|a| first_after(a).is_none()) {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            bail!("not every member consumed again within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let all = arrivals.iter().filter_map(first_after).max().unwrap_or(t0);
    // Let a gap that starts inside the window end, so its length is known.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = writer.join();
    producer.flush(Duration::from_secs(10))?;
    let joined = first_after(&arrivals[2]).unwrap_or(t0);
    let pause = arrivals[..2]
        .iter()
        .map(|a| {
            let a = a.lock().expect("not poisoned");
            a.windows(2)
                .filter(|w| w[0] <= all + 100)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
    Ok(JoinFigures {
        join_to_consume: ms(joined - t0),
        others_pause: ms(pause),
        all_consume: ms(all - t0),
    })
}

/// Time for `members` consumers in one group to read `messages` already in `topic`.
pub fn consume(
    brokers: &str,
    topic: &str,
    members: usize,
    messages: u64,
) -> anyhow::Result<Duration> {
    let group = format!("bench-group-{}", now_ms());
    let total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..members {
        let c = member(brokers, &group, topic, "classic")?;
        let (total, stop) = (total.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(_)) = c.poll(Duration::from_millis(20)) {
                    total.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let deadline = started + Duration::from_secs(300);
    while total.load(Ordering::Relaxed) < messages {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            bail!(
                "the group read {} of {messages} messages in 300 s",
                total.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(elapsed)
}
