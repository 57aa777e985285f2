"""The store's SQL against a real PostgreSQL 15 with the migrated schema (:mod:`pg_server`),
each statement as the role the service runs it as: the processor's batch writes and customer
reads as sluice_writer; the API's queries, subject histories and states, key lookups and
readiness ping, and replay's recount, as sluice_reader; ``sluice keys`` as the writer."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from pg_server import READER, WRITER, PgServer, database_name

from sluice import cli
from sluice.api.apikeys import StoredKey, new_key, parse_key, verify
from sluice.api.ports import EventQueryParams
from sluice.cloudevents import NO_DATA, Event
from sluice.derived.aggregates import WINDOWS
from sluice.errors import BadRequest, Unavailable
from sluice.service import SyncEventWriter
from sluice.storage import migrate, store
from sluice.storage.queries import StoreQuery
from sluice.storage.reads import MAX_LIMIT, EventFilters, StoredEvent
from sluice.storage.rows import EventRow, UnstorableRow, event_row

pytestmark = pytest.mark.postgres

_T = TypeVar("_T")

#: Midnight (UTC) yesterday: the seeded events span three daily partitions and the default one.
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def at(hours: float, microseconds: int = 0) -> datetime:
    return DAY + timedelta(hours=hours, microseconds=microseconds)


def ev(
    event_id: str,
    type_: str,
    source: str,
    subject: str | None,
    time: datetime | None,
    data: Any = NO_DATA,
    **fields: Any,
) -> Event:
    return Event(
        id=event_id, source=source, type=type_, subject=subject, time=time, data=data, **fields
    )


@dataclass(frozen=True)
class Seeded:
    """An event as sent and as it must come back (``time`` set from the record when absent)."""

    tenant: str
    sent: Event
    record_time: datetime

    @property
    def stored(self) -> Event:
        return (
            self.sent if self.sent.time is not None else replace(self.sent, time=self.record_time)
        )

    @property
    def time(self) -> datetime:
        assert self.stored.time is not None
        return self.stored.time

    def row(self, offset: int = 0) -> EventRow:
        return event_row(
            self.tenant,
            self.sent,
            record_time=self.record_time,
            kafka_partition=3,
            kafka_offset=offset,
        )


RECORD = at(40)
SEED = [
    Seeded("acme", ev("e01", "order.created", "/shop", "order-1", at(1, 123457),
                      {"status": "new", "total": 10}), RECORD),
    Seeded("acme", ev("e02", "order.shipped", "/shop", "order-1", at(5),
                      {"status": "shipped"}), RECORD),
    # the same instant as e02: ids break the tie
    Seeded("acme", ev("e03", "payment.received", "/billing", "order-1", at(5),
                      {"paid": True, "card": {"last4": "4242"}}), RECORD),
    # the last microsecond of a day, and the first of the next (two partitions)
    Seeded("acme", ev("e04", "order.created", "/shop", "order-2", at(24, -1), None), RECORD),
    Seeded("acme", ev("e05", "order.created", "/shop", "order-2", at(24)), RECORD),
    Seeded("acme", ev("e06", "order.updated", "/shop", "order-2", at(26), data_base64="AAEC",
                      datacontenttype="application/octet-stream"), RECORD),
    Seeded("acme", ev("e07", "order.created", "/shop", None, at(30), {"x": [1, "two", None]},
                      dataschema="https://example.com/order.json",
                      extensions={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-"
                                  "b7ad6b7169203331-01", "priority": 3, "flag": True}), RECORD),
    # a year back: the default partition
    Seeded("acme", ev("e08", "order.created", "/billing", "order-3", at(-24 * 400),
                      {"old": True}), RECORD),
    # no time of its own: the Kafka record's
    Seeded("acme", ev("e09", "order.updated", "/shop", "order-1", None,
                      {"total": 12, "card": {"last4": None}}), at(40)),
    Seeded("acme", ev("e10", "payment.received", "/billing", "order-1", at(41),
                      {"status": "paid"}), RECORD),
    Seeded("acme", ev("e11", "order.created", "/shop", "order-4", at(42), "ünïcødé ✓"), RECORD),
    Seeded("acme", ev("e12", "order.created", "/shop", "order-4", at(43), [1, 2]), RECORD),
    # another tenant with the same ids, times and subjects
    Seeded("globex", ev("e01", "order.created", "/shop", "order-1", at(1, 123457),
                        {"status": "globex"}), RECORD),
    Seeded("globex", ev("e02", "order.created", "/shop", "order-1", at(5)), RECORD),
]  # fmt: skip
#: One subject with more events than one page of MAX_LIMIT, for the page-by-page fold.
BULK = [
    Seeded("bulk", ev(f"b{i:05d}", "counter.ticked", "/counter", "counter-1",
                      at(2) + timedelta(seconds=i), {"n": i, **({"hundreds": i // 100}
                                                               if i % 100 == 0 else {})}), RECORD)
    for i in range(MAX_LIMIT + 205)
]  # fmt: skip


def cloudevent(event: Event) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(event.to_json_bytes())
    return document


# --- fixtures -------------------------------------------------------------------------------


@dataclass
class Db:
    """A migrated database and the service's ways into it."""

    server: PgServer
    name: str

    def conninfo(self, role: str) -> str:
        return self.server.conninfo(self.name, role)

    def connect(self, role: str = "postgres") -> psycopg.Connection[Any]:
        return self.server.connect(self.name, role)

    def run(
        self,
        role: str,
        body: Callable[[store.EventStore, store.PgKeyStore], Awaitable[_T]],
        conninfo: str | None = None,
        **pool: Any,
    ) -> _T:
        """``body`` over the store's own pool (:func:`store.open_pool`) connected as ``role``."""

        async def main() -> _T:
            opened = await store.open_pool(conninfo or self.conninfo(role), **pool)
            try:
                return await body(store.EventStore(opened), store.PgKeyStore(opened))
            finally:
                await opened.close()

        return asyncio.run(main())

    def write(self, rows: list[EventRow]) -> list[store.RowKey]:
        return self.run(WRITER, lambda events, _: events.insert_event_keys(rows))

    def count(self, table: str = "public.events") -> int:
        with self.connect() as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _migrated(server: PgServer) -> Db:
    db = Db(server, server.prepare(database_name("sluice_store")))
    migrate.run(db.conninfo(WRITER))
    return db


