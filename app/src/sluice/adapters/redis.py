"""Redis Cluster adapters: the API's rate limiter, live counters and live feed (asyncio), and
the processor's aggregator, alert store and publisher (synchronous, one process per
processor).

Every key and channel carries the tenant as its hash tag (``sluice:{<tenant>}:...``), so all
of a tenant's keys live in one slot and each call lands on one node; redis-py's cluster
pipeline then sends a batch as one round trip per node. The calls go through the Functions
library ``sluice`` (ansible/roles/redis_cluster/files/sluice.lua) the redis_cluster role loads;
the ACL user ``sluice`` may run exactly those functions and the commands listed in
``redis_cluster_sluice_commands``.

A Redis error or timeout in the API becomes :class:`sluice.errors.Unavailable` (503 with
``Retry-After``); the processor lets it propagate, and retries the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio.cluster as async_cluster
import redis.cluster as sync_cluster
from redis.cluster import ClusterNode

from sluice.api.ports import RateLimitDecision
from sluice.config import RedisSettings
from sluice.derived.aggregates import MINUTE, BucketSet, Increment, bucket_key
from sluice.errors import Unavailable
from sluice.processor.types import Message, StoredValue, stream_channel

#: How long the API waits for Redis before answering 503.
API_TIMEOUT_SECONDS = 2.0
RETRY_AFTER_SECONDS = 5
RATE_LIMIT_FUNCTION = "sluice_rate_limit"
AGGREGATES_READ_FUNCTION = "sluice_aggregates_read"


_FUNCTION_CALLS = frozenset({"FCALL", "FCALL_RO"})


def function_call_keys(args: Sequence[Any]) -> Sequence[Any] | None:
    """The KEYS of ``FCALL``/``FCALL_RO <function> <numkeys> <key>...`` from the command itself;
    None for any other command or a call without keys.

    redis-py finds the slot of a command with "movable" keys, FCALL among them, by asking the
    server (``COMMAND GETKEYS``) before every call: one more round trip per rate-limit check
    and per FCALL in a pipeline. The keys' position is fixed by FCALL's syntax, so the clients
    below read them here as redis-py already does for EVAL."""
    if len(args) < 4 or str(args[0]).upper() not in _FUNCTION_CALLS:
        return None
    try:
        count = int(args[2])
    except (TypeError, ValueError):
        return None
    keys = args[3 : 3 + count]
    return keys if count > 0 and len(keys) == count else None


def _function_call_slot(client: Any, args: Sequence[Any]) -> int | None:
    keys = function_call_keys(args)
    if keys is None:
        return None
    slots = {client.keyslot(key) for key in keys}
    return slots.pop() if len(slots) == 1 else None  # a cross-slot call: redis-py's error


class _AsyncCluster(async_cluster.RedisCluster):
    """redis-py's asyncio cluster client, routing FCALL by its own KEYS (function_call_keys)."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        slot = _function_call_slot(self, (command, *args))
        return slot if slot is not None else await super()._determine_slot(command, *args)


class _SyncCluster(sync_cluster.RedisCluster):
    """redis-py's cluster client, routing FCALL by its own KEYS, in its pipelines too."""

    def determine_slot(self, *args: Any) -> int | None:
        slot = _function_call_slot(self, args)
        return slot if slot is not None else super().determine_slot(*args)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        pipe.determine_slot = self.determine_slot  # the pipeline asks its own determine_slot
        return pipe


def _nodes(settings: RedisSettings) -> list[tuple[str, int]]:
    return [(host, int(port)) for host, port in settings.startup_nodes]


def rate_limit_keys(tenant: str) -> tuple[str, str]:
    """The sliding-log window and its sequence counter, in the tenant's slot."""
    return f"sluice:{{{tenant}}}:rl", f"sluice:{{{tenant}}}:rl:seq"


def minute_starts(now: datetime, minutes: int) -> list[datetime]:
    """The starts of the last ``minutes`` minutes up to ``now``, oldest first; the last is the
    current minute, still counting (live counters)."""
    current = now.astimezone(UTC).replace(second=0, microsecond=0)
    return [current - timedelta(minutes=n) for n in range(minutes - 1, -1, -1)]


