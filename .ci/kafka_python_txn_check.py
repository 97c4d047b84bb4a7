#!/usr/bin/env python3
"""kafka-python transactions against a running broker.

A transactional KafkaProducer (transactional_id set) commits one transaction, aborts one, and commits one more, on
a new 2-partition topic; kafka-python negotiates its own (older) versions of InitProducerId, AddPartitionsToTxn and
EndTxn. A KafkaConsumer with isolation_level='read_committed' must read exactly the committed messages, in order,
and none of the aborted ones; one with 'read_uncommitted' must read all three transactions' messages.

Usage: .ci/kafka_python_txn_check.py HOST:PORT
"""

import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

PER_TXN = 50
PARTITIONS = 2
TIMEOUT_S = 60


def send_transaction(producer, topic, tag):
    """Sends PER_TXN messages tagged `tag` over both partitions and waits for their acknowledgements."""
    futures = [
        producer.send(topic, value=f"{tag}-{i:03d}".encode(), partition=i % PARTITIONS) for i in range(PER_TXN)
    ]
    producer.flush(timeout=TIMEOUT_S)
    for f in futures:
        f.get(timeout=TIMEOUT_S)


def read_all(brokers, topic, isolation_level, expected):
    """Values per partition, read from the beginning until `expected` messages arrived or the timeout passed."""
    consumer = KafkaConsumer(
        bootstrap_servers=brokers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
    )
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    values = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + TIMEOUT_S
    count = 0
    while count < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            for r in batch:
                values[r.partition].append(r.value.decode())
                count += 1
    # Anything beyond what is expected shows up within another few polls.
    for _ in range(4):
        for batch in consumer.poll(timeout_ms=250).values():
            for r in batch:
                values[r.partition].append(r.value.decode())
    consumer.close()
    return values


def expected_values(tags):
    return {p: [f"{tag}-{i:03d}" for tag in tags for i in range(PER_TXN) if i % PARTITIONS == p] for p in range(PARTITIONS)}


def check(brokers):
    topic = f"kafka-python-txn-check-{time.time_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=brokers, client_id="ferry-ci", request_timeout_ms=TIMEOUT_S * 1000)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()

    producer = KafkaProducer(
        bootstrap_servers=brokers,
        transactional_id=f"ferry-ci-{time.time_ns()}",
        request_timeout_ms=30000,
    )
    producer.init_transactions()
    producer.begin_transaction()
    send_transaction(producer, topic, "first")
    producer.commit_transaction()
    producer.begin_transaction()
    send_transaction(producer, topic, "aborted")
    producer.abort_transaction()
    producer.begin_transaction()
    send_transaction(producer, topic, "second")
    producer.commit_transaction()
    producer.close()

    committed = read_all(brokers, topic, "read_committed", 2 * PER_TXN)
    want = expected_values(["first", "second"])
    assert committed == want, f"read_committed saw {committed}, expected {want}"
    everything = read_all(brokers, topic, "read_uncommitted", 3 * PER_TXN)
    want_all = expected_values(["first", "aborted", "second"])
    assert everything == want_all, f"read_uncommitted saw {everything}, expected {want_all}"
    print(
        f"kafka-python: 2 committed and 1 aborted transaction of {PER_TXN} messages on {topic}; "
        f"read_committed read {sum(map(len, committed.values()))}, read_uncommitted {sum(map(len, everything.values()))}"
    )


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} HOST:PORT")
    try:
        check(sys.argv[1])
    except Exception as e:  # noqa: BLE001 - any failure fails the check, with its reason on one line
        print(f"kafka-python transactions: FAILED: {type(e).__name__}: {e}")
        print("kafka-python transactions: 0 passed, 1 failed")
        sys.exit(1)
    print("kafka-python transactions: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