@pytest.fixture(scope="module")
def empty_db(pg_server: PgServer) -> Iterator[Db]:
    db = _migrated(pg_server)
    yield db
    pg_server.drop(db.name)


@pytest.fixture
def db(empty_db: Db) -> Db:
    """The module's migrated database with no rows."""
    with empty_db.connect() as conn:
        for table in ("public.events", "public.api_keys", "public.customers"):
            conn.execute(f"DELETE FROM {table}")
    return empty_db


@pytest.fixture(scope="module")
def seeded(pg_server: PgServer) -> Iterator[Db]:
    """A migrated database holding SEED and BULK, for the read-only tests."""
    db = _migrated(pg_server)
    keys = db.write([s.row(i) for i, s in enumerate(SEED + BULK)])
    assert len(keys) == len(SEED) + len(BULK)
    yield db
    pg_server.drop(db.name)


def rows(n: int, tenant: str = "acme", start: datetime | None = None) -> list[EventRow]:
    """``n`` new rows of ``tenant``, a millisecond apart from ``start``."""
    first = start or at(3)
    made = []
    for i in range(n):
        time = first + timedelta(milliseconds=i)
        event = ev(f"w{i:04d}", "order.created", "/shop", f"order-{i % 7}", time, {"i": i})
        made.append(event_row(tenant, event, record_time=RECORD))
    return made


# --- the processor's writes ---------------------------------------------------------------------


def test_a_batch_is_stored_once_and_only_its_new_rows_are_returned(db: Db) -> None:
    batch = rows(5)
    assert sorted(db.write(batch)) == sorted(r.key for r in batch)
    assert db.write(batch) == []  # a redelivery
    assert db.count() == 5

    new_a, new_b = rows(7)[5:]
    writer = SyncEventWriter(db.conninfo(WRITER))  # what the processor calls
    try:
        inserted = writer.insert_event_keys([batch[0], new_a, batch[3], new_a, new_b])
    finally:
        writer.close()
    assert sorted(inserted) == sorted([new_a.key, new_b.key])
    assert db.count() == 7


