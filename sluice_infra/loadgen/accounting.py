"""End-to-end accounting after a load run: what was acknowledged is what was stored.

1. The processors' consumer lag back to 0 (then nothing sent can still arrive).
2. Every acknowledged id is a row in PostgreSQL exactly once (the acknowledged ids are copied
   into a temporary table and joined with the run's tenants' rows). Rows no acknowledgement
   names are counted, not failed: a request the driver gave up on may still have been taken.
3. The Redis counters (read through the API, as a client sees them) equal PostgreSQL's count
   per tenant, type and minute, for every minute the run's events fall in.
4. The drain time: the last acknowledgement to the last of the run's rows written.

Nothing here is timed against a threshold: the figures are reported, the equalities asserted."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sluice_infra.loadgen.target import Key, Target

#: The API serves at most this many minutes of counters (sluice.api.app.AGGREGATE_MINUTES_MAX).
AGGREGATE_MINUTES_MAX = 60


class AccountingError(RuntimeError):
    """The accounting could not be done (not: it found a difference, which is a result)."""


@dataclass
class Accounting:
    acknowledged: int
    stored: int = 0
    missing: int = 0
    duplicated: int = 0
    stored_unacknowledged: int = 0
    lag_wait_seconds: float = 0.0
    drain_seconds: float | None = None
    counters_compared: int = 0
    counter_differences: list[dict[str, Any]] = field(default_factory=list)
    counters_skipped_minutes: int = 0
    examples_missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.counter_differences)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def lines(self) -> list[str]:
        drain = "n/a" if self.drain_seconds is None else f"{self.drain_seconds:.1f}s"
        out = [
            f"acknowledged {self.acknowledged}, stored once {self.stored - self.duplicated}, "
            f"missing {self.missing}, duplicated {self.duplicated}, "
            f"stored without an acknowledgement {self.stored_unacknowledged}",
            f"consumer lag 0 after {self.lag_wait_seconds:.1f}s; drain (last ack to last row) "
            f"{drain}",
            f"Redis counters vs PostgreSQL per tenant/type/minute: {self.counters_compared} "
            f"compared, {len(self.counter_differences)} differ"
            + (
                f", {self.counters_skipped_minutes} minutes older than the API's window skipped"
                if self.counters_skipped_minutes
                else ""
            ),
        ]
        out += [f"  differs: {d}" for d in self.counter_differences[:10]]
        out += [f"  missing: {i}" for i in self.examples_missing]
        return out


def wait_for_lag_zero(target: Target, timeout: float, sleep: Callable = time.sleep) -> float:
    """Seconds until every partition of events.raw has lag 0; AccountingError after timeout."""
    started = time.monotonic()
    while True:
        lags = target.consumer_lag()
        if lags and not any(lags.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AccountingError(f"consumer lag not 0 after {timeout:.0f}s: {lags}")
        sleep(1)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def stored_sql(tenants: list[str], since: datetime) -> str:
    """The script that loads the acknowledged ids (COPY data follows it on stdin) and selects
    the run's figures as one JSON object."""
    tenant_list = ", ".join(_literal(t) for t in tenants)
    return f"""
CREATE TEMP TABLE acked (id text PRIMARY KEY);
CREATE TEMP TABLE stored AS
    SELECT id, count(*) AS copies, max(ingested_at) AS last_ingested
    FROM public.events
    WHERE tenant_id IN ({tenant_list}) AND time >= {_literal(since.isoformat())}
    GROUP BY id;
CREATE TEMP TABLE per_minute AS
    SELECT tenant_id, type, date_trunc('minute', time) AS minute, count(*) AS n
    FROM public.events
    WHERE tenant_id IN ({tenant_list}) AND time >= {_literal(since.isoformat())}
    GROUP BY 1, 2, 3;
COPY acked FROM STDIN;
"""


