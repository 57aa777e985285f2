"""Runs on a Sluice host with the service's venv (confluent-kafka): put a record that is not a
CloudEvent on events.raw as sluice-producer, then read events.dlq as admin until it arrives.

Usage: /opt/sluice/current/venv/bin/python kafka_poison.py ; settings are one JSON line on
stdin: {"bootstrap", "cafile", "producer_password", "admin_password", "tenant", "marker"}.
Prints one JSON line: {"found": bool, "headers": {...}} (the DLQ record's headers)."""

import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition


def _client(settings, user, password):
    return {
        "bootstrap.servers": settings["bootstrap"],
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": settings["cafile"],
    }


def main():
    settings = json.loads(sys.stdin.readline())
    consumer = Consumer(
        {
            **_client(settings, "admin", settings["admin_password"]),
            "group.id": f"system-tests-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics("events.dlq", timeout=30).topics["events.dlq"].partitions
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition("events.dlq", p), timeout=30)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition("events.dlq", p, offset) for p, offset in ends.items()])

    producer = Producer(
        {
            **_client(settings, "sluice-producer", settings["producer_password"]),
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    marker = settings["marker"].encode()
    producer.produce("events.raw", key=settings["tenant"].encode(), value=b"\0not json " + marker)
    if producer.flush(30) != 0:
        print(json.dumps({"found": False, "error": "the poison record was not acknowledged"}))
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error() or marker not in (message.value() or b""):
            continue
        headers = {name: (value or b"").decode() for name, value in message.headers() or []}
        print(json.dumps({"found": True, "headers": headers}))
        break
    else:
        print(json.dumps({"found": False}))
    consumer.close()


if __name__ == "__main__":
    main()
