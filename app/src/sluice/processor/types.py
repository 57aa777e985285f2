"""What the processor needs from Kafka, PostgreSQL and Redis: the record it consumes, the
Protocols its adapters implement, the values it hands them, and its running totals.

The engine (:mod:`sluice.processor.engine`) depends only on these, and so do the adapters over
the real clients (:mod:`sluice.adapters.kafka`, :mod:`sluice.adapters.redis`), which therefore
never import the engine. Every Protocol is synchronous: the engine's docstring says why.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeAlias

from sluice.derived.aggregates import Increment
from sluice.storage.rows import EventRow, RowKey

#: Kafka record headers as the clients give them: (name, value) pairs, names may repeat.
Headers: TypeAlias = Sequence[tuple[str, bytes | None]]


class Record(Protocol):
    """One consumed Kafka record (kafka-python's ``ConsumerRecord`` has exactly these)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Headers: ...

    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch, as stored in the log (the API producer's create
        time), so the same on every redelivery."""
        ...


@dataclass(frozen=True)
class ConsumedRecord:
    """A plain :class:`Record`, for adapters whose client records look different
    (confluent-kafka's ``Message`` has methods, not attributes) and for tests."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Headers = ()


class TopicPartition(NamedTuple):
    """A partition of a topic: what offsets are committed for."""

    topic: str
    partition: int


class Consumer(Protocol):
    """The consumer group member on ``events.raw``, with automatic commits off."""

    def poll_batch(self, max_records: int, timeout: float) -> Sequence[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first;
        an empty sequence when none came."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to read per partition) synchronously. Raises
        when the group no longer assigns a partition to this member; the batch is then
        redelivered to its new owner."""
        ...

    def close(self) -> None:
        """Leave the group (so its partitions move at once) and release the client."""
        ...


class EventWriter(Protocol):
    """PostgreSQL's ``events`` table."""

    def insert_event_keys(self, rows: Sequence[EventRow]) -> Collection[RowKey]:
        """Write ``rows`` in one transaction (COPY), skipping rows whose key is already stored,
        and return the keys of the rows this call inserted: a synchronous
        :meth:`sluice.storage.store.EventStore.insert_event_keys`.

        Raise :class:`~sluice.storage.rows.UnstorableRow` for a row PostgreSQL refuses for its
        content (nothing of the call written); raise any other exception for a failure that may
        pass (connection, timeout, failover), which the processor retries with the same rows.
        """
        ...


class Aggregator(Protocol):
    """Redis aggregates through the Functions library (``FCALL sluice_aggregate``)."""

    def apply(self, increments: Sequence[Increment]) -> Sequence[int]:
        """Apply every increment (:meth:`Increment.fcall_args`) in one cluster pipeline (one
        round trip per node) and return each one's reply, the new count, in the order given.
        Raise if any of them failed."""
        ...


@dataclass(frozen=True)
class StoredValue:
    """A Redis string to set: ``SET key value EX ttl_seconds``."""

    key: str
    value: bytes
    ttl_seconds: int


class AlertStore(Protocol):
    """Where the latest anomaly alert of each tenant and type is kept in Redis."""

    def store(self, values: Sequence[StoredValue]) -> None:
        """Set every value (in order: a later value for the same key wins), one pipeline per
        node. Raise if any of them failed."""
        ...


@dataclass(frozen=True)
class Message:
    """A sharded pub/sub message (``SPUBLISH channel payload``)."""

    channel: str
    payload: bytes


class Publisher(Protocol):
    """Redis sharded pub/sub, which feeds the API's ``GET /api/v1/stream``."""

    def publish(self, messages: Sequence[Message]) -> None:
        """Publish ``messages`` in order, pipelined per node: one call per batch, not one round
        trip per event."""
        ...


class Producer(Protocol):
    """The Kafka producer of the derived topics and the DLQ (``acks=all``)."""

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Queue one record; delivery is confirmed by :meth:`flush`."""
        ...

    def flush(self) -> None:
        """Wait until every queued record is delivered; raise if any was not."""
        ...


def stream_channel(tenant: str) -> str:
    """The sharded pub/sub channel of ``tenant``'s live events (payload: the event's
    CloudEvents JSON). The hash tag puts it in the slot of the tenant's other keys."""
    return f"sluice:{{{tenant}}}:events"


@dataclass
class ProcessorStats:
    """Running totals since start, for logs and the metrics endpoint (each field is a
    ``sluice_processor_*_total`` counter: :data:`sluice.processor.metrics.STATS_COUNTERS`)."""

    batches: int = 0
    records: int = 0
    inserted: int = 0
    already_stored: int = 0
    duplicates_in_batch: int = 0
    dead_lettered: int = 0
    anomalies: int = 0
    retries: int = 0
    publish_failures: int = 0
    commit_failures: int = 0
    abandoned_batches: int = 0
