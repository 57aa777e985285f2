"""Runs on a Kafka host with the role's admin venv (kafka-python): real clients against the
real cluster, as each SCRAM user over SASL_SSL, plus clients that must be refused.

Usage: /opt/kafka/admin-venv/bin/python kafka_probe.py SETTINGS.json
SETTINGS is base64 of JSON, in a root-only file the caller removes: {"client_bootstrap",
"internal_bootstrap", "cafile", "keystore", "passwords": {user: password}, "topic", "group",
"run"}.
Prints one JSON object: what each client could and could not do.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError


def _sasl(settings: dict, user: str, password: str | None = None) -> dict:
    return {
        "bootstrap_servers": settings["client_bootstrap"].split(","),
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": user,
        "sasl_plain_password": settings["passwords"][user] if password is None else password,
        "ssl_cafile": settings["cafile"],
        "request_timeout_ms": 15000,
    }


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def produce(settings: dict, user: str, topic: str, value: bytes, password: str | None = None):
    """(partition, offset) of the acknowledged record, or the error."""
    producer = None
    try:
        producer = KafkaProducer(
            acks="all",
            enable_idempotence=True,
            max_block_ms=15000,
            retries=2,
            **_sasl(settings, user, password),
        )
        meta = producer.send(topic, value=value, key=b"probe").get(timeout=30)
        return {"ok": True, "partition": meta.partition, "offset": meta.offset}
    except (KafkaError, OSError, AssertionError) as exc:
        return {"ok": False, "error": _error(exc)}
    finally:
        if producer is not None:
            producer.close(timeout=5)


def consume(settings: dict, user: str, topic: str, partition: int, offset: int, group: str | None):
    """The value at (topic, partition, offset) as ``user``, committed in ``group``."""
    consumer = None
    try:
        consumer = KafkaConsumer(
            group_id=group,
            enable_auto_commit=False,
            consumer_timeout_ms=20000,
            **_sasl(settings, user),
        )
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=2000).values():
                for record in records:
                    if record.offset == offset:
                        if group:
                            consumer.commit()
                        return {"ok": True, "value": record.value.decode()}
        return {"ok": False, "error": "record not found within 30 s"}
    except (KafkaError, OSError, AssertionError) as exc:
        return {"ok": False, "error": _error(exc)}
    finally:
        if consumer is not None:
            consumer.close()


class _AuthFailures(logging.Handler):
    """kafka-python's bootstrap only times out; its log says whether a login was refused."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "SaslAuthenticationFailed" in record.getMessage():
            self.seen.append(record.getMessage()[-200:])


def connect(settings: dict, timeout_ms: int = 8000, **options) -> dict:
    """Whether an admin client with these options gets the cluster's metadata."""
    watcher = _AuthFailures()
    logging.getLogger("kafka").addHandler(watcher)
    try:
        client = KafkaAdminClient(
            bootstrap_servers=settings["client_bootstrap"].split(",")[:1],
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            **options,
        )
        try:
            return {"ok": True, "brokers": len(client.describe_cluster()["brokers"])}
        finally:
            client.close()
    except (KafkaError, OSError, ValueError) as exc:
        return {"ok": False, "error": _error(exc), "auth_failures": watcher.seen}
    finally:
        logging.getLogger("kafka").removeHandler(watcher)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        settings = json.loads(base64.b64decode(handle.read()))
    topic, group, run = settings["topic"], settings["group"], settings["run"]
    report: dict = {}
    for user in ("sluice-producer", "admin"):
        sent = produce(settings, user, topic, f"{run}:{user}".encode())
        report[f"produce:{user}"] = sent
        if sent["ok"]:
            for reader, reader_group in (("sluice-processor", group), ("admin", None)):
                report[f"consume:{reader}:{user}"] = consume(
                    settings, reader, topic, sent["partition"], sent["offset"], reader_group
                )
    report["produce:monitoring"] = produce(settings, "monitoring", topic, b"must be refused")
    wrong = _sasl(settings, "sluice-producer", "not-the-password")
    del wrong["bootstrap_servers"], wrong["request_timeout_ms"]
    # generous: on a busy lab the TLS handshake and SCRAM exchange before the broker's refusal
    # took longer than 8 s once, and the probe saw a timeout instead of the refusal
    report["login:wrong-password"] = connect(settings, timeout_ms=20000, **wrong)
    right = _sasl(settings, "monitoring")
    del right["bootstrap_servers"], right["request_timeout_ms"]
    report["login:monitoring"] = connect(settings, **right)
    first = report.get("produce:sluice-producer") or {}
    if first.get("ok"):
        report["consume:sluice-producer"] = consume(
            settings, "sluice-producer", topic, first["partition"], first["offset"], None
        )
    report["plaintext"] = connect(settings, security_protocol="PLAINTEXT")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
