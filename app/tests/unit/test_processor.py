"""The processor's batch loop over in-memory Kafka, PostgreSQL and Redis: what is written in
which order, when offsets are committed (only after PostgreSQL and Redis took the batch), what
a failure or a poison record does, and how a stop ends the loop."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from sluice.cloudevents import Event
from sluice.derived.aggregates import Increment
from sluice.derived.anomaly import AnomalyConfig, AnomalyDetector
from sluice.derived.enrich import Enricher
from sluice.processor.engine import (
    OutboundRecord,
    Processor,
    ProcessorConfig,
    RetryPolicy,
    build_row,
    decode_record,
    next_offsets,
    stop_on_signals,
)
from sluice.processor.types import ConsumedRecord, Headers, Message, StoredValue, TopicPartition
from sluice.storage.rows import EventRow, RowKey, UnstorableRow

RAW = "events.raw"
#: 2026-11-26T23:01:00Z in Kafka's milliseconds.
T0_MS = int(datetime(2026, 11, 26, 23, 1, tzinfo=UTC).timestamp() * 1000)
EVENT_TIME = datetime(2026, 11, 26, 23, 1, 30, tzinfo=UTC)


def event_json(number: int, *, time: datetime | None = EVENT_TIME, **changes: Any) -> bytes:
    attributes: dict[str, Any] = {
        "id": f"e-{number}",
        "source": "/orders",
        "type": "order.created",
        "time": time,
        "data": {"customer_id": "c-1", "number": number},
    } | changes
    return Event(**attributes).to_json_bytes()


def record(
    offset: int,
    value: bytes | None = None,
    *,
    tenant: bytes | None = b"acme",
    partition: int = 0,
    timestamp: int = T0_MS,
    headers: Headers = (),
) -> ConsumedRecord:
    return ConsumedRecord(
        topic=RAW,
        partition=partition,
        offset=offset,
        key=tenant,
        value=event_json(offset) if value is None else value,
        timestamp=timestamp,
        headers=headers,
    )


class Log(list[str]):
    """The order in which the fakes were called."""

    def before(self, first: str, then: str) -> bool:
        """Whether every ``first`` call came before the first ``then`` call."""
        last_first = max(index for index, name in enumerate(self) if name == first)
        return last_first < self.index(then)


class FakeConsumer:
    def __init__(self, log: Log, batches: Sequence[Sequence[ConsumedRecord]]) -> None:
        self.log = log
        self.batches: deque[Sequence[ConsumedRecord]] = deque(batches)
        self.commits: list[dict[TopicPartition, int]] = []
        self.polls: list[tuple[int, float]] = []
        self.closed = False
        self.commit_failures = 0
        self.when_drained: Callable[[], None] = lambda: None

    def poll_batch(self, max_records: int, timeout: float) -> Sequence[ConsumedRecord]:
        self.polls.append((max_records, timeout))
        if not self.batches:
            self.when_drained()
            return []
        return self.batches.popleft()

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.log.append("commit")
        if self.commit_failures:
            self.commit_failures -= 1
            raise RuntimeError("CommitFailedError: the group has rebalanced")
        self.commits.append(dict(offsets))

    def close(self) -> None:
        self.closed = True


class FakePostgres:
    """The ``events`` table with its unique key, and failures to inject."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.table: dict[RowKey, EventRow] = {}
        self.calls: list[list[EventRow]] = []
        self.failures: list[Exception] = []
        self.refused_ids: set[str] = set()
        self.on_insert: Callable[[], None] = lambda: None

    def insert_event_keys(self, rows: Sequence[EventRow]) -> Collection[RowKey]:
        self.log.append("insert")
        self.calls.append(list(rows))
        self.on_insert()
        if self.failures:
            raise self.failures.pop(0)
        for index, row in enumerate(rows):
            if row.id in self.refused_ids:
                raise UnstorableRow(index, "value too long for type character varying(64)")
        new = [row.key for row in rows if row.key not in self.table]
        for row in rows:
            self.table.setdefault(row.key, row)
        return new


