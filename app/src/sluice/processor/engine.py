"""The processor (``sluice process``): ``events.raw`` to PostgreSQL, Redis and the derived
topics, in batches, committing offsets only after PostgreSQL and Redis took a batch.

One batch, in this order (DESIGN.md, "Data flow and guarantees"):

1. **Decode** each record into a CloudEvent (:mod:`sluice.cloudevents`, the same validation the
   API ran; the tenant is the record key). A record that fails becomes an ``events.dlq`` record
   with the error and its origin in headers, and the batch goes on without it.
2. **PostgreSQL**: one :meth:`EventWriter.insert_event_keys` call (COPY) for the batch, rows
   built by :func:`sluice.storage.rows.event_row`. Rows are idempotent on (tenant_id, id, time),
   ``time`` being the event's time or, when it has none, the Kafka record's timestamp, which is
   stored in the log and so the same on every redelivery (migration ``0001_events.sql``). A row
   PostgreSQL cannot hold (:func:`sluice.storage.rows.unstorable_reason`, or
   :class:`~sluice.storage.rows.UnstorableRow` from the writer) goes to the DLQ and the rest is
   written; any other failure is retried.
3. **Redis**: one :meth:`Aggregator.apply` call with the batch's counts per tenant/type/window
   (:mod:`sluice.derived.aggregates`); the adapter sends one pipeline per cluster node.
4. Derived outputs: the anomaly detector (:mod:`sluice.derived.anomaly`) and the window totals
   for ``events.aggregated``; enrichment (:mod:`sluice.derived.enrich`); Redis sharded pub/sub
   for the live stream; the latest alert per tenant/type in Redis; then ``events.dlq``,
   ``events.enriched``, ``events.aggregated`` and ``alerts.anomalies`` produced and flushed.
5. **Commit** the next offset (highest offset + 1) of every partition in the batch.

Failure handling. A step that raises is retried with a bounded exponential backoff
(:class:`RetryPolicy`) and the batch is never skipped: nothing is committed until every step
succeeded, and a failed step is retried from where it failed, so a Redis outage does not write
the batch to PostgreSQL again, and a Kafka outage does not count it in Redis again. Live pub/sub
is the exception: it is best effort, like the stream it feeds (a subscriber that is not
connected misses events anyway), and a failure there is logged and counted, never retried.

What is counted, and why only new rows. Redis counters, window totals and the anomaly detector
count only the rows PostgreSQL *newly* inserted (:meth:`EventWriter.insert_event_keys`
answers their keys). A redelivered batch (a processor killed after its PostgreSQL write, a rebalance
before its commit) and a client's resent event (the API's produce deadline expired; see
:mod:`sluice.api.ports`) therefore count nothing twice: the counters agree with the rows. The one
window where counts can be lost is a processor dying between its PostgreSQL commit and its
Redis write; Redis aggregates are derived data, and ``sluice replay`` rebuilds them from
PostgreSQL. Pub/sub and the derived topics carry every valid event of the batch, so they are
at-least-once: a redelivered batch is published and produced again.

Stopping. :meth:`Processor.stop` (SIGTERM via :func:`stop_on_signals`) lets the current batch
finish and commit, then closes the consumer and :meth:`Processor.run` returns 0. A stop that
arrives while a step is failing and waiting to retry abandons the batch uncommitted instead of
blocking the shutdown: its records are redelivered to whichever processor owns the partitions
next, which is safe for the reasons above. Two things are not redone then, because the
redelivered rows are no longer new: Redis counts of a batch abandoned during a Redis outage
(logged as an error naming the tenants and times to replay) and the window totals and alerts of
a batch abandoned after its Redis write (a window's total catches up with the next batch that
touches it).

Why synchronous. The processor is a process of its own (systemd runs M of them; parallelism
comes from processes and the 30 partitions of ``events.raw``), and each batch is a chain of
steps that must happen in order: PostgreSQL, then Redis, then outputs, then the commit. Nothing
in one batch can overlap with anything else in it, so asyncio would add no throughput, only
cancellation points in the middle of the guarantees. Throughput comes from the batch instead:
one COPY, one Redis round trip per node and one producer flush per batch, whatever its size.
Every adapter Protocol (:mod:`sluice.processor.types`) is therefore synchronous, and
kafka-python's ``ConsumerRecord`` satisfies :class:`~sluice.processor.types.Record` as it is.
"""

