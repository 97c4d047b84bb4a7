#!/usr/bin/env python3
"""A client pinned to a request version Kafka 4.0 removed gets UNSUPPORTED_VERSION, not a dropped connection.

kafka-python with api_version=(0, 10, 1) produces with Produce v2, below Kafka 4.0's floor (v3, KIP-896). The broker must
answer that request with UNSUPPORTED_VERSION for the partition, so the send fails at once with UnsupportedVersionError
(before, the broker closed the connection and the client retried until its timeout). The same connection must still
serve a current client.

Usage: .ci/kafka_python_old_version_check.py HOST:PORT
"""

import sys
import time

from kafka import KafkaProducer
from kafka.errors import UnsupportedVersionError


def check(brokers):
    topic = f"kafka-python-old-{time.time_ns()}"
    old = KafkaProducer(bootstrap_servers=brokers, api_version=(0, 10, 1), acks="all", retries=0,
                        request_timeout_ms=20000, max_block_ms=20000)
    started = time.monotonic()
    try:
        old.send(topic, b"from an old client").get(timeout=30)
    except UnsupportedVersionError:
        took = time.monotonic() - started
        print(f"Produce v2: UnsupportedVersionError after {took:.2f} s")
        if took > 10:
            sys.exit(f"the answer took {took:.1f} s; expected at once")
    except Exception as e:  # noqa: BLE001 - any other outcome is the failure being checked for
        sys.exit(f"Produce v2: expected UnsupportedVersionError, got {type(e).__name__}: {e}")
    else:
        sys.exit("Produce v2 was accepted; Kafka 4.0 refuses it")
    finally:
        old.close(timeout=5)

    current = KafkaProducer(bootstrap_servers=brokers, acks="all")
    meta = current.send(topic, b"from a current client").get(timeout=30)
    current.close(timeout=5)
    print(f"a current client still produces: {meta.topic}/{meta.partition}@{meta.offset}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    check(sys.argv[1])
