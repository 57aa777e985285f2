"""PostgreSQL access for the processor and the API: write events once, read them per tenant.

Writes (the processor): :meth:`EventStore.insert_events` COPYs a batch into a temporary
staging table and moves it with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, in one
transaction. That is the idempotent path measured in docs/bench/postgresql-ingest.md (about
30k rows/s on the lab's 2 cores, 4.4 times the 400k/min target): a redelivered batch adds
nothing, so Kafka's at-least-once delivery gives exactly one row per event. The key is
(tenant_id, time, id), with ``time`` taken from the Kafka record (:func:`event_row`); migration
``0001_events.sql`` explains why that is the design's idempotence on (tenant_id, id).

Reads (the API): every statement on events and customers carries ``tenant_id = %s`` with the
tenant of the request's credential as its first condition, built by the pure functions
``*_sql`` below so the unit tests can check that no query leaves it out. Pages are keyset
pagination over (time, id) with an opaque cursor (:func:`encode_cursor`) bound to the tenant
and the query it came from. The reads without a tenant are :meth:`PgKeyStore.get` (a key is
looked up to learn the tenant) and :meth:`EventStore.bucket_counts` asked for every tenant, which
only the operator's ``sluice replay`` does, never the API.

Time ranges are half-open, as the API's ports state them: ``since`` inclusive, ``until``
exclusive. Event sourcing (study feature 1): a subject's history is its events in (time, id)
order; its state as of a time is :func:`fold_subject_state` over that history, which counts an
event at exactly ``as_of`` (the state *at* that instant includes what happened at it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeAlias

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from sluice.aggregates import Window
from sluice.apikeys import StoredKey
from sluice.cloudevents import NO_DATA, SPECVERSION, Event
from sluice.errors import BadRequest, Unavailable

#: Page size of the query API when the client asks for none, and the most it may ask for.
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
#: Query parameters of ``GET /api/v1/query`` (:func:`parse_query`).
QUERY_PARAMETERS: Final = ("type", "source", "subject", "since", "until", "cursor", "limit")
#: Seconds a client is told to wait when PostgreSQL cannot answer.
RETRY_AFTER: Final = 5
#: Where ``date_bin`` starts counting windows: the UNIX epoch, as :mod:`sluice.aggregates` does.
BUCKET_ORIGIN: Final = datetime(1970, 1, 1, tzinfo=UTC)

Sql: TypeAlias = tuple[str, tuple[Any, ...]]
"""A statement with ``%s`` placeholders and its parameters, in order."""

# --- writing events -----------------------------------------------------------------------------

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
        """(tenant_id, id, time), as :meth:`EventStore.insert_event_keys` reports inserted rows."""
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


# --- reading events -----------------------------------------------------------------------------

#: What the reads select, in the order :func:`stored_event` reads. ``data IS NOT NULL`` tells
#: "no payload" from a JSON null payload, which the driver loads as None too.
SELECT_COLUMNS: Final = (
    "id, source, type, specversion, subject, time, datacontenttype, dataschema, "
    "data, data IS NOT NULL, data_base64, extensions, ingested_at"
)


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: the CloudEvent (``time`` always set, see :func:`event_row`) and when
    the processor wrote it."""

    event: Event
    ingested_at: datetime

    @property
    def position(self) -> tuple[datetime, str]:
        """(time, id): the event's place in every ordering Sluice reads in."""
        assert self.event.time is not None  # stored events always have a time
        return self.event.time, self.event.id

    def to_cloudevent(self) -> dict[str, Any]:
        """The event in the CloudEvents JSON format, as the API returns it (the same canonical
        form the API produced to Kafka)."""
        document: dict[str, Any] = json.loads(self.event.to_json_bytes())
        return document


@dataclass(frozen=True)
class EventPage:
    """A page of events and the cursor of the next page (None on the last page)."""

    events: list[StoredEvent]
    next_cursor: str | None