class FakeRedis:
    """Buckets as sluice.lua keeps them, alert strings and published messages."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.buckets: dict[str, Counter[str]] = {}
        self.ttls: dict[str, int] = {}
        self.strings: dict[str, bytes] = {}
        self.messages: list[Message] = []
        self.apply_failures: list[Exception] = []
        self.publish_failures: list[Exception] = []

    def apply(self, increments: Sequence[Increment]) -> Sequence[int]:
        self.log.append("apply")
        if self.apply_failures:
            raise self.apply_failures.pop(0)
        totals = []
        for increment in increments:
            bucket = self.buckets.setdefault(increment.key, Counter())
            bucket[increment.event_type] += increment.count
            bucket["_total"] += increment.count
            self.ttls[increment.key] = increment.ttl_seconds
            totals.append(bucket[increment.event_type])
        return totals

    def store(self, values: Sequence[StoredValue]) -> None:
        self.log.append("store")
        for value in values:
            self.strings[value.key] = value.value

    def publish(self, messages: Sequence[Message]) -> None:
        self.log.append("publish")
        if self.publish_failures:
            raise self.publish_failures.pop(0)
        self.messages.extend(messages)

    def count(self, tenant: str, minute: str, event_type: str = "order.created") -> int:
        return self.buckets.get(f"sluice:{{{tenant}}}:agg:{minute}", Counter())[event_type]


class FakeProducer:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.queued: list[OutboundRecord] = []
        self.delivered: list[OutboundRecord] = []
        self.flush_failures: list[Exception] = []

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        self.queued.append(OutboundRecord(topic, key, value, tuple(headers)))

    def flush(self) -> None:
        self.log.append("flush")
        if self.flush_failures:
            self.queued.clear()
            raise self.flush_failures.pop(0)
        self.delivered.extend(self.queued)
        self.queued.clear()

    def on(self, topic: str) -> list[OutboundRecord]:
        return [record for record in self.delivered if record.topic == topic]


def customers(tenant: str, ids: Collection[str]) -> Mapping[str, Mapping[str, Any]]:
    return {identifier: {"tenant": tenant, "name": "Ada"} for identifier in ids}


@dataclass
class Harness:
    log: Log
    consumer: FakeConsumer
    postgres: FakePostgres
    redis: FakeRedis
    producer: FakeProducer
    processor: Processor
    waits: list[float] = field(default_factory=list)
    on_wait: Callable[[], None] = lambda: None


def harness(
    *batches: Sequence[ConsumedRecord],
    config: ProcessorConfig | None = None,
    detector: AnomalyDetector | None = None,
) -> Harness:
    log = Log()
    consumer = FakeConsumer(log, batches)
    postgres = FakePostgres(log)
    redis = FakeRedis(log)
    producer = FakeProducer(log)
    waits: list[float] = []
    holder: list[Harness] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        holder[0].on_wait()

    processor = Processor(
        consumer,
        postgres,
        redis,
        redis,
        redis,
        producer,
        Enricher(customers),
        detector=detector,
        config=config,
        clock=lambda: 0.0,
        wait=wait,
    )
    consumer.when_drained = processor.stop
    built = Harness(log, consumer, postgres, redis, producer, processor, waits)
    holder.append(built)
    return built


def header(record: OutboundRecord, name: str) -> bytes | None:
    [value] = [value for key, value in record.headers if key == name]
    return value


# --- The normal path -------------------------------------------------------------------------


def test_a_batch_is_stored_counted_published_produced_and_then_committed() -> None:
    batch = [record(5), record(6), record(9, tenant=b"globex", partition=3)]
    h = harness()

    assert h.processor.process(batch) is True

    assert sorted(key[:2] for key in h.postgres.table) == [
        ("acme", "e-5"),
        ("acme", "e-6"),
        ("globex", "e-9"),
    ]
    assert h.redis.count("acme", "202611262301") == 2
    assert h.redis.count("globex", "202611262301") == 1
    assert h.redis.buckets["sluice:{acme}:agg1h:202611262300"]["_total"] == 2
    assert [message.channel for message in h.redis.messages] == [
        "sluice:{acme}:events",
        "sluice:{acme}:events",
        "sluice:{globex}:events",
    ]
    assert [message.payload for message in h.redis.messages] == [r.value for r in batch]
    enriched = h.producer.on("events.enriched")
    assert [record.key for record in enriched] == [b"acme", b"acme", b"globex"]
    assert json.loads(enriched[2].value or b"")["customer"] == {"tenant": "globex", "name": "Ada"}
    assert len(h.producer.on("events.aggregated")) == 6  # 2 tenants x 3 windows, one type
    assert h.producer.on("events.dlq") == []
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 7, TopicPartition(RAW, 3): 10}]
    assert h.log == ["insert", "apply", "publish", "flush", "commit"]


def test_run_polls_batches_until_stopped_and_commits_each() -> None:
    config = ProcessorConfig(max_batch_records=2, poll_timeout_seconds=0.25)
    h = harness([record(0), record(1)], [record(2)], config=config)

    assert h.processor.run() == 0

    assert h.consumer.commits == [{TopicPartition(RAW, 0): 2}, {TopicPartition(RAW, 0): 3}]
    assert set(h.consumer.polls) == {(2, 0.25)}
    assert h.consumer.closed
    assert h.processor.stats.records == 3


def test_window_totals_are_the_running_totals_redis_answers() -> None:
    h = harness()
    h.processor.process([record(0)])
    h.processor.process([record(1, timestamp=T0_MS + 120_000)])

    latest = {
        record.key: json.loads(record.value or b"")["count"]
        for record in h.producer.on("events.aggregated")
    }

    assert latest[b"acme|order.created|1h|2026-11-26T23:00:00Z"] == 2
    assert latest[b"acme|order.created|1m|2026-11-26T23:01:00Z"] == 2


# --- Poison records --------------------------------------------------------------------------


def test_a_poison_record_goes_to_the_dlq_with_headers_and_the_rest_is_processed() -> None:
    original_headers = (("traceparent", b"00-abc-def-01"), ("content-type", None))
    poison = record(11, b'{"specversion": "1.0", "id": ', headers=original_headers)
    h = harness()

    assert h.processor.process([record(10), poison, record(12)]) is True

    [dead] = h.producer.on("events.dlq")
    assert (dead.key, dead.value) == (b"acme", poison.value)
    assert dead.headers[:2] == original_headers
    error = header(dead, "sluice-error") or b""
    assert error.startswith(b"malformed_json: ")
    assert header(dead, "sluice-error-stage") == b"decode"
    assert header(dead, "sluice-origin-topic") == RAW.encode()
    assert header(dead, "sluice-origin-partition") == b"0"
    assert header(dead, "sluice-origin-offset") == b"11"
    assert header(dead, "sluice-origin-timestamp") == str(T0_MS).encode()
    assert sorted(key[1] for key in h.postgres.table) == ["e-10", "e-12"]
    assert h.redis.count("acme", "202611262301") == 2
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 13}]
    assert h.processor.stats.dead_lettered == 1


@pytest.mark.parametrize(
    ("poison", "code"),
    [
        (record(0, tenant=None), b"missing_tenant"),
        (record(0, tenant=b"Not A Tenant"), b"invalid_tenant"),
        (record(0, tenant=b"\xff"), b"invalid_tenant"),
        (ConsumedRecord(RAW, 0, 0, b"acme", None, T0_MS), b"missing_value"),
        (record(0, b"[1, 2]"), b"invalid_event"),
        (
            record(0, b'{"specversion": "0.3", "id": "e", "source": "/", "type": "t"}'),
            b"invalid_event",
        ),
        (record(0, event_json(0, type="_total")), b"reserved_type"),
    ],
)
def test_every_kind_of_undecodable_record_is_dead_lettered(
    poison: ConsumedRecord, code: bytes
) -> None:
    h = harness()

    assert h.processor.process([poison]) is True

    [dead] = h.producer.on("events.dlq")
    assert (header(dead, "sluice-error") or b"").startswith(code + b": ")
    assert h.postgres.calls == []  # nothing left to write
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 1}]


def test_a_row_postgresql_refuses_goes_to_the_dlq_and_the_others_are_written() -> None:
    h = harness()
    h.postgres.refused_ids = {"e-2"}

    assert h.processor.process([record(1), record(2), record(3)]) is True

    [dead] = h.producer.on("events.dlq")
    assert header(dead, "sluice-error-stage") == b"store"
    assert (header(dead, "sluice-error") or b"").startswith(b"unstorable_row: value too long")
    assert header(dead, "sluice-origin-offset") == b"2"
    assert sorted(key[1] for key in h.postgres.table) == ["e-1", "e-3"]
    assert h.redis.count("acme", "202611262301") == 2
    assert h.waits == []  # a rejected row is progress, not a failure to back off from
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 4}]


# --- Failures: nothing committed, the same batch retried ------------------------------------


def test_nothing_is_committed_or_counted_while_postgresql_fails() -> None:
    h = harness()
    h.postgres.failures = [ConnectionError("server closed the connection"), TimeoutError()]

    def nothing_yet() -> None:
        assert h.consumer.commits == []
        assert h.redis.buckets == {}
        assert h.producer.delivered == []

    h.on_wait = nothing_yet
    batch = [record(0), record(1)]

    assert h.processor.process(batch) is True

    assert h.waits == [0.5, 1.0]
    assert len(h.postgres.calls) == 3
    assert h.postgres.calls[0] == h.postgres.calls[1] == h.postgres.calls[2]
    assert h.log.before("insert", "apply")
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 2}]
    assert h.processor.stats.retries == 2


def test_a_redis_failure_retries_redis_alone_and_counts_once() -> None:
    h = harness()
    h.redis.apply_failures = [ConnectionError("CLUSTERDOWN")] * 3

    def nothing_committed() -> None:
        assert h.consumer.commits == []

    h.on_wait = nothing_committed

    assert h.processor.process([record(0), record(1)]) is True

    assert len(h.postgres.calls) == 1
    assert h.log.count("apply") == 4
    assert h.redis.count("acme", "202611262301") == 2
    assert h.log.before("apply", "commit")
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 2}]


def test_a_kafka_failure_on_the_outputs_blocks_the_commit_but_counts_nothing_twice() -> None:
    h = harness()
    h.producer.flush_failures = [TimeoutError("KafkaTimeoutError: flush")]

    assert h.processor.process([record(0), record(1, b"garbage")]) is True

    assert h.log == ["insert", "apply", "publish", "flush", "flush", "commit"]
    assert h.redis.count("acme", "202611262301") == 1
    assert len(h.producer.on("events.dlq")) == 1
    assert len(h.producer.on("events.enriched")) == 1


def test_the_backoff_grows_and_is_capped() -> None:
    config = ProcessorConfig(retry=RetryPolicy(initial_seconds=0.5, max_seconds=4.0))
    h = harness(config=config)
    h.postgres.failures = [ConnectionError()] * 7

    h.processor.process([record(0)])

    assert h.waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert RetryPolicy().delay(10_000) == 30.0


def test_a_live_stream_failure_does_not_hold_the_batch() -> None:
    h = harness()
    h.redis.publish_failures = [ConnectionError("MOVED")]

    assert h.processor.process([record(0)]) is True

    assert h.log.count("publish") == 1
    assert h.processor.stats.publish_failures == 1
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 1}]


def test_a_failed_commit_is_survived_and_the_loop_goes_on() -> None:
    h = harness([record(0)], [record(1)])
    h.consumer.commit_failures = 1

    assert h.processor.run() == 0

    assert h.consumer.commits == [{TopicPartition(RAW, 0): 2}]
    assert h.processor.stats.commit_failures == 1


# --- Metrics ---------------------------------------------------------------------------------


def test_a_run_is_counted_in_the_processor_metrics() -> None:
    first = [record(0), record(1, b"not json"), record(2, event_json(0))]
    redelivered = [record(0)]
    h = harness(first, redelivered)
    h.postgres.failures = [ConnectionError("server closed the connection")]
    h.redis.publish_failures = [ConnectionError("MOVED")]
    h.consumer.commit_failures = 1

    assert h.processor.run() == 0

    sample = h.processor.metrics.registry.get_sample_value
    assert {
        name: sample(f"sluice_processor_{name}_total")
        for name in (
            "batches",
            "records",
            "inserted_rows",
            "already_stored",
            "duplicates_in_batch",
            "dead_lettered",
            "anomalies",
            "retries",
            "publish_failures",
            "commit_failures",
            "abandoned_batches",
        )
    } == {
        "batches": 2,
        "records": 4,
        "inserted_rows": 1,
        "already_stored": 1,
        "duplicates_in_batch": 1,
        "dead_lettered": 1,
        "anomalies": 0,
        "retries": 1,
        "publish_failures": 1,
        "commit_failures": 1,
        "abandoned_batches": 0,
    }
    assert sample("sluice_processor_batch_records_count") == 2
    assert sample("sluice_processor_batch_records_sum") == 4
    assert sample("sluice_processor_batch_records_bucket", {"le": "1.0"}) == 1
    assert sample("sluice_processor_batch_duration_seconds_count") == 2


def test_an_abandoned_batch_is_counted_and_timed() -> None:
    h = harness([record(0)])
    h.redis.apply_failures = [ConnectionError("CLUSTERDOWN")] * 100
    h.on_wait = h.processor.stop
    h.processor.run()

    sample = h.processor.metrics.registry.get_sample_value
    assert sample("sluice_processor_abandoned_batches_total") == 1
    assert sample("sluice_processor_inserted_rows_total") == 1
    assert sample("sluice_processor_batch_duration_seconds_count") == 1


# --- Idempotence -----------------------------------------------------------------------------


def test_a_redelivered_batch_builds_the_same_rows_and_counts_nothing_twice() -> None:
    batch = [record(0), record(1, event_json(1, time=None)), record(2, tenant=b"globex")]
    h = harness()

    h.processor.process(batch)
    rows = dict(h.postgres.table)
    h.processor.process(batch)

    assert h.postgres.calls[0] == h.postgres.calls[1]
    assert h.postgres.table == rows
    assert h.redis.count("acme", "202611262301") == 2
    assert h.redis.count("globex", "202611262301") == 1
    assert h.processor.stats.inserted == 3
    assert h.processor.stats.already_stored == 3
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 3}] * 2
    # The derived topics are at-least-once: the redelivered events are enriched again.
    assert len(h.producer.on("events.enriched")) == 6


def test_an_event_without_time_is_keyed_by_the_record_timestamp() -> None:
    source = record(7, event_json(7, time=None), partition=4, timestamp=T0_MS + 1234)
    tenant, event = decode_record(source)

    first = build_row(tenant, event, source)
    again = build_row(*decode_record(source), source)

    expected_time = datetime(2026, 11, 26, 23, 1, 1, 234000, tzinfo=UTC)
    assert first == again
    assert first.key == ("acme", "e-7", expected_time)
    assert (first.kafka_partition, first.kafka_offset) == (4, 7)
    assert json.loads(first.data_json or "") == {"customer_id": "c-1", "number": 7}


def test_an_event_with_time_is_keyed_by_it() -> None:
    source = record(7, timestamp=T0_MS + 99_000)

    row = build_row(*decode_record(source), source)

    assert row.key == ("acme", "e-7", EVENT_TIME)


def test_an_event_postgresql_cannot_hold_goes_to_the_dlq_before_the_write() -> None:
    h = harness()
    nul = event_json(1, data={"note": "a\u0000b"})

    assert h.processor.process([record(0), record(1, nul)]) is True

    [dead] = h.producer.on("events.dlq")
    assert header(dead, "sluice-error-stage") == b"store"
    assert (header(dead, "sluice-error") or b"").startswith(b"unstorable_row: data contains")
    assert [[row.id for row in call] for call in h.postgres.calls] == [["e-0"]]
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 2}]


def test_the_same_event_twice_in_a_batch_is_written_and_counted_once() -> None:
    h = harness()

    h.processor.process([record(0, event_json(5)), record(1, event_json(5)), record(2)])

    assert [len(call) for call in h.postgres.calls] == [2]
    assert h.redis.count("acme", "202611262301") == 2
    assert h.processor.stats.duplicates_in_batch == 1
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 3}]


def test_offsets_to_commit_are_the_highest_plus_one_per_partition() -> None:
    records = [record(4, partition=1), record(9, partition=0), record(2, partition=1)]

    assert next_offsets(records) == {TopicPartition(RAW, 1): 5, TopicPartition(RAW, 0): 10}


# --- Stopping --------------------------------------------------------------------------------


@pytest.fixture
def restore_signal_handlers() -> Iterator[None]:
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


@pytest.mark.usefixtures("restore_signal_handlers")
def test_sigterm_finishes_the_batch_commits_closes_and_exits_0() -> None:
    first, second = [record(0), record(1)], [record(2)]
    h = harness(first, second)
    stop_on_signals(h.processor)
    h.postgres.on_insert = lambda: os.kill(os.getpid(), signal.SIGTERM)

    assert h.processor.run() == 0

    assert len(h.postgres.table) == 2
    assert h.redis.count("acme", "202611262301") == 2
    assert h.consumer.commits == [{TopicPartition(RAW, 0): 2}]
    assert list(h.consumer.batches) == [second]  # never polled
    assert h.consumer.closed


def test_a_stop_while_a_step_keeps_failing_leaves_the_batch_uncommitted() -> None:
    h = harness([record(0)])
    h.redis.apply_failures = [ConnectionError("CLUSTERDOWN")] * 100
    h.on_wait = h.processor.stop

    assert h.processor.run() == 0

    assert len(h.waits) == 1
    assert h.consumer.commits == []
    assert h.consumer.closed
    assert h.processor.stats.abandoned_batches == 1


def test_a_stop_cuts_a_long_backoff_short() -> None:
    log = Log()
    consumer = FakeConsumer(log, [[record(0)]])
    postgres = FakePostgres(log)
    postgres.failures = [ConnectionError("down")] * 100
    redis = FakeRedis(log)
    config = ProcessorConfig(retry=RetryPolicy(initial_seconds=60.0, max_seconds=60.0))
    processor = Processor(
        consumer,
        postgres,
        redis,
        redis,
        redis,
        FakeProducer(log),
        Enricher(customers),
        config=config,
    )
    timer = threading.Timer(0.2, processor.stop)
    timer.start()
    started = time.monotonic()

    assert processor.run() == 0

    assert time.monotonic() - started < 5
    assert consumer.commits == []
    assert consumer.closed
    timer.join()


def test_a_crash_in_the_loop_still_closes_the_consumer() -> None:
    h = harness([record(0)])
    h.processor._detector.observe = None  # type: ignore[assignment,method-assign]

    with pytest.raises(TypeError):
        h.processor.run()

    assert h.consumer.closed
    assert h.consumer.commits == []


# --- Anomalies -------------------------------------------------------------------------------


def test_an_anomaly_is_produced_and_stored_in_redis() -> None:
    detector = AnomalyDetector(
        AnomalyConfig(window_minutes=10, min_history=3, min_count=5, jump_factor=3.0)
    )
    h = harness(detector=detector)
    offset = 0
    for minute, count in enumerate([2, 2, 2, 6]):
        batch = []
        for _ in range(count):
            timestamp = T0_MS + minute * 60_000
            batch.append(record(offset, event_json(offset, time=None), timestamp=timestamp))
            offset += 1
        h.processor.process(batch)

    [alert] = h.producer.on("alerts.anomalies")
    document = json.loads(alert.value or b"")
    assert alert.key == b"acme"
    assert (document["minute"], document["count"], document["rule"]) == (
        "2026-11-26T23:04:00Z",
        6,
        "jump",
    )
    assert h.redis.strings["sluice:{acme}:anomaly:order.created"] == alert.value
    assert h.log[-4:] == ["publish", "store", "flush", "commit"]
    assert h.processor.stats.anomalies == 1
    assert h.processor.metrics.registry.get_sample_value("sluice_processor_anomalies_total") == 1


def test_anomalies_count_by_the_kafka_timestamp_not_the_event_time() -> None:
    detector = AnomalyDetector(
        AnomalyConfig(window_minutes=10, min_history=3, min_count=5, jump_factor=3.0)
    )
    h = harness(detector=detector)
    offset = 0
    for minute, count in enumerate([2, 2, 2, 6]):
        # Every event claims the same old time; only the ingest minutes differ.
        batch = []
        for _ in range(count):
            batch.append(record(offset, timestamp=T0_MS + minute * 60_000))
            offset += 1
        h.processor.process(batch)

    assert len(h.producer.on("alerts.anomalies")) == 1


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="longer than the longest window"):
        ProcessorConfig(aggregate_ttl_seconds=60)
    with pytest.raises(ValueError, match="max_batch_records"):
        ProcessorConfig(max_batch_records=0)
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(initial_seconds=10, max_seconds=1)


def test_aggregate_ttl_reaches_redis() -> None:
    h = harness(config=ProcessorConfig(aggregate_ttl_seconds=7200))

    h.processor.process([record(0)])

    assert set(h.redis.ttls.values()) == {7200}
