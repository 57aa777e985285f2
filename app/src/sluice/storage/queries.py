"""The API's read side (:class:`sluice.api.ports.EventQuery`) over the real stores: events, subject
histories and folded states from PostgreSQL (:class:`sluice.storage.store.EventStore`, as the reader
role), live counters from Redis (:class:`sluice.adapters.redis.RedisApi`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sluice.adapters.redis import RedisApi
from sluice.api.ports import EventQueryParams
from sluice.storage.reads import MAX_LIMIT, EventFilters
from sluice.storage.store import EventStore


class StoreQuery:
    """:class:`sluice.api.ports.EventQuery` over PostgreSQL and Redis; every call tenant-scoped."""

    def __init__(self, events: EventStore, redis: RedisApi) -> None:
        self.events, self.redis = events, redis

    async def query(self, tenant: str, params: EventQueryParams) -> dict[str, Any]:
        filters = EventFilters(
            type=params.type,
            source=params.source,
            subject=params.subject,
            since=params.since,
            until=params.until,
        )
        page = await self.events.query_events(tenant, filters, params.cursor, params.limit)
        return {
            "events": [event.to_cloudevent() for event in page.events],
            "next_cursor": page.next_cursor,
        }

    async def subject_events(
        self, tenant: str, subject: str, until: datetime | None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.events.subject_history(
                tenant, subject, until, cursor=cursor, limit=MAX_LIMIT
            )
            found += [event.to_cloudevent() for event in page.events]
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def subject_state(
        self, tenant: str, subject: str, as_of: datetime | None
    ) -> dict[str, Any]:
        state = await self.events.subject_state(tenant, subject, as_of)
        return {
            "state": state.state,
            "events": state.events,
            "last_event_id": state.last_event_id,
        }

    async def aggregates(self, tenant: str, minutes: int) -> dict[str, Any]:
        return await self.redis.aggregates(tenant, minutes)
