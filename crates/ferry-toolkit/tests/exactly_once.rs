//! The router's exactly-once mode against the real broker: outputs, dead letters and offsets
//! commit together; a failed attempt's outputs never reach the log; a second instance with the
//! same transactional id fences the first. (The crash case, a process killed between produce
//! and commit, is `examples/toolkit-eos/tests/crash.rs`: it needs a child process.)

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Greeting, TestBroker, create_topic, kafka, produce_raw, unique};
use ferry_toolkit::kafka::{Admin, RouterHandle, start_router};
use ferry_toolkit::{HandlerError, MessageContext, Publisher, RetryPolicy, Router, handler_fn};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One record as a reader sees it: key and headers.
#[derive(Debug, Clone)]
struct Seen {
    key: String,
    headers: BTreeMap<String, String>,
}

/// Every record of `topic` up to the end `isolation` sees (the last stable offset for
/// read_committed).
async fn read_to_end(bootstrap: &str, topic: &str, isolation: &'static str) -> Vec<Seen> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "eos-test-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation)
            .set("fetch.wait.max.ms", "50")
            .create()
            .unwrap();
        let partitions = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .unwrap()
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Vec::new();
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut at_end = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while at_end.len() < partitions {
            assert!(Instant::now() < deadline, "{isolation} reader stuck");
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    at_end.remove(&(m.partition() as usize));
                    out.push(Seen {
                        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| {
                                        (
                                            h.key.to_owned(),
                                            String::from_utf8_lossy(h.value.unwrap_or_default())
                                                .into_owned(),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p as usize);
                }
                Some(Err(e)) => panic!("consumer error: {e}"),
                None => {}
            }
        }
        out
    })
    .await
    .unwrap()
}

/// Polls until the read_committed view of `topic` holds at least `n` records.
async fn committed_at_least(bootstrap: &str, topic: &str, n: usize) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let seen = read_to_end(bootstrap, topic, "read_committed").await;
        if seen.len() >= n || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn counts(seen: &[Seen]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in seen {
        *counts.entry(s.key.clone()).or_insert(0) += 1;
    }
    counts
}

/// Publishes a copy of each greeting to `output`. "poison" fails for good; "flaky" publishes and
/// then fails its first attempt.
fn router(group: &str, input: &str, output: &str, transactional_id: &str) -> Router {
    let output = output.to_owned();
    Router::new(group)
        .subscribe(input)
        .handle(handler_fn(move |g: Greeting, ctx: MessageContext| {
            let output = output.clone();
            async move {
                if g.text == "poison" {
                    return Err(HandlerError::permanent("poison"));
                }
                ctx.publish(&output, g.clone()).await?;
                if g.text == "flaky" && ctx.attempt() == 1 {
                    return Err(HandlerError::new("flaky, first attempt"));
                }
                Ok(())
            }
        }))
        .retry(RetryPolicy {
            initial: Duration::from_millis(20),
            max_attempts: 3,
            jitter: 0.0,
            ..RetryPolicy::default()
        })
        .exactly_once(transactional_id)
}

async fn publish(publisher: &Publisher, topic: &str, ids: impl Iterator<Item = usize>, text: &str) {
    for i in ids {
        publisher
            .publish(
                topic,
                Greeting {
                    id: format!("g{i:03}"),
                    text: text.to_owned(),
                },
            )
            .await
            .unwrap();
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_dead_letters_and_offsets_commit_together() -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let b = broker.bootstrap();
    let (input, output, group) = (unique("eos-in"), unique("eos-out"), unique("eos-g"));
    create_topic(&b, &input, 2).await;
    create_topic(&b, &output, 2).await;
    let config = kafka(&b);
    let publisher = Publisher::kafka(&config)?;
    publish(&publisher, &input, 0..20, "hello").await;
    publish(&publisher, &input, 20..23, "flaky").await;
    publish(&publisher, &input, 23..25, "poison").await;
    produce_raw(&b, &input, Some(0), "junk", &[], b"not an envelope").await;

    let handle = start_router(
        router(&group, &input, &output, &unique("eos-t")),
        &config,
        publisher.clone(),
    )?;
    let outputs = committed_at_least(&b, &output, 23).await;
    let seen = counts(&outputs);
    assert_eq!(
        seen.len(),
        23,
        "every good and flaky input has an output: {seen:?}"
    );
    assert!(seen.values().all(|n| *n == 1), "exactly one each: {seen:?}");
    assert!(
        !seen.contains_key("g023") && !seen.contains_key("g024"),
        "poison has no output"
    );

    let dlq = format!("{input}.dlq");
    let letters = committed_at_least(&b, &dlq, 3).await;
    let mut reasons: Vec<_> = letters
        .iter()
        .map(|l| (l.key.clone(), l.headers["ferry-dlq-reason"].clone()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("g023".to_owned(), "handler-failed".to_owned()),
            ("g024".to_owned(), "handler-failed".to_owned()),
            ("junk".to_owned(), "undecodable".to_owned()),
        ]
    );
    assert!(
        letters
            .iter()
            .all(|l| l.headers["ferry-dlq-group"] == group)
    );

    // The group's offsets reached the end of every input partition, through the transactions.
    let admin = Admin::new(&config)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let offsets = admin.group_offsets(&group).await?;
        let total: i64 = offsets.iter().map(|o| o.committed.max(0)).sum();
        if offsets.len() == 2 && offsets.iter().all(|o| o.lag == 0) && total == 26 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offsets not committed: {offsets:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Nothing was ever aborted: a failed attempt's publish never reached the log, so even a
    // read_uncommitted reader sees each output once.
    let uncommitted = read_to_end(&b, &output, "read_uncommitted").await;
    assert_eq!(uncommitted.len(), 23, "{:?}", counts(&uncommitted));

    handle.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_with_the_same_transactional_id_fences_the_first() -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let b = broker.bootstrap();
    let (input, output, group) = (unique("fence-in"), unique("fence-out"), unique("fence-g"));
    let transactional_id = unique("fence-t");
    create_topic(&b, &input, 2).await;
    create_topic(&b, &output, 2).await;
    let config = kafka(&b);
    let publisher = Publisher::kafka(&config)?;

    let first: RouterHandle = start_router(
        router(&group, &input, &output, &transactional_id),
        &config,
        publisher.clone(),
    )?;
    wait_for("the first instance's assignment", || {
        first.assignment().len() == 2
    })
    .await;
    publish(&publisher, &input, 0..10, "hello").await;
    assert_eq!(committed_at_least(&b, &output, 10).await.len(), 10);
    assert!(first.failure().is_none());

    // The zombie case: same transactional id, same group. Registering it fences the first.
    let second = start_router(
        router(&group, &input, &output, &transactional_id),
        &config,
        publisher.clone(),
    )?;
    wait_for("the second instance to join", || {
        !second.assignment().is_empty()
    })
    .await;
    // Keys over both partitions: the first instance, still holding one, tries a transaction.
    publish(&publisher, &input, 10..40, "hello").await;
    wait_for("the first instance to be fenced", || {
        first.failure().is_some()
    })
    .await;
    let failure = first.failure().unwrap().to_owned();
    assert!(failure.contains(&transactional_id), "{failure}");

    // The second instance takes over every partition and finishes the work, once.
    let outputs = committed_at_least(&b, &output, 40).await;
    let seen = counts(&outputs);
    assert_eq!(seen.len(), 40, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "exactly one each: {seen:?}");
    wait_for("the second instance to own both partitions", || {
        second.assignment().len() == 2
    })
    .await;
    assert!(second.failure().is_none());

    first.shutdown().await;
    second.shutdown().await;
    Ok(())
}