def test_a_row_is_stored_with_every_column_as_sent(db: Db) -> None:
    sent = [s.row(i) for i, s in enumerate(SEED)]
    before = datetime.now(UTC)
    db.write(sent)

    with db.connect() as conn:
        stored = {
            (row[0], row[1]): row[2:]
            for row in conn.execute(
                "SELECT tenant_id, id, source, type, subject, time, specversion, "
                "datacontenttype, dataschema, data IS NULL, data, data_base64, extensions, "
                "kafka_partition, kafka_offset, ingested_at FROM public.events"
            )
        }
    assert len(stored) == len(SEED)
    for offset, (seed, row) in enumerate(zip(SEED, sent, strict=True)):
        event = seed.stored
        (source, type_, subject, time, specversion, content_type, schema, data_is_null, data,
         data_base64, extensions, partition, kafka_offset, ingested_at) = stored[
            (seed.tenant, event.id)]  # fmt: skip
        assert (source, type_, subject, time) == (event.source, event.type, event.subject, row.time)
        assert (specversion, content_type, schema) == (
            event.specversion,
            event.datacontenttype,
            event.dataschema,
        )
        # SQL NULL without a payload; JSON null is a payload
        assert data_is_null is (event.data is NO_DATA)
        assert data == (None if event.data is NO_DATA else event.data)
        assert data_base64 == event.data_base64
        assert extensions == event.extensions
        assert (partition, kafka_offset) == (3, offset)
        assert before - timedelta(seconds=5) <= ingested_at <= datetime.now(UTC)
    with db.connect() as conn:
        assert conn.execute(
            "SELECT jsonb_typeof(data) FROM public.events WHERE tenant_id = 'acme' AND id = 'e04'"
        ).fetchone() == ("null",)


def test_rows_land_in_their_days_partition_or_the_default(db: Db) -> None:
    now = datetime.now(UTC)
    moments = {"today": now, "ahead": now + timedelta(days=3), "old": now - timedelta(days=400)}
    db.write([rows(1, start=moment)[0] for moment in moments.values()])

    with db.connect() as conn:
        placed = dict(
            conn.execute("SELECT time, tableoid::regclass::text FROM public.events").fetchall()
        )
    assert placed == {
        moments["today"]: f"events_p{now:%Y_%m_%d}",
        moments["ahead"]: f"events_p{moments['ahead']:%Y_%m_%d}",
        moments["old"]: "events_default",
    }


def test_overlapping_batches_written_at_once_store_each_row_once(db: Db) -> None:
    every = rows(300)
    first, second = every[:200], list(reversed(every[100:]))

    async def both(events: store.EventStore, _: Any) -> list[list[store.RowKey]]:
        return list(
            await asyncio.gather(events.insert_event_keys(first), events.insert_event_keys(second))
        )

    a, b = db.run(WRITER, both, min_size=2, max_size=2)
    assert not set(a) & set(b)
    assert sorted(a + b) == sorted(r.key for r in every)
    assert db.count() == 300


def test_the_staging_table_stays_with_the_connection_and_is_empty_after_each_batch(
    db: Db,
) -> None:
    async def twice(events: store.EventStore, _: Any) -> tuple[list[Any], ...]:
        first = await events.insert_event_keys(rows(3))
        second = await events.insert_event_keys(rows(5))
        async with events._pool.connection() as conn:  # the pool's one connection
            staged = await (
                await conn.execute("SELECT count(*) FROM pg_temp.sluice_events_staging")
            ).fetchone()
        return first, second, staged

    first, second, staged = db.run(WRITER, twice, min_size=1, max_size=1)
    assert (len(first), len(second), staged) == (3, 2, (0,))


