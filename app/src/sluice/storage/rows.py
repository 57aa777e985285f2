"""The ``public.events`` row the processor writes, and how it is written once.

:meth:`sluice.storage.store.EventStore.insert_event_keys` COPYs a batch into a temporary
staging table and moves it with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, in one
transaction. That is the idempotent path measured in docs/bench/postgresql-ingest.md (about
30k rows/s on the lab's 2 cores, 4.4 times the 400k/min target): a redelivered batch adds
nothing, so Kafka's at-least-once delivery gives exactly one row per event. The key is
(tenant_id, time, id), with ``time`` taken from the Kafka record (:func:`event_row`); migration
``0001_events.sql`` explains why that is the design's idempotence on (tenant_id, id).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeAlias

import psycopg

from sluice.cloudevents import NO_DATA, SPECVERSION, Event

#: The columns the processor writes, with the staging table's types. ``ingested_at`` is not
#: among them: the events table's default (now()) sets it when the row really lands.
EVENT_COLUMNS: Final = (
    ("tenant_id", "text"),
    ("id", "text"),
    ("source", "text"),
    ("type", "text"),
    ("subject", "text"),
    ("time", "timestamptz"),
    ("specversion", "text"),
    ("datacontenttype", "text"),
    ("dataschema", "text"),
    ("data", "jsonb"),
    ("data_base64", "text"),
    ("extensions", "jsonb"),
    ("kafka_partition", "integer"),
    ("kafka_offset", "bigint"),
)
_COLUMN_LIST = ", ".join(name for name, _ in EVENT_COLUMNS)

#: A temporary table per connection, created on the first batch and emptied by every commit.
#: It persists with the pooled connection, so later batches only pay for the IF NOT EXISTS.
STAGING_SQL: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS sluice_events_staging ("
    + ", ".join(f"{name} {kind}" for name, kind in EVENT_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
COPY_SQL: Final = f"COPY sluice_events_staging ({_COLUMN_LIST}) FROM STDIN"
#: Rows move in key order, so two processors inserting overlapping batches (a redelivery
#: during a rebalance) take the key locks in the same order and cannot deadlock. The conflict
#: target is explicit: a violation of any other constraint must fail, not vanish.
#: RETURNING names the rows this batch inserted (not those already stored), so the processor
#: counts a redelivered event in Redis only once.
INSERT_SQL: Final = (
    f"INSERT INTO public.events ({_COLUMN_LIST}) "
    f"SELECT {_COLUMN_LIST} FROM pg_temp.sluice_events_staging ORDER BY tenant_id, time, id "
    "ON CONFLICT (tenant_id, time, id) DO NOTHING RETURNING tenant_id, id, time"
)

RowKey: TypeAlias = tuple[str, str, datetime]
"""(tenant_id, id, time): the key a row is stored once under."""

_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True)
class EventRow:
    """One row for ``public.events``, JSON already serialised: what COPY sends.

    ``data_json`` is None when the event has no JSON payload and ``"null"`` when its payload
    is JSON null; the table keeps the two apart (SQL NULL vs jsonb null).
    """

    tenant_id: str
    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    specversion: str = SPECVERSION
    datacontenttype: str | None = None
    dataschema: str | None = None
    data_json: str | None = None
    data_base64: str | None = None
    extensions_json: str = "{}"
    kafka_partition: int | None = None
    kafka_offset: int | None = None

    @property
    def key(self) -> RowKey:
        """(tenant_id, id, time), as
        :meth:`~sluice.storage.store.EventStore.insert_event_keys` reports inserted rows."""
        return (self.tenant_id, self.id, self.time)

    def copy_values(self) -> tuple[Any, ...]:
        """The row in :data:`EVENT_COLUMNS` order."""
        return (
            self.tenant_id,
            self.id,
            self.source,
            self.type,
            self.subject,
            self.time,
            self.specversion,
            self.datacontenttype,
            self.dataschema,
            self.data_json,
            self.data_base64,
            self.extensions_json,
            self.kafka_partition,
            self.kafka_offset,
        )


class UnstorableRow(ValueError):
    """A row PostgreSQL refuses for its content: retrying it can never succeed, and it would
    fail every batch it is in, so the processor sends it to the DLQ and writes the others.
    Nothing of the batch was written."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"row {index} of the batch cannot be stored: {reason}")
        self.index = index
        self.reason = reason


def event_row(
    tenant: str,
    event: Event,
    *,
    record_time: datetime,
    kafka_partition: int | None = None,
    kafka_offset: int | None = None,
) -> EventRow:
    """The row of ``event`` for ``tenant``, read from a Kafka record with ``record_time``.

    ``time`` is the event's own, else ``record_time``: the Kafka record's timestamp, which the
    API's producer set once when it accepted the event. Both come from the record, so a
    redelivery gives the same row key and the insert drops it. Never pass the time the
    processor reads the record: a redelivery would then be a new row.
    """
    if not tenant:
        raise ValueError("an event row needs the tenant of the credential that sent it")
    time = event.time if event.time is not None else record_time
    if time.utcoffset() is None:
        raise ValueError(f"record_time must be timezone-aware, got naive {record_time}")
    return EventRow(
        tenant_id=tenant,
        id=event.id,
        source=event.source,
        type=event.type,
        time=time,
        subject=event.subject,
        specversion=event.specversion,
        datacontenttype=event.datacontenttype,
        dataschema=event.dataschema,
        data_json=None if event.data is NO_DATA else _json(event.data),
        data_base64=event.data_base64,
        extensions_json=_json(event.extensions),
        kafka_partition=kafka_partition,
        kafka_offset=kafka_offset,
    )


def unstorable_reason(row: EventRow) -> str | None:
    """Why PostgreSQL would refuse ``row``, or None when it takes it.

    The API refuses such events already; this guards rows that reach the processor another way
    (a replay, a producer other than the API): text cannot hold NUL, jsonb cannot hold
    ``\\u0000``, nothing can hold unpaired surrogates, and ``time`` needs a zone.
    """
    for name, value in zip((name for name, _ in EVENT_COLUMNS), row.copy_values(), strict=True):
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            return f"{name} contains a NUL character, which PostgreSQL text cannot hold"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} contains an unpaired UTF-16 surrogate, which is not valid UTF-8"
        if name in ("data", "extensions") and _JSON_NUL.search(value):
            return f"{name} contains \\u0000 in a JSON string, which jsonb cannot hold"
    if row.time.utcoffset() is None:
        return f"time {row.time} has no timezone"
    if row.data_json is not None and row.data_base64 is not None:
        return "the event has both data and data_base64; CloudEvents allows one payload"
    return None


_COPY_LINE = re.compile(r"\bCOPY sluice_events_staging, line ([0-9]+)")


def copy_error_row(error: psycopg.Error) -> int | None:
    """The index in the batch of the row a COPY error is about (PostgreSQL's context reads
    ``COPY sluice_events_staging, line 3, column data: ...``; lines count from 1), or None
    when the error names no line."""
    match = _COPY_LINE.search(error.diag.context or "")
    return None if match is None else int(match[1]) - 1


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