@dataclass(frozen=True)
class EventFilters:
    """The query API's filters; every one given must match. ``since <= time < until``.

    Built from client input, so invalid values raise :class:`BadRequest` naming the parameter.
    """

    type: str | None = None
    source: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("type", "source", "subject"):
            value = getattr(self, name)
            if value is not None:
                check_text_parameter(name, value)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise BadRequest("invalid_parameter", f"{name} must carry a UTC offset")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise BadRequest(
                "invalid_parameter",
                f"the time range is empty: since ({_iso(self.since)}) must be before until "
                f"({_iso(self.until)}), which is exclusive",
            )


@dataclass(frozen=True)
class EventQuery:
    """A parsed ``GET /api/v1/query``: filters, the cursor as sent, the page size."""

    filters: EventFilters
    cursor: str | None
    limit: int


def parse_query(params: Mapping[str, str]) -> EventQuery:
    """The :class:`EventQuery` of a request's query parameters, or BadRequest naming the one
    that is wrong. Unknown parameters are refused: a misspelt filter (``tpye=``) silently
    ignored would return every event instead of the ones asked for."""
    unknown = sorted(set(params) - set(QUERY_PARAMETERS))
    if unknown:
        raise BadRequest(
            "invalid_parameter",
            f"unknown query parameter {unknown[0]!r}: use {', '.join(QUERY_PARAMETERS)}",
        )
    filters = EventFilters(
        type=params.get("type"),
        source=params.get("source"),
        subject=params.get("subject"),
        since=_optional_time("since", params.get("since")),
        until=_optional_time("until", params.get("until")),
    )
    return EventQuery(filters=filters, cursor=params.get("cursor"), limit=parse_limit(params))


def parse_limit(params: Mapping[str, str]) -> int:
    """The ``limit`` parameter: 1 to :data:`MAX_LIMIT`, :data:`DEFAULT_LIMIT` when absent."""
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(
            "invalid_parameter",
            f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}",
        )
    return int(raw)


def parse_time(name: str, raw: str) -> datetime:
    """A timestamp with a UTC offset from query parameter ``name``, in UTC: RFC 3339, and the
    other ISO 8601 forms :meth:`datetime.fromisoformat` reads (a query filter may be lenient;
    an event's ``time`` is not)."""
    check_text_parameter(name, raw)
    hint = ""
    if " " in raw:
        hint = " (a '+' in a URL query reads as a space: write the offset as %2B02:00, or use Z)"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            "invalid_parameter",
            f"{name} must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z, got {raw!r}{hint}",
        ) from None
    if moment.utcoffset() is None:
        raise BadRequest(
            "invalid_parameter",
            f"{name} {raw!r} has no UTC offset: append Z (UTC) or one such as %2B02:00",
        )
    return moment.astimezone(UTC)


