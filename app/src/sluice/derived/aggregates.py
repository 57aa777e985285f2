"""Per-tenant event counts in tumbling windows: the Redis buckets and the ``events.aggregated``
records, as pure functions.

The processor counts every event it newly stored in three tumbling windows, 1 minute, 5 minutes
and 1 hour, aligned to UTC. Each (tenant, window start) is one Redis hash, a *bucket*, whose
fields are event types plus ``_total``; ``FCALL sluice_aggregate 1 <bucket> <type> <increment>
<ttl_seconds>`` (``ansible/roles/redis_cluster/files/sluice.lua``) adds to it and answers the
type's new count. Bucket names::

    sluice:{<tenant>}:agg:<YYYYMMDDHHMM>     1-minute buckets, the ones the API reads
    sluice:{<tenant>}:agg5m:<YYYYMMDDHHMM>   5-minute buckets (named by their first minute)
    sluice:{<tenant>}:agg1h:<YYYYMMDDHHMM>   1-hour buckets (named by their first minute)

The ``{<tenant>}`` hash tag keeps all of a tenant's buckets in one Redis Cluster slot, as the
library requires. A batch becomes one :class:`Increment` per (bucket, type), however many events
it holds, so a batch costs one FCALL per distinct (tenant, window, type), and the Redis adapter
sends them in one cluster pipeline: one round trip per node.

Rebuilding. Counts can be lost (a processor dying between its PostgreSQL commit and its Redis
write), and Redis aggregates are derived data: ``sluice replay aggregates`` counts the stored
events per bucket again in PostgreSQL and replaces each bucket whole with ``FCALL
sluice_aggregate_set 1 <bucket> <ttl_seconds> <type> <count> ...`` (:class:`BucketSet`), which
sets the counts absolutely, so a replay run twice leaves the same buckets. A rebuilt bucket
keeps the lifetime it would have had: it expires ``ttl_seconds`` after its start
(:func:`remaining_ttl`), not ``ttl_seconds`` after the replay.

The 5-minute and 1-hour windows are buckets in Redis, not sums kept in the processor's memory,
because ``events.aggregated`` is a compacted topic that carries each window's *running total*:
the count Redis answers is that total, correct after a processor restart or a partition
rebalance, where an in-memory total would restart from zero and overwrite the right value with a
smaller one. Re-emitting a window's total with every batch that touches it is what compaction is
for: the topic keeps the newest value per key, so a reader sees each window's latest total.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

#: The Redis function that adds to a bucket (sluice.lua).
AGGREGATE_FUNCTION: Final = "sluice_aggregate"
#: The Redis function that replaces a bucket with counts rebuilt from PostgreSQL (sluice.lua).
SET_FUNCTION: Final = "sluice_aggregate_set"
#: The bucket field sluice.lua keeps for the count of all types; no event type may be named so.
TOTAL_FIELD: Final = "_total"
#: How long a bucket lives after its first event: two days, so yesterday stays readable whole.
#: Older counts are rebuilt from PostgreSQL by ``sluice replay`` when someone needs them.
DEFAULT_TTL_SECONDS: Final = 2 * 24 * 3600

_BUCKET_TIME_FORMAT: Final = "%Y%m%d%H%M"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """A tumbling window: ``seconds`` long, aligned to the UTC epoch, named ``name`` in
    ``events.aggregated`` and ``key_segment`` in Redis bucket names."""

    name: str
    seconds: int
    key_segment: str

    def start(self, moment: datetime) -> datetime:
        """The start of the window that holds ``moment`` (timezone-aware), in UTC."""
        if moment.utcoffset() is None:
            raise ValueError(f"window start of a naive datetime {moment}: pass an aware one")
        elapsed = (moment - _EPOCH) // timedelta(seconds=self.seconds)
        return _EPOCH + timedelta(seconds=elapsed * self.seconds)

    def end(self, start: datetime) -> datetime:
        """The end (exclusive) of the window that starts at ``start``."""
        return start + timedelta(seconds=self.seconds)

    def covering(self, since: datetime, until: datetime) -> tuple[datetime, datetime]:
        """The whole windows that overlap ``[since, until)``: the start of the first and the
        end of the last, so ``since`` and ``until`` are moved out to window boundaries (an
        aligned ``until`` stays, being exclusive)."""
        if not since < until:
            raise ValueError(f"empty time range: since {since} must be before until {until}")
        last = self.start(until)
        return self.start(since), last if last == until else self.end(last)


MINUTE: Final = Window("1m", 60, "agg")
FIVE_MINUTES: Final = Window("5m", 300, "agg5m")
HOUR: Final = Window("1h", 3600, "agg1h")
WINDOWS: Final = (MINUTE, FIVE_MINUTES, HOUR)


def bucket_key(tenant: str, window: Window, start: datetime) -> str:
    """The Redis hash of ``tenant``'s ``window`` that starts at ``start`` (a window start)."""
    return f"sluice:{{{tenant}}}:{window.key_segment}:{start.astimezone(UTC):{_BUCKET_TIME_FORMAT}}"


