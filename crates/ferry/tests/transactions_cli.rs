//! `ferry transactions list|describe` against `ferry broker`, with one transaction committed and
//! one left open.

mod common;

use std::process::Command;
use std::time::Duration;

use common::ChildBroker;
use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const T: Duration = Duration::from_secs(10);

fn ferry(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_BROKERS")
        .output()
        .expect("run ferry");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn producer(addr: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("transactional.id", id)
        .create()
        .unwrap()
}

#[test]
fn transactions_list_and_describe_show_states_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), &[]);
    let b = broker.addr.as_str();

    let done = producer(b, "cli-done");
    done.init_transactions(T).unwrap();
    done.begin_transaction().unwrap();
    done.send(BaseRecord::<(), str>::to("cli-t").payload("x"))
        .map_err(|(e, _)| e)
        .unwrap();
    done.commit_transaction(T).unwrap();
    let open = producer(b, "cli-open");
    open.init_transactions(T).unwrap();
    open.begin_transaction().unwrap();
    open.send(BaseRecord::<(), str>::to("cli-t").payload("y").partition(0))
        .map_err(|(e, _)| e)
        .unwrap();
    open.flush(T).unwrap();
    // The open transaction also commits offsets of group cli-g.
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("group.id", "cli-g")
        .create()
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("cli-t", 0, rdkafka::Offset::Offset(1))
        .unwrap();
    open.send_offsets_to_transaction(&offsets, &member.group_metadata().unwrap(), T)
        .unwrap();

    let (ok, list, err) = ferry(&["transactions", "list", "--brokers", b]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!((rows[0][0], rows[0][2]), ("cli-done", "CompleteCommit"));
    assert_eq!((rows[1][0], rows[1][2]), ("cli-open", "Ongoing"));

    let (ok, only, _) = ferry(&["transactions", "list", "--state", "Ongoing", "--brokers", b]);
    assert!(ok);
    assert_eq!(only.lines().count(), 2, "{only}");

    let (ok, described, err) = ferry(&["transactions", "describe", "cli-open", "--brokers", b]);
    assert!(ok, "{err}");
    assert!(
        described.contains("state:            Ongoing"),
        "{described}"
    );
    assert!(
        described.contains("partitions:       cli-t [0]"),
        "{described}"
    );

    let (ok, group, err) = ferry(&["groups", "describe", "cli-g", "--brokers", b]);
    assert!(ok, "{err}");
    assert!(
        group
            .contains("pending transactional offsets (an open transaction commits them): cli-t[0]"),
        "{group}"
    );

    let (ok, _, err) = ferry(&["transactions", "describe", "nobody", "--brokers", b]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
    let (ok, _, err) = ferry(&["transactions", "list", "--state", "Bogus", "--brokers", b]);
    assert!(!ok);
    assert!(err.contains("unknown state"), "{err}");
}
