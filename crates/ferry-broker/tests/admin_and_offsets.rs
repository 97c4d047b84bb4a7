//! Topic administration, ListOffsets, auto-creation, and the fetch long poll, through
//! librdkafka's admin and consumer APIs.

mod common;

use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_grow_and_delete_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let admin = admin(&broker.bootstrap_servers());
    let opts = AdminOptions::new();

    let created = admin
        .create_topics(
            &[NewTopic::new("orders", 2, TopicReplication::Fixed(1))
                .set("retention.ms", "3600000")],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(created[0].as_ref().map(String::as_str), Ok("orders"));

    let again = admin
        .create_topics(
            &[NewTopic::new("orders", 2, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        again[0],
        Err(("orders".to_owned(), RDKafkaErrorCode::TopicAlreadyExists))
    );

    let bad = admin
        .create_topics(
            &[
                NewTopic::new("three-replicas", 1, TopicReplication::Fixed(3)),
                NewTopic::new("bad/name", 1, TopicReplication::Fixed(1)),
                NewTopic::new("bad-config", 1, TopicReplication::Fixed(1))
                    .set("no.such.config", "1"),
            ],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        bad[0],
        Err((
            "three-replicas".to_owned(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))
    );
    assert_eq!(
        bad[1],
        Err(("bad/name".to_owned(), RDKafkaErrorCode::InvalidTopic))
    );
    assert_eq!(
        bad[2],
        Err(("bad-config".to_owned(), RDKafkaErrorCode::InvalidConfig))
    );

    let configs = admin
        .describe_configs(&[ResourceSpecifier::Topic("orders")], &opts)
        .await
        .unwrap();
    let resource = configs[0].as_ref().expect("described");
    let retention = resource.get("retention.ms").expect("retention.ms listed");
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert!(!retention.is_default, "an override is not a default");
    assert!(resource.get("segment.bytes").is_some_and(|e| e.is_default));

    let grown = admin
        .create_partitions(&[NewPartitions::new("orders", 5)], &opts)
        .await
        .unwrap();
    assert!(grown[0].is_ok(), "{grown:?}");
    let shrunk = admin
        .create_partitions(&[NewPartitions::new("orders", 3)], &opts)
        .await
        .unwrap();
    assert_eq!(
        shrunk[0],
        Err(("orders".to_owned(), RDKafkaErrorCode::InvalidPartitions))
    );
    let md = admin
        .inner()
        .fetch_metadata(Some("orders"), Duration::from_secs(5))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);

    let deleted = admin.delete_topics(&["orders"], &opts).await.unwrap();
    assert!(deleted[0].is_ok(), "{deleted:?}");
    let gone = admin.delete_topics(&["orders"], &opts).await.unwrap();
    assert_eq!(
        gone[0],
        Err((
            "orders".to_owned(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))
    );

    // Topics and their configs survive a restart.
    admin
        .create_topics(
            &[
                NewTopic::new("kept", 3, TopicReplication::Fixed(1))
                    .set("segment.bytes", "1048576"),
            ],
            &opts,
        )
        .await
        .unwrap();
    drop(admin);
    broker.shutdown().await.unwrap();
    let broker = common::start(dir.path()).await;
    let admin = admin_for(&broker);
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .unwrap();
    let names: Vec<_> = md
        .topics()
        .iter()
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect();
    assert_eq!(names, [("kept".to_owned(), 3)]);
    let configs = admin
        .describe_configs(&[ResourceSpecifier::Topic("kept")], &opts)
        .await
        .unwrap();
    assert_eq!(
        configs[0]
            .as_ref()
            .unwrap()
            .get("segment.bytes")
            .and_then(|e| e.value.clone())
            .as_deref(),
        Some("1048576")
    );
    broker.shutdown().await.unwrap();
}

fn admin_for(broker: &ferry_broker::BrokerHandle) -> AdminClient<DefaultClientContext> {
    admin(&broker.bootstrap_servers())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_and_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let bootstrap = broker.bootstrap_servers();
    let producer = common::producer(&bootstrap, "all");
    for (i, ts) in [1_000_000i64, 2_000_000, 3_000_000].into_iter().enumerate() {
        producer
            .send(
                FutureRecord::to("timed")
                    .key("k")
                    .payload(&format!("m{i}"))
                    .timestamp(ts),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let consumer = common::consumer(&bootstrap);
    let (low, high) = consumer
        .fetch_watermarks("timed", 0, Duration::from_secs(5))
        .unwrap();
    assert_eq!((low, high), (0, 3));

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("timed", 0, Offset::Offset(2_000_000))
        .unwrap();
    let found = consumer
        .offsets_for_times(tpl.clone(), Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        found.find_partition("timed", 0).unwrap().offset(),
        Offset::Offset(1)
    );

    let mut later = TopicPartitionList::new();
    later
        .add_partition_offset("timed", 0, Offset::Offset(9_000_000))
        .unwrap();
    let found = consumer
        .offsets_for_times(later, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        found.find_partition("timed", 0).unwrap().offset(),
        Offset::End,
        "past the last record: the end"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.auto_create_topics = false;
    let broker = common::start_with(config).await;
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("message.timeout.ms", "2000")
        .create()
        .unwrap();
    let err = producer
        .send(
            FutureRecord::to("nope").key("k").payload("v"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.0.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::MessageTimedOut
                    | RDKafkaErrorCode::UnknownTopic
            )
        ),
        "{err:?}"
    );
    let md = admin_for(&broker)
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .unwrap();
    assert!(md.topics().is_empty(), "no topic was created");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_uses_the_default_partition_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.default_partitions = 3;
    let broker = common::start_with(config).await;
    let producer = common::producer(&broker.bootstrap_servers(), "all");
    producer
        .send(
            FutureRecord::to("fresh").key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let md = admin_for(&broker)
        .inner()
        .fetch_metadata(Some("fresh"), Duration::from_secs(5))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 3);
    broker.shutdown().await.unwrap();
}

/// A consumer waiting in a long poll gets a new record as soon as it is durable, not when its
/// max wait runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_returns_as_soon_as_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let bootstrap = broker.bootstrap_servers();
    let producer = common::producer(&bootstrap, "all");
    producer
        .send(
            FutureRecord::to("poll").key("k").payload("first"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10000")
        .set("fetch.min.bytes", "1")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("poll", 0, Offset::Offset(1))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    // Let the consumer settle into a long poll at the end of the log.
    assert!(consumer.poll(Duration::from_millis(1500)).is_none());

    let sent_at = Instant::now();
    producer
        .send(
            FutureRecord::to("poll").key("k").payload("second"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(9);
        while Instant::now() < deadline {
            if let Some(m) = consumer.poll(Timeout::After(Duration::from_millis(50))) {
                return Some(m.unwrap().payload().map(<[u8]>::to_vec));
            }
        }
        None
    })
    .await
    .unwrap();
    let waited = sent_at.elapsed();
    assert_eq!(got, Some(Some(b"second".to_vec())));
    assert!(
        waited < Duration::from_secs(3),
        "delivered after {waited:?}, well before the 10 s max wait"
    );
    broker.shutdown().await.unwrap();
}
