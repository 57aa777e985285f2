"""The adapters' pure parts: client settings, Redis key and reply shapes, the CLI's errors.
The adapters themselves run against the lab's Kafka, Redis and PostgreSQL in the system tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from redis.crc import key_slot

from sluice.adapters.kafka import client_config, producer_config
from sluice.adapters.redis import (
    RedisProcessor,
    bucket_fields,
    fold_minutes,
    minute_starts,
    rate_limit_keys,
)
from sluice.cli import main
from sluice.config import KafkaSettings
from sluice.derived.aggregates import MINUTE, BucketSet, bucket_key


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
    bucket = bucket_key("acme", MINUTE, _at(12, 0))
    assert key_slot(window.encode()) == key_slot(seq.encode()) == key_slot(bucket.encode())


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


class FakePipeline:
    """A cluster pipeline that records its commands and answers from ``replies``."""

    def __init__(self, sent: list[tuple[Any, ...]], replies: list[Any]) -> None:
        self.sent, self.replies = sent, replies

    def execute_command(self, *args: Any) -> None:
        self.sent.append(args)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        assert raise_on_error
        return self.replies


def _processor(replies: list[Any]) -> tuple[RedisProcessor, list[tuple[Any, ...]], list[bool]]:
    sent: list[tuple[Any, ...]] = []
    transactions: list[bool] = []

    def pipeline(transaction: bool) -> FakePipeline:
        transactions.append(transaction)
        return FakePipeline(sent, replies)

    processor = RedisProcessor.__new__(RedisProcessor)
    processor.client = SimpleNamespace(pipeline=pipeline)  # type: ignore[assignment]
    return processor, sent, transactions


def test_rebuilt_buckets_are_set_in_one_pipeline_and_report_what_changed() -> None:
    buckets = [
        BucketSet("acme", MINUTE, _at(12, 0), (("a", 2), ("b", 1)), 600),
        BucketSet("globex", MINUTE, _at(12, 0), (("a", 1),), 600),
    ]
    processor, sent, transactions = _processor([[3, 1], [1, 0]])

    assert processor.set_buckets(buckets) == [True, False]

    assert transactions == [False]  # one non-transactional cluster pipeline, split per node
    assert sent == [("FCALL", *bucket.fcall_args()) for bucket in buckets]


def test_buckets_are_read_with_fcall_ro_as_field_counts() -> None:
    processor, sent, _ = _processor([[b"a", b"2", b"_total", b"2"], []])

    assert processor.read_buckets(["k1", "k2"]) == [{"a": 2, "_total": 2}, {}]
    assert sent == [
        ("FCALL_RO", "sluice_aggregates_read", 1, "k1"),
        ("FCALL_RO", "sluice_aggregates_read", 1, "k2"),
    ]
    assert processor.set_buckets([]) == []  # nothing to send: no pipeline at all
    assert len(sent) == 2


def test_bucket_fields_pair_fields_with_counts() -> None:
    assert bucket_fields([b"page.view", b"4", "_total", "4"]) == {"page.view": 4, "_total": 4}
    assert bucket_fields([]) == {}


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


def test_a_redis_outage_is_a_503_naming_redis() -> None:
    import redis as redis_lib

    from sluice.adapters.redis import _redis_unavailable
    from sluice.errors import Unavailable

    error = _redis_unavailable(redis_lib.ConnectionError("refused"))
    assert isinstance(error, Unavailable) and error.status == 503
    assert error.code == "redis_unavailable" and "ConnectionError" in error.detail


class _FailingCluster:
    """A cluster client failing the way redis-py's async client does when a master is killed:
    asyncio's RuntimeError from the closed transport, not a redis.RedisError."""

    error = RuntimeError(
        "unable to perform operation on <TCPTransport closed=True reading=False 0x7f>; "
        "the handler is closed"
    )

    async def fcall(self, *args: object) -> list[int]:
        raise self.error

    def pipeline(self, transaction: bool = False) -> _FailingCluster:
        return self

    def fcall_ro(self, *args: object) -> None:
        return None

    async def execute(self) -> list[object]:
        raise self.error

    async def ping(self) -> bool:
        raise self.error


def test_any_failure_inside_the_redis_client_is_a_503_or_not_ready_never_a_500() -> None:
    from sluice.adapters.redis import RedisApi
    from sluice.config import RedisSettings
    from sluice.errors import Unavailable

    api = RedisApi(RedisSettings(startup_nodes=(("127.0.0.1", 7000),)), limit=10, window_seconds=60)
    api.client = _FailingCluster()  # type: ignore[assignment]
    for call in (api.check("acme"), api.aggregates("acme", 5)):
        with pytest.raises(Unavailable) as caught:
            asyncio.run(call)
        assert caught.value.status == 503 and "RuntimeError" in caught.value.detail
    assert asyncio.run(api.ping()) is False


def test_a_kafka_failure_is_a_503_naming_the_error_not_the_brokers() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from sluice.adapters.kafka import _error_name

    assert _error_name(KafkaException(KafkaError(KafkaError._TRANSPORT))) == "_TRANSPORT"
    assert _error_name(KafkaException("text")) == "KafkaException"


def test_function_calls_are_routed_by_their_own_keys_without_asking_the_server() -> None:
    from redis.connection import Encoder

    from sluice.adapters.redis import _AsyncCluster, _SyncCluster, function_call_keys

    assert function_call_keys(("FCALL", "f", 2, "sluice:{t}:a", "sluice:{t}:b", "x")) == (
        "sluice:{t}:a",
        "sluice:{t}:b",
    )
    assert function_call_keys(("FCALL_RO", "f", "1", "k")) == ("k",)
    for other in (("GET", "k"), ("FCALL", "f", 0, "x"), ("FCALL", "f", 3, "k"), ("FCALL", "f")):
        assert function_call_keys(other) is None, other

    client = _SyncCluster.__new__(_SyncCluster)  # no connection: asking a server would fail
    client.encoder = Encoder("utf-8", "strict", False)
    expected = key_slot(b"{tenant-1}")
    assert client.determine_slot("FCALL", "sluice_aggregate", 1, "sluice:{tenant-1}:agg") == (
        expected
    )
    async_client = _AsyncCluster.__new__(_AsyncCluster)
    async_client.encoder = client.encoder
    slot = asyncio.run(async_client._determine_slot("FCALL", "f", 1, "sluice:{tenant-1}:rl", "9"))
    assert slot == expected