def bucket_fields(reply: Sequence[Any]) -> dict[str, int]:
    """A ``sluice_aggregates_read`` reply (a flat field, count, field, count... array) as a
    mapping of each field to its count."""
    fields = [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
    return {fields[i]: int(fields[i + 1]) for i in range(0, len(fields) - 1, 2)}


def fold_minutes(starts: Sequence[datetime], replies: Sequence[Any]) -> dict[str, Any]:
    """``sluice_aggregates_read`` replies (flat field/count arrays, one per minute) as the
    API's aggregates document."""
    document: dict[str, Any] = {"minutes": [], "totals": {}, "total": 0}
    for start, reply in zip(starts, replies, strict=True):
        counts = bucket_fields(reply)
        total = counts.pop("_total", 0)
        document["minutes"].append(
            {"minute": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "total": total, "counts": counts}
        )
        document["total"] += total
        for event_type, count in counts.items():
            document["totals"][event_type] = document["totals"].get(event_type, 0) + count
    return document


#: What a call into the cluster client may raise while a node fails: redis-py's own errors and
#: socket errors, but also what it lets through from below, such as asyncio's RuntimeError for a
#: transport closed under it ("unable to perform operation on <TCPTransport closed=True>; the
#: handler is closed", seen when a master is killed). The API's calls catch all of these at this
#: boundary, so a Redis failure is a 503 or the limiter's fail-open, never a 500.
API_CLIENT_ERRORS: tuple[type[Exception], ...] = (Exception,)


def _redis_unavailable(err: BaseException) -> Unavailable:
    """The 503 for a Redis Cluster that cannot answer now."""
    return Unavailable(
        "redis_unavailable",
        f"Redis cannot answer now ({type(err).__name__}); retry shortly",
        retry_after=RETRY_AFTER_SECONDS,
    )


class RedisApi:
    """The API's side: :class:`~sluice.api.ports.RateLimiter`, the Redis part of
    :class:`~sluice.api.ports.EventQuery` (``aggregates``), :class:`~sluice.api.ports.LiveFeed`
    and a reachability check."""

    def __init__(self, settings: RedisSettings, limit: int, window_seconds: int) -> None:
        self.limit, self.window_ms = limit, window_seconds * 1000
        self.client = _AsyncCluster(
            startup_nodes=[async_cluster.ClusterNode(h, p) for h, p in _nodes(settings)],
            username=settings.username,
            password=settings.password,
            socket_timeout=API_TIMEOUT_SECONDS,
            socket_connect_timeout=API_TIMEOUT_SECONDS,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def check(self, tenant: str) -> RateLimitDecision:
        window, seq = rate_limit_keys(tenant)
        try:
            allowed, remaining, retry_ms = await self.client.fcall(
                RATE_LIMIT_FUNCTION, 2, window, seq, str(self.limit), str(self.window_ms)
            )
        except API_CLIENT_ERRORS as err:
            raise _redis_unavailable(err) from err
        return RateLimitDecision(bool(allowed), int(remaining), int(retry_ms) / 1000)

    async def aggregates(self, tenant: str, minutes: int) -> dict[str, Any]:
        starts = minute_starts(datetime.now(UTC), minutes)
        try:
            pipe = self.client.pipeline(transaction=False)
            for start in starts:
                pipe.fcall_ro(AGGREGATES_READ_FUNCTION, 1, bucket_key(tenant, MINUTE, start))
            replies = await pipe.execute()
        except API_CLIENT_ERRORS as err:
            raise _redis_unavailable(err) from err
        return fold_minutes(starts, replies)

    async def subscribe(self, tenant: str, types: frozenset[str]) -> AsyncIterator[bytes]:
        pubsub = self.client.pubsub()
        channel = stream_channel(tenant)
        try:
            await pubsub.ssubscribe(channel)
            while True:
                message = await pubsub.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
                if message is None or message.get("type") != "smessage":
                    continue
                payload = message["data"]
                if types and json.loads(payload).get("type") not in types:
                    continue
                yield payload
        except API_CLIENT_ERRORS as err:
            raise _redis_unavailable(err) from err
        finally:
            with contextlib.suppress(*API_CLIENT_ERRORS):
                await pubsub.sunsubscribe(channel)
            await pubsub.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), API_TIMEOUT_SECONDS))
        except API_CLIENT_ERRORS:
            return False


class RedisProcessor:
    """The processor's side: :class:`~sluice.processor.types.Aggregator`,
    :class:`~sluice.processor.types.AlertStore` and :class:`~sluice.processor.types.Publisher`,
    each one cluster pipeline per batch (one round trip per node); and ``sluice replay``'s
    :class:`~sluice.derived.replay.BucketWriter`."""

    def __init__(self, settings: RedisSettings, timeout: float = 10.0) -> None:
        self.client = _SyncCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in _nodes(settings)],
            username=settings.username,
            password=settings.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    def close(self) -> None:
        self.client.close()

    def _run(self, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        if not calls:
            return []
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*call)
        return list(pipe.execute(raise_on_error=True))

    def apply(self, increments: Sequence[Increment]) -> Sequence[int]:
        replies = self._run([("FCALL", *i.fcall_args()) for i in increments])
        return [int(reply) for reply in replies]

    def set_buckets(self, buckets: Sequence[BucketSet]) -> list[bool]:
        """Replace every bucket with its rebuilt counts (``FCALL sluice_aggregate_set``), one
        pipeline per node as :meth:`apply`; whether each one held other counts before. Raise
        if any of them failed."""
        replies = self._run([("FCALL", *bucket.fcall_args()) for bucket in buckets])
        return [bool(int(reply[1])) for reply in replies]

    def read_buckets(self, keys: Sequence[str]) -> list[dict[str, int]]:
        """Each bucket's fields and counts (``_total`` included; empty when it does not
        exist), read with ``FCALL_RO sluice_aggregates_read``."""
        replies = self._run([("FCALL_RO", AGGREGATES_READ_FUNCTION, 1, key) for key in keys])
        return [bucket_fields(reply) for reply in replies]

    def store(self, values: Sequence[StoredValue]) -> None:
        """Each alert joins its key's sorted set, scored by the time it was stored; alerts
        older than the TTL are trimmed and an idle key expires. The ``sluice`` user may not
        SET (its writes are the Functions library's and these), so the latest alert is the
        highest-scored member: ``ZRANGE key -1 -1``."""
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        calls: list[tuple[Any, ...]] = []
        for offset, v in enumerate(values):
            ttl_ms = v.ttl_seconds * 1000
            calls += [
                ("ZADD", v.key, now_ms + offset, v.value),
                ("ZREMRANGEBYSCORE", v.key, "-inf", now_ms - ttl_ms),
                ("PEXPIRE", v.key, ttl_ms),
            ]
        self._run(calls)

    def publish(self, messages: Sequence[Message]) -> None:
        self._run([("SPUBLISH", m.channel, m.payload) for m in messages])
