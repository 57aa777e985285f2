"""In-memory fakes of the API's ports, and the app built over them (:class:`Service`).

Shared by the API's example tests (``test_api.py``) and its schema-driven fuzzing
(``test_openapi_fuzz.py``). Every fake records what reached it, so a test can assert both what
the client saw and what the ports received.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sluice.api.apikeys import StoredKey, new_key
from sluice.api.app import Metrics, create_app
from sluice.api.ports import EventQueryParams, RateLimitDecision
from sluice.cloudevents import Event, Limits
from sluice.config import KafkaSettings, OidcSettings, PostgresSettings, RedisSettings, Settings
from sluice.errors import BadRequest, Unavailable

ISSUER = "https://sso.example.com/realms/sluice"
AUDIENCE = "sluice-api"
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
LIMITS = Limits(max_event_bytes=2048, max_request_bytes=8192, max_batch_events=10)


def settings(**changes: Any) -> Settings:
    base = Settings(
        kafka=KafkaSettings(bootstrap_servers=("stream:9092",), produce_timeout_seconds=0.2),
        redis=RedisSettings(startup_nodes=(("stream", 7000),), password="redis-password"),
        postgres=PostgresSettings(host="db", writer_password="w", reader_password="r"),
        oidc=OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=f"{ISSUER}/certs"),
        limits=LIMITS,
    )
    return replace(base, **changes)


# --- fakes of the ports -------------------------------------------------------------------------


class FakeSink:
    """Kafka: records what it acknowledged; ``mode`` makes it hang or be unavailable."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Event]]] = []
        self.mode = "ack"

    async def send(self, tenant: str, events: Sequence[Event]) -> None:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "unavailable":
            raise Unavailable("kafka_unavailable", "no leader for events.raw", retry_after=7)
        self.sent.append((tenant, list(events)))


class FakeLimiter:
    def __init__(self) -> None:
        self.denied: dict[str, float] = {}
        self.down = False
        self.checked: list[str] = []

    async def check(self, tenant: str) -> RateLimitDecision:
        self.checked.append(tenant)
        if self.down:
            raise Unavailable("redis_unavailable", "cluster down", retry_after=1)
        if tenant in self.denied:
            return RateLimitDecision(False, 0, self.denied[tenant])
        return RateLimitDecision(True, 9_999, 0.0)


class FakeKeyStore:
    def __init__(self) -> None:
        self.keys: dict[str, StoredKey] = {}
        self.down = False  # PostgreSQL away: lookups fail as the real store's do

    def add(self, tenant: str, *, revoked: bool = False) -> str:
        key, stored = new_key(tenant)
        self.keys[stored.key_id] = replace(stored, revoked=revoked)
        return key

    async def get(self, key_id: str) -> StoredKey | None:
        if self.down:
            raise Unavailable("postgresql_unavailable", "database down", retry_after=1)
        return self.keys.get(key_id)


class FakeQuery:
    """The read side: records (method, tenant, arguments), answers canned results in the shapes
    the real stores give (events in the canonical JSON the store returns, minutes as Redis's
    fold gives them), so responses can be checked against the OpenAPI document."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple[Any, ...]]] = []
        self.failure: Exception | None = None

    def _record(self, method: str, tenant: str, *arguments: Any) -> None:
        self.calls.append((method, tenant, arguments))
        if self.failure is not None:
            raise self.failure

    async def query(self, tenant: str, params: EventQueryParams) -> dict[str, Any]:
        self._record("query", tenant, params)
        if params.cursor == "stale":
            raise BadRequest("invalid_parameter", "parameter 'cursor' is not a known cursor")
        return {"events": [stored_event(tenant, params.subject)], "next_cursor": None}

    async def subject_events(
        self, tenant: str, subject: str, until: datetime | None
    ) -> list[dict[str, Any]]:
        self._record("subject_events", tenant, subject, until)
        return [stored_event(tenant, subject)]

    async def subject_state(
        self, tenant: str, subject: str, as_of: datetime | None
    ) -> dict[str, Any]:
        self._record("subject_state", tenant, subject, as_of)
        return {"state": {"owner": tenant}, "events": 1, "last_event_id": f"{tenant}-1"}

    async def aggregates(self, tenant: str, minutes: int) -> dict[str, Any]:
        self._record("aggregates", tenant, minutes)
        counts = {f"{tenant}-1": 1}
        minute = {"minute": "2024-05-01T12:00:00Z", "total": 1, "counts": counts}
        return {"minutes": [minute], "totals": counts, "total": 1}


def stored_event(tenant: str, subject: str | None) -> dict[str, Any]:
    """Event ``<tenant>-1`` as the store returns it: the event's canonical JSON."""
    event = Event(
        id=f"{tenant}-1",
        source="/orders",
        type="order.created",
        subject=subject,
        time=datetime(2024, 5, 1, 12, tzinfo=UTC),
        data={"total": 42},
    )
    document: dict[str, Any] = json.loads(event.to_json_bytes())
    return document


class FakeFeed:
    """The live stream: yields its messages, then waits like an idle subscription."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.subscriptions: list[tuple[str, frozenset[str]]] = []
        self.closed = 0
        self.end = False

    def subscribe(self, tenant: str, types: frozenset[str]) -> AsyncIterator[bytes]:
        self.subscriptions.append((tenant, types))
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytes]:
        try:
            for message in self.messages:
                yield message
            if not self.end:
                await asyncio.sleep(3600)
        finally:
            self.closed += 1


class FakeHealth:
    def __init__(self) -> None:
        self.checks: dict[str, bool] = {"kafka": True, "redis": True, "postgresql": True}
        self.failure: Exception | None = None

    async def check(self) -> dict[str, bool]:
        if self.failure is not None:
            raise self.failure
        return dict(self.checks)


class FakeJwks:
    async def __call__(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING_KEY.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": "k1", "use": "sig"}]}


@dataclass
class Service:
    """One app over fresh fakes, with keys for tenants ``a`` and ``b`` and a revoked one."""

    settings: Settings = field(default_factory=settings)
    sink: FakeSink = field(default_factory=FakeSink)
    limiter: FakeLimiter = field(default_factory=FakeLimiter)
    keys: FakeKeyStore = field(default_factory=FakeKeyStore)
    query: FakeQuery = field(default_factory=FakeQuery)
    feed: FakeFeed = field(default_factory=FakeFeed)
    health: FakeHealth = field(default_factory=FakeHealth)

    def __post_init__(self) -> None:
        self.key_a = self.keys.add("a")
        self.key_b = self.keys.add("b")
        self.key_revoked = self.keys.add("a", revoked=True)
        self.metrics = Metrics()
        self.app: Starlette = create_app(
            self.settings,
            self.sink,
            self.limiter,
            self.keys,
            self.query,
            self.feed,
            self.health,
            self.metrics,
            jwks_fetch=FakeJwks(),
        )
        self.client = TestClient(self.app)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key_a}"}


def token(**changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "sub": "u", "tenant": "b"}
    claims.update(changes)
    return jwt.encode(claims, SIGNING_KEY, "RS256", headers={"kid": "k1"})
