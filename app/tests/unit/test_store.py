"""PostgreSQL storage without PostgreSQL: the SQL builders, cursors and filters of the reads,
rows for COPY, and the write path and key store over a fake async pool."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from sluice.api.apikeys import new_key
from sluice.cloudevents import NO_DATA, Event
from sluice.derived.aggregates import FIVE_MINUTES, MINUTE, WINDOWS, Window
from sluice.errors import BadRequest, Unavailable
from sluice.storage import reads, store
from sluice.storage.reads import (
    EventFilters,
    StoredEvent,
    decode_cursor,
    encode_cursor,
    query_scope,
)
from sluice.storage.rows import (
    COPY_SQL,
    EVENT_COLUMNS,
    INSERT_SQL,
    STAGING_SQL,
    EventRow,
    UnstorableRow,
    event_row,
    unstorable_reason,
)

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SCOPE = query_scope("acme", EventFilters())


def stored(event_id: str, minutes: float, data: Any = NO_DATA, **fields: Any) -> StoredEvent:
    event = Event(
        id=event_id,
        source="/orders",
        type="order.changed",
        subject="order-1",
        time=T0 + timedelta(minutes=minutes),
        data=data,
        **fields,
    )
    return StoredEvent(event=event, ingested_at=T0 + timedelta(hours=1))


def db_row(event: StoredEvent, *, has_data: bool | None = None) -> tuple[Any, ...]:
    """A row as the driver returns it for SELECT_COLUMNS (JSON null and SQL NULL both None)."""
    e = event.event
    data = None if e.data is NO_DATA else e.data
    return (
        e.id,
        e.source,
        e.type,
        e.specversion,
        e.subject,
        e.time,
        e.datacontenttype,
        e.dataschema,
        data,
        e.data is not NO_DATA if has_data is None else has_data,
        e.data_base64,
        e.extensions,
        event.ingested_at,
    )


def placeholders(sql: str) -> int:
    return sql.count("%s")


# --- cursors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_id", ["e-1", "ünïcode, with \"quotes\" and ',' ", "x" * 500])
def test_a_cursor_round_trips_its_position_exactly(event_id: str) -> None:
    position = (T0.astimezone(timezone(timedelta(hours=2))), event_id)

    cursor = encode_cursor(position, SCOPE)

    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)  # safe in a URL as it is
    assert decode_cursor(cursor, SCOPE) == (T0, event_id)


def _b64(payload: Any) -> str:
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


GOOD = encode_cursor((T0, "e-1"), SCOPE)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        GOOD[:-3],  # truncated
        GOOD[:5] + ("A" if GOOD[5] != "A" else "B") + GOOD[6:],  # one character changed
        GOOD + "=",  # padding is not part of the alphabet Sluice issues
        GOOD.replace("-", "+").replace("_", "/") + "+/",  # another alphabet
        "%%%",
        _b64("just a string"),
        _b64({"t": T0.isoformat(), "i": "e-1"}),
        _b64([2, T0.isoformat(), "e-1", SCOPE]),  # an unknown version
        _b64([1, "yesterday", "e-1", SCOPE]),
        _b64([1, "2026-05-01T12:00:00", "e-1", SCOPE]),  # no offset
        _b64([1, T0.isoformat(), "", SCOPE]),
        _b64([1, T0.isoformat(), 7, SCOPE]),
        _b64([1, T0.isoformat(), "e-1"]),
        base64.urlsafe_b64encode(b"\xff\xfe").rstrip(b"=").decode(),
    ],
)
def test_a_tampered_cursor_is_a_400_invalid_cursor(cursor: str) -> None:
    with pytest.raises(BadRequest) as raised:
        decode_cursor(cursor, SCOPE)

    assert raised.value.status == 400
    assert raised.value.code == "invalid_cursor"


@pytest.mark.parametrize(
    "other_scope",
    [
        query_scope("globex", EventFilters()),
        query_scope("acme", EventFilters(type="order.paid")),
        query_scope("acme", EventFilters(since=T0)),
        reads.history_scope("acme", "order-1", None),
    ],
)
def test_a_cursor_only_continues_the_query_and_tenant_it_came_from(other_scope: str) -> None:
    with pytest.raises(BadRequest, match="belongs to another query") as raised:
        decode_cursor(GOOD, other_scope)

    assert raised.value.code == "invalid_cursor"


# --- filters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"type": ""}, "type"),
        ({"subject": "order\x00-1"}, "subject"),
        ({"source": "\ud800"}, "source"),
    ],
)
def test_a_filter_postgresql_cannot_compare_is_a_400_naming_it(
    filters: dict[str, str], named: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        EventFilters(**filters)  # type: ignore[arg-type]

    assert raised.value.status == 400
    assert raised.value.code == "invalid_parameter"
    assert named in raised.value.detail


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (datetime(2026, 5, 2, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)),
        (
            datetime(2026, 5, 1, tzinfo=UTC),
            datetime(2026, 5, 1, 2, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_an_empty_time_range_is_a_400_naming_both_ends(since: datetime, until: datetime) -> None:
    with pytest.raises(BadRequest, match=r"since .* must be before until") as raised:
        EventFilters(since=since, until=until)

    assert raised.value.status == 400


# --- SQL builders -------------------------------------------------------------------------------


def test_the_event_query_starts_with_the_tenant_and_orders_newest_first() -> None:
    sql, params = reads.events_query_sql("acme", EventFilters(), None, 100)

    assert "FROM public.events WHERE tenant_id = %s ORDER BY time DESC, id DESC LIMIT %s" in sql
    assert params == ("acme", 101)


def test_every_filter_and_the_cursor_become_parameters_never_sql_text() -> None:
    hostile = "x' OR '1'='1"
    filters = EventFilters(
        type=hostile, source="/s", subject="order-1", since=T0, until=T0 + timedelta(days=1)
    )

    sql, params = reads.events_query_sql("acme", filters, (T0, "e-9"), 20)

    assert hostile not in sql
    assert "WHERE tenant_id = %s AND type = %s AND source = %s AND subject = %s" in sql
    assert "AND time >= %s AND time < %s AND (time, id) < (%s, %s)" in sql
    assert params == ("acme", hostile, "/s", "order-1", T0, T0 + timedelta(days=1), T0, "e-9", 21)
    assert placeholders(sql) == len(params)


def test_history_reads_oldest_first_and_folds_include_the_as_of_instant() -> None:
    page_sql, page_params = reads.history_sql("acme", "order-1", T0, (T0, "e-1"), 10)
    fold_sql, _ = reads.history_sql("acme", "order-1", T0, None, 10, through=True)

    assert (
        "WHERE tenant_id = %s AND subject = %s AND time < %s AND (time, id) > (%s, %s)" in page_sql
    )
    assert page_sql.endswith("ORDER BY time, id LIMIT %s")
    assert page_params == ("acme", "order-1", T0, T0, "e-1", 11)
    assert "time <= %s" in fold_sql


BUILDERS = {
    "events": lambda tenant: reads.events_query_sql(tenant, EventFilters(type="t"), (T0, "e"), 5),
    "history": lambda tenant: reads.history_sql(tenant, "order-1", T0, (T0, "e"), 5),
    "customers": lambda tenant: reads.customers_sql(tenant, ["c1", "c2"]),
}


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
def test_every_tenant_data_query_is_scoped_to_the_tenant_first(builder: Any) -> None:
    sql, params = builder("acme")

    assert re.search(r"\bWHERE tenant_id = %s\b", sql)
    assert params[0] == "acme"
    assert placeholders(sql) == len(params)


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
@pytest.mark.parametrize("tenant", ["", None])
def test_a_missing_tenant_is_a_bug_never_all_tenants(builder: Any, tenant: Any) -> None:
    with pytest.raises(ValueError, match="needs the credential's tenant"):
        builder(tenant)


def test_bucket_counts_group_a_tenants_events_by_type_and_window_start_in_sql() -> None:
    start, end = T0.replace(minute=0, microsecond=0), T0.replace(minute=0, microsecond=0, hour=14)

    sql, params = reads.bucket_counts_sql(FIVE_MINUTES, start, end, "acme")

    assert sql == (
        "SELECT tenant_id, type, date_bin(%s::interval, time, %s::timestamptz) AS bucket, "
        "count(*) FROM public.events WHERE tenant_id = %s AND time >= %s AND time < %s "
        "GROUP BY tenant_id, type, bucket ORDER BY tenant_id, bucket, type"
    )
    assert params == (timedelta(minutes=5), datetime(1970, 1, 1, tzinfo=UTC), "acme", start, end)
    assert placeholders(sql) == len(params)


@pytest.mark.parametrize("window", WINDOWS, ids=lambda window: window.name)
def test_bucket_counts_bin_by_each_windows_length_from_the_epoch(window: Window) -> None:
    _, params = reads.bucket_counts_sql(window, T0, T0 + timedelta(hours=1))

    assert params[0] == timedelta(seconds=window.seconds)
    assert params[1] == reads.BUCKET_ORIGIN == datetime.fromtimestamp(0, UTC)


def test_bucket_counts_of_every_tenant_have_no_tenant_condition() -> None:
    sql, params = reads.bucket_counts_sql(MINUTE, T0, T0 + timedelta(hours=1))

    assert "tenant_id = %s" not in sql
    assert "WHERE time >= %s AND time < %s GROUP BY" in sql
    assert params[2:] == (T0, T0 + timedelta(hours=1))


@pytest.mark.parametrize(
    ("start", "end", "tenant", "message"),
    [
        (T0, T0, "acme", "empty time range"),
        (T0.replace(tzinfo=None), T0 + timedelta(hours=1), "acme", "timezone-aware"),
        (T0, T0 + timedelta(hours=1), "", "needs the credential's tenant"),
    ],
)
def test_bucket_counts_refuse_a_bad_range_or_an_empty_tenant(
    start: datetime, end: datetime, tenant: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        reads.bucket_counts_sql(MINUTE, start, end, tenant)


def test_the_store_answers_bucket_counts_in_utc() -> None:
    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    local = datetime(2026, 5, 1, 14, 5, tzinfo=timezone(timedelta(hours=2)))
    seen: list[Any] = []

    def answer(query: str, params: Any) -> tuple[list[Any], int]:
        seen.append((query, params))
        return [("acme", "order.paid", local, 3)], 1

    events = store.EventStore(FakePool(FakeConn(answer)))  # type: ignore[arg-type]

    rows = asyncio.run(
        events.bucket_counts(FIVE_MINUTES, start, start + timedelta(hours=1), "acme")
    )

    assert rows == [("acme", "order.paid", datetime(2026, 5, 1, 12, 5, tzinfo=UTC), 3)]
    assert rows[0][2].tzinfo is UTC
    assert seen == [
        reads.bucket_counts_sql(FIVE_MINUTES, start, start + timedelta(hours=1), "acme")
    ]


def test_a_range_for_validate_pages_in_key_order_scoped_to_the_tenant_first() -> None:
    after = ("acme", T0, "e-7")

    sql, params = reads.range_sql(T0, T0 + timedelta(hours=1), "acme", after, 500)

    assert sql == (
        f"SELECT tenant_id, {reads.SELECT_COLUMNS} FROM public.events WHERE tenant_id = %s "
        "AND time >= %s AND time < %s AND (tenant_id, time, id) > (%s, %s, %s) "
        "ORDER BY tenant_id, time, id LIMIT %s"
    )
    assert params == ("acme", T0, T0 + timedelta(hours=1), "acme", T0, "e-7", 500)
    assert placeholders(sql) == len(params)


def test_a_range_of_every_tenant_has_no_tenant_condition_and_a_bounded_page() -> None:
    sql, params = reads.range_sql(T0, T0 + timedelta(hours=1), None, None, 1000)

    assert "tenant_id = %s" not in sql
    assert "WHERE time >= %s AND time < %s ORDER BY tenant_id, time, id LIMIT %s" in sql
    assert params == (T0, T0 + timedelta(hours=1), 1000)
    with pytest.raises(BadRequest, match="limit"):
        reads.range_sql(T0, T0 + timedelta(hours=1), None, None, 1001)
    with pytest.raises(ValueError, match="needs the credential's tenant"):
        reads.range_sql(T0, T0 + timedelta(hours=1), "", None, 10)
    with pytest.raises(ValueError, match="timezone-aware"):
        reads.range_sql(T0.replace(tzinfo=None), T0 + timedelta(hours=1), None, None, 10)


def test_the_store_answers_a_range_with_each_events_tenant() -> None:
    row = ("globex", "e-1", "/shop", "order.placed", "1.0", None, T0, None, None,
           {"order_id": "o"}, True, None, {}, T0)  # fmt: skip
    seen: list[Any] = []

    def answer(query: str, params: Any) -> tuple[list[Any], int]:
        seen.append((query, params))
        return [row], 1

    events = store.EventStore(FakePool(FakeConn(answer)))  # type: ignore[arg-type]

    found = asyncio.run(events.events_in_range(T0, T0 + timedelta(hours=1), limit=10))

    assert [(tenant, event.event.id, event.event.data) for tenant, event in found] == [
        ("globex", "e-1", {"order_id": "o"})
    ]
    assert seen == [reads.range_sql(T0, T0 + timedelta(hours=1), None, None, 10)]


@pytest.mark.parametrize("limit", [0, 1001, True])
def test_the_builders_refuse_a_limit_outside_1_to_1000(limit: Any) -> None:
    with pytest.raises(BadRequest, match="limit"):
        reads.events_query_sql("acme", EventFilters(), None, limit)


def test_revoking_a_key_may_be_narrowed_to_a_tenant() -> None:
    assert store.key_revoke_sql("abc", None)[1] == ("abc",)
    sql, params = store.key_revoke_sql("abc", "acme")

    assert sql.endswith("WHERE key_id = %s AND tenant = %s")
    assert "coalesce(revoked_at, now())" in sql  # the first revocation time stays
    assert params == ("abc", "acme")


def test_the_write_path_is_copy_to_staging_then_an_idempotent_insert() -> None:
    columns = ", ".join(name for name, _ in EVENT_COLUMNS)

    assert STAGING_SQL.startswith("CREATE TEMP TABLE IF NOT EXISTS sluice_events_staging")
    assert STAGING_SQL.endswith("ON COMMIT DELETE ROWS")
    assert f"COPY sluice_events_staging ({columns}) FROM STDIN" == COPY_SQL
    assert INSERT_SQL.startswith(f"INSERT INTO public.events ({columns}) SELECT {columns}")
    assert "ORDER BY tenant_id, time, id" in INSERT_SQL
    assert "ON CONFLICT (tenant_id, time, id) DO NOTHING RETURNING tenant_id, id, time" in (
        INSERT_SQL
    )
    assert "ingested_at" not in columns  # the table's default stamps it


# --- rows for COPY ------------------------------------------------------------------------------


def test_an_event_without_time_takes_the_kafka_record_time_so_redelivery_matches() -> None:
    event = Event(id="e-1", source="/s", type="t")
    record_time = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)

    first = event_row("acme", event, record_time=record_time, kafka_partition=2, kafka_offset=7)
    again = event_row("acme", event, record_time=record_time, kafka_partition=2, kafka_offset=7)

    assert first.time == record_time
    assert first == again and first.key == ("acme", "e-1", record_time)


def test_an_event_with_time_keeps_it_whatever_the_record_time() -> None:
    event = Event(id="e-1", source="/s", type="t", time=T0)

    row = event_row("acme", event, record_time=T0 + timedelta(hours=3))

    assert row.time == T0


def test_rows_keep_json_null_apart_from_no_payload() -> None:
    none = event_row("acme", Event(id="a", source="/s", type="t"), record_time=T0)
    null = event_row("acme", Event(id="b", source="/s", type="t", data=None), record_time=T0)
    data = event_row(
        "acme",
        Event(id="c", source="/s", type="t", data={"ü": [1, 2.5]}, extensions={"n": 1, "b": True}),
        record_time=T0,
    )

    assert none.data_json is None
    assert null.data_json == "null"
    assert json.loads(data.data_json or "") == {"ü": [1, 2.5]}
    assert json.loads(data.extensions_json) == {"n": 1, "b": True}
    assert data.copy_values()[0:2] == ("acme", "c")
    assert len(data.copy_values()) == len(EVENT_COLUMNS)


def test_a_naive_record_time_or_no_tenant_is_refused() -> None:
    event = Event(id="e-1", source="/s", type="t")
    with pytest.raises(ValueError, match="timezone-aware"):
        event_row("acme", event, record_time=datetime(2026, 5, 1))
    with pytest.raises(ValueError, match="tenant"):
        event_row("", event, record_time=T0)


ROW = EventRow(tenant_id="acme", id="e-1", source="/s", type="t", time=T0)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (replace(ROW, subject="a\x00b"), "subject contains a NUL"),
        (replace(ROW, data_json='{"a":"x\\u0000"}'), "data contains \\u0000"),
        (replace(ROW, data_json='{"a\\\\\\u0000":1}'), "data contains \\u0000"),
        (replace(ROW, extensions_json='{"e":"\\u0000"}'), "extensions contains \\u0000"),
        (replace(ROW, id="\udc80"), "id contains an unpaired UTF-16 surrogate"),
        (replace(ROW, time=datetime(2026, 5, 1)), "has no timezone"),
        (replace(ROW, data_json="1", data_base64="AA=="), "both data and data_base64"),
    ],
)
def test_rows_postgresql_would_refuse_are_found_before_the_batch_is_sent(
    row: EventRow, reason: str
) -> None:
    assert reason in (unstorable_reason(row) or "")


@pytest.mark.parametrize(
    "data_json", ['{"path":"C:\\\\u0000"}', '"\\\\u0000"', '{"a":"\\u0001"}', "null"]
)
def test_rows_postgresql_takes_pass(data_json: str) -> None:
    # An escaped backslash before "u0000" is the text \u0000, which jsonb stores fine.
    assert unstorable_reason(replace(ROW, data_json=data_json)) is None


# --- reading rows -------------------------------------------------------------------------------


def test_a_stored_row_becomes_the_event_in_utc_with_its_payload_kind() -> None:
    plus_two = timezone(timedelta(hours=2))
    event = stored("e-1", 0, data={"a": 1}, extensions={"traceparent": "00-x"})
    row = list(db_row(event))
    row[5] = T0.astimezone(plus_two)

    back = reads.stored_event(row)

    assert back == event
    assert back.event.time is not None and back.event.time.utcoffset() == timedelta(0)
    assert reads.stored_event(db_row(stored("n", 0, data=None))).event.data is None
    assert reads.stored_event(db_row(stored("x", 0))).event.data is NO_DATA


def test_a_stored_event_answers_as_cloudevents_json() -> None:
    document = stored("e-1", 0, data={"a": 1}, extensions={"tenant": "spoof"}).to_cloudevent()

    assert document == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/orders",
        "type": "order.changed",
        "subject": "order-1",
        "time": "2026-05-01T12:00:00.123456Z",
        "data": {"a": 1},
        "tenant": "spoof",
    }


def test_a_page_has_a_next_cursor_only_when_the_extra_row_came() -> None:
    events = [stored(f"e-{n}", -n) for n in range(4)]
    rows = [db_row(e) for e in events]

    full = reads.page(rows, 3, SCOPE)
    last = reads.page(rows[:3], 3, SCOPE)

    assert [e.event.id for e in full.events] == ["e-0", "e-1", "e-2"]
    assert full.next_cursor is not None
    assert decode_cursor(full.next_cursor, SCOPE) == events[2].position
    assert len(last.events) == 3 and last.next_cursor is None
    assert reads.page([], 3, SCOPE) == reads.EventPage([], None)


# --- the write path and key store over a fake pool ----------------------------------------------


class FakeCopy:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    async def write_row(self, row: tuple[Any, ...]) -> None:
        self.log.append(("row", row))


class FakeCursor:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn
        self.rows: list[Any] = []
        self.rowcount = -1

    async def execute(self, query: str, params: Any = None) -> FakeCursor:
        self.conn.log.append(query)
        if self.conn.error is not None and query == self.conn.error[0]:
            raise self.conn.error[1]
        self.rows, self.rowcount = self.conn.answer(query, params)
        return self

    async def fetchall(self) -> list[Any]:
        return self.rows

    async def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    @asynccontextmanager
    async def copy(self, query: str) -> AsyncIterator[FakeCopy]:
        self.conn.log.append(query)
        yield FakeCopy(self.conn.log)
        if self.conn.error is not None and self.conn.error[0] == "COPY":
            raise self.conn.error[1]


class FakeConn:
    def __init__(self, answer: Any, error: tuple[str, BaseException] | None = None) -> None:
        self.answer = answer
        self.error = error
        self.log: list[Any] = []

    async def execute(self, query: str, params: Any = None) -> FakeCursor:
        return await FakeCursor(self).execute(query, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.log.append("BEGIN")
        try:
            yield
        except BaseException:
            self.log.append("ROLLBACK")
            raise
        self.log.append("COMMIT")

    @asynccontextmanager
    async def cursor(self) -> AsyncIterator[FakeCursor]:
        yield FakeCursor(self)


class FakePool:
    def __init__(self, conn: FakeConn | BaseException) -> None:
        self.conn = conn
        self.connections = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[FakeConn]:
        self.connections += 1
        if isinstance(self.conn, BaseException):
            raise self.conn
        yield self.conn


def _inserted_first_only(query: str, params: Any) -> tuple[list[Any], int]:
    if query == INSERT_SQL:
        return [("acme", "a", T0)], 1
    return [], -1


ROWS = [replace(ROW, id="a"), replace(ROW, id="b", subject="s")]


def test_a_batch_is_copied_to_staging_and_inserted_in_one_transaction() -> None:
    conn = FakeConn(_inserted_first_only)
    events = store.EventStore(FakePool(conn))  # type: ignore[arg-type]

    keys = asyncio.run(events.insert_event_keys(ROWS))

    assert keys == [("acme", "a", T0)]
    assert conn.log == [
        "BEGIN",
        STAGING_SQL,
        COPY_SQL,
        ("row", ROWS[0].copy_values()),
        ("row", ROWS[1].copy_values()),
        INSERT_SQL,
        "COMMIT",
    ]


def test_an_empty_batch_touches_no_connection() -> None:
    pool = FakePool(FakeConn(_inserted_first_only))

    assert asyncio.run(store.EventStore(pool).insert_event_keys([])) == []  # type: ignore[arg-type]
    assert pool.connections == 0


def test_an_unstorable_row_is_named_before_anything_is_sent() -> None:
    pool = FakePool(FakeConn(_inserted_first_only))
    rows = [*ROWS, replace(ROW, id="bad", source="a\x00")]

    with pytest.raises(UnstorableRow) as raised:
        asyncio.run(store.EventStore(pool).insert_event_keys(rows))  # type: ignore[arg-type]

    assert raised.value.index == 2 and "source" in raised.value.reason
    assert pool.connections == 0


class CopyDataError(psycopg.errors.InvalidTextRepresentation):
    """A COPY data error as the server reports it, with its context line."""

    def __init__(self, context: str | None) -> None:
        super().__init__("invalid input syntax for type json")
        self._context = context

    @property
    def diag(self) -> Any:
        return SimpleNamespace(context=self._context)


def test_a_row_postgresql_refuses_in_copy_is_named_by_its_line_and_nothing_is_kept() -> None:
    error = CopyDataError('COPY sluice_events_staging, line 2, column data: "{x"')
    conn = FakeConn(_inserted_first_only, error=("COPY", error))

    with pytest.raises(UnstorableRow) as raised:
        asyncio.run(store.EventStore(FakePool(conn)).insert_event_keys(ROWS))  # type: ignore[arg-type]

    assert raised.value.index == 1
    assert "ROLLBACK" in conn.log and "COMMIT" not in conn.log


def test_a_data_error_without_a_copy_line_passes_through_for_a_retry() -> None:
    error = CopyDataError(None)
    conn = FakeConn(_inserted_first_only, error=(INSERT_SQL, error))

    with pytest.raises(CopyDataError):
        asyncio.run(store.EventStore(FakePool(conn)).insert_event_keys(ROWS))  # type: ignore[arg-type]


def test_a_read_while_postgresql_is_down_is_a_503_with_retry_after() -> None:
    pool = FakePool(psycopg.OperationalError("connection refused"))
    events = store.EventStore(pool)  # type: ignore[arg-type]

    with pytest.raises(Unavailable) as raised:
        asyncio.run(events.query_events("acme", EventFilters(), None, 10))

    assert raised.value.status == 503 and raised.value.retry_after == store.RETRY_AFTER


def test_the_key_store_answers_stored_keys_with_their_revocation() -> None:
    _, key = new_key("acme")

    def answer(query: str, params: Any) -> tuple[list[Any], int]:
        assert query == store.KEY_GET_SQL
        if params == (key.key_id,):
            return [(key.key_id, "acme", key.secret_sha256, key.created, True)], 1
        return [], 0

    keys = store.PgKeyStore(FakePool(FakeConn(answer)))  # type: ignore[arg-type]

    assert asyncio.run(keys.get(key.key_id)) == replace(key, revoked=True)
    assert asyncio.run(keys.get("0123456789ab")) is None


def test_creating_a_key_whose_id_exists_never_replaces_it() -> None:
    _, key = new_key("acme")
    conn = FakeConn(lambda query, params: ([], 0))

    with pytest.raises(store.KeyExists, match=key.key_id):
        asyncio.run(store.PgKeyStore(FakePool(conn)).create(key))  # type: ignore[arg-type]

    assert conn.log == [store.KEY_CREATE_SQL]


def test_subject_state_folds_every_page_of_the_history() -> None:
    events = [stored(f"e{n:04d}", n / 100, data={"n": n}) for n in range(reads.MAX_LIMIT + 5)]
    calls: list[Any] = []

    def answer(query: str, params: Any) -> tuple[list[Any], int]:
        calls.append(params)
        after = (params[3], params[4]) if len(params) == 6 else None
        rest = [e for e in events if after is None or e.position > after]
        return [db_row(e) for e in rest[: params[-1]]], -1

    state = asyncio.run(
        store.EventStore(FakePool(FakeConn(answer))).subject_state(
            "acme", "order-1", T0 + timedelta(days=1)
        )  # type: ignore[arg-type]
    )

    assert len(calls) == 2
    assert state.events == len(events)
    assert state.state == {"n": len(events) - 1}
    assert state.last_event_id == events[-1].event.id
