"""``sluice replay aggregates``: rebuild Redis aggregates from the events stored in PostgreSQL.

Redis buckets are derived data (:mod:`sluice.derived.aggregates`), and the processor can lose
counts: one that dies between its PostgreSQL commit and its Redis write has stored events that no
redelivery counts again (the processor counts only newly inserted rows). A replay counts the
stored events again, per tenant, type and window start, with one ``GROUP BY`` per window in
PostgreSQL (:meth:`sluice.storage.store.EventStore.bucket_counts`), and replaces each bucket whole
(``FCALL sluice_aggregate_set``): absolute counts, not increments, so a replay run twice leaves
the same buckets, and the second run reports nothing changed.

Which buckets (:func:`plan_aggregates`):

- Whole buckets only. Buckets that ``[since, until)`` only partly covers are widened to the
  whole bucket, each window by its own length, and the output says so: a partial count set
  absolutely would overwrite the bucket's right total with a smaller one.
- Closed buckets only. A bucket that is still open, or closed less than
  :data:`SETTLE_SECONDS` ago, is left to the processors and named in the output: they are still
  counting into it, and an event they count between the replay's read and its write would be
  lost again. The same can happen to a closed bucket that receives a late event (a client's
  old ``time``, a processor far behind) during the replay; running the replay again fixes it.
- Living buckets only. A bucket expires ``ttl_seconds`` after its start, rebuilt or not
  (:func:`sluice.derived.aggregates.remaining_ttl`), so ``since`` older than that is refused, naming
  the fix, and an expired bucket of a widened range is skipped.

Replaying from Kafka (resetting a consumer group's offsets and running the processor path
again) is not offered: the processor counts only rows PostgreSQL newly inserts, so a Kafka
replay of stored events would count nothing, and PostgreSQL already holds what it needs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

from sluice.derived.aggregates import (
    DEFAULT_TTL_SECONDS,
    WINDOWS,
    BucketSet,
    Window,
    build_bucket_sets,
    check_ttl,
)
from sluice.tenants import validate_tenant

if TYPE_CHECKING:
    from sluice.config import Settings

#: How long after its end a bucket is still left to the processors: events of its last moments
#: may still be on their way through Kafka.
SETTLE_SECONDS: Final = 60
#: Buckets per Redis pipeline: bounds the memory of one round trip, not the replay's size.
CHUNK_BUCKETS: Final = 2000

_T = TypeVar("_T")

#: (tenant, event type, window start, events): one row of a window's counts.
CountRow = tuple[str, str, datetime, int]


class BucketCounts(Protocol):
    """PostgreSQL's counts: :meth:`sluice.storage.store.EventStore.bucket_counts`, synchronously."""

    def __call__(
        self, window: Window, start: datetime, end: datetime, tenant: str | None
    ) -> Sequence[CountRow]: ...


class BucketWriter(Protocol):
    """Redis's buckets: :class:`sluice.adapters.redis.RedisProcessor`."""

    def set_buckets(self, buckets: Sequence[BucketSet]) -> Sequence[bool]:
        """Replace each bucket; whether each one held other counts before."""
        ...

    def read_buckets(self, keys: Sequence[str]) -> Sequence[Mapping[str, int]]:
        """Each bucket's fields and counts, ``_total`` included (empty: no bucket)."""
        ...


# --- which buckets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowPlan:
    """The buckets of one window a replay rebuilds: those starting in ``[start, end)``.

    ``covering`` is every whole bucket overlapping the range asked for; ``expired_before`` and
    ``open_from`` say where it was cut (None: not cut there)."""

    window: Window
    covering: tuple[datetime, datetime]
    start: datetime
    end: datetime
    expired_before: datetime | None = None
    open_from: datetime | None = None

    @property
    def empty(self) -> bool:
        """No bucket of this window to rebuild."""
        return self.start >= self.end