@dataclass(frozen=True)
class Increment:
    """``count`` events of ``event_type`` to add to one bucket: one FCALL."""

    tenant: str
    event_type: str
    window: Window
    start: datetime
    count: int
    ttl_seconds: int

    @property
    def key(self) -> str:
        """The bucket's Redis key."""
        return bucket_key(self.tenant, self.window, self.start)

    def fcall_args(self) -> tuple[str | int, ...]:
        """The arguments of redis-py's ``fcall``/``execute_command('FCALL', ...)`` for this
        increment: function, numkeys, key, event type, increment, TTL."""
        return (
            AGGREGATE_FUNCTION,
            1,
            self.key,
            self.event_type,
            str(self.count),
            str(self.ttl_seconds),
        )


@dataclass(frozen=True)
class BucketSet:
    """The whole content of one bucket, rebuilt from PostgreSQL: one ``FCALL
    sluice_aggregate_set``. ``counts`` are (event type, count) pairs in type order; the
    function computes ``_total`` itself. ``ttl_seconds`` is the bucket's remaining lifetime."""

    tenant: str
    window: Window
    start: datetime
    counts: tuple[tuple[str, int], ...]
    ttl_seconds: int

    @property
    def key(self) -> str:
        """The bucket's Redis key."""
        return bucket_key(self.tenant, self.window, self.start)

    @property
    def total(self) -> int:
        """The bucket's ``_total``: the events of every type."""
        return sum(count for _, count in self.counts)

    def fcall_args(self) -> tuple[str | int, ...]:
        """The arguments of ``execute_command('FCALL', ...)``: function, numkeys, key, TTL,
        then each type and its count."""
        pairs = [item for event_type, count in self.counts for item in (event_type, str(count))]
        return (SET_FUNCTION, 1, self.key, str(self.ttl_seconds), *pairs)

    def matches(self, fields: Mapping[str, int]) -> bool:
        """Whether a bucket holding ``fields`` (as ``sluice_aggregates_read`` answers, with
        ``_total``) already holds exactly these counts."""
        wanted = {event_type: count for event_type, count in self.counts if count}
        if wanted:
            wanted[TOTAL_FIELD] = self.total
        return dict(fields) == wanted


def remaining_ttl(window: Window, start: datetime, now: datetime, ttl_seconds: int) -> int:
    """Whole seconds left until the bucket of ``window`` starting at ``start`` expires, that is
    ``ttl_seconds`` after its start, as the processor's first event there set it; 0 or less
    when it has expired already."""
    return int(((start + timedelta(seconds=ttl_seconds)) - now).total_seconds())


@dataclass(frozen=True)
class RebuiltBuckets:
    """What :func:`build_bucket_sets` made of one window's counted rows."""

    sets: list[BucketSet]
    #: Events in buckets that expired before they could be written (not sent).
    expired_events: int = 0
    #: Buckets that expired before they could be written (not sent).
    expired_buckets: int = 0
    #: Events whose type Redis refuses to count (:func:`check_event_type`), left out.
    uncountable_events: int = 0

    @property
    def events(self) -> int:
        """The events counted in the buckets to set."""
        return sum(bucket.total for bucket in self.sets)


def build_bucket_sets(
    window: Window,
    rows: Iterable[tuple[str, str, datetime, int]],
    *,
    now: datetime,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
) -> RebuiltBuckets:
    """The :class:`BucketSet` of every bucket of ``window`` in ``rows``, each a (tenant, event
    type, window start, count) row as PostgreSQL counted it; ordered by bucket key.

    A bucket whose lifetime (``ttl_seconds`` from its start) is over at ``now`` is left out
    (written, it would vanish at once) and counted as expired. A row whose type Redis cannot
    count is left out and counted too: the processor sends such events to the DLQ, so they are
    not stored unless something other than the processor wrote them.
    """
    check_ttl(ttl_seconds)
    buckets: dict[tuple[str, datetime], dict[str, int]] = defaultdict(dict)
    uncountable = 0
    for tenant, event_type, start, count in rows:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"a bucket count must be a whole number >= 0, got {count!r}")
        if start.utcoffset() is None or window.start(start) != start:
            raise ValueError(
                f"{start} is not the start of a {window.name} window (UTC-aligned, "
                f"timezone-aware): the counts must be grouped by window start"
            )
        if check_event_type(event_type) is not None:
            uncountable += count
            continue
        counts = buckets[tenant, start]
        if event_type in counts:
            raise ValueError(
                f"tenant {tenant!r} type {event_type!r} counted twice in the {window.name} "
                f"bucket at {_format_time(start)}: group the counts by tenant, type and start"
            )
        counts[event_type] = count
    sets: list[BucketSet] = []
    expired_buckets = expired_events = 0
    for (tenant, start), counts in buckets.items():
        bucket = BucketSet(
            tenant,
            window,
            start.astimezone(UTC),
            tuple(sorted(counts.items())),
            remaining_ttl(window, start, now, ttl_seconds),
        )
        if bucket.ttl_seconds < 1:
            expired_buckets += 1
            expired_events += bucket.total
            continue
        sets.append(bucket)
    sets.sort(key=lambda bucket: bucket.key)
    return RebuiltBuckets(sets, expired_events, expired_buckets, uncountable)


