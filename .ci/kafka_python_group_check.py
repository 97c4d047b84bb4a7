"""kafka-python in a consumer group: consume, commit, and resume from the commit in a new consumer.

Usage: kafka_python_group_check.py HOST:PORT
"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

brokers = sys.argv[1]
topic = f"kafka-python-group-{time.time_ns()}"
group = f"kafka-python-group-{time.time_ns()}"


def fail(why):
    print(f"kafka-python group: {why}")
    print("kafka-python group: 0 passed, 1 failed")
    sys.exit(1)


producer = KafkaProducer(bootstrap_servers=brokers, acks="all")
for i in range(100):
    producer.send(topic, key=b"k", value=str(i).encode())
producer.flush()
producer.close()


def consumer():
    return KafkaConsumer(
        topic,
        bootstrap_servers=brokers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
    )


first = consumer()
got = []
for message in first:
    got.append(int(message.value))
    if len(got) == 60:
        break
first.commit()
committed = first.committed(TopicPartition(topic, 0))
first.close()
if got != list(range(60)):
    fail(f"first consumer read {got[:5]}... ({len(got)})")
if committed != 60:
    fail(f"committed offset is {committed}, expected 60")

second = consumer()
rest = []
for message in second:
    rest.append(int(message.value))
    if len(rest) == 40:
        break
second.close()
if rest != list(range(60, 100)):
    fail(f"the second consumer resumed at {rest[:1]} with {len(rest)} messages, expected 60..99")
print("kafka-python group: consumed 60, committed, and a new consumer resumed at 60 and read the other 40")
print("kafka-python group: 1 passed, 0 failed")
