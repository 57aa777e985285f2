"""Kafka adapters over confluent-kafka (librdkafka), the client docs/decisions/kafka-client.md
chose by measurement: the API's :class:`sluice.api.ports.EventSink` (asyncio) and the processor's
consumer and producer (synchronous).

Every producer is idempotent with ``acks=all`` and lz4, and partitions by ``murmur2_random``,
the Java clients' partitioner, so a tenant's events land on the same partition whichever client
wrote them: per-tenant order holds across the API instances and the operations tooling.

The processor's consumer lag comes from librdkafka's own statistics (``statistics.interval.ms``,
``stats_cb``) rather than from extra metadata requests: :func:`consumer_lags` reads them.

``sluice validate`` reads a bounded sample of a topic with :class:`KafkaSampler`: partitions
assigned at offsets it computes from the watermarks, a group id of its own, no commits, so the
processors' group never sees it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as RdProducer
from confluent_kafka import TopicPartition as RdTopicPartition

from sluice.cloudevents import Event
from sluice.config import KafkaSettings
from sluice.errors import Unavailable
from sluice.processor.types import ConsumedRecord, Headers, TopicPartition

log = logging.getLogger(__name__)

#: How often the API's delivery thread serves librdkafka's callbacks.
POLL_SECONDS = 0.05
#: How often the processor's consumer reports its statistics (the consumer lag) when asked to.
STATISTICS_INTERVAL_MS = 15000


def client_config(settings: KafkaSettings) -> dict[str, Any]:
    """The connection settings every client shares (librdkafka names)."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(settings.bootstrap_servers),
        "security.protocol": settings.security_protocol,
        # librdkafka leaves Nagle on; every request waits for its ack, so send at once (the
        # Java clients, kafka-python and aiokafka all set TCP_NODELAY)
        "socket.nagle.disable": True,
    }
    if settings.security_protocol.startswith("SASL"):
        config |= {
            "sasl.mechanism": settings.sasl_mechanism,
            "sasl.username": settings.sasl_username,
            "sasl.password": settings.sasl_password,
        }
    if settings.ca_file is not None:
        config["ssl.ca.location"] = str(settings.ca_file)
    return config


