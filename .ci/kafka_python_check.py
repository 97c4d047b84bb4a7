#!/usr/bin/env python3
"""kafka-python round trip against a running broker.

A KafkaProducer (acks='all') sends 1,000 messages with keys and headers to a new 2-partition topic created with
KafkaAdminClient; a KafkaConsumer with no group assigns both partitions, seeks to the beginning and must read every
message back with the same key, value and headers, at the partition and offset the producer was told, in the order
each partition received them. kafka-python negotiates older API versions than librdkafka, so this covers the
broker's version ranges rather than one version.

Usage: .ci/kafka_python_check.py HOST:PORT
"""

import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

MESSAGES = 1000
PARTITIONS = 2
TIMEOUT_S = 60


def message(i):
    """Key, value and headers of message number i."""
    key = f"key-{i % 10}".encode()
    value = f"value {i:04d} {'é' * (i % 7)}".encode()
    headers = [("seq", str(i).encode()), ("parity", b"even" if i % 2 == 0 else b"odd")]
    return key, value, headers


def check(brokers):
    # A new topic each run, so a rerun against the same broker does not read the previous run's messages.
    topic = f"kafka-python-check-{time.time_ns()}"

    admin = KafkaAdminClient(bootstrap_servers=brokers, client_id="ferry-ci", request_timeout_ms=TIMEOUT_S * 1000)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()

    producer = KafkaProducer(bootstrap_servers=brokers, acks="all", linger_ms=5, request_timeout_ms=30000)
    futures = []
    for i in range(MESSAGES):
        key, value, headers = message(i)
        futures.append((i, producer.send(topic, key=key, value=value, headers=headers)))
    producer.flush(timeout=TIMEOUT_S)
    expected = {}  # (partition, offset) -> message number
    for i, future in futures:
        metadata = future.get(timeout=TIMEOUT_S)
        expected[(metadata.partition, metadata.offset)] = i
    producer.close()
    assert len(expected) == MESSAGES, f"{MESSAGES - len(expected)} messages share a partition and offset"
    used = {p for p, _ in expected}
    assert used == set(range(PARTITIONS)), f"keys should spread over {PARTITIONS} partitions, used {sorted(used)}"

    consumer = KafkaConsumer(
        bootstrap_servers=brokers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(records) < MESSAGES and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    assert len(records) == MESSAGES, f"read {len(records)} of {MESSAGES} messages back within {TIMEOUT_S} s"

    last_seq = {}
    for r in records:
        i = expected.get((r.partition, r.offset))
        assert i is not None, f"unexpected record at {r.partition}/{r.offset}"
        key, value, headers = message(i)
        assert r.key == key, f"message {i}: key {r.key!r}, expected {key!r}"
        assert r.value == value, f"message {i}: value {r.value!r}, expected {value!r}"
        assert list(r.headers) == headers, f"message {i}: headers {r.headers!r}, expected {headers!r}"
        # Each partition returns its messages in the order they were sent.
        assert last_seq.get(r.partition, -1) < i, f"partition {r.partition}: message {i} after {last_seq[r.partition]}"
        last_seq[r.partition] = i
    counts = {p: sum(1 for r in records if r.partition == p) for p in range(PARTITIONS)}
    print(f"kafka-python: {MESSAGES} messages with keys and headers round-tripped through {topic}, per partition {counts}")


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} HOST:PORT")
    try:
        check(sys.argv[1])
    except Exception as e:  # noqa: BLE001 - any failure fails the check, with its reason on one line
        print(f"kafka-python: FAILED: {type(e).__name__}: {e}")
        print("kafka-python: 0 passed, 1 failed")
        sys.exit(1)
    print("kafka-python: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
