//! The exactly-once router killed between produce and commit: the service runs as a child
//! process against an in-process broker, aborts itself (the toolkit's test hook) after its first
//! transaction's outputs and offsets were sent and before the commit, and is started again.
//! A `read_committed` reader of the output then sees every input's output exactly once, while a
//! `read_uncommitted` reader also sees the aborted copies: the kill did land mid-transaction.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ferry_broker::BrokerConfig;
use ferry_toolkit::Publisher;
use ferry_toolkit::kafka::{CRASH_BEFORE_COMMIT_ENV, KafkaConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use toolkit_eos::OrderPlaced;

const PARTITIONS: i32 = 2;

async fn create_topics(bootstrap: &str, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new: Vec<_> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

/// The keys of every record of `topic` up to the end `isolation` sees (the last stable offset
/// for read_committed), in partition order.
fn keys(bootstrap: &str, topic: &str, isolation: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "crash-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut at_end = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while at_end.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "{isolation} reader did not reach the end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                out.entry(m.partition()).or_default().push(key);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    out.into_values().flatten().collect()
}

fn counts(keys: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for key in keys {
        *counts.entry(key.clone()).or_insert(0) += 1;
    }
    counts
}

fn service(bootstrap: &str, crash: bool) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_toolkit-eos"));
    command.args([
        "--brokers",
        bootstrap,
        "--group",
        "pricing",
        "--input",
        "orders",
        "--output",
        "priced",
        "--transactional-id",
        "pricing-0",
    ]);
    command.env(
        "RUST_LOG",
        "info,librdkafka=warn,ferry_toolkit::kafka=debug",
    );
    if crash {
        command.env(CRASH_BEFORE_COMMIT_ENV, "1");
    } else {
        command.env_remove(CRASH_BEFORE_COMMIT_ENV);
    }
    command.spawn().expect("the service starts")
}

async fn publish(publisher: &Publisher, from: usize, to: usize) {
    for i in from..to {
        publisher
            .publish(
                "orders",
                OrderPlaced {
                    id: format!("o{i:03}"),
                    items: vec![100, i as u64],
                },
            )
            .await
            .unwrap();
    }
}

/// Polls until the read_committed output holds `n` records; returns them.
async fn committed_outputs(bootstrap: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = bootstrap.to_owned();
        let seen = tokio::task::spawn_blocking(move || keys(&b, "priced", "read_committed"))
            .await
            .unwrap();
        if seen.len() >= n || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_produce_and_commit_then_restarted_outputs_each_input_once()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let broker = ferry_broker::start(BrokerConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data.path().to_path_buf(),
        ..BrokerConfig::default()
    })
    .await?;
    let bootstrap = broker.bootstrap_servers();
    create_topics(&bootstrap, &["orders", "priced", "orders.dlq"]).await;
    let publisher = Publisher::kafka(&KafkaConfig::new(bootstrap.clone()))?;
    const FIRST: usize = 40;
    publish(&publisher, 0, FIRST).await;

    // First run: dies at its first commit.
    let mut child = service(&bootstrap, true);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not abort itself"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.signal(), Some(6), "aborted (SIGABRT): {status:?}");

    let b = bootstrap.clone();
    let (uncommitted, committed) = tokio::task::spawn_blocking(move || {
        (
            keys(&b, "priced", "read_uncommitted"),
            keys(&b, "priced", "read_committed"),
        )
    })
    .await?;
    assert!(
        !uncommitted.is_empty(),
        "the outputs were produced before the kill"
    );
    assert!(
        committed.is_empty(),
        "nothing was committed before the kill: {committed:?}"
    );
    let aborted = uncommitted.clone();

    // Second run: fences the dead instance's transaction and redoes the work.
    let mut second = Reaper(Some(service(&bootstrap, false)));
    let outputs = committed_outputs(&bootstrap, FIRST).await;
    assert_eq!(
        outputs.len(),
        FIRST,
        "every first input priced: {outputs:?}"
    );
    const MORE: usize = 20;
    publish(&publisher, FIRST, FIRST + MORE).await;
    let outputs = committed_outputs(&bootstrap, FIRST + MORE).await;

    let seen = counts(&outputs);
    let expected: Vec<String> = (0..FIRST + MORE).map(|i| format!("o{i:03}")).collect();
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        expected,
        "every input has an output"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "outputs seen twice: {twice:?}");
    // Give a late duplicate (there must be none) the time to show up, then look again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = bootstrap.clone();
    let (all_uncommitted, all_committed) = tokio::task::spawn_blocking(move || {
        (
            keys(&b, "priced", "read_uncommitted"),
            keys(&b, "priced", "read_committed"),
        )
    })
    .await?;
    assert_eq!(
        all_committed.len(),
        FIRST + MORE,
        "no duplicate committed later"
    );
    assert_eq!(
        all_uncommitted.len(),
        FIRST + MORE + aborted.len(),
        "read_uncommitted sees the aborted copies too"
    );
    for key in &aborted {
        assert_eq!(
            seen.get(key),
            Some(&1),
            "{key}: aborted copy, then exactly one committed"
        );
    }

    if let Some(mut child) = second.0.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait()?;
        assert!(status.success(), "graceful stop: {status:?}");
    }
    broker.shutdown().await?;
    Ok(())
}