def test_a_row_postgresql_refuses_during_copy_is_named_and_nothing_is_written(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = rows(4)
    batch[2] = replace(batch[2], data_json='{"unclosed": ')

    with pytest.raises(UnstorableRow) as refused:
        db.write(batch)
    assert refused.value.index == 2
    assert "invalid input syntax for type json" in refused.value.reason
    assert db.count() == 0

    # What the check before COPY refuses, PostgreSQL would refuse too: found by its COPY line.
    monkeypatch.setattr(store, "unstorable_reason", lambda row: None)
    batch = rows(4)
    batch[1] = replace(batch[1], data_json='{"a": "\\u0000"}')
    with pytest.raises(UnstorableRow) as refused:
        db.write(batch)
    assert refused.value.index == 1
    assert "\\u0000 cannot be converted to text" in refused.value.reason
    assert db.count() == 0


def test_an_escaped_backslash_before_u0000_is_stored_as_text(db: Db) -> None:
    batch = rows(1)
    batch[0] = replace(batch[0], data_json='{"path": "C:\\\\u0000"}')
    assert len(db.write(batch)) == 1
    with db.connect() as conn:
        assert conn.execute("SELECT data ->> 'path' FROM public.events").fetchone() == (
            "C:\\u0000",
        )


def test_the_reader_cannot_write_events_or_keys(db: Db) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="table events"):
        db.run(READER, lambda events, _: events.insert_event_keys(rows(2)))
    _, stored = new_key("acme")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="table api_keys"):
        db.run(READER, lambda _, keys: keys.create(stored))
    db.run(WRITER, lambda _, keys: keys.create(stored))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="table api_keys"):
        db.run(READER, lambda _, keys: keys.revoke(stored.key_id))
    with db.connect(READER) as reader:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("DELETE FROM public.events")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute(
                "INSERT INTO public.customers (tenant_id, customer_id) VALUES ('a', 'b')"
            )
    assert db.count() == 0
    assert db.count("public.customers") == 0


# --- the API's reads ------------------------------------------------------------------------------


def expected(tenant: str, keep: Callable[[Event], bool] = lambda e: True) -> list[Event]:
    """``tenant``'s seeded events that ``keep`` keeps, newest first, as the query API orders."""
    events = [s.stored for s in SEED + BULK if s.tenant == tenant and keep(s.stored)]
    return sorted(events, key=lambda e: (e.time, e.id), reverse=True)


def all_pages(db: Db, tenant: str, filters: EventFilters, limit: int) -> list[StoredEvent]:
    async def body(events: store.EventStore, _: Any) -> list[StoredEvent]:
        found: list[StoredEvent] = []
        cursor = None
        while True:
            page = await events.query_events(tenant, filters, cursor, limit)
            assert len(page.events) <= limit
            found += page.events
            if page.next_cursor is None:
                return found
            assert len(page.events) == limit
            cursor = page.next_cursor

    return db.run(READER, body)


FILTERS = {
    "none": (EventFilters(), lambda e: True),
    "type": (EventFilters(type="order.created"), lambda e: e.type == "order.created"),
    "source": (EventFilters(source="/billing"), lambda e: e.source == "/billing"),
    "subject": (EventFilters(subject="order-1"), lambda e: e.subject == "order-1"),
    # since is inclusive: e02 and e03 sit exactly on it
    "since": (EventFilters(since=at(5)), lambda e: e.time >= at(5)),
    # until is exclusive: e05 sits exactly on it
    "until": (EventFilters(until=at(24)), lambda e: e.time < at(24)),
    "range": (EventFilters(since=at(1, 123457), until=at(26)),
              lambda e: at(1, 123457) <= e.time < at(26)),
    "all": (EventFilters(type="order.created", source="/shop", subject="order-2",
                         since=at(20), until=at(48)),
            lambda e: (e.type, e.source, e.subject) == ("order.created", "/shop", "order-2")
            and at(20) <= e.time < at(48)),
}  # fmt: skip


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("limit", [1, 3, MAX_LIMIT])
def test_the_query_returns_the_tenants_matching_events_newest_first_page_by_page(
    seeded: Db, name: str, limit: int
) -> None:
    filters, keep = FILTERS[name]
    want = expected("acme", keep)
    assert want, "every filter must match some event"

    found = all_pages(seeded, "acme", filters, limit)
    assert [(e.event.time, e.event.id) for e in found] == [(e.time, e.id) for e in want]