def producer_config(settings: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """An idempotent, acks=all producer; a record is given up on after
    ``produce_timeout_seconds`` (the API has answered 503 by then)."""
    timeout_ms = max(1000, int(settings.produce_timeout_seconds * 1000))
    return client_config(settings) | {
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.size": 65536,
        "partitioner": "murmur2_random",
        "message.timeout.ms": timeout_ms,
        "request.timeout.ms": min(timeout_ms, 30000),
        **extra,
    }


class KafkaSink:
    """:class:`sluice.api.ports.EventSink`: produce on the event loop (it only enqueues), while a
    thread serves librdkafka's delivery reports and resolves each request's futures back on
    the loop. Requests that arrive together share record batches (linger.ms)."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.producer = RdProducer(producer_config(settings))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-delivery", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def close(self) -> None:
        """Deliver what is queued (bounded by the produce timeout), then stop the thread."""
        await asyncio.to_thread(self.producer.flush, self.settings.produce_timeout_seconds)
        self._stopping.set()
        await asyncio.to_thread(self._thread.join, 5)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self.producer.poll(POLL_SECONDS)

    async def send(self, tenant: str, events: Sequence[Event]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []

        def report(future: asyncio.Future[None]) -> Any:
            def delivered(error: KafkaError | None, _message: Message) -> None:
                loop.call_soon_threadsafe(_settle, future, error)

            return delivered

        key = tenant.encode()
        for event in events:
            future: asyncio.Future[None] = loop.create_future()
            try:
                self.producer.produce(
                    self.settings.topic,
                    value=event.to_json_bytes(),
                    key=key,
                    on_delivery=report(future),
                )
            except BufferError as err:
                raise Unavailable(
                    "kafka_unavailable",
                    "Kafka's send queue is full; resend the same events after Retry-After",
                    retry_after=_retry(self.settings),
                ) from err
            except KafkaException as err:
                raise Unavailable(
                    "kafka_unavailable",
                    f"Kafka cannot take the events now ({_error_name(err)}); resend them "
                    "after Retry-After",
                    retry_after=_retry(self.settings),
                ) from err
            futures.append(future)
        await asyncio.gather(*futures)

    async def ping(self) -> bool:
        """Whether a broker answers a metadata request for the topic."""
        try:
            await asyncio.to_thread(self.producer.list_topics, self.settings.topic, timeout=2.0)
        except KafkaException:
            return False
        return True


def _error_name(err: KafkaException) -> str:
    """librdkafka's error name (``_TRANSPORT``, ``MSG_SIZE_TOO_LARGE``...), no broker details."""
    error = err.args[0] if err.args else None
    return error.name() if isinstance(error, KafkaError) else type(err).__name__


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():  # the request was cancelled at its deadline
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(
            Unavailable(
                "kafka_unavailable",
                f"Kafka did not accept the events ({error.name()}); resend them after Retry-After",
                retry_after=1,
            )
        )


def _retry(settings: KafkaSettings) -> int:
    return max(1, int(settings.produce_timeout_seconds))


def consumer_lags(
    stats_json: str, assigned: Collection[TopicPartition] | None = None
) -> dict[TopicPartition, int]:
    """The consumer lag per partition in a librdkafka statistics document (``topics`` ->
    ``partitions`` -> ``consumer_lag``: the high watermark minus the committed offset),
    restricted to ``assigned`` when given. A partition the group never committed on reports -1;
    this member starts it at the low watermark (``auto.offset.reset=earliest``), so its lag is
    the last stable (or high) watermark minus how far it has read, or minus the low watermark.
    The internal unassigned partition (-1) and lags still unknown (no watermarks) are left out.
    librdkafka reports every partition of a subscribed topic, and a partition this member no
    longer owns keeps its last committed offset and watermark, so pass the current assignment.
    ValueError when the document is not JSON."""
    document = json.loads(stats_json)
    lags: dict[TopicPartition, int] = {}
    topics = document.get("topics") if isinstance(document, dict) else None
    for topic, topic_stats in (topics or {}).items():
        partitions = topic_stats.get("partitions") if isinstance(topic_stats, dict) else None
        for partition_stats in (partitions or {}).values():
            if not isinstance(partition_stats, dict):
                continue
            partition = partition_stats.get("partition")
            lag = partition_stats.get("consumer_lag")
            if not isinstance(partition, int) or not isinstance(lag, int):
                continue
            key = TopicPartition(topic, partition)
            if lag < 0:
                lag = _never_committed_lag(partition_stats)
            if partition < 0 or lag < 0 or (assigned is not None and key not in assigned):
                continue
            lags[key] = lag
    return lags


def _never_committed_lag(stats: dict) -> int:
    """The lag of a partition without a committed offset (see :func:`consumer_lags`); -1 when
    the watermarks are not known yet either."""
    committed, low = stats.get("committed_offset"), stats.get("lo_offset")
    high = stats.get("ls_offset")
    if not isinstance(high, int) or high < 0:
        high = stats.get("hi_offset")
    numbers = (committed, low, high)
    if not all(isinstance(n, int) for n in numbers) or committed >= 0 or low < 0 or high < low:
        return -1
    position = stats.get("app_offset")  # how far this member has read, before any commit
    start = position if isinstance(position, int) and low <= position <= high else low
    return high - start


class KafkaConsumer:
    """:class:`sluice.processor.types.Consumer` on ``events.raw``: a member of the group
    ``sluice-processor`` with automatic commits off (the processor commits after PostgreSQL
    and Redis succeeded).

    With ``on_lag``, librdkafka reports its statistics every :data:`STATISTICS_INTERVAL_MS`,
    served during :meth:`poll_batch`, and ``on_lag`` receives the lag of every assigned
    partition whose lag is known (:func:`consumer_lags`)."""

    def __init__(
        self,
        settings: KafkaSettings,
        group: str,
        topics: Sequence[str],
        on_lag: Callable[[Mapping[TopicPartition, int]], None] | None = None,
    ) -> None:
        config = client_config(settings) | {
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "max.poll.interval.ms": 600000,
        }
        self._on_lag = on_lag
        if on_lag is not None:
            config |= {"statistics.interval.ms": STATISTICS_INTERVAL_MS, "stats_cb": self._stats}
        self.consumer = RdConsumer(config)
        self.consumer.subscribe(list(topics))

    def _stats(self, stats_json: str) -> None:
        """librdkafka's statistics callback. An exception raised here would surface from
        ``consume()`` and stop the processor, so a failure is logged and the report skipped."""
        assert self._on_lag is not None
        try:
            assigned = {TopicPartition(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            self._on_lag(consumer_lags(stats_json, assigned))
        except Exception:
            log.warning(
                "could not read the consumer lag from librdkafka's statistics", exc_info=True
            )

    def poll_batch(self, max_records: int, timeout: float) -> list[ConsumedRecord]:
        records: list[ConsumedRecord] = []
        for message in self.consumer.consume(num_messages=max_records, timeout=timeout):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            _kind, timestamp = message.timestamp()
            records.append(
                ConsumedRecord(
                    topic=message.topic(),
                    partition=message.partition(),
                    offset=message.offset(),
                    key=message.key(),
                    value=message.value(),
                    timestamp=timestamp,
                    headers=tuple(message.headers() or ()),
                )
            )
        return records

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.consumer.commit(
            offsets=[
                RdTopicPartition(tp.topic, tp.partition, next_) for tp, next_ in offsets.items()
            ],
            asynchronous=False,
        )

    def close(self) -> None:
        self.consumer.close()


class KafkaProducer:
    """:class:`sluice.processor.types.Producer` for the derived topics and the DLQ: records are
    queued by :meth:`produce` and confirmed, all of them, by :meth:`flush`."""

    def __init__(self, settings: KafkaSettings, flush_timeout: float = 30.0) -> None:
        self.flush_timeout = flush_timeout
        self.producer = RdProducer(producer_config(settings, **{"message.timeout.ms": 30000}))
        self._errors: list[str] = []

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                self._errors.append(f"{topic}: {error.str()}")

        self.producer.produce(
            topic, value=value, key=key, headers=list(headers), on_delivery=delivered
        )
        self.producer.poll(0)

    def flush(self) -> None:
        left = self.producer.flush(self.flush_timeout)
        errors, self._errors = self._errors, []
        if left or errors:
            raise KafkaException(
                f"{left} record(s) not delivered in {self.flush_timeout:.0f}s; "
                + "; ".join(errors[:5])
            )

    def close(self) -> None:
        self.producer.flush(self.flush_timeout)


# --- sampling a topic (sluice validate) ---------------------------------------------------------

#: Records asked of librdkafka per consume() call while sampling.
SAMPLE_BATCH = 500


def sample_config(settings: KafkaSettings) -> dict[str, Any]:
    """A consumer that reads without a trace: librdkafka needs a group id, so it gets one of
    its own (never ``sluice-processor``); it is never joined (partitions are assigned) and no
    offset is ever committed or stored."""
    return client_config(settings) | {
        "group.id": f"sluice-validate-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        # an offset retention removed meanwhile: read from the oldest record left
        "auto.offset.reset": "earliest",
    }


@dataclass(frozen=True)
class TopicSample:
    """Records sampled from a topic: ``partitions`` maps each partition read to the offsets
    ``[start, end)`` asked for (empty ones are left out); ``complete`` is False when
    ``max_records`` or the timeout stopped the reading before every end."""

    records: list[ConsumedRecord]
    partitions: dict[int, tuple[int, int]]
    complete: bool


class KafkaSampler:
    """A bounded sample of a topic for ``sluice validate``: from the start of each partition,
    or its last ``last`` records, up to the end offsets seen when it starts, ``max_records``
    at most in all. ``consumer_factory`` builds the librdkafka consumer from its settings
    (tests pass a fake)."""

    def __init__(
        self,
        settings: KafkaSettings,
        consumer_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.settings = settings
        self._factory = consumer_factory or RdConsumer

    def sample(
        self, topic: str, *, max_records: int, last: int | None = None, timeout: float = 30.0
    ) -> TopicSample:
        """RuntimeError naming the setting to fix when Kafka cannot be reached, the topic does
        not exist or the user may not read it."""
        consumer = self._factory(sample_config(self.settings))
        try:
            ranges = self._ranges(consumer, topic, last, timeout)
            if ranges:
                consumer.assign(
                    [RdTopicPartition(topic, p, start) for p, (start, _end) in ranges.items()]
                )
            records, pending = self._read(consumer, topic, ranges, max_records, timeout)
            return TopicSample(records, ranges, complete=not pending)
        except KafkaException as err:
            raise RuntimeError(self._failure(topic, _error_name(err), str(err))) from err
        finally:
            consumer.close()

    def _ranges(
        self, consumer: Any, topic: str, last: int | None, timeout: float
    ) -> dict[int, tuple[int, int]]:
        described = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if described is None or described.error is not None:
            code = "UNKNOWN_TOPIC_OR_PART" if described is None else described.error.name()
            detail = "" if described is None else str(described.error)
            raise RuntimeError(self._failure(topic, code, detail))
        ranges = {}
        for partition in sorted(described.partitions):
            low, high = consumer.get_watermark_offsets(
                RdTopicPartition(topic, partition), timeout=timeout
            )
            start = low if last is None else max(low, high - last)
            if start < high:
                ranges[partition] = (start, high)
        return ranges

    def _read(
        self,
        consumer: Any,
        topic: str,
        ranges: Mapping[int, tuple[int, int]],
        max_records: int,
        timeout: float,
    ) -> tuple[list[ConsumedRecord], set[int]]:
        records: list[ConsumedRecord] = []
        pending = set(ranges)
        deadline = time.monotonic() + timeout
        while pending and len(records) < max_records:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wanted = min(SAMPLE_BATCH, max_records - len(records))
            for message in consumer.consume(num_messages=wanted, timeout=min(1.0, left)):
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(partition)
                        continue
                    raise KafkaException(error)
                end = ranges[partition][1] if partition in ranges else 0
                if partition not in pending or message.offset() >= end:
                    pending.discard(partition)  # written after the sample started
                    continue
                _kind, timestamp = message.timestamp()
                records.append(
                    ConsumedRecord(
                        topic=message.topic(),
                        partition=partition,
                        offset=message.offset(),
                        key=message.key(),
                        value=message.value(),
                        timestamp=timestamp,
                        headers=tuple(message.headers() or ()),
                    )
                )
                if message.offset() >= end - 1:
                    pending.discard(partition)
        return records, pending

    def _failure(self, topic: str, code: str, detail: str) -> str:
        servers = ",".join(self.settings.bootstrap_servers)
        if code == "UNKNOWN_TOPIC_OR_PART":
            return (
                f"Kafka at {servers} has no topic {topic!r}: pass --topic with one of the "
                "study's topics (events.raw, events.dlq, ...)"
            )
        if code in ("TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED"):
            user = self.settings.sasl_username or "this client"
            return (
                f"Kafka refused {user} (SLUICE_KAFKA_SASL_USERNAME) to read topic {topic!r} "
                f"({code}): grant it read and describe on the topic in kafka_acls "
                "(inventories/shared/all.yml), or run with a user that has them"
            )
        return (
            f"Kafka at {servers} (SLUICE_KAFKA_BOOTSTRAP_SERVERS, SLUICE_KAFKA_*) could not be "
            f"read ({code}: {detail}): check that the brokers are up and the settings are the "
            "service's"
        )
