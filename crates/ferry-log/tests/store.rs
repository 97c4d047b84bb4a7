//! Topic administration and persistence of the store.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;

use common::*;
use ferry_log::{Error, LogConfig, Store};

fn open_store(root: &Path) -> Store {
    Store::open(root, LogConfig::default(), Arc::new(|| {})).unwrap()
}

fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn created_topics_are_found_by_name_and_id() {
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path());
    let orders = store.create_topic("orders", 3, BTreeMap::new()).unwrap();
    store
        .create_topic("audit.log-v1_x", 1, BTreeMap::new())
        .unwrap();
    assert_eq!(orders.name(), "orders");
    assert_eq!(orders.partition_count(), 3);
    assert_eq!(orders.partitions().len(), 3);
    assert!(orders.partition(2).is_some());
    assert!(orders.partition(3).is_none());
    assert!(orders.partition(-1).is_none());
    assert_eq!(store.topic_by_id(orders.id()).unwrap().name(), "orders");
    let names: Vec<_> = store.topics().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(names, ["audit.log-v1_x", "orders"]);
    assert!(root.path().join("topics/orders/topic.json").exists());
    assert!(
        root.path()
            .join("topics/orders/2/00000000000000000000.log")
            .exists()
    );

    let p = orders.partition(1u32).unwrap();
    append_durable(&p, &batch(2, 1));
    assert_eq!(headers(&read_all(&p)).len(), 1);
}

#[test]
fn bad_create_requests_are_rejected_without_leaving_anything() {
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path());
    store.create_topic("t", 1, BTreeMap::new()).unwrap();
    assert!(matches!(
        store.create_topic("t", 1, BTreeMap::new()),
        Err(Error::TopicExists(_))
    ));
    assert!(matches!(
        store.create_topic("u", 0, BTreeMap::new()),
        Err(Error::InvalidPartitions(_))
    ));
    let bad_config = overrides(&[("retention.ms", "soon")]);
    assert!(matches!(
        store.create_topic("u", 1, bad_config),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        store.get_or_create_topic("a/b", 1),
        Err(Error::InvalidTopic(_))
    ));
    assert_eq!(store.topics().len(), 1);
    assert_eq!(
        std::fs::read_dir(root.path().join("topics"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn topic_names_follow_kafka_rules() {
    #[track_caller]
    fn check(name: &str, valid: bool) {
        let result = Store::validate_topic_name(name);
        assert_eq!(result.is_ok(), valid, "{name:?}: {result:?}");
        if !valid {
            assert!(matches!(result, Err(Error::InvalidTopic(_))));
        }
    }
    check("orders", true);
    check("a.b_c-D9", true);
    check("...", true);
    check(&"x".repeat(249), true);
    check(&"x".repeat(250), false);
    check("", false);
    check(".", false);
    check("..", false);
    check("a b", false);
    check("a/b", false);
    check("ü", false);
    check("tmp\0", false);
}

#[test]
fn concurrent_creates_of_one_name_have_exactly_one_winner() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(open_store(root.path()));
    let barrier = Arc::new(Barrier::new(8));
    let results: Vec<_> = (0..8)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                store
                    .create_topic("race", 2, BTreeMap::new())
                    .map(|t| t.id())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(Error::TopicExists(_))))
    );
}

#[test]
fn concurrent_get_or_create_all_get_the_same_topic() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(open_store(root.path()));
    let barrier = Arc::new(Barrier::new(8));
    let ids: HashSet<_> = (0..8)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                store.get_or_create_topic("auto", 1).unwrap().id()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(store.topics().len(), 1);
}

#[test]
fn deleted_topics_disappear_and_their_logs_refuse_appends() {
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path());
    let old = store.create_topic("gone", 1, BTreeMap::new()).unwrap();
    let partition = old.partition(0).unwrap();
    append_durable(&partition, &batch(1, 1));

    store.delete_topic("gone").unwrap();
    assert!(store.topic("gone").is_none());
    assert!(store.topic_by_id(old.id()).is_none());
    assert!(!root.path().join("topics/gone").exists());
    assert!(matches!(
        partition.append(&batch(1, 1)),
        Err(Error::Deleted(_))
    ));
    assert!(matches!(
        store.delete_topic("gone"),
        Err(Error::UnknownTopic(_))
    ));

    // The name can be reused, starting from scratch.
    let new = store.create_topic("gone", 1, BTreeMap::new()).unwrap();
    assert_ne!(new.id(), old.id());
    assert_eq!(new.partition(0).unwrap().log_end_offset(), 0);
    drop(store);
    assert_eq!(
        open_store(root.path()).topic("gone").unwrap().id(),
        new.id()
    );
}

