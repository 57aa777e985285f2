"""Where ``sluice validate`` reads events: a file, a bounded sample of a Kafka topic, a time
range of the events stored in PostgreSQL. Each source is thin: it turns what it reads into
:class:`~sluice.quality.rules.Item` values (the event's JSON, where it was read, its tenant)
and leaves every judgement to the rules.

- :class:`FileSource`: JSON lines (one event a line), a JSON array of events (a batch-mode
  body), a query API page (``{"events": [...]}``) or one event (a structured-mode body).
- :class:`KafkaSource`: records sampled by :class:`sluice.adapters.kafka.KafkaSampler`, which
  assigns partitions itself and never commits, so no consumer group's offsets move; the
  record key is the tenant, as the processor reads it.
- :class:`PostgresSource`: ``[since, until)`` of one tenant or all, page by page in key
  order through :meth:`sluice.storage.store.EventStore.events_in_range` as the reader role.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from sluice.quality.report import DEFAULT_EXAMPLES, DEFAULT_MIN_SCORE, Report, validate
from sluice.quality.rules import Item, Policy
from sluice.tenants import validate_tenant

if TYPE_CHECKING:
    from sluice.adapters.kafka import TopicSample
    from sluice.config import Settings
    from sluice.processor.types import Record
    from sluice.storage.reads import StoredEvent

#: Events read from PostgreSQL per statement.
PAGE_EVENTS: Final = 1000


class Source(Protocol):
    """A source of events: what it is (for the report), the items, and notes on what it left
    out (filled while :meth:`items` is read)."""

    @property
    def description(self) -> str: ...

    @property
    def notes(self) -> list[str]: ...

    def items(self) -> Iterator[Item]: ...


def run(
    source: Source,
    policy: Policy,
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    examples: int = DEFAULT_EXAMPLES,
) -> Report:
    """The report on every item of ``source``, with the source's notes."""
    report = validate(
        source.items(),
        policy,
        source=source.description,
        min_score=min_score,
        examples=examples,
    )
    return replace(report, notes=tuple(source.notes))


# --- a file -------------------------------------------------------------------------------------


@dataclass
class FileSource:
    """The events of a file (``-``: standard input), of ``tenant`` (None: one unnamed tenant;
    a file does not say whose its events are). ValueError naming the file when it cannot be
    read, or when it starts as a JSON array that is not one."""

    path: str
    tenant: str | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tenant is not None:
            validate_tenant(self.tenant)

    @property
    def description(self) -> str:
        name = "standard input" if self.path == "-" else f"file {self.path}"
        return name if self.tenant is None else f"{name} (tenant {self.tenant})"

    def items(self) -> Iterator[Item]:
        return file_items(self._read(), self._name(), self.tenant, self.notes)

    def _name(self) -> str:
        return "stdin" if self.path == "-" else Path(self.path).name

    def _read(self) -> bytes:
        if self.path == "-":
            return sys.stdin.buffer.read()
        try:
            return Path(self.path).read_bytes()
        except OSError as error:
            raise ValueError(
                f"cannot read {self.path}: {error.strerror or error}; give a readable file of "
                "events (JSON lines, a JSON array, a query API page or one event) or - for "
                "standard input"
            ) from None


def file_items(content: bytes, name: str, tenant: str | None, notes: list[str]) -> Iterator[Item]:
    """The items of a file's ``content``, each located as ``name:line`` (JSON lines) or
    ``name[index]`` (an array); its form is recorded in ``notes``."""
    start = content.lstrip()[:1]
    document: Any = None
    whole = start in (b"[", b"{")
    if whole:
        try:
            document = json.loads(content)
        except (ValueError, RecursionError) as error:
            if start == b"[":
                raise ValueError(
                    f"{name} starts as a JSON array but is not one ({error}); fix the JSON, or "
                    "write one event per line (JSON lines), where a bad line is reported alone"
                ) from None
            whole = False  # several lines of JSON objects: JSON lines
    if whole and isinstance(document, list):
        notes.append(f"{name}: a JSON array of {len(document)} events")
        yield from _elements(document, name, tenant)
    elif whole and _is_page(document):
        notes.append(f"{name}: a query API page of {len(document['events'])} events")
        yield from _elements(document["events"], f"{name} events", tenant)
    elif whole:
        notes.append(f"{name}: one event")
        yield Item(content.strip(), name, tenant)
    else:
        notes.append(f"{name}: JSON lines")
        for number, line in enumerate(content.split(b"\n"), start=1):
            if line.strip():
                yield Item(line.strip(), f"{name}:{number}", tenant)


def _is_page(document: Any) -> bool:
    """A query API page: ``events`` (an array) and no CloudEvents ``specversion``."""
    return (
        isinstance(document, dict)
        and isinstance(document.get("events"), list)
        and "specversion" not in document
    )


def _elements(elements: list[Any], name: str, tenant: str | None) -> Iterator[Item]:
    for index, element in enumerate(elements):
        # back to JSON for the service's parser; ASCII escapes keep lone surrogates checkable
        raw = json.dumps(element, allow_nan=True).encode("ascii")
        yield Item(raw, f"{name}[{index}]", tenant)


# --- Kafka --------------------------------------------------------------------------------------


class Sampler(Protocol):
    """:class:`sluice.adapters.kafka.KafkaSampler`."""

    def sample(
        self, topic: str, *, max_records: int, last: int | None, timeout: float
    ) -> TopicSample: ...


