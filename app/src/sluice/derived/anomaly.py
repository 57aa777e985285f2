"""Traffic anomalies: a z-score per (tenant, event type) over a sliding window of per-minute
counts, pure and deterministic.

The detector is fed each batch's counts by minute (the processor uses the minute Kafka stamped
on the record when the API accepted it, not the client's event ``time``, so a client's clock or
a backfill of old events cannot fake or hide a spike) and answers the :class:`Alert` objects the
batch raised. It never reads a clock: time is the minutes it is given, which also makes a
replay of the same input give the same alerts.

The rule, for the count ``c`` of minute ``m``, against the history of the ``window_minutes``
minutes before ``m`` (minutes without events count as 0; minutes before the series was first
seen are not history):

- no alert before ``min_history`` minutes of history, nor for ``c < min_count`` (on a
  near-empty series any single event is many standard deviations away);
- ``z = (c - mean) / s`` where ``s`` is the history's population standard deviation, raised to
  ``sqrt(mean)`` when ``poisson_floor`` is on: independent events are at least that noisy, so a
  very steady series (a load generator, batching artefacts) cannot turn a small wobble into a
  large z; alert when ``z >= threshold``;
- when the history has zero variance (a constant baseline, often all zeros), a z-score is
  undefined: alert only when ``c >= jump_factor * max(mean, 1)``, with ``z`` null.

Only spikes are detected, and as early as possible: a minute's count only grows as its events
arrive, so a spike is known from the batch that pushes it over the line, and each minute alerts
at most once. Drops are not: a minute that is low so far may still be filling up (a lagging
partition), and alerting on it would be noise.

Memory is bounded: each series keeps at most ``window_minutes + 1`` minutes, series idle for
``idle_minutes`` are evicted, and at most ``max_series`` are kept (least recently updated
evicted first), since event types are chosen by clients.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: How long the latest alert of a (tenant, type) stays readable in Redis: a day.
DEFAULT_ALERT_TTL_SECONDS: Final = 24 * 3600


def minute_of(timestamp_ms: int) -> int:
    """The minute (whole minutes since the UNIX epoch) of a Kafka timestamp in milliseconds."""
    return timestamp_ms // 60_000


def alert_key(tenant: str, event_type: str) -> str:
    """The Redis key holding the latest alert of ``tenant``'s ``event_type`` (in the tenant's
    hash-tag slot, like every key of the tenant)."""
    return f"sluice:{{{tenant}}}:anomaly:{event_type}"


@dataclass(frozen=True)
class AnomalyConfig:
    """The detector's settings; see the module docstring for the rule they parameterise."""

    window_minutes: int = 60
    threshold: float = 3.0
    min_history: int = 15
    min_count: int = 10
    jump_factor: float = 3.0
    poisson_floor: bool = True
    idle_minutes: int = 120
    max_series: int = 100_000

    def __post_init__(self) -> None:
        problems = []
        for name in ("window_minutes", "min_history", "min_count", "idle_minutes", "max_series"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("threshold", "jump_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                problems.append(f"{name} must be a number > 0, got {value!r}")
        if not problems and self.min_history > self.window_minutes:
            problems.append(
                f"min_history ({self.min_history}) cannot exceed window_minutes "
                f"({self.window_minutes}): the window never holds that much history"
            )
        if problems:
            raise ValueError("invalid AnomalyConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class Alert:
    """A minute whose count stood out from its history.

    ``z`` is None for the zero-variance rule (``rule == "jump"``). ``stddev`` is the history's
    own standard deviation, before any floor.
    """

    tenant: str
    event_type: str
    minute: int
    count: int
    mean: float
    stddev: float
    z: float | None
    threshold: float
    rule: Literal["zscore", "jump"]

    @property
    def minute_start(self) -> datetime:
        """The start of the alert's minute, in UTC."""
        return _EPOCH + timedelta(minutes=self.minute)

    @property
    def key(self) -> bytes:
        """The ``alerts.anomalies`` record key: the tenant, so a tenant's alerts stay in
        order."""
        return self.tenant.encode("utf-8")

    @property
    def redis_key(self) -> str:
        """Where Redis keeps the latest alert of this tenant and type."""
        return alert_key(self.tenant, self.event_type)

    def to_json_bytes(self) -> bytes:
        """The alert as sorted compact JSON: the ``alerts.anomalies`` value and the Redis
        value."""
        document = {
            "tenant": self.tenant,
            "type": self.event_type,
            "minute": self.minute_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": self.count,
            "mean": round(self.mean, 6),
            "stddev": round(self.stddev, 6),
            "z": None if self.z is None else round(self.z, 6),
            "threshold": self.threshold,
            "rule": self.rule,
        }
        return json.dumps(
            document, ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")


@dataclass
class _Series:
    """One (tenant, type): its recent counts by minute and the minutes that already alerted."""

    first_minute: int
    latest_minute: int
    counts: dict[int, int] = field(default_factory=dict)
    alerted: set[int] = field(default_factory=set)


class AnomalyDetector:
    """Per-(tenant, type) minute counts and the z-score rule over them; one per processor.

    Each processor owns a set of Kafka partitions and with them a set of tenants (the record
    key is the tenant), so its detector sees all of those tenants' events.
    """

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig()
        self._series: OrderedDict[tuple[str, str], _Series] = OrderedDict()

    def __len__(self) -> int:
        """How many (tenant, type) series the detector holds."""
        return len(self._series)

    def observe(self, counts: Mapping[tuple[str, str, int], int]) -> list[Alert]:
        """Add a batch's ``counts`` by (tenant, type, minute) and return the alerts they raise,
        ordered by tenant, type and minute.

        A count for a minute older than the series' window is dropped: it can no longer be
        history for anything the detector will evaluate.
        """
        alerts = []
        for (tenant, event_type, minute), count in sorted(counts.items()):
            if count <= 0:
                continue
            series = self._touch(tenant, event_type, minute)
            if series is None:
                continue
            series.counts[minute] = series.counts.get(minute, 0) + count
            if minute not in series.alerted:
                alert = self._evaluate(tenant, event_type, series, minute)
                if alert is not None:
                    series.alerted.add(minute)
                    alerts.append(alert)
        return alerts

    def evict(self, now_minute: int) -> int:
        """Forget the series with no events in the ``idle_minutes`` before ``now_minute``; the
        number forgotten. A returning series starts over, needing ``min_history`` again."""
        idle = [
            name
            for name, series in self._series.items()
            if series.latest_minute < now_minute - self.config.idle_minutes
        ]
        for name in idle:
            del self._series[name]
        return len(idle)

    def _touch(self, tenant: str, event_type: str, minute: int) -> _Series | None:
        """The series of (tenant, type), made most recently used and moved forward to
        ``minute``; None when ``minute`` is older than its window."""
        name = (tenant, event_type)
        series = self._series.get(name)
        if series is None:
            series = _Series(first_minute=minute, latest_minute=minute)
            self._series[name] = series
            while len(self._series) > self.config.max_series:
                self._series.popitem(last=False)
            return series
        if minute < series.latest_minute - self.config.window_minutes:
            return None
        self._series.move_to_end(name)
        series.first_minute = min(series.first_minute, minute)
        if minute > series.latest_minute:
            series.latest_minute = minute
            oldest = minute - self.config.window_minutes
            series.counts = {m: c for m, c in series.counts.items() if m >= oldest}
            series.alerted = {m for m in series.alerted if m >= oldest}
        return series

    def _evaluate(self, tenant: str, event_type: str, series: _Series, minute: int) -> Alert | None:
        config = self.config
        count = series.counts[minute]
        # History: the window before `minute`, but only minutes the series still holds (a late
        # minute's window reaches back past what was pruned) and none before it was first seen.
        first = max(
            series.first_minute,
            minute - config.window_minutes,
            series.latest_minute - config.window_minutes,
        )
        history = [series.counts.get(m, 0) for m in range(first, minute)]
        if len(history) < config.min_history or count < config.min_count:
            return None
        mean = sum(history) / len(history)
        stddev = math.sqrt(sum((value - mean) ** 2 for value in history) / len(history))
        if stddev == 0:
            if count >= config.jump_factor * max(mean, 1.0):
                return Alert(
                    tenant, event_type, minute, count, mean, 0.0, None, config.threshold, "jump"
                )
            return None
        spread = max(stddev, math.sqrt(mean)) if config.poisson_floor else stddev
        z = (count - mean) / spread
        if z >= config.threshold:
            return Alert(
                tenant, event_type, minute, count, mean, stddev, z, config.threshold, "zscore"
            )
        return None