def test_a_queried_event_comes_back_as_it_was_sent(seeded: Db) -> None:
    found = all_pages(seeded, "acme", EventFilters(), MAX_LIMIT)
    assert [e.to_cloudevent() for e in found] == [cloudevent(e) for e in expected("acme")]
    for stored in found:
        assert stored.ingested_at.tzinfo is UTC
    globex = all_pages(seeded, "globex", EventFilters(), MAX_LIMIT)
    assert [e.to_cloudevent() for e in globex] == [cloudevent(e) for e in expected("globex")]


def test_the_api_query_adapter_pages_with_next_cursor(seeded: Db) -> None:
    async def body(events: store.EventStore, _: Any) -> list[dict[str, Any]]:
        query = StoreQuery(events, redis=None)  # type: ignore[arg-type]  # no aggregates here
        first = await query.query("acme", EventQueryParams(subject="order-1", limit=2))
        second = await query.query(
            "acme", EventQueryParams(subject="order-1", limit=2, cursor=first["next_cursor"])
        )
        return [first, second]

    first, second = seeded.run(READER, body)
    want = [cloudevent(e) for e in expected("acme", lambda e: e.subject == "order-1")]
    assert first["events"] + second["events"] == want[:4]
    assert second["next_cursor"] is not None


def test_a_cursor_from_another_tenant_or_query_is_a_400(seeded: Db) -> None:
    async def cursor_of(events: store.EventStore, _: Any) -> str:
        page = await events.query_events("acme", EventFilters(type="order.created"), None, 1)
        assert page.next_cursor is not None
        return page.next_cursor

    cursor = seeded.run(READER, cursor_of)
    for tenant, filters in (
        ("globex", EventFilters(type="order.created")),
        ("acme", EventFilters()),
    ):
        with pytest.raises(BadRequest) as refused:
            seeded.run(
                READER, lambda events, _, t=tenant, f=filters: events.query_events(t, f, cursor, 1)
            )
        assert refused.value.code == "invalid_cursor"


def history(
    seeded: Db, tenant: str, subject: str, until: datetime | None, limit: int
) -> list[Event]:
    async def body(events: store.EventStore, _: Any) -> list[Event]:
        found: list[Event] = []
        cursor = None
        while True:
            page = await events.subject_history(tenant, subject, until, cursor=cursor, limit=limit)
            found += [e.event for e in page.events]
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    return seeded.run(READER, body)


@pytest.mark.parametrize("limit", [1, 2, MAX_LIMIT])
@pytest.mark.parametrize("until", [None, at(5), at(41)])
def test_a_subjects_history_is_its_events_oldest_first_before_until(
    seeded: Db, until: datetime | None, limit: int
) -> None:
    want = expected("acme", lambda e: e.subject == "order-1" and (until is None or e.time < until))
    found = history(seeded, "acme", "order-1", until, limit)
    assert [cloudevent(e) for e in found] == [cloudevent(e) for e in reversed(want)]


def test_a_subject_with_more_events_than_a_page_reads_whole(seeded: Db) -> None:
    async def body(events: store.EventStore, _: Any) -> list[dict[str, Any]]:
        query = StoreQuery(events, redis=None)  # type: ignore[arg-type]
        return await query.subject_events("bulk", "counter-1", None)

    found = seeded.run(READER, body)
    assert [e["id"] for e in found] == [s.sent.id for s in BULK]


@pytest.mark.parametrize(
    ("as_of", "state", "count", "last"),
    [
        (None, {"status": "paid", "total": 12, "paid": True, "card": {}}, 5, "e10"),
        # an event at exactly as_of counts, and so does the other one of that instant
        (at(5), {"status": "shipped", "total": 10, "paid": True, "card": {"last4": "4242"}}, 3,
         "e03"),
        (at(5, -1), {"status": "new", "total": 10}, 1, "e01"),
        (at(0), None, 0, None),
    ],
)  # fmt: skip
def test_a_subjects_state_as_of_a_time_folds_its_events_up_to_it(
    seeded: Db, as_of: datetime | None, state: Any, count: int, last: str | None
) -> None:
    found = seeded.run(READER, lambda events, _: events.subject_state("acme", "order-1", as_of))

    assert (found.state, found.events, found.last_event_id) == (state, count, last)
    times = {s.stored.id: s.time for s in SEED if s.tenant == "acme"}
    assert found.updated == (None if last is None else times[last])