def check_text_parameter(name: str, value: str) -> str:
    """``value`` if PostgreSQL can compare it, else BadRequest naming parameter ``name``.

    A NUL (``%00`` in a URL) or an unpaired surrogate would make the query itself fail, which
    the client would see as a 5xx.
    """
    if not value:
        raise BadRequest("invalid_parameter", f"{name} must not be empty; leave it out instead")
    if "\x00" in value:
        raise BadRequest("invalid_parameter", f"{name} contains a NUL character (%00)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("invalid_parameter", f"{name} is not valid UTF-8") from None
    return value


def events_query_sql(
    tenant: str, filters: EventFilters, after: tuple[datetime, str] | None, limit: int
) -> Sql:
    """The query API's statement: a tenant's events matching ``filters``, newest first, after
    the position ``after`` (exclusive), one row more than ``limit`` to tell whether a next page
    exists. The keyset condition on (time, id) follows the primary key's order, so a tenant's
    pages are index range scans however deep the client pages."""
    where, params = _tenant_condition(tenant)
    for column in ("type", "source", "subject"):
        value = getattr(filters, column)
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if filters.since is not None:
        where.append("time >= %s")
        params.append(filters.since)
    if filters.until is not None:
        where.append("time < %s")
        params.append(filters.until)
    if after is not None:
        where.append("(time, id) < (%s, %s)")
        params.extend(after)
    params.append(_limit(limit) + 1)
    return (
        f"SELECT {SELECT_COLUMNS} FROM public.events WHERE {' AND '.join(where)} "
        "ORDER BY time DESC, id DESC LIMIT %s",
        tuple(params),
    )


def history_sql(
    tenant: str,
    subject: str,
    until: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
    *,
    through: bool = False,
) -> Sql:
    """A subject's history: its events before ``until`` (at or before it with ``through``, as
    a fold as of ``until`` needs), oldest first, after the position ``after`` (exclusive), one
    row more than ``limit``."""
    where, params = _tenant_condition(tenant)
    where.append("subject = %s")
    params.append(subject)
    if until is not None:
        where.append("time <= %s" if through else "time < %s")
        params.append(until)
    if after is not None:
        where.append("(time, id) > (%s, %s)")
        params.extend(after)
    params.append(_limit(limit) + 1)
    return (
        f"SELECT {SELECT_COLUMNS} FROM public.events WHERE {' AND '.join(where)} "
        "ORDER BY time, id LIMIT %s",
        tuple(params),
    )


def bucket_counts_sql(
    window: Window, start: datetime, end: datetime, tenant: str | None = None
) -> Sql:
    """Events per (tenant, type, ``window`` start) with ``start <= time < end``, for ``sluice
    replay`` to rebuild Redis aggregates: ``date_bin`` from the UNIX epoch in UTC puts an
    event in the same window as :meth:`sluice.aggregates.Window.start`. Only ``tenant``'s
    events when given; every tenant's when None (an operator's replay, never the API). The
    range is passed widened to whole windows, so every bucket returned is counted whole."""
    for name, moment in (("start", start), ("end", end)):
        if moment.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, got naive {moment}")
    if not start < end:
        raise ValueError(f"empty time range: start {start} must be before end {end}")
    where, params = ([], []) if tenant is None else _tenant_condition(tenant)
    where += ["time >= %s", "time < %s"]
    params += [start, end]
    return (
        "SELECT tenant_id, type, date_bin(%s::interval, time, %s::timestamptz) AS bucket, "
        f"count(*) FROM public.events WHERE {' AND '.join(where)} "
        "GROUP BY tenant_id, type, bucket ORDER BY tenant_id, bucket, type",
        (timedelta(seconds=window.seconds), BUCKET_ORIGIN, *params),
    )


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """A row selected with :data:`SELECT_COLUMNS` as a :class:`StoredEvent`, times in UTC."""
    (
        event_id,
        source,
        event_type,
        specversion,
        subject,
        time,
        datacontenttype,
        dataschema,
        data,
        has_data,
        data_base64,
        extensions,
        ingested_at,
    ) = row
    event = Event(
        id=event_id,
        source=source,
        type=event_type,
        specversion=specversion,
        subject=subject,
        time=time.astimezone(UTC),
        datacontenttype=datacontenttype,
        dataschema=dataschema,
        data=data if has_data else NO_DATA,
        data_base64=data_base64,
        extensions=dict(extensions),
    )
    return StoredEvent(event=event, ingested_at=ingested_at.astimezone(UTC))


def page(rows: Sequence[Sequence[Any]], limit: int, scope: str) -> EventPage:
    """The page of ``rows`` (fetched with ``limit + 1``): at most ``limit`` events, and a
    cursor after the last of them when the extra row shows there is more."""
    events = [stored_event(row) for row in rows[:limit]]
    if len(rows) > limit and events:
        return EventPage(events, encode_cursor(events[-1].position, scope))
    return EventPage(events, None)


_COPY_LINE = re.compile(r"\bCOPY sluice_events_staging, line ([0-9]+)")


def copy_error_row(error: psycopg.Error) -> int | None:
    """The index in the batch of the row a COPY error is about (PostgreSQL's context reads
    ``COPY sluice_events_staging, line 3, column data: ...``; lines count from 1), or None
    when the error names no line."""
    match = _COPY_LINE.search(error.diag.context or "")
    return None if match is None else int(match[1]) - 1


# --- cursors ------------------------------------------------------------------------------------

_CURSOR_VERSION: Final = 1
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def query_scope(tenant: str, filters: EventFilters) -> str:
    """What a query-API cursor is bound to: the tenant and the filters it was made for."""
    return _scope(
        "query",
        tenant,
        filters.type,
        filters.source,
        filters.subject,
        _iso_or_none(filters.since),
        _iso_or_none(filters.until),
    )


def history_scope(tenant: str, subject: str, until: datetime | None) -> str:
    """What a subject-history cursor is bound to."""
    return _scope("history", tenant, subject, _iso_or_none(until))


def encode_cursor(position: tuple[datetime, str], scope: str) -> str:
    """An opaque cursor: base64url (unpadded) of the position (time, id) and the scope.

    Not signed: a cursor only says where a page starts within the caller's own tenant (every
    query adds the tenant anyway), so a forged one can show nothing another tenant owns. The
    scope makes a cursor from another tenant or another query a clear 400 rather than a page
    that silently starts somewhere unrelated.
    """
    time, event_id = position
    payload = [_CURSOR_VERSION, _iso(time), event_id, scope]
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, scope: str) -> tuple[datetime, str]:
    """The position in ``cursor``, or BadRequest ``invalid_cursor`` when it is not a cursor
    Sluice issued for this scope (damaged, edited, or from another query or tenant)."""
    try:
        if not _BASE64URL.fullmatch(cursor):
            raise ValueError("not base64url")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, time, event_id, cursor_scope = json.loads(raw.decode("utf-8"))
        if version != _CURSOR_VERSION or not isinstance(time, str):
            raise ValueError("unknown cursor version")
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("no event id")
        moment = datetime.fromisoformat(time)
        if moment.utcoffset() is None:
            raise ValueError("naive time")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise BadRequest(
            "invalid_cursor",
            "the cursor is not one Sluice issued: pass next_cursor exactly as a previous page "
            "returned it, or leave it out to start from the first page",
        ) from None
    if cursor_scope != scope:
        raise BadRequest(
            "invalid_cursor",
            "the cursor belongs to another query: keep the filters (and the credential) of the "
            "page that returned it, or leave it out to start from the first page",
        )
    return moment.astimezone(UTC), event_id


