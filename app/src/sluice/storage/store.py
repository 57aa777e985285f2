"""PostgreSQL access for the processor and the API, over a shared async connection pool:
:class:`EventStore` writes events once (:mod:`sluice.storage.rows`) and reads them per tenant
(:mod:`sluice.storage.reads`); :class:`PgKeyStore` keeps the API keys.

The reads without a tenant are :meth:`PgKeyStore.get` (a key is looked up to learn the tenant)
and :meth:`EventStore.bucket_counts` and :meth:`EventStore.events_in_range` asked for every
tenant, which only the operator's ``sluice replay`` and ``sluice validate`` do, never the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from sluice.api.apikeys import StoredKey
from sluice.derived.aggregates import Window
from sluice.derived.state import SubjectState, fold_subject_state
from sluice.errors import Unavailable
from sluice.storage.reads import (
    MAX_LIMIT,
    Customer,
    EventFilters,
    EventPage,
    Sql,
    StoredEvent,
    bucket_counts_sql,
    check_text_parameter,
    customers_sql,
    decode_cursor,
    events_query_sql,
    history_scope,
    history_sql,
    page,
    query_scope,
    range_sql,
    stored_event,
)
from sluice.storage.rows import (
    COPY_SQL,
    INSERT_SQL,
    STAGING_SQL,
    EventRow,
    RowKey,
    UnstorableRow,
    copy_error_row,
    unstorable_reason,
)

#: Seconds a client is told to wait when PostgreSQL cannot answer.
RETRY_AFTER: Final = 5

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
    """The API keys in ``public.api_keys``: :class:`sluice.api.apikeys.KeyStore`, asynchronously.

    Fetch with :meth:`get`, then check with :func:`sluice.api.apikeys.verify`; authentication
    itself stays in :mod:`sluice.api.apikeys`.
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
        """Stores a new key (from :func:`sluice.api.apikeys.new_key`); KeyExists if its id is
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
        limit: int = MAX_LIMIT,
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

    async def events_in_range(
        self,
        since: datetime,
        until: datetime,
        tenant: str | None = None,
        *,
        after: tuple[str, datetime, str] | None = None,
        limit: int = MAX_LIMIT,
    ) -> list[tuple[str, StoredEvent]]:
        """(tenant, event) for the events with ``since <= time < until`` of ``tenant`` or
        (None) of every tenant, in key order after the key ``after`` (:func:`range_sql`)."""
        statement, params = range_sql(since, until, tenant, after, limit)
        return [(row[0], stored_event(row[1:])) for row in await self._fetch(statement, params)]

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