from __future__ import annotations

import logging
import signal
import time as _time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

from sluice.cloudevents import STRUCTURED_MEDIA_TYPE, Event, Limits, parse_request
from sluice.derived.aggregates import (
    DEFAULT_TTL_SECONDS,
    build_increments,
    check_event_type,
    check_ttl,
    window_counts,
)
from sluice.derived.anomaly import DEFAULT_ALERT_TTL_SECONDS, AnomalyDetector, minute_of
from sluice.derived.enrich import Enricher
from sluice.errors import ApiError
from sluice.processor.metrics import ProcessorMetrics
from sluice.processor.types import (
    Aggregator,
    AlertStore,
    Consumer,
    EventWriter,
    Headers,
    Message,
    ProcessorStats,
    Producer,
    Publisher,
    Record,
    StoredValue,
    TopicPartition,
    stream_channel,
)
from sluice.storage.rows import EventRow, RowKey, UnstorableRow, event_row, unstorable_reason
from sluice.tenants import validate_tenant

log = logging.getLogger(__name__)

#: DLQ header names. The record keeps its original headers first, then these.
ERROR_HEADER: Final = "sluice-error"
ERROR_STAGE_HEADER: Final = "sluice-error-stage"
ORIGIN_TOPIC_HEADER: Final = "sluice-origin-topic"
ORIGIN_PARTITION_HEADER: Final = "sluice-origin-partition"
ORIGIN_OFFSET_HEADER: Final = "sluice-origin-offset"
ORIGIN_TIMESTAMP_HEADER: Final = "sluice-origin-timestamp"
#: Error texts can quote the offending value; a header stays well below Kafka's record limit.
MAX_ERROR_HEADER_CHARS: Final = 1000