# --- event sourcing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectState:
    """A subject's state as of a time: the folded state, how many events were folded (0: the
    subject had no events by then), and the id and time of the last of them."""

    state: Any
    events: int
    last_event_id: str | None
    updated: datetime | None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: ``patch`` applied to ``target``, neither modified.

    An object patch sets its members recursively and removes those it sets to null; any other
    patch (array, string, number, true/false, null) replaces the target whole. Iterative,
    so a deeply nested payload cannot exhaust Python's recursion limit. Parts of the result
    that no patch touched are shared with the inputs: treat it as read-only.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    pending = [(result, patch)]
    while pending:
        node, changes = pending.pop()
        for name, value in changes.items():
            if value is None:
                node.pop(name, None)
            elif isinstance(value, dict):
                child = node.get(name)
                node[name] = child = dict(child) if isinstance(child, dict) else {}
                pending.append((child, value))
            else:
                node[name] = value
    return result


def fold_subject_state(
    events: Iterable[StoredEvent], as_of: datetime | None, state: Any = None
) -> Any:
    """The state of a subject as of ``as_of`` (time travel): ``state`` (None: nothing yet)
    merge-patched (RFC 7386, :func:`merge_patch`) with each event's JSON ``data`` in (time, id)
    order, up to and including ``as_of`` (None: all of them).

    Events are patches, so an event carries only what changed: ``{"status": "shipped"}``
    updates one member, ``{"coupon": null}`` removes one, a non-object payload replaces the
    state whole (``null`` clears it). Events without JSON data (none, or a binary
    ``data_base64`` payload) change nothing. Events at the same instant apply in id order, so a
    producer that needs an order within one instant gives them distinct times. ``events``
    must be in ascending (time, id) order, as :meth:`EventStore.subject_history` returns them;
    later ones than ``as_of`` are skipped. Passing the result back as ``state`` with the next
    page of events folds a long history page by page.
    """
    if as_of is not None and as_of.utcoffset() is None:
        raise ValueError(f"as_of must be timezone-aware, got naive {as_of}")
    previous: tuple[datetime, str] | None = None
    for stored in events:
        position = stored.position
        if previous is not None and position < previous:
            raise ValueError(
                f"events must be in ascending (time, id) order: {position} came after {previous}"
            )
        previous = position
        if (as_of is not None and position[0] > as_of) or stored.event.data is NO_DATA:
            continue
        state = merge_patch(state, stored.event.data)
    return state