def test_a_long_subjects_state_folds_page_by_page(seeded: Db) -> None:
    async def body(events: store.EventStore, _: Any) -> tuple[Any, ...]:
        query = StoreQuery(events, redis=None)  # type: ignore[arg-type]
        whole = await query.subject_state("bulk", "counter-1", None)
        partway = await events.subject_state("bulk", "counter-1", BULK[1100].time)
        return whole, partway

    whole, partway = seeded.run(READER, body)
    assert whole == {"state": {"n": len(BULK) - 1, "hundreds": 12}, "events": len(BULK),
                     "last_event_id": BULK[-1].sent.id}  # fmt: skip
    assert (partway.state, partway.events, partway.last_event_id) == (
        {"n": 1100, "hundreds": 11},
        1101,
        "b01100",
    )


# --- replay's recount ----------------------------------------------------------------------------


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: w.name)
@pytest.mark.parametrize("tenant", [None, "acme", "globex"])
def test_bucket_counts_count_each_window_as_the_processor_does(
    seeded: Db, window: Any, tenant: str | None
) -> None:
    start, end = at(1, 123457), at(41)  # e01 included, e10 (at end) not
    want = Counter(
        (s.tenant, s.stored.type, window.start(s.time))
        for s in SEED + BULK
        if (tenant is None or s.tenant == tenant) and start <= s.time < end
    )

    found = seeded.run(READER, lambda events, _: events.bucket_counts(window, start, end, tenant))

    assert found == sorted(
        ((t, type_, bucket, n) for (t, type_, bucket), n in want.items()),
        key=lambda row: (row[0], row[2], row[1]),
    )
    assert all(bucket.tzinfo is UTC for _, _, bucket, _ in found)


# --- API keys -------------------------------------------------------------------------------------


def get_key(db: Db, key_id: str) -> StoredKey | None:
    return db.run(READER, lambda _, keys: keys.get(key_id))


def revoked_at(db: Db, key_id: str) -> datetime | None:
    with db.connect() as conn:
        return conn.execute(
            "SELECT revoked_at FROM public.api_keys WHERE key_id = %s", (key_id,)
        ).fetchone()[0]


def test_a_key_is_created_looked_up_and_revoked_once(db: Db) -> None:
    presented, stored = new_key("acme")
    db.run(WRITER, lambda _, keys: keys.create(stored))

    found = get_key(db, stored.key_id)  # the API looks keys up as the reader
    assert found == stored
    assert verify(presented, found)
    assert get_key(db, "abcdef012345") is None

    _, clash = new_key("globex")
    clash = replace(clash, key_id=stored.key_id)
    with pytest.raises(store.KeyExists):
        db.run(WRITER, lambda _, keys: keys.create(clash))
    assert get_key(db, stored.key_id) == stored  # never replaced

    revoke = store.PgKeyStore.revoke
    assert db.run(WRITER, lambda _, keys: revoke(keys, stored.key_id, tenant="globex")) is False
    assert get_key(db, stored.key_id) == stored
    assert db.run(WRITER, lambda _, keys: revoke(keys, stored.key_id, tenant="acme")) is True
    assert get_key(db, stored.key_id) == replace(stored, revoked=True)
    first = revoked_at(db, stored.key_id)
    assert first is not None
    assert db.run(WRITER, lambda _, keys: revoke(keys, stored.key_id)) is True
    assert revoked_at(db, stored.key_id) == first  # the first revocation's time is kept
    assert db.run(WRITER, lambda _, keys: revoke(keys, "abcdef012345")) is False


def test_a_key_created_revoked_is_stored_revoked(db: Db) -> None:
    _, stored = new_key("acme")
    stored = replace(stored, revoked=True)
    db.run(WRITER, lambda _, keys: keys.create(stored))
    assert get_key(db, stored.key_id) == stored
    assert revoked_at(db, stored.key_id) is not None


