"""Runs on a Kafka host with the role's admin venv: produce numbered records to a topic as
sluice-producer (acks=all, idempotent) for a while, then read the topic back as admin and
report which acknowledged records are missing.

Usage: /opt/kafka/admin-venv/bin/python kafka_writer.py MAX_SECONDS ; settings are one JSON line
on stdin: {"bootstrap", "cafile", "topic", "producer_password", "admin_password"}; the writer
stops at the next line or the end of stdin, or after MAX_SECONDS. Prints one JSON line:
acknowledged and failed sends, acknowledged records not found, records found."""

import json
import sys
import threading
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def _client(settings, user, password):
    return {
        "bootstrap_servers": settings["bootstrap"].split(","),
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": user,
        "sasl_plain_password": password,
        "ssl_cafile": settings["cafile"],
    }


def write(settings, seconds, run, stop):
    """Send run:0, run:1, ... until the time is up; {seq: (partition, offset)} acknowledged."""
    producer = KafkaProducer(
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        delivery_timeout_ms=120000,
        request_timeout_ms=30000,
        **_client(settings, "sluice-producer", settings["producer_password"]),
    )
    acked, failed, errors = {}, [], {}

    def on_ack(seq):
        return lambda meta: acked.__setitem__(seq, (meta.partition, meta.offset))

    def on_error(seq):
        def record(exc):
            failed.append(seq)
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        return record

    deadline, seq = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and not stop.is_set():
        future = producer.send(settings["topic"], key=run.encode(), value=f"{run}:{seq}".encode())
        future.add_callback(on_ack(seq)).add_errback(on_error(seq))
        seq += 1
        if seq % 200 == 0:
            time.sleep(0.05)  # a steady stream, not a flood the lab cannot absorb
    producer.flush(timeout=180)
    producer.close(timeout=30)
    return seq, acked, failed, errors


def read_back(settings, run, acked):
    """The seqs of this run found in the partitions the acks named, from their first offset."""
    consumer = KafkaConsumer(
        enable_auto_commit=False,
        consumer_timeout_ms=10000,
        **_client(settings, "admin", settings["admin_password"]),
    )
    starts = {}
    for partition, offset in acked.values():
        starts[partition] = min(offset, starts.get(partition, offset))
    parts = [TopicPartition(settings["topic"], p) for p in sorted(starts)]
    consumer.assign(parts)
    ends = consumer.end_offsets(parts)
    for tp in parts:
        consumer.seek(tp, starts[tp.partition])
    found, prefix = set(), f"{run}:".encode()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in parts):
        for records in consumer.poll(timeout_ms=2000).values():
            for record in records:
                if record.value.startswith(prefix):
                    found.add(int(record.value[len(prefix) :]))
    consumer.close()
    return found


def main():
    seconds = float(sys.argv[1])
    settings = json.loads(sys.stdin.readline())
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    run = uuid.uuid4().hex[:12]
    started = time.monotonic()
    sent, acked, failed, errors = write(settings, seconds, run, stop)
    wrote_for = round(time.monotonic() - started, 1)
    found = read_back(settings, run, acked) if acked else set()
    missing = sorted(set(acked) - found)
    print(
        json.dumps(
            {
                "run": run,
                "seconds": wrote_for,
                "sent": sent,
                "acked": len(acked),
                "failed": len(failed),
                "errors": errors,
                "found": len(found),
                "missing": missing[:20],
                "missing_count": len(missing),
            }
        )
    )


if __name__ == "__main__":
    main()