@dataclass
class KafkaSource:
    """A bounded sample of ``topic``: its first records, or the ``last`` of each partition, at
    most ``max_records`` in all, within ``timeout`` seconds."""

    sampler: Sampler
    topic: str
    max_records: int
    last: int | None = None
    timeout: float = 30.0
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_records < 1:
            raise ValueError(f"--max-records must be >= 1, got {self.max_records}")
        if self.last is not None and self.last < 1:
            raise ValueError(f"--last must be >= 1 records per partition, got {self.last}")

    @property
    def description(self) -> str:
        where = (
            "from the start of each partition"
            if self.last is None
            else f"the last {self.last} records of each partition"
        )
        return f"Kafka topic {self.topic}, {where}, at most {self.max_records} records"

    def items(self) -> Iterator[Item]:
        sample = self.sampler.sample(
            self.topic, max_records=self.max_records, last=self.last, timeout=self.timeout
        )
        if not sample.complete:
            self.notes.append(
                f"read {len(sample.records)} records and stopped (--max-records "
                f"{self.max_records} or --timeout-seconds {self.timeout:g}) before the end of "
                "every partition: later records were not checked"
            )
        if not sample.partitions:
            self.notes.append(f"every partition of {self.topic} was empty in the range asked")
        for record in sample.records:
            yield record_item(record)


def record_item(record: Record) -> Item:
    """A consumed record as an item: the tenant from its key and the event from its value, as
    the processor reads them (:func:`sluice.processor.engine.record_parts`)."""
    from sluice.processor.engine import DecodeError, record_parts

    where = f"{record.topic}[{record.partition}]@{record.offset}"
    try:
        tenant, value = record_parts(record)
    except DecodeError as error:
        return Item(record.value, where, None, problem=error.detail)
    return Item(value, where, tenant)


# --- PostgreSQL ---------------------------------------------------------------------------------


class EventRange(Protocol):
    """:meth:`sluice.storage.store.EventStore.events_in_range`, synchronously: the events with
    ``since <= time < until`` after the key ``after`` (tenant, time, id), ``limit`` at most,
    in key order, with their tenants."""

    def __call__(
        self,
        since: datetime,
        until: datetime,
        tenant: str | None,
        after: tuple[str, datetime, str] | None,
        limit: int,
    ) -> Sequence[tuple[str, StoredEvent]]: ...


@dataclass
class PostgresSource:
    """The stored events of ``[since, until)``, of ``tenant`` or every tenant, at most
    ``max_records``."""

    pages: EventRange
    since: datetime
    until: datetime
    tenant: str | None = None
    max_records: int = 100_000
    page_events: int = PAGE_EVENTS
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, moment in (("--since", self.since), ("--until", self.until)):
            if moment.utcoffset() is None:
                raise ValueError(f"{name} {moment} has no UTC offset: append Z or +02:00")
        if not self.since < self.until:
            raise ValueError(
                f"the time range is empty: --since {_iso(self.since)} must be before --until "
                f"{_iso(self.until)}, which is exclusive"
            )
        if self.tenant is not None:
            validate_tenant(self.tenant)
        if self.max_records < 1:
            raise ValueError(f"--max-records must be >= 1, got {self.max_records}")

    @property
    def description(self) -> str:
        who = "every tenant" if self.tenant is None else f"tenant {self.tenant}"
        return (
            f"PostgreSQL events of {who} from {_iso(self.since)} to {_iso(self.until)} "
            f"(exclusive), at most {self.max_records}"
        )

    def items(self) -> Iterator[Item]:
        after: tuple[str, datetime, str] | None = None
        read = 0
        while read < self.max_records:
            limit = min(self.page_events, self.max_records - read)
            rows = self.pages(self.since, self.until, self.tenant, after, limit)
            for tenant, stored in rows:
                event = stored.event
                assert event.time is not None  # a stored event always has one
                yield Item(event.to_json_bytes(), f"public.events at {_iso(event.time)}", tenant)
                after = (tenant, event.time, event.id)
            read += len(rows)
            if len(rows) < limit:
                return
        if self.pages(self.since, self.until, self.tenant, after, 1):
            self.notes.append(
                f"stopped at --max-records {self.max_records}: the range holds more events, "
                "which were not checked; narrow --since/--until or raise --max-records"
            )


@contextmanager
def postgres_range(settings: Settings) -> Iterator[EventRange]:
    """:class:`EventRange` over PostgreSQL as the reader role (``SLUICE_POSTGRES_*``, as the
    API and ``sluice replay`` read); RuntimeError naming the settings when it cannot read."""
    import psycopg

    from sluice.errors import Unavailable
    from sluice.storage import store

    with asyncio.Runner() as runner:
        pool = runner.run(store.open_pool(settings.postgres.reader_dsn, max_size=1, timeout=30.0))
        events = store.EventStore(pool)

        def pages(
            since: datetime,
            until: datetime,
            tenant: str | None,
            after: tuple[str, datetime, str] | None,
            limit: int,
        ) -> Sequence[tuple[str, StoredEvent]]:
            try:
                return runner.run(
                    events.events_in_range(since, until, tenant, after=after, limit=limit)
                )
            except (Unavailable, psycopg.Error) as error:
                detail = error.detail if isinstance(error, Unavailable) else str(error).strip()
                raise RuntimeError(
                    f"PostgreSQL at {settings.postgres.host} (SLUICE_POSTGRES_*, reader role "
                    f"{settings.postgres.reader_user}): {detail}"
                ) from error

        try:
            yield pages
        finally:
            runner.run(pool.close())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