@dataclass(frozen=True)
class ReplayPlan:
    """What ``sluice replay aggregates`` rebuilds: ``tenant``'s buckets (None: every tenant's)
    holding events of ``[since, until)``, widened per window (:func:`plan_aggregates`)."""

    since: datetime
    until: datetime
    now: datetime
    tenant: str | None
    ttl_seconds: int
    windows: tuple[WindowPlan, ...]
    settle_seconds: int = SETTLE_SECONDS

    def describe(self) -> list[str]:
        """The plan, a line per window, for the operator to read before the counts come."""
        who = "every tenant" if self.tenant is None else f"tenant {self.tenant}"
        lines = [
            f"replay Redis aggregates of {who} from PostgreSQL, events from {_iso(self.since)} "
            f"to {_iso(self.until)} (exclusive)"
        ]
        for plan in self.windows:
            name = plan.window.name
            first, last = plan.covering
            line = f"  {name} buckets: "
            if plan.empty:
                line += "none"
            else:
                line += f"{_iso(plan.start)} to {_iso(plan.end)}"
            if (first, last) != (self.since, self.until):
                line += f"; widened to whole {name} buckets, {_iso(first)} to {_iso(last)}"
            notes = []
            if plan.expired_before is not None:
                notes.append(
                    f"those before {_iso(plan.expired_before)} have expired (a bucket lives "
                    f"{self.ttl_seconds} s from its start) and are skipped"
                )
            if plan.open_from is not None:
                ready = last + timedelta(seconds=self.settle_seconds)
                notes.append(
                    f"those from {_iso(plan.open_from)} on are still open or closed less than "
                    f"{self.settle_seconds} s ago and are left to the processors (replay them "
                    f"after {_iso(ready)})"
                )
            lines.append("; ".join([line, *notes]))
        return lines


def plan_aggregates(
    since: datetime,
    until: datetime | None = None,
    *,
    now: datetime,
    tenant: str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    settle_seconds: int = SETTLE_SECONDS,
    windows: Sequence[Window] = WINDOWS,
) -> ReplayPlan:
    """The buckets to rebuild for events in ``[since, until)`` (``until`` None: ``now``).

    ValueError, naming the fix, for a naive time, an empty range, an invalid tenant or TTL,
    and a ``since`` older than the buckets live (``ttl_seconds``): rebuilt, they would expire
    at once.
    """
    until = now if until is None else until
    for name, moment in (("--since", since), ("--until", until), ("now", now)):
        if moment.utcoffset() is None:
            raise ValueError(f"{name} {moment} has no UTC offset: append Z or one such as +02:00")
    since, until, now = (moment.astimezone(UTC) for moment in (since, until, now))
    if not since < until:
        raise ValueError(
            f"the time range is empty: --since {_iso(since)} must be before --until "
            f"{_iso(until)}, which is exclusive"
        )
    if tenant is not None:
        validate_tenant(tenant)
    check_ttl(ttl_seconds, windows)
    oldest = now - timedelta(seconds=ttl_seconds)
    if since < oldest:
        raise ValueError(
            f"--since {_iso(since)} is older than Redis keeps aggregates ({ttl_seconds} s, the "
            f"buckets' TTL): rebuilt, its buckets would expire at once. Pass --since "
            f"{_iso(oldest.replace(microsecond=0) + timedelta(seconds=1))} or later, or "
            f"--ttl-seconds N to keep rebuilt buckets longer than the processors do"
        )
    closed_at = now - timedelta(seconds=settle_seconds)
    plans = []
    for window in windows:
        first, last = window.covering(since, until)
        # the bucket holding `oldest` started before it, so its lifetime is over: the next
        alive = window.end(window.start(oldest))
        closed_end = window.start(closed_at)
        plans.append(
            WindowPlan(
                window=window,
                covering=(first, last),
                start=max(first, alive),
                end=min(last, closed_end),
                expired_before=alive if first < alive else None,
                open_from=max(first, closed_end) if last > closed_end else None,
            )
        )
    return ReplayPlan(since, until, now, tenant, ttl_seconds, tuple(plans), settle_seconds)


# --- rebuilding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowResult:
    """What a replay did to one window's buckets."""

    window: Window
    buckets: int = 0
    events: int = 0
    changed: int = 0
    expired_buckets: int = 0
    uncountable_events: int = 0


@dataclass
class ReplayReport:
    """A replay's outcome: :meth:`summary` for people, :meth:`json_line` for the machine."""

    plan: ReplayPlan
    dry_run: bool = False
    results: list[WindowResult] = field(default_factory=list)

    @property
    def buckets(self) -> int:
        return sum(result.buckets for result in self.results)

    @property
    def events(self) -> int:
        """The stored events counted: the most any window's rebuilt buckets hold (each event
        is in one bucket of every window, so a sum would count it once per window)."""
        return max((result.events for result in self.results), default=0)

    @property
    def changed(self) -> bool:
        """Whether Redis now holds other counts than before (never in a dry run)."""
        return not self.dry_run and any(result.changed for result in self.results)

    def summary(self) -> str:
        verb = "would correct" if self.dry_run else "corrected"
        lines = []
        for result in self.results:
            line = (
                f"  {result.window.name}: {result.buckets} buckets, {result.events} events; "
                f"{verb} {result.changed} buckets that held other counts"
            )
            if result.expired_buckets:
                line += f"; {result.expired_buckets} buckets expired before they were written"
            if result.uncountable_events:
                line += (
                    f"; {result.uncountable_events} stored events left out, their type is "
                    "empty or '_total', which Redis cannot count"
                )
            lines.append(line)
        if self.dry_run:
            lines.append("dry run: Redis was read, not written")
        elif not self.changed:
            lines.append("Redis already held these counts")
        return "\n".join(lines)

    def json_line(self) -> str:
        """The machine-readable last line, as ``sluice migrate`` prints one."""
        return json.dumps({"changed": self.changed, "buckets": self.buckets, "events": self.events})