# --- customers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    """A row of the customers reference table, which enriches events."""

    customer_id: str
    name: str | None
    segment: str | None
    attributes: dict[str, Any]
    updated_at: datetime


def customers_sql(tenant: str, ids: Sequence[str]) -> Sql:
    """The customers of ``tenant`` among ``ids``."""
    where, params = _tenant_condition(tenant)
    where.append("customer_id = ANY(%s)")
    params.append(list(ids))
    return (
        "SELECT customer_id, name, segment, attributes, updated_at FROM public.customers "
        f"WHERE {' AND '.join(where)}",
        tuple(params),
    )


# --- API keys -----------------------------------------------------------------------------------

KEY_GET_SQL: Final = (
    "SELECT key_id, tenant, secret_sha256, created, revoked_at IS NOT NULL "
    "FROM public.api_keys WHERE key_id = %s"
)
KEY_CREATE_SQL: Final = (
    "INSERT INTO public.api_keys (key_id, tenant, secret_sha256, created, revoked_at) "
    "VALUES (%s, %s, %s, %s, CASE WHEN %s THEN now() END) ON CONFLICT (key_id) DO NOTHING"
)


def key_revoke_sql(key_id: str, tenant: str | None) -> Sql:
    """Revokes a key (keeping the time of its first revocation); with ``tenant``, only that
    tenant's key."""
    where = ["key_id = %s"]
    params: list[Any] = [key_id]
    if tenant is not None:
        where.append("tenant = %s")
        params.append(tenant)
    return (
        "UPDATE public.api_keys SET revoked_at = coalesce(revoked_at, now()) "
        f"WHERE {' AND '.join(where)}",
        tuple(params),
    )


class KeyExists(ValueError):
    """A key with this id is stored already (a 48-bit id collision: make a new key)."""


class PgKeyStore:
    """The API keys in ``public.api_keys``: :class:`sluice.apikeys.KeyStore`, asynchronously.

    Fetch with :meth:`get`, then check with :func:`sluice.apikeys.verify`; authentication
    itself stays in :mod:`sluice.apikeys`.
    """

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def get(self, key_id: str) -> StoredKey | None:
        """The stored key with this id, revoked or not; None when there is none."""
        async with _reading(self._pool) as conn:
            row = await (await conn.execute(KEY_GET_SQL, (key_id,))).fetchone()
        if row is None:
            return None
        stored_id, tenant, secret_sha256, created, revoked = row
        return StoredKey(stored_id, tenant, secret_sha256, created.astimezone(UTC), bool(revoked))

    async def create(self, stored: StoredKey) -> None:
        """Stores a new key (from :func:`sluice.apikeys.new_key`); KeyExists if its id is
        taken, which never replaces the stored key."""
        params = (
            stored.key_id,
            stored.tenant,
            stored.secret_sha256,
            stored.created,
            stored.revoked,
        )
        async with self._pool.connection() as conn:
            cursor = await conn.execute(KEY_CREATE_SQL, params)
            if cursor.rowcount != 1:
                raise KeyExists(f"an API key with id {stored.key_id} exists: make a new key")

    async def revoke(self, key_id: str, *, tenant: str | None = None) -> bool:
        """Revokes the key (of ``tenant``, when given); False when there is no such key.
        Revoking a revoked key is not an error and keeps its first revocation time."""
        statement, params = key_revoke_sql(key_id, tenant)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(statement, params)
            return cursor.rowcount > 0