#: The API already enforced the size limits on accept; the processor does not judge them again
#: (a limit raised at the API must not send accepted events to the DLQ), Kafka bounds records.
_NO_SIZE_LIMITS: Final = Limits(
    max_event_bytes=1 << 40, max_request_bytes=1 << 40, max_batch_events=1
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: How soon a stop interrupts a retry backoff.
_STOP_CHECK_SECONDS: Final = 0.1

_T = TypeVar("_T")


# --- Settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    """The Kafka topics the processor reads and writes (DESIGN.md, "Kafka topics")."""

    raw: str = "events.raw"
    enriched: str = "events.enriched"
    aggregated: str = "events.aggregated"
    dlq: str = "events.dlq"
    anomalies: str = "alerts.anomalies"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts of a failing step, capped at ``max_seconds``:
    short enough to resume quickly after a failover, bounded so an outage costs one attempt per
    ``max_seconds`` rather than a storm of reconnects."""

    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.initial_seconds <= self.max_seconds or self.multiplier < 1:
            raise ValueError(
                "RetryPolicy needs 0 <= initial_seconds <= max_seconds and multiplier >= 1, got "
                f"{self.initial_seconds}, {self.max_seconds}, {self.multiplier}"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...)."""
        if attempt < 1:
            raise ValueError(f"attempts are numbered from 1, got {attempt}")
        # The exponent is capped so a day-long outage cannot overflow the float.
        return min(self.max_seconds, self.initial_seconds * self.multiplier ** min(attempt - 1, 64))


@dataclass(frozen=True)
class ProcessorConfig:
    """How big a batch is, where it goes, how failures are retried and how long Redis keeps
    what the processor writes there."""

    max_batch_records: int = 2000
    poll_timeout_seconds: float = 1.0
    topics: Topics = field(default_factory=Topics)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    aggregate_ttl_seconds: int = DEFAULT_TTL_SECONDS
    alert_ttl_seconds: int = DEFAULT_ALERT_TTL_SECONDS

    def __post_init__(self) -> None:
        if self.max_batch_records < 1:
            raise ValueError(f"max_batch_records must be >= 1, got {self.max_batch_records}")
        if not self.poll_timeout_seconds > 0:
            raise ValueError(f"poll_timeout_seconds must be > 0, got {self.poll_timeout_seconds}")
        if self.alert_ttl_seconds < 1:
            raise ValueError(f"alert_ttl_seconds must be >= 1, got {self.alert_ttl_seconds}")
        check_ttl(self.aggregate_ttl_seconds)


# --- Pure parts of a batch -------------------------------------------------------------------


class DecodeError(Exception):
    """A record that is not a processable event: ``code`` (snake_case) and ``detail``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def record_parts(record: Record) -> tuple[str, bytes]:
    """The tenant (the record key, which the API sets from the credential) and the event's
    JSON (the record value) of ``record``, not parsed yet; :class:`DecodeError` when the key is
    not a tenant or there is no value. ``sluice validate`` reads records through it too."""
    if record.key is None:
        raise DecodeError(
            "missing_tenant", "the record has no key; the API keys every event by tenant"
        )
    try:
        tenant = validate_tenant(record.key.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise DecodeError("invalid_tenant", f"the record key is not a tenant: {error}") from None
    if record.value is None:
        raise DecodeError("missing_value", "the record has no value (a tombstone), not an event")
    return tenant, record.value


def decode_record(record: Record) -> tuple[str, Event]:
    """The tenant (the record key) and the CloudEvent (the record value, structured JSON) of
    ``record``, validated as the API validates events; :class:`DecodeError` when it is not
    one."""
    tenant, value = record_parts(record)
    try:
        [event] = parse_request(STRUCTURED_MEDIA_TYPE, {}, value, _NO_SIZE_LIMITS)
    except ApiError as error:
        raise DecodeError(error.code, error.detail) from None
    reason = check_event_type(event.type)
    if reason is not None:
        raise DecodeError("reserved_type", reason)
    return tenant, event


def build_row(tenant: str, event: Event, record: Record) -> EventRow:
    """The ``events`` row of ``event``: a function of the record alone (its timestamp stands in
    for a missing event time; its partition and offset trace the row back), so a redelivered
    record gives an equal row with an equal key."""
    return event_row(
        tenant,
        event,
        record_time=_EPOCH + timedelta(milliseconds=record.timestamp),
        kafka_partition=record.partition,
        kafka_offset=record.offset,
    )


@dataclass(frozen=True)
class OutboundRecord:
    """A record for the producer."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


def dead_letter(record: Record, error: str, stage: str, topic: str) -> OutboundRecord:
    """The DLQ record for ``record``: its key, value and headers unchanged, plus headers with
    the error, the step that failed (``decode``, ``store``) and where the record came from, so
    it can be inspected and replayed."""
    headers = [
        *record.headers,
        (ERROR_HEADER, error[:MAX_ERROR_HEADER_CHARS].encode("utf-8")),
        (ERROR_STAGE_HEADER, stage.encode("utf-8")),
        (ORIGIN_TOPIC_HEADER, record.topic.encode("utf-8")),
        (ORIGIN_PARTITION_HEADER, str(record.partition).encode("ascii")),
        (ORIGIN_OFFSET_HEADER, str(record.offset).encode("ascii")),
        (ORIGIN_TIMESTAMP_HEADER, str(record.timestamp).encode("ascii")),
    ]
    return OutboundRecord(topic, record.key, record.value, tuple(headers))


def next_offsets(records: Iterable[Record]) -> dict[TopicPartition, int]:
    """The offsets to commit after ``records``: per partition, its highest offset + 1."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
    return offsets


@dataclass(frozen=True)
class _Item:
    record: Record
    tenant: str
    event: Event
    row: EventRow


@dataclass
class _Batch:
    """A decoded batch: the events to store (first occurrence of each row key) and the DLQ
    records so far."""

    records: Sequence[Record]
    items: list[_Item]
    dead: list[OutboundRecord]
    duplicates: int


def _decode_batch(records: Sequence[Record], dlq_topic: str) -> _Batch:
    items: list[_Item] = []
    dead: list[OutboundRecord] = []
    seen: set[RowKey] = set()
    duplicates = 0
    for record in records:
        try:
            tenant, event = decode_record(record)
        except DecodeError as error:
            log.warning(
                "%s[%d]@%d to the DLQ: %s", record.topic, record.partition, record.offset, error
            )
            dead.append(dead_letter(record, str(error), "decode", dlq_topic))
            continue
        row = build_row(tenant, event, record)
        unstorable = unstorable_reason(row)
        if unstorable is not None:
            log.warning(
                "%s[%d]@%d to the DLQ: %s",
                record.topic,
                record.partition,
                record.offset,
                unstorable,
            )
            dead.append(dead_letter(record, f"unstorable_row: {unstorable}", "store", dlq_topic))
            continue
        if row.key in seen:
            duplicates += 1
            continue
        seen.add(row.key)
        items.append(_Item(record, tenant, event, row))
    return _Batch(records, items, dead, duplicates)


class _Abandoned:
    """Returned by a retried step when a stop was requested while it kept failing."""


_ABANDONED: Final = _Abandoned()


# --- The loop --------------------------------------------------------------------------------


class Processor:
    """The batch loop over the adapters; :meth:`run` until :meth:`stop`.

    ``clock`` is the monotonic clock of the enrichment cache; ``wait(seconds)`` sleeps between
    retries, by default in short slices that end as soon as a stop is requested; ``metrics``
    (default: a registry of its own) exposes :attr:`stats` and times every batch.
    """

    def __init__(
        self,
        consumer: Consumer,
        writer: EventWriter,
        aggregator: Aggregator,
        publisher: Publisher,
        alert_store: AlertStore,
        producer: Producer,
        enricher: Enricher,
        *,
        detector: AnomalyDetector | None = None,
        config: ProcessorConfig | None = None,
        clock: Callable[[], float] = _time.monotonic,
        wait: Callable[[float], object] | None = None,
        metrics: ProcessorMetrics | None = None,
    ) -> None:
        self.config = config if config is not None else ProcessorConfig()
        self.stats = ProcessorStats()
        self.metrics = metrics if metrics is not None else ProcessorMetrics()
        self.metrics.follow(self.stats)
        self._consumer = consumer
        self._writer = writer
        self._aggregator = aggregator
        self._publisher = publisher
        self._alert_store = alert_store
        self._producer = producer
        self._enricher = enricher
        self._detector = detector if detector is not None else AnomalyDetector()
        self._clock = clock
        self._stop_requested = False
        self._wait = wait or self._sleep_unless_stopped
        self._stream_minute = 0

    def stop(self) -> None:
        """Ask the loop to finish the current batch and return. Safe from a signal handler and
        from another thread: it only sets a flag (a lock taken here could deadlock with the
        interrupted main thread holding it)."""
        self._stop_requested = True

    def run(self) -> int:
        """Consume, process and commit batches until :meth:`stop`; close the consumer and
        return the exit status, 0. An exception that is not a dependency's failure (a bug)
        propagates, after the consumer is closed, and the uncommitted batch is redelivered."""
        log.info(
            "processing %s in batches of up to %d",
            self.config.topics.raw,
            self.config.max_batch_records,
        )
        try:
            while not self._stop_requested:
                records = self._consumer.poll_batch(
                    self.config.max_batch_records, self.config.poll_timeout_seconds
                )
                if records:
                    self.process(records)
        finally:
            self._consumer.close()
        log.info("stopped: %s", self.stats)
        return 0

    def process(self, records: Sequence[Record]) -> bool:
        """Process one batch and commit its offsets; True when they were committed, False when
        the batch was abandoned (stop during a failure) or the commit failed, in both cases to
        be redelivered."""
        if not records:
            return True
        started = _time.perf_counter()
        try:
            return self._process(records)
        finally:
            self.metrics.observe_batch(len(records), _time.perf_counter() - started)

    def _process(self, records: Sequence[Record]) -> bool:
        self.stats.batches += 1
        self.stats.records += len(records)
        self._stream_minute = max(
            self._stream_minute, max(minute_of(record.timestamp) for record in records)
        )
        batch = _decode_batch(records, self.config.topics.dlq)
        self.stats.duplicates_in_batch += batch.duplicates

        inserted = self._retry("write the batch to PostgreSQL", lambda: self._insert(batch))
        if isinstance(inserted, _Abandoned):
            return self._abandon(batch, "before its PostgreSQL write succeeded")
        inserted_keys = set(inserted)
        counted = [item for item in batch.items if item.row.key in inserted_keys]
        self.stats.inserted += len(counted)
        self.stats.already_stored += len(batch.items) - len(counted)

        increments = build_increments(
            ((item.tenant, item.event.type, item.row.time) for item in counted),
            ttl_seconds=self.config.aggregate_ttl_seconds,
        )
        totals: Sequence[int] | _Abandoned = []
        if increments:
            totals = self._retry(
                "update the Redis aggregates", lambda: self._aggregator.apply(increments)
            )
        if isinstance(totals, _Abandoned):
            log.error(
                "PostgreSQL stored %d new events whose Redis counts were not applied, and they "
                "will not be counted on redelivery; rebuild the aggregates with `sluice replay` "
                "for tenants %s, event times %s to %s",
                len(counted),
                ", ".join(sorted({item.tenant for item in counted})),
                min(item.row.time for item in counted).isoformat(),
                max(item.row.time for item in counted).isoformat(),
            )
            return self._abandon(batch, "before its Redis aggregates succeeded")

        # Derived state is computed once per batch: retrying an output step below must not
        # count the batch twice in the detector.
        aggregated = window_counts(increments, totals)
        alerts = self._detector.observe(
            Counter(
                (item.tenant, item.event.type, minute_of(item.record.timestamp)) for item in counted
            )
        )
        self._detector.evict(self._stream_minute)
        self.stats.anomalies += len(alerts)
        for alert in alerts:
            log.warning("anomaly: %s", alert.to_json_bytes().decode("utf-8"))

        enriched = self._retry(
            "look up customers for enrichment",
            lambda: self._enricher.enrich(
                [(item.tenant, item.event) for item in batch.items], self._clock()
            ),
        )
        if isinstance(enriched, _Abandoned):
            return self._abandon(batch, "before its enrichment succeeded")

        self._publish(batch)

        if alerts:
            values = [
                StoredValue(alert.redis_key, alert.to_json_bytes(), self.config.alert_ttl_seconds)
                for alert in alerts
            ]
            stored = self._retry(
                "store anomaly alerts in Redis", lambda: self._alert_store.store(values)
            )
            if isinstance(stored, _Abandoned):
                return self._abandon(batch, "before its alerts were stored in Redis")

        topics = self.config.topics
        outbound = [
            *batch.dead,
            *(
                OutboundRecord(topics.enriched, item.tenant.encode("utf-8"), value)
                for item, value in zip(batch.items, enriched, strict=True)
            ),
            *(
                OutboundRecord(topics.aggregated, count.key, count.to_json_bytes())
                for count in aggregated
            ),
            *(
                OutboundRecord(topics.anomalies, alert.key, alert.to_json_bytes())
                for alert in alerts
            ),
        ]
        produced = self._retry(
            "produce the derived topics and the DLQ", lambda: self._produce(outbound)
        )
        if isinstance(produced, _Abandoned):
            return self._abandon(batch, "before its derived topics and DLQ records were produced")
        self.stats.dead_lettered += len(batch.dead)

        offsets = next_offsets(records)
        try:
            self._consumer.commit(offsets)
        except Exception:
            self.stats.commit_failures += 1
            log.warning(
                "could not commit offsets %s; the group has probably moved these partitions, "
                "and their new owner processes the batch again (rows are idempotent)",
                _describe(offsets),
                exc_info=True,
            )
            return False
        return True

    def _insert(self, batch: _Batch) -> Collection[RowKey]:
        """Write the batch's rows; a row PostgreSQL rejects goes to the DLQ and the rest are
        written again at once (that is progress, not a failure to back off from)."""
        while batch.items:
            rows = [item.row for item in batch.items]
            try:
                return self._writer.insert_event_keys(rows)
            except UnstorableRow as rejected:
                if not 0 <= rejected.index < len(rows):
                    raise RuntimeError(
                        f"the event writer rejected row {rejected.index} of a call with "
                        f"{len(rows)} rows; its UnstorableRow index must name one of them"
                    ) from rejected
                item = batch.items.pop(rejected.index)
                record = item.record
                log.warning(
                    "%s[%d]@%d to the DLQ: PostgreSQL rejected it: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    rejected.reason,
                )
                batch.dead.append(
                    dead_letter(
                        record,
                        f"unstorable_row: {rejected.reason}",
                        "store",
                        self.config.topics.dlq,
                    )
                )
        return frozenset()

    def _publish(self, batch: _Batch) -> None:
        messages = [
            Message(stream_channel(item.tenant), item.event.to_json_bytes()) for item in batch.items
        ]
        if not messages:
            return
        try:
            self._publisher.publish(messages)
        except Exception:
            self.stats.publish_failures += 1
            log.warning(
                "could not publish %d events to the live stream; its subscribers miss them "
                "(stored and counted all the same)",
                len(messages),
                exc_info=True,
            )

    def _produce(self, outbound: Sequence[OutboundRecord]) -> None:
        for record in outbound:
            self._producer.produce(record.topic, record.key, record.value, record.headers)
        self._producer.flush()

    def _retry(self, what: str, action: Callable[[], _T]) -> _T | _Abandoned:
        """``action()``, retried with backoff until it succeeds or a stop is requested."""
        attempt = 0
        while True:
            try:
                return action()
            except Exception as error:
                attempt += 1
                self.stats.retries += 1
                if self._stop_requested:
                    log.warning("could not %s (%s) and a stop was requested", what, error)
                    return _ABANDONED
                delay = self.config.retry.delay(attempt)
                log.warning(
                    "could not %s (attempt %d): %s; offsets not committed, retrying the same "
                    "batch in %.1f s",
                    what,
                    attempt,
                    error,
                    delay,
                    exc_info=attempt == 1,
                )
                self._wait(delay)
                if self._stop_requested:
                    log.warning("stop requested while waiting to %s again", what)
                    return _ABANDONED

    def _sleep_unless_stopped(self, seconds: float) -> None:
        """Sleep ``seconds``, in short slices so that a stop ends the backoff within
        :data:`_STOP_CHECK_SECONDS`."""
        deadline = _time.monotonic() + seconds
        while not self._stop_requested:
            left = deadline - _time.monotonic()
            if left <= 0:
                return
            _time.sleep(min(left, _STOP_CHECK_SECONDS))

    def _abandon(self, batch: _Batch, when: str) -> bool:
        self.stats.abandoned_batches += 1
        log.warning(
            "stopping with a batch of %d records (%s) left uncommitted %s; it is redelivered "
            "to the next owner of its partitions",
            len(batch.records),
            _describe(next_offsets(batch.records)),
            when,
        )
        return False


def _describe(offsets: Mapping[TopicPartition, int]) -> str:
    return ", ".join(
        f"{tp.topic}[{tp.partition}]<{offset}" for tp, offset in sorted(offsets.items())
    )


def stop_on_signals(
    processor: Processor, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Make ``signals`` (systemd's SIGTERM, a terminal's SIGINT) stop ``processor`` gracefully:
    the current batch finishes and commits, then :meth:`Processor.run` returns 0. Call it from
    the main thread, as Python requires of signal handlers."""

    def handle(signum: int, _frame: object) -> None:
        log.info("%s: finishing the current batch, then stopping", signal.Signals(signum).name)
        processor.stop()

    for number in signals:
        signal.signal(number, handle)