def check_ttl(ttl_seconds: int, windows: Sequence[Window] = WINDOWS) -> int:
    """``ttl_seconds`` if every window's bucket outlives the window itself, else ValueError.

    A bucket expires ``ttl_seconds`` after its first event (sluice.lua sets it once and never
    extends it), so a TTL shorter than a window would drop the window's count while events
    still arrive for it, and the next total emitted would restart from the late events alone.
    """
    longest = max(window.seconds for window in windows)
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= longest:
        raise ValueError(
            f"aggregate TTL must be a whole number of seconds longer than the longest window "
            f"({longest} s), got {ttl_seconds!r}; the default is {DEFAULT_TTL_SECONDS}"
        )
    return ttl_seconds


def check_event_type(event_type: str) -> str | None:
    """Why ``event_type`` cannot be counted in a bucket, or None when it can.

    sluice.lua refuses an empty type and ``_total`` (the field it keeps for all types); a batch
    holding such an event would fail in Redis on every retry, so the processor sends the event
    to the dead-letter topic instead.
    """
    if not event_type:
        return "an empty event type cannot be counted"
    if event_type == TOTAL_FIELD:
        return (
            f"the event type {TOTAL_FIELD!r} is reserved: Redis aggregates keep the count of all "
            "types under that name; send the event with another type"
        )
    return None


def build_increments(
    events: Iterable[tuple[str, str, datetime]],
    *,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    windows: Sequence[Window] = WINDOWS,
) -> list[Increment]:
    """The increments that count ``events``, each a (tenant, event type, time) triple.

    One increment per (window, tenant, window start, type), summing its events; ordered by
    bucket key then type, so equal batches give equal increments whatever their event order.
    """
    check_ttl(ttl_seconds, windows)
    counts: dict[tuple[str, str, Window, datetime], int] = defaultdict(int)
    for tenant, event_type, moment in events:
        for window in windows:
            counts[tenant, event_type, window, window.start(moment)] += 1
    increments = [
        Increment(tenant, event_type, window, start, count, ttl_seconds)
        for (tenant, event_type, window, start), count in counts.items()
    ]
    increments.sort(key=lambda increment: (increment.key, increment.event_type))
    return increments


@dataclass(frozen=True)
class WindowCount:
    """One window's running total of one tenant's event type: an ``events.aggregated``
    record."""

    tenant: str
    event_type: str
    window: Window
    start: datetime
    count: int

    @property
    def key(self) -> bytes:
        """The compaction key, ``tenant|type|window|start``: one value kept per window.

        ``%`` and ``|`` in the tenant and the type are percent-encoded (``%25``, ``%7C``):
        event types are the client's, and a type containing ``|`` must not share a key with
        another tenant's or type's window.
        """
        parts = (
            _escape(self.tenant),
            _escape(self.event_type),
            self.window.name,
            _format_time(self.start),
        )
        return "|".join(parts).encode("utf-8")

    def to_json_bytes(self) -> bytes:
        """The record's value: the window and its count, as sorted compact JSON."""
        document = {
            "tenant": self.tenant,
            "type": self.event_type,
            "window": self.window.name,
            "start": _format_time(self.start),
            "end": _format_time(self.start + timedelta(seconds=self.window.seconds)),
            "count": self.count,
        }
        return json.dumps(
            document, ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")


def window_counts(increments: Sequence[Increment], totals: Sequence[int]) -> list[WindowCount]:
    """The ``events.aggregated`` records of a batch: each increment's window with the total
    Redis answered for it (``totals[i]`` is the FCALL reply of ``increments[i]``)."""
    if len(totals) != len(increments):
        raise ValueError(
            f"got {len(totals)} Redis totals for {len(increments)} increments: the aggregator "
            "must answer one total per increment, in order"
        )
    return [
        WindowCount(
            increment.tenant, increment.event_type, increment.window, increment.start, int(total)
        )
        for increment, total in zip(increments, totals, strict=True)
    ]


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("|", "%7C")


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