# --- the store ----------------------------------------------------------------------------------


class EventStore:
    """Events and customers in PostgreSQL, over a shared async connection pool.

    Reads turn PostgreSQL being unreachable (or a statement cancelled by its timeout) into
    :class:`~sluice.errors.Unavailable` (503 with Retry-After) for the API. Writes let the
    driver's errors through: the processor retries the batch and commits no offsets.
    """

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def ping(self) -> None:
        """Raises unless PostgreSQL answers (for ``/readyz``)."""
        async with _reading(self._pool) as conn:
            await conn.execute("SELECT 1")

    async def insert_events(self, rows: Sequence[EventRow]) -> int:
        """Writes a batch in one transaction; the number of rows actually inserted (events
        already stored, from a redelivery or twice in the batch, are not counted)."""
        return len(await self.insert_event_keys(rows))

    async def insert_event_keys(self, rows: Sequence[EventRow]) -> list[RowKey]:
        """Writes a batch in one transaction; the keys of the rows it inserted, so a caller can
        act on new events only (count them once, however often Kafka redelivers them).

        Every row is checked before anything is sent (:func:`unstorable_reason`); a row that
        PostgreSQL still refuses while it is copied is found by its COPY line. Either way
        :class:`UnstorableRow` names its index and nothing of the batch is written. Any other
        error (connection, timeout, failover) passes through for the caller to retry.
        """
        for index, row in enumerate(rows):
            reason = unstorable_reason(row)
            if reason is not None:
                raise UnstorableRow(index, reason)
        if not rows:
            return []
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(STAGING_SQL)
                async with conn.cursor() as cursor:
                    async with cursor.copy(COPY_SQL) as copy:
                        for row in rows:
                            await copy.write_row(row.copy_values())
                    await cursor.execute(INSERT_SQL)
                    inserted = await cursor.fetchall()
        except psycopg.DataError as error:
            index = copy_error_row(error)
            if index is None or index >= len(rows):
                raise
            raise UnstorableRow(index, str(error).strip()) from error
        return [(tenant, event_id, time) for tenant, event_id, time in inserted]

    async def query_events(
        self, tenant: str, filters: EventFilters, cursor: str | None, limit: int
    ) -> EventPage:
        """A page of ``tenant``'s events matching ``filters``, newest first (time DESC, id
        DESC), starting after ``cursor`` (a previous page's ``next_cursor``)."""
        scope = query_scope(tenant, filters)
        after = None if cursor is None else decode_cursor(cursor, scope)
        statement, params = events_query_sql(tenant, filters, after, limit)
        return page(await self._fetch(statement, params), limit, scope)

    async def subject_history(
        self,
        tenant: str,
        subject: str,
        until: datetime | None = None,
        *,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> EventPage:
        """A page of the history of ``subject``: its events before ``until`` (exclusive, as
        in the query API; None: all), oldest first (time, id), starting after ``cursor``."""
        check_text_parameter("subject", subject)
        if until is not None and until.utcoffset() is None:
            raise ValueError(f"until must be timezone-aware, got naive {until}")
        scope = history_scope(tenant, subject, until)
        after = None if cursor is None else decode_cursor(cursor, scope)
        statement, params = history_sql(tenant, subject, until, after, limit)
        return page(await self._fetch(statement, params), limit, scope)

    async def subject_state(
        self, tenant: str, subject: str, as_of: datetime | None = None
    ) -> SubjectState:
        """The state of ``subject`` as of ``as_of`` (None: every event stored), by
        :func:`fold_subject_state`, folded page by page so a long history never sits in
        memory whole."""
        check_text_parameter("subject", subject)
        if as_of is not None and as_of.utcoffset() is None:
            raise ValueError(f"as_of must be timezone-aware, got naive {as_of}")
        state: Any = None
        count = 0
        last: tuple[datetime, str] | None = None
        while True:
            statement, params = history_sql(tenant, subject, as_of, last, MAX_LIMIT, through=True)
            rows = await self._fetch(statement, params)
            events = [stored_event(row) for row in rows[:MAX_LIMIT]]
            state = fold_subject_state(events, as_of, state)
            if events:
                count += len(events)
                last = events[-1].position
            if len(rows) <= MAX_LIMIT:
                return SubjectState(
                    state=state,
                    events=count,
                    last_event_id=None if last is None else last[1],
                    updated=None if last is None else last[0],
                )

    async def customers(self, tenant: str, ids: Iterable[str]) -> dict[str, Customer]:
        """The customers of ``tenant`` among ``ids``, by id; ids with no record are absent."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        statement, params = customers_sql(tenant, wanted)
        return {
            row[0]: Customer(row[0], row[1], row[2], dict(row[3]), row[4])
            for row in await self._fetch(statement, params)
        }

    async def bucket_counts(
        self, window: Window, start: datetime, end: datetime, tenant: str | None = None
    ) -> list[tuple[str, str, datetime, int]]:
        """(tenant, type, window start in UTC, events) for every bucket of ``window`` with
        events in ``[start, end)``, of ``tenant`` or (None) of every tenant
        (:func:`bucket_counts_sql`)."""
        statement, params = bucket_counts_sql(window, start, end, tenant)
        return [
            (tenant_id, event_type, bucket.astimezone(UTC), int(count))
            for tenant_id, event_type, bucket, count in await self._fetch(statement, params)
        ]

    async def _fetch(self, statement: str, params: tuple[Any, ...]) -> list[Any]:
        async with _reading(self._pool) as conn:
            return await (await conn.execute(statement, params)).fetchall()


async def open_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 5.0
) -> AsyncConnectionPool[Any]:
    """An opened connection pool for :class:`EventStore` and :class:`PgKeyStore`.

    ``timeout`` bounds how long a request waits for a connection before the API answers 503;
    the pool does not wait for its first connection, so a service starts (and reports not
    ready) while PostgreSQL is down.
    """
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name="sluice",
        open=False,
    )
    await pool.open(wait=False)
    return pool


@asynccontextmanager
async def _reading(pool: AsyncConnectionPool[Any]) -> AsyncIterator[Any]:
    """A pooled connection for a read; PostgreSQL unavailable becomes a 503."""
    try:
        async with pool.connection() as conn:
            yield conn
    except (PoolTimeout, psycopg.OperationalError) as error:
        raise Unavailable(
            "database_unavailable",
            f"PostgreSQL cannot answer now ({type(error).__name__}); retry shortly",
            retry_after=RETRY_AFTER,
        ) from error


def _tenant_condition(tenant: str) -> tuple[list[str], list[Any]]:
    """The condition every events/customers statement starts with. An empty tenant is a bug in
    the caller (the credential always names one), never "all tenants"."""
    if not isinstance(tenant, str) or not tenant:
        raise ValueError(f"a tenant-scoped query needs the credential's tenant, got {tenant!r}")
    return ["tenant_id = %s"], [tenant]


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(
            "invalid_parameter",
            f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}",
        )
    return limit


def _optional_time(name: str, raw: str | None) -> datetime | None:
    return None if raw is None else parse_time(name, raw)


def _iso(moment: datetime) -> str:
    """UTC, microseconds always written: PostgreSQL's precision, so a position round-trips."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _iso(moment)


def _scope(*parts: str | None) -> str:
    text = json.dumps(parts, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