def replay_aggregates(
    plan: ReplayPlan,
    counts: BucketCounts,
    writer: BucketWriter,
    *,
    dry_run: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    chunk_buckets: int = CHUNK_BUCKETS,
) -> ReplayReport:
    """Rebuild the buckets of ``plan``: count each window's events with ``counts`` and replace
    the buckets through ``writer`` (with ``dry_run``, only compare them with what Redis
    holds). A bucket's TTL is its remaining lifetime at ``clock()`` once the window's counts
    are in. A failure propagates; the buckets written by then are right, and the replay can
    simply run again."""
    report = ReplayReport(plan, dry_run)
    for window_plan in plan.windows:
        window = window_plan.window
        if window_plan.empty:
            report.results.append(WindowResult(window))
            continue
        rows = counts(window, window_plan.start, window_plan.end, plan.tenant)
        rebuilt = build_bucket_sets(window, rows, now=clock(), ttl_seconds=plan.ttl_seconds)
        changed = 0
        for chunk in _chunks(rebuilt.sets, chunk_buckets):
            if dry_run:
                held = writer.read_buckets([bucket.key for bucket in chunk])
                changed += sum(
                    not bucket.matches(fields) for bucket, fields in zip(chunk, held, strict=True)
                )
            else:
                changed += sum(bool(flag) for flag in writer.set_buckets(chunk))
        report.results.append(
            WindowResult(
                window,
                buckets=len(rebuilt.sets),
                events=rebuilt.events,
                changed=changed,
                expired_buckets=rebuilt.expired_buckets,
                uncountable_events=rebuilt.uncountable_events,
            )
        )
    return report


def run_aggregates(settings: Settings, plan: ReplayPlan, *, dry_run: bool = False) -> ReplayReport:
    """:func:`replay_aggregates` over PostgreSQL (the reader role) and the Redis Cluster;
    RuntimeError naming the dependency that failed."""
    import psycopg
    import redis

    from sluice.adapters.redis import RedisProcessor
    from sluice.errors import Unavailable
    from sluice.storage import store

    with asyncio.Runner() as runner:
        pool = runner.run(store.open_pool(settings.postgres.reader_dsn, max_size=1, timeout=30.0))
        events = store.EventStore(pool)

        def counts(
            window: Window, start: datetime, end: datetime, tenant: str | None
        ) -> Sequence[CountRow]:
            return runner.run(events.bucket_counts(window, start, end, tenant))

        try:
            writer = RedisProcessor(settings.redis)
            try:
                return replay_aggregates(plan, counts, writer, dry_run=dry_run)
            finally:
                writer.close()
        except (Unavailable, psycopg.Error) as error:
            detail = error.detail if isinstance(error, Unavailable) else str(error).strip()
            raise RuntimeError(
                f"PostgreSQL at {settings.postgres.host} (SLUICE_POSTGRES_*, reader role): "
                f"{detail}; the buckets replaced so far hold the right counts, run the same "
                "replay again"
            ) from error
        except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as error:
            raise RuntimeError(
                f"Redis Cluster (SLUICE_REDIS_NODES): {error}; {_redis_hint(str(error))}"
            ) from error
        finally:
            runner.run(pool.close())


def _redis_hint(message: str) -> str:
    """What to do about a Redis error during a replay."""
    if "function not found" in message.lower() or "noperm" in message.lower():
        return (
            "the cluster lacks sluice_aggregate_set or the ACL to run it: apply the "
            "redis_cluster role (it loads files/sluice.lua and redis_cluster_sluice_commands), "
            "then run the same replay again"
        )
    return "the buckets replaced so far hold the right counts, run the same replay again"


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for offset in range(0, len(items), size):
        yield items[offset : offset + size]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
