//! `ferry bench group`: how long a consumer group takes to rebalance, and how fast a group of
//! consumers reads a topic.
//!
//! Rebalance time: two members consume a topic that a producer keeps writing to; a third member
//! subscribes at t0. The figure is the time from t0 until every one of the three has received a
//! message produced after t0, i.e. until all members consume again.
//! Group throughput: the messages are produced first (not timed), then `members` consumers in one
//! group read them all; timed from the first subscribe to the last message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

fn member(brokers: &str, group: &str, topic: &str) -> anyhow::Result<BaseConsumer> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "250")
        .set("fetch.wait.max.ms", "50")
        .create()
        .context("cannot create a consumer")?;
    c.subscribe(&[topic]).context("cannot subscribe")?;
    Ok(c)
}

/// Poll `consumer` on a thread until `stop`; record when it first saw a message stamped after `since_ms`.
fn run_member(
    consumer: BaseConsumer,
    since_ms: Arc<AtomicU64>,
    seen_after: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let stamp = m.timestamp().to_millis().unwrap_or(0);
            let since = since_ms.load(Ordering::Relaxed) as i64;
            if since > 0 && stamp >= since && seen_after.load(Ordering::Relaxed) == 0 {
                seen_after.store(now_ms() as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Rebalance time of a third member joining a two-member group, in milliseconds.
pub fn rebalance(brokers: &str, topic: &str) -> anyhow::Result<Duration> {
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
    let group = format!("bench-rebalance-{}", now_ms());
    let mut threads = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let flag = Arc::new(AtomicU64::new(0));
        let c = member(brokers, &group, topic)?;
        let (s, f, st) = (since.clone(), flag.clone(), stop.clone());
        threads.push(std::thread::spawn(move || run_member(c, s, f, st)));
        seen.push(flag);
    }
    // Let the two settle into a stable group.
    std::thread::sleep(Duration::from_secs(4));
    let t0 = now_ms();
    since.store(t0 as u64, Ordering::Relaxed);
    let started = Instant::now();
    let flag = Arc::new(AtomicU64::new(0));
    let c = member(brokers, &group, topic)?;
    let (s, f, st) = (since.clone(), flag.clone(), stop.clone());
    threads.push(std::thread::spawn(move || run_member(c, s, f, st)));
    seen.push(flag);
    let deadline = started + Duration::from_secs(60);
    while seen.iter().any(|f| f.load(Ordering::Relaxed) == 0) {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            bail!("not every member consumed again within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let last = seen
        .iter()
        .map(|f| f.load(Ordering::Relaxed) as i64)
        .max()
        .unwrap_or(t0);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = writer.join();
    producer.flush(Duration::from_secs(10))?;
    Ok(Duration::from_millis((last - t0).max(0) as u64))
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
        let c = member(brokers, &group, topic)?;
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
