"""Metrics outside the API: the ``--metrics-port`` server, the processor's counters, histograms
and consumer lag, and the lag read from librdkafka's statistics."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from sluice.adapters import kafka
from sluice.adapters.kafka import STATISTICS_INTERVAL_MS, KafkaConsumer, consumer_lags
from sluice.config import KafkaSettings
from sluice.processor.metrics import STATS_COUNTERS, ProcessorMetrics
from sluice.processor.types import ProcessorStats, TopicPartition
from sluice.service import serve_metrics

RAW = "events.raw"


def _partition(number: int, *, lag: int, committed: int, hi: int) -> dict[str, Any]:
    """One ``topics.<topic>.partitions.<n>`` object as librdkafka 2.x emits it for a consumer."""
    return {
        "partition": number,
        "broker": 1 if number >= 0 else -1,
        "leader": 1 if number >= 0 else -1,
        "desired": False,
        "unknown": False,
        "msgq_cnt": 0,
        "msgq_bytes": 0,
        "xmit_msgq_cnt": 0,
        "xmit_msgq_bytes": 0,
        "fetchq_cnt": 0,
        "fetchq_size": 0,
        "fetch_state": "active" if lag >= 0 else "none",
        "query_offset": -1001,
        "next_offset": committed,
        "app_offset": committed,
        "stored_offset": -1001,
        "stored_leader_epoch": -1,
        "commited_offset": committed,
        "committed_offset": committed,
        "committed_leader_epoch": 0,
        "eof_offset": hi,
        "lo_offset": 0,
        "hi_offset": hi,
        "ls_offset": hi,
        "consumer_lag": lag,
        "consumer_lag_stored": -1,
        "leader_epoch": 0,
        "txmsgs": 0,
        "txbytes": 0,
        "rxmsgs": 1200,
        "rxbytes": 480000,
        "msgs": 1200,
        "rx_ver_drops": 0,
        "msgs_inflight": 0,
        "next_ack_seq": 0,
        "next_err_seq": 0,
        "acked_msgid": 0,
    }


#: An excerpt of a processor's statistics (librdkafka 2.x field names and shapes): partitions 0
#: and 3 assigned and committed, 7 assigned but nothing committed yet (310 retained: its lag),
#: 9 assigned without watermarks yet, 12 revoked earlier (its last committed offset and
#: watermark still reported), -1 the internal UA partition.
STATS = json.dumps(
    {
        "name": "rdkafka#consumer-1",
        "client_id": "rdkafka",
        "type": "consumer",
        "ts": 5016483227792,
        "time": 1764198060,
        "age": 45000412,
        "replyq": 0,
        "msg_cnt": 0,
        "msg_size": 0,
        "msg_max": 100000,
        "msg_size_max": 1073741824,
        "simple_cnt": 0,
        "metadata_cache_cnt": 1,
        "brokers": {
            "kafka1:9092/1": {
                "name": "kafka1:9092/1",
                "nodeid": 1,
                "nodename": "kafka1:9092",
                "source": "learned",
                "state": "UP",
                "stateage": 44000000,
                "rtt": {"min": 450, "max": 2100, "avg": 800, "p99": 2000, "cnt": 40},
                "toppars": {
                    "events.raw-0": {"topic": RAW, "partition": 0},
                    "events.raw-3": {"topic": RAW, "partition": 3},
                },
            }
        },
        "topics": {
            RAW: {
                "topic": RAW,
                "age": 44000,
                "metadata_age": 14000,
                "batchsize": {"min": 0, "max": 0, "avg": 0, "cnt": 0},
                "batchcnt": {"min": 0, "max": 0, "avg": 0, "cnt": 0},
                "partitions": {
                    "0": _partition(0, lag=42, committed=1958, hi=2000),
                    "3": _partition(3, lag=0, committed=775, hi=775),
                    "7": _partition(7, lag=-1, committed=-1001, hi=310),
                    "9": _partition(9, lag=-1, committed=-1001, hi=-1001),
                    "12": _partition(12, lag=9000, committed=1000, hi=10000),
                    "-1": _partition(-1, lag=-1, committed=-1001, hi=-1001),
                },
            }
        },
        "cgrp": {
            "state": "up",
            "stateage": 43000,
            "join_state": "steady",
            "rebalance_age": 42000,
            "rebalance_cnt": 2,
            "rebalance_reason": "group is rebalancing",
            "assignment_size": 3,
        },
    }
)
ASSIGNED = {TopicPartition(RAW, p) for p in (0, 3, 7, 9)}


# --- The lag in librdkafka's statistics ------------------------------------------------------


def test_the_lag_of_every_assigned_partition_with_a_known_lag_is_read() -> None:
    assert consumer_lags(STATS, ASSIGNED) == {
        TopicPartition(RAW, 0): 42,
        TopicPartition(RAW, 3): 0,
        TopicPartition(RAW, 7): 310,  # never committed: everything retained is behind
    }


def test_without_an_assignment_every_known_lag_is_read_but_never_the_ua_partition() -> None:
    assert consumer_lags(STATS) == {
        TopicPartition(RAW, 0): 42,
        TopicPartition(RAW, 3): 0,
        TopicPartition(RAW, 7): 310,
        TopicPartition(RAW, 12): 9000,
    }


@pytest.mark.parametrize(
    "document",
    [
        {"name": "rdkafka#producer-1", "type": "producer"},  # no topics at all
        {"topics": {RAW: {"topic": RAW}}},  # metadata not yet known: no partitions
        {"topics": {RAW: {"partitions": {"0": {"partition": 0, "consumer_lag": "42"}}}}},
        {"topics": {RAW: {"partitions": {"0": {"partition": 0}}}}},
        {"topics": {RAW: None}},
        [],
    ],
)
def test_documents_without_usable_lags_give_none(document: object) -> None:
    assert consumer_lags(json.dumps(document)) == {}


class _FakeRdConsumer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.subscribed: list[str] = []
        self.assigned: list[Any] = []

    def subscribe(self, topics: list[str]) -> None:
        self.subscribed = topics

    def assignment(self) -> list[Any]:
        return self.assigned


@pytest.fixture
def rd_consumer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], _FakeRdConsumer]]:
    made: list[_FakeRdConsumer] = []

    def make(config: dict[str, Any]) -> _FakeRdConsumer:
        made.append(_FakeRdConsumer(config))
        return made[-1]

    monkeypatch.setattr(kafka, "RdConsumer", make)
    yield lambda: made[-1]


def test_the_consumer_asks_for_statistics_only_when_the_lag_is_wanted(
    rd_consumer: Callable[[], _FakeRdConsumer],
) -> None:
    settings = KafkaSettings(bootstrap_servers=("k:9092",), security_protocol="PLAINTEXT")

    KafkaConsumer(settings, "sluice-processor", [RAW])
    plain = rd_consumer().config
    KafkaConsumer(settings, "sluice-processor", [RAW], on_lag=lambda lags: None)
    reporting = rd_consumer().config

    assert "statistics.interval.ms" not in plain and "stats_cb" not in plain
    assert reporting["statistics.interval.ms"] == STATISTICS_INTERVAL_MS
    assert callable(reporting["stats_cb"])
    assert reporting["enable.auto.commit"] is False


def test_the_statistics_callback_reports_the_lag_of_the_current_assignment(
    rd_consumer: Callable[[], _FakeRdConsumer], caplog: pytest.LogCaptureFixture
) -> None:
    from confluent_kafka import TopicPartition as RdTopicPartition

    reported: list[dict[TopicPartition, int]] = []
    settings = KafkaSettings(bootstrap_servers=("k:9092",), security_protocol="PLAINTEXT")
    KafkaConsumer(
        settings, "sluice-processor", [RAW], on_lag=lambda lags: reported.append(dict(lags))
    )
    fake = rd_consumer()
    fake.assigned = [RdTopicPartition(RAW, 0), RdTopicPartition(RAW, 7)]

    fake.config["stats_cb"](STATS)
    with caplog.at_level(logging.WARNING, logger="sluice.adapters.kafka"):
        fake.config["stats_cb"]("{not json")  # must not raise out of consume()

    assert reported == [{TopicPartition(RAW, 0): 42, TopicPartition(RAW, 7): 310}]
    assert "consumer lag" in caplog.text


# --- The processor's metrics -----------------------------------------------------------------


def test_every_processor_total_has_its_counter() -> None:
    fields = [field.name for field in dataclasses.fields(ProcessorStats)]
    assert sorted(STATS_COUNTERS) == sorted(fields)
    names = [name for name, _help in STATS_COUNTERS.values()]
    assert len(set(names)) == len(names)
    assert all(name.startswith("sluice_processor_") for name in names)


def test_counters_read_the_totals_when_scraped() -> None:
    metrics = ProcessorMetrics()
    stats = ProcessorStats()
    metrics.follow(stats)
    stats.dead_lettered += 3

    registry = metrics.registry
    assert registry.get_sample_value("sluice_processor_dead_lettered_total") == 3
    stats.dead_lettered += 1
    assert registry.get_sample_value("sluice_processor_dead_lettered_total") == 4
    assert registry.get_sample_value("sluice_processor_anomalies_total") == 0


def test_the_lag_series_follow_the_assignment() -> None:
    metrics = ProcessorMetrics()
    sample = metrics.registry.get_sample_value
    name = "sluice_processor_consumer_lag"

    metrics.set_consumer_lag({TopicPartition(RAW, 0): 42, TopicPartition(RAW, 3): 0})
    assert sample(name, {"topic": RAW, "partition": "0"}) == 42
    assert sample(name, {"topic": RAW, "partition": "3"}) == 0

    metrics.set_consumer_lag({TopicPartition(RAW, 3): 5, TopicPartition(RAW, 9): 1})
    assert sample(name, {"topic": RAW, "partition": "0"}) is None  # revoked: series removed
    assert sample(name, {"topic": RAW, "partition": "3"}) == 5
    assert sample(name, {"topic": RAW, "partition": "9"}) == 1

    metrics.set_consumer_lag({})
    assert [s for family in metrics.consumer_lag.collect() for s in family.samples] == []


# --- The --metrics-port server ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_registry_is_served_at_metrics() -> None:
    registry = CollectorRegistry()
    Counter("sluice_test_events", "A counter to find.", registry=registry).inc(7)
    port = _free_port()

    server = serve_metrics(registry, port, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "sluice_test_events_total 7.0" in body


def test_a_port_in_use_fails_with_the_address_and_the_fix() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        with pytest.raises(RuntimeError) as raised:
            serve_metrics(CollectorRegistry(), port, "127.0.0.1")

    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "--metrics-port" in message


def test_a_never_committed_partition_counts_from_how_far_the_member_has_read() -> None:
    read = {**_partition(5, lag=-1, committed=-1001, hi=310), "app_offset": 100}
    document = json.dumps({"topics": {RAW: {"partitions": {"5": read}}}})
    assert consumer_lags(document) == {TopicPartition(RAW, 5): 210}