def test_sluice_keys_new_and_revoke(
    db: Db, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in db.server.sluice_environment(db.name).items():
        monkeypatch.setenv(name, value)

    assert cli.main(["keys", "new", "--tenant", "acme"]) == 0
    presented = capsys.readouterr().out.strip()
    key_id, _ = parse_key(presented)
    found = get_key(db, key_id)
    assert found is not None and found.tenant == "acme" and not found.revoked
    assert verify(presented, found)

    assert cli.main(["keys", "revoke", key_id, "--tenant", "globex"]) == 1
    assert f"no active key {key_id}" in capsys.readouterr().err
    assert cli.main(["keys", "revoke", key_id]) == 0
    assert capsys.readouterr().out == f"revoked {key_id}\n"
    assert get_key(db, key_id) == replace(found, revoked=True)


def test_sluice_keys_new_and_revoke_many_in_one_run(
    db: Db, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in db.server.sluice_environment(db.name).items():
        monkeypatch.setenv(name, value)

    # one bad tenant name: nothing is stored
    assert cli.main(["keys", "new", "--tenant", "t1", "--tenant", "not a tenant"]) == 2
    assert "tenant" in capsys.readouterr().err
    assert db.connect(WRITER).execute("SELECT count(*) FROM public.api_keys").fetchone()[0] == 0

    assert cli.main(["keys", "new", "--tenant", "t1", "--tenant", "t2", "--tenant", "t1"]) == 0
    out = capsys.readouterr()
    presented = out.out.split()
    assert len(presented) == 3
    ids = [parse_key(key)[0] for key in presented]
    assert [get_key(db, key_id).tenant for key_id in ids] == ["t1", "t2", "t1"]
    assert all(f"key id {key_id} for tenant" in out.err for key_id in ids)

    assert cli.main(["keys", "revoke", *ids[:2], "abcdef012345"]) == 1
    out = capsys.readouterr()
    assert out.out == f"revoked {ids[0]}\nrevoked {ids[1]}\n"
    assert "no active key abcdef012345" in out.err
    assert [get_key(db, key_id).revoked for key_id in ids] == [True, True, False]


# --- customers ----------------------------------------------------------------------------------


def test_customers_are_read_per_tenant_for_enrichment(db: Db) -> None:
    with db.connect(WRITER) as writer:
        writer.execute(
            "INSERT INTO public.customers (tenant_id, customer_id, name, segment, attributes) "
            "VALUES ('acme', 'c1', 'Ada', 'gold', '{\"since\": 2019}'), "
            "('acme', 'c2', NULL, NULL, DEFAULT), ('globex', 'c1', 'Other', 'basic', '{}')"
        )
        updated = writer.execute(
            "SELECT updated_at FROM public.customers "
            "WHERE tenant_id = 'acme' AND customer_id = 'c1'"
        ).fetchone()[0]

    found = db.run(WRITER, lambda events, _: events.customers("acme", ["c1", "c2", "c9", "c1"]))
    assert sorted(found) == ["c1", "c2"]
    assert found["c1"] == store.Customer("c1", "Ada", "gold", {"since": 2019}, updated)
    assert (found["c2"].name, found["c2"].segment, found["c2"].attributes) == (None, None, {})
    assert db.run(WRITER, lambda events, _: events.customers("acme", [])) == {}

    writer_adapter = SyncEventWriter(db.conninfo(WRITER))  # the processor's Enricher lookup
    try:
        assert writer_adapter.customers("globex", ["c1", "c2"]) == {
            "c1": {
                "customer_id": "c1",
                "name": "Other",
                "segment": "basic",
                "attributes": {},
                "updated_at": found["c1"].updated_at.isoformat(),
            }
        }
    finally:
        writer_adapter.close()


# --- readiness ----------------------------------------------------------------------------------


def test_ping_answers_when_postgresql_does_and_is_a_503_when_it_cannot(db: Db) -> None:
    assert db.run(READER, lambda events, _: events.ping()) is None

    nowhere = db.server.conninfo(db.name, READER).replace(str(db.server.base), "/nonexistent")
    assert nowhere != db.conninfo(READER)
    for call in (
        lambda events, _: events.ping(),
        lambda events, _: events.query_events("acme", EventFilters(), None, 1),
    ):
        with pytest.raises(Unavailable) as down:
            db.run(READER, call, conninfo=nowhere, timeout=0.5)
        assert (down.value.code, down.value.retry_after) == ("database_unavailable", 5)