RESULT_SQL = """\\.
SELECT json_build_object(
    'acknowledged', (SELECT count(*) FROM acked),
    'stored', (SELECT coalesce(sum(copies), 0) FROM stored s JOIN acked a USING (id)),
    'missing', (SELECT count(*) FROM acked a LEFT JOIN stored s USING (id) WHERE s.id IS NULL),
    'examples_missing', (SELECT coalesce(json_agg(id), '[]') FROM (
        SELECT a.id FROM acked a LEFT JOIN stored s USING (id) WHERE s.id IS NULL
        ORDER BY a.id LIMIT 5) m),
    'duplicated', (SELECT count(*) FROM stored WHERE copies > 1),
    'stored_unacknowledged',
        (SELECT count(*) FROM stored s LEFT JOIN acked a USING (id) WHERE a.id IS NULL),
    'last_ingested', (SELECT max(last_ingested) FROM stored),
    'per_minute', (SELECT coalesce(json_agg(json_build_object(
        'tenant', tenant_id, 'type', type,
        'minute', to_char(minute AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:00"Z"'), 'n', n)), '[]')
        FROM per_minute)
);
"""


def _minute(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def compare_counters(
    target: Target, keys: list[Key], per_minute: list[dict], now: datetime
) -> tuple[int, list[dict], int]:
    """(compared, differences, minutes skipped) of PostgreSQL's count per tenant/type/minute
    against the tenant's Redis counters read through the API."""
    expected: dict[tuple[str, str, datetime], int] = {
        (row["tenant"], row["type"], _minute(row["minute"])): int(row["n"]) for row in per_minute
    }
    oldest = min((m for _, _, m in expected), default=now)
    minutes = min(AGGREGATE_MINUTES_MAX, math.ceil((now - oldest).total_seconds() / 60) + 1)
    counted: dict[tuple[str, str, datetime], int] = {}
    window_start = None
    for key in keys:
        reply = target.aggregates(key, minutes)
        for bucket in reply.get("minutes", []):
            start = _minute(bucket["minute"])
            window_start = start if window_start is None else min(window_start, start)
            for kind, n in (bucket.get("counts") or {}).items():
                counted[(key.tenant, kind, start)] = int(n)
    in_window = {k: n for k, n in expected.items() if window_start is None or k[2] >= window_start}
    skipped = len({k[2] for k in expected} - {k[2] for k in in_window})
    differences = [
        {
            "tenant": t,
            "type": kind,
            "minute": m.isoformat(),
            "postgresql": n,
            "redis": counted.get((t, kind, m), 0),
        }
        for (t, kind, m), n in sorted(in_window.items())
        if counted.get((t, kind, m), 0) != n
    ]
    tenants = {key.tenant for key in keys}
    differences += [
        {"tenant": t, "type": kind, "minute": m.isoformat(), "postgresql": 0, "redis": n}
        for (t, kind, m), n in sorted(counted.items())
        if t in tenants and (t, kind, m) not in expected and n
    ]
    return len(in_window), differences, skipped


def account(
    target: Target,
    keys: list[Key],
    acks_file: Path,
    since: datetime,
    last_ack: datetime | None,
    lag_timeout: float = 600,
    on_drained: Callable[[], None] | None = None,
) -> Accounting:
    """The accounting of a run whose tenants are ``keys``' and whose events are not older than
    ``since``; ``acks_file`` holds the acknowledged ids, one per line. ``on_drained`` is called
    once the lag is 0, before the accounting's own queries (a benchmark reads CPU time there)."""
    lag_wait = wait_for_lag_zero(target, lag_timeout)
    if on_drained:
        on_drained()
    acked = acks_file.read_text() if acks_file.exists() else ""
    if acked and not acked.endswith("\n"):
        acked += "\n"
    figures = target.sql_json(stored_sql([k.tenant for k in keys], since) + acked + RESULT_SQL)
    result = Accounting(
        acknowledged=int(figures["acknowledged"]),
        stored=int(figures["stored"]),
        missing=int(figures["missing"]),
        duplicated=int(figures["duplicated"]),
        stored_unacknowledged=int(figures["stored_unacknowledged"]),
        lag_wait_seconds=round(lag_wait, 1),
        examples_missing=list(figures["examples_missing"]),
    )
    if figures["last_ingested"] and last_ack:
        last_row = datetime.fromisoformat(figures["last_ingested"]).astimezone(UTC)
        result.drain_seconds = round(max(0.0, (last_row - last_ack).total_seconds()), 3)
    compared, differences, skipped = compare_counters(
        target, keys, figures["per_minute"], datetime.now(UTC)
    )
    result.counters_compared = compared
    result.counter_differences = differences
    result.counters_skipped_minutes = skipped
    return result
