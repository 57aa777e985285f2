"""The adapters' pure parts: client settings, Redis key and reply shapes, the CLI's errors.
The adapters themselves run against the lab's Kafka, Redis and PostgreSQL in the system tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sluice.aggregates import MINUTE, bucket_key, key_slot
from sluice.cli import main
from sluice.config import KafkaSettings
from sluice.kafka_io import client_config, producer_config
from sluice.redis_io import fold_minutes, minute_starts, rate_limit_keys


def test_every_producer_is_idempotent_with_acks_all_and_the_java_partitioner() -> None:
    settings = KafkaSettings(
        bootstrap_servers=("10.77.0.12:9092", "10.77.0.12:9093"),
        sasl_username="sluice-producer",
        sasl_password="secret-password",
        ca_file=Path("/etc/sluice/kafka-ca.crt"),
        produce_timeout_seconds=5,
    )
    config = producer_config(settings)
    assert config["bootstrap.servers"] == "10.77.0.12:9092,10.77.0.12:9093"
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["partitioner"] == "murmur2_random"
    assert config["socket.nagle.disable"] is True
    assert config["message.timeout.ms"] == 5000
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["ssl.ca.location"] == "/etc/sluice/kafka-ca.crt"


def test_plaintext_settings_carry_no_sasl_keys() -> None:
    config = client_config(KafkaSettings(bootstrap_servers=("k:9092",), security_protocol="SSL"))
    assert not [key for key in config if key.startswith("sasl.")]


def test_rate_limit_keys_share_the_tenant_slot() -> None:
    window, seq = rate_limit_keys("acme")
    assert window == "sluice:{acme}:rl" and seq == "sluice:{acme}:rl:seq"
    assert key_slot(window) == key_slot(seq) == key_slot(bucket_key("acme", MINUTE, _at(12, 0)))


def test_minute_starts_end_with_the_current_minute_oldest_first() -> None:
    starts = minute_starts(_at(12, 3, 41), 3)
    assert starts == [_at(12, 1), _at(12, 2), _at(12, 3)]


def test_fold_minutes_sums_types_and_totals() -> None:
    starts = [_at(12, 0), _at(12, 1)]
    replies = [[b"order.created", b"3", b"_total", b"5", b"order.paid", b"2"], []]
    document = fold_minutes(starts, replies)
    assert document["total"] == 5
    assert document["totals"] == {"order.created": 3, "order.paid": 2}
    assert document["minutes"][0] == {
        "minute": "2026-11-27T12:00:00Z",
        "total": 5,
        "counts": {"order.created": 3, "order.paid": 2},
    }
    assert document["minutes"][1]["total"] == 0


def test_a_command_without_its_settings_names_the_missing_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("SLUICE_"):
            monkeypatch.delenv(name)
    assert main(["migrate"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sluice migrate: ")
    assert "SLUICE_POSTGRES_HOST" in error


def _at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 27, hour, minute, second, tzinfo=UTC)