#[test]
fn create_partitions_only_grows() {
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path());
    store.create_topic("t", 2, BTreeMap::new()).unwrap();
    assert!(matches!(
        store.create_partitions("t", 2),
        Err(Error::InvalidPartitions(_))
    ));
    assert!(matches!(
        store.create_partitions("t", 1),
        Err(Error::InvalidPartitions(_))
    ));
    assert!(matches!(
        store.create_partitions("none", 5),
        Err(Error::UnknownTopic(_))
    ));
    store.create_partitions("t", 5).unwrap();
    let topic = store.topic("t").unwrap();
    assert_eq!(topic.partition_count(), 5);
    append_durable(&topic.partition(4).unwrap(), &batch(1, 1));
    drop((topic, store));
    let topic = open_store(root.path()).topic("t").unwrap();
    assert_eq!(topic.partition_count(), 5);
    assert_eq!(topic.partition(4).unwrap().high_watermark(), 1);
}

#[test]
fn alter_config_persists_and_applies_to_partitions() {
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path());
    store
        .create_topic("t", 2, overrides(&[("retention.ms", "1000")]))
        .unwrap();
    assert_eq!(store.topic("t").unwrap().config().retention_ms, Some(1000));

    let new = overrides(&[("retention.bytes", "4096"), ("cleanup.policy", "compact")]);
    store.alter_config("t", new.clone()).unwrap();
    let topic = store.topic("t").unwrap();
    assert_eq!(topic.overrides(), new);
    let config = topic.config();
    assert_eq!(config.retention_bytes, Some(4096));
    assert_eq!(
        config.retention_ms,
        LogConfig::default().retention_ms,
        "replaced, not merged"
    );
    assert!(topic.partitions().iter().all(|p| p.config() == config));
    assert!(matches!(
        store.alter_config("t", overrides(&[("nope", "1")])),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        store.alter_config("none", BTreeMap::new()),
        Err(Error::UnknownTopic(_))
    ));
}

#[test]
fn reopening_the_store_restores_topics_configs_and_data() {
    let root = tempfile::tempdir().unwrap();
    let (id, records) = {
        let store = open_store(root.path());
        let topic = store
            .create_topic("keep", 2, overrides(&[("segment.bytes", "100")]))
            .unwrap();
        let partition = topic.partition(1).unwrap();
        for _ in 0..4 {
            partition.append(&batch(2, 7)).unwrap();
        }
        store.flush_all().unwrap();
        (topic.id(), read_all(&partition))
    };
    let store = open_store(root.path());
    let topic = store.topic("keep").unwrap();
    assert_eq!(topic.id(), id);
    assert_eq!(topic.partition_count(), 2);
    assert_eq!(topic.config().segment_bytes, 100);
    assert_eq!(topic.overrides(), overrides(&[("segment.bytes", "100")]));
    assert_eq!(read_all(&topic.partition(1).unwrap()), records);
    assert_eq!(store.topic_by_id(id).unwrap().name(), "keep");
}

#[test]
fn store_retention_covers_every_partition() {
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path());
    let topic = store
        .create_topic(
            "t",
            2,
            overrides(&[("segment.bytes", "1"), ("retention.ms", "10")]),
        )
        .unwrap();
    for partition in topic.partitions() {
        for _ in 0..3 {
            append_durable(&partition, &batch(1, 100));
        }
    }
    assert_eq!(store.enforce_retention(1_000).unwrap(), 4);
    assert!(topic.partitions().iter().all(|p| p.log_start_offset() == 2));
}

#[test]
fn unfinished_topic_creation_is_discarded_on_open() {
    let root = tempfile::tempdir().unwrap();
    drop(open_store(root.path()));
    // What a crash during create_topic leaves: a staged topic that was never renamed into place.
    std::fs::create_dir_all(root.path().join("tmp/abc/0")).unwrap();
    let store = open_store(root.path());
    assert!(store.topics().is_empty());
    assert_eq!(
        std::fs::read_dir(root.path().join("tmp")).unwrap().count(),
        0
    );
}
