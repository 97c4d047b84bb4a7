"""The original course producer's plain JSON (no key, no headers), sent by kafka-python, is applied
by `ferry run courses-consumer` exactly once, and still once after the group is rewound and the
records are delivered again.

Usage: kafka_python_plain_course_check.py HOST:PORT path/to/ferry
"""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

brokers, ferry = sys.argv[1], sys.argv[2]
GROUP = "courses-consumer"


def fail(why):
    print(f"plain course: {why}")
    print("plain course: 0 passed, 1 failed")
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data, port):
    return subprocess.Popen(
        [ferry, "run", "courses-consumer", "--brokers", brokers, "--data", data, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def status(port, course_id):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/courses/{course_id}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait_for(port, course_id, want):
    deadline = time.time() + 60
    while time.time() < deadline:
        if status(port, course_id) == want:
            return
        time.sleep(0.2)
    fail(f"course {course_id} never answered {want}")


def course(course_id, method):
    return json.dumps(
        {"id": course_id, "name": "From Python", "code": f"PY-{course_id}", "active": True, "method": method}
    ).encode()


def send(producer, value):
    # Partition 0, no key, no headers: what the Node original and any plain producer send.
    return producer.send("test", value=value, partition=0).get(timeout=30).offset


data = tempfile.mkdtemp()
port = free_port()
service = start(data, port)
try:
    producer = KafkaProducer(bootstrap_servers=brokers, acks="all")
    first = send(producer, course("py-1", "POST"))
    wait_for(port, "py-1", 200)
    send(producer, course("py-1", "DELETE"))
    wait_for(port, "py-1", 404)

    service.terminate()
    service.wait(timeout=60)
    rewind = KafkaConsumer(bootstrap_servers=brokers, group_id=GROUP, enable_auto_commit=False)
    rewind.commit({TopicPartition("test", 0): OffsetAndMetadata(first, "", -1)})
    rewind.close()

    service = start(data, port)
    send(producer, course("py-2", "POST"))
    wait_for(port, "py-2", 200)
    if status(port, "py-1") != 404:
        fail("py-1 came back after the redelivery")
    with sqlite3.connect(os.path.join(data, "courses-consumer.db")) as db:
        (claimed,) = db.execute("SELECT COUNT(*) FROM ferry_inbox WHERE consumer_group = ?", (GROUP,)).fetchone()
    if claimed != 3:
        fail(f"{claimed} inbox claims for 3 records: a redelivered record was applied again")
    producer.close()
finally:
    service.terminate()
    service.wait(timeout=60)
print("plain course: 1 passed, 0 failed")
