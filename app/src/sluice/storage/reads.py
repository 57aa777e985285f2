"""Reading events and customers (the API, and ``sluice replay``): tenant-scoped statements,
the rows they return, and the cursors of their pages.

Every statement on events and customers carries ``tenant_id = %s`` with the tenant of the
request's credential as its first condition, built by the pure functions ``*_sql`` below so the
unit tests can check that no query leaves it out. Pages are keyset pagination over (time, id)
with an opaque cursor (:func:`encode_cursor`) bound to the tenant and the query it came from.
The reads without a tenant are :func:`bucket_counts_sql` and :func:`range_sql` asked for every
tenant, which only the operator's ``sluice replay`` and ``sluice validate`` do, never the API.

Time ranges are half-open, as the API's ports state them: ``since`` inclusive, ``until``
exclusive. A subject's history is its events in (time, id) order
(:mod:`sluice.derived.state` folds it into the subject's state).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeAlias

from sluice.cloudevents import NO_DATA, Event
from sluice.derived.aggregates import Window
from sluice.errors import BadRequest

#: The most events one read returns (the query API's largest page, a history's page).
MAX_LIMIT: Final = 1000
#: Where ``date_bin`` starts counting windows: the UNIX epoch, as
#: :mod:`sluice.derived.aggregates` does.
BUCKET_ORIGIN: Final = datetime(1970, 1, 1, tzinfo=UTC)

Sql: TypeAlias = tuple[str, tuple[Any, ...]]
"""A statement with ``%s`` placeholders and its parameters, in order."""

#: What the reads select, in the order :func:`stored_event` reads. ``data IS NOT NULL`` tells
#: "no payload" from a JSON null payload, which the driver loads as None too.
SELECT_COLUMNS: Final = (
    "id, source, type, specversion, subject, time, datacontenttype, dataschema, "
    "data, data IS NOT NULL, data_base64, extensions, ingested_at"
)


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: the CloudEvent (``time`` always set, see
    :func:`~sluice.storage.rows.event_row`) and when the processor wrote it."""

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
    event in the same window as :meth:`sluice.derived.aggregates.Window.start`. Only ``tenant``'s
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


def range_sql(
    since: datetime,
    until: datetime,
    tenant: str | None,
    after: tuple[str, datetime, str] | None,
    limit: int,
) -> Sql:
    """Events with ``since <= time < until`` of ``tenant``, or (None) of every tenant (the
    operator's ``sluice validate``, never the API), in key order (tenant_id, time, id) after
    the key ``after`` (exclusive), ``limit`` at most; each row is the tenant, then
    :data:`SELECT_COLUMNS`. The keyset condition follows the primary key, so every page is an
    index range scan."""
    for name, moment in (("since", since), ("until", until)):
        if moment.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, got naive {moment}")
    where, params = ([], []) if tenant is None else _tenant_condition(tenant)
    where += ["time >= %s", "time < %s"]
    params += [since, until]
    if after is not None:
        where.append("(tenant_id, time, id) > (%s, %s, %s)")
        params.extend(after)
    params.append(_limit(limit))
    return (
        f"SELECT tenant_id, {SELECT_COLUMNS} FROM public.events WHERE {' AND '.join(where)} "
        "ORDER BY tenant_id, time, id LIMIT %s",
        tuple(params),
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


def _iso(moment: datetime) -> str:
    """UTC, microseconds always written: PostgreSQL's precision, so a position round-trips."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _iso(moment)


def _scope(*parts: str | None) -> str:
    text = json.dumps(parts, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
