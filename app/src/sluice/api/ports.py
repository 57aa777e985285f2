"""What the API needs from Kafka, Redis and PostgreSQL, as async Protocols.

The API (:mod:`sluice.api.app`) depends only on these; the adapters over the real clients implement
them, and the unit tests implement them in memory. Every method takes the tenant from the
request's credential as its first argument, and an adapter must scope everything it reads or
writes to that tenant: it is the only tenant isolation there is below the API.

Failure contract, shared by every port: when a dependency cannot answer in time, raise
:class:`sluice.errors.Unavailable` with a ``retry_after`` (the API answers 503 with
``Retry-After``); when a client's input turns out to be wrong only the adapter can tell (an
unknown cursor), raise the matching 4xx :class:`sluice.errors.ApiError`. Any other exception is a
bug and is answered 500 and logged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sluice.api.apikeys import StoredKey
from sluice.cloudevents import Event


class EventSink(Protocol):
    """Where accepted events go: Kafka's ``events.raw``, keyed by tenant."""

    async def send(self, tenant: str, events: Sequence[Event]) -> None:
        """Produce ``events`` for ``tenant`` and return only when Kafka acknowledged every one
        of them with ``acks=all``: the API answers 202 right after, and 202 promises the events
        will not be lost.

        Events of one call keep their order (same key, same partition). Raise
        :class:`~sluice.errors.Unavailable` when Kafka cannot take them in time. The API also
        cancels the call at its produce deadline; an event that Kafka still takes after that is
        a duplicate of the one the client resends, which the processor's idempotent write on
        ``(tenant_id, id)`` absorbs.
        """
        ...


class RateLimitDecision(NamedTuple):
    """One rate-limit verdict. ``remaining`` is the budget left after this request when it is
    allowed; ``retry_after_s`` is when a denied tenant may try again (0 when allowed)."""

    allowed: bool
    remaining: int
    retry_after_s: float


class RateLimiter(Protocol):
    """The per-tenant request budget (the Redis Functions sliding-log limiter)."""

    async def check(self, tenant: str) -> RateLimitDecision:
        """Count one request of ``tenant`` if its budget allows it, and say whether it did."""
        ...


class AsyncKeyStore(Protocol):
    """Stored API keys by id (PostgreSQL), the async form of
    :class:`sluice.api.apikeys.KeyStore`."""

    async def get(self, key_id: str) -> StoredKey | None:
        """The stored key with this id, revoked or not; None when there is none."""
        ...


@dataclass(frozen=True)
class EventQueryParams:
    """A validated ``GET /api/v1/query``: all filters optional and combined with AND; ``since``
    is inclusive and ``until`` exclusive on the event's time; ``cursor`` is one an earlier page
    returned as ``next_cursor``, opaque to the API."""

    type: str | None = None
    source: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    limit: int = 100


class EventQuery(Protocol):
    """The read side over PostgreSQL's ``events`` table and the live counters in Redis."""

    async def query(self, tenant: str, params: EventQueryParams) -> dict[str, Any]:
        """One page of the tenant's events matching ``params``, in a stable order:
        ``{"events": [<event as CloudEvents JSON>...], "next_cursor": <str> | None}``.

        A cursor that does not decode raises :class:`~sluice.errors.BadRequest` naming
        ``cursor``.
        """
        ...

    async def subject_events(
        self, tenant: str, subject: str, until: datetime | None
    ) -> list[dict[str, Any]]:
        """The subject's events (CloudEvents JSON) in the order they happened, up to ``until``
        (exclusive; None: all): the event-sourcing history."""
        ...

    async def subject_state(
        self, tenant: str, subject: str, as_of: datetime | None
    ) -> dict[str, Any]:
        """The subject's state folded from its events up to ``as_of`` (None: now), time travel
        over the history: ``{"state": {...}, "events": <count folded>, "last_event_id": <id> |
        None}``."""
        ...

    async def aggregates(self, tenant: str, minutes: int) -> dict[str, Any]:
        """The tenant's live counters over the last ``minutes`` minutes, the current one last:
        ``{"minutes": [{"minute": <RFC 3339>, "total": n, "counts": {type: n}}...],
        "totals": {type: n}, "total": n}``."""
        ...


class LiveFeed(Protocol):
    """Tenant-scoped live events (Redis sharded pub/sub)."""

    def subscribe(self, tenant: str, types: frozenset[str]) -> AsyncIterator[bytes]:
        """The tenant's events as they are processed, each its CloudEvents JSON (UTF-8),
        restricted to ``types`` unless it is empty. The subscription ends when the iterator is
        closed (``aclose()``), which the API does when the WebSocket client goes away."""
        ...


class Health(Protocol):
    """Reachability of the dependencies, for ``/readyz``."""

    async def check(self) -> dict[str, bool]:
        """``{"kafka": bool, "redis": bool, "postgresql": bool}``, each True when that
        dependency answered just now. Never raises: an unreachable dependency is False."""
        ...
