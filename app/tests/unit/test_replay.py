"""``sluice replay aggregates``: which buckets it rebuilds, and rebuilding them from counted
events into a fake Redis that keeps buckets as sluice.lua does."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from sluice import cli
from sluice.derived import replay
from sluice.derived.aggregates import (
    DEFAULT_TTL_SECONDS,
    WINDOWS,
    BucketSet,
    Increment,
    Window,
    build_increments,
)
from sluice.derived.replay import ReplayPlan, plan_aggregates, replay_aggregates

NOW = datetime(2026, 11, 27, 12, 30, 20, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def by_name(plan: ReplayPlan) -> dict[str, replay.WindowPlan]:
    return {window_plan.window.name: window_plan for window_plan in plan.windows}


# --- the plan: whole, closed, living buckets ----------------------------------------------------


def test_a_range_inside_buckets_is_widened_to_whole_buckets_per_window() -> None:
    plan = plan_aggregates(at("2026-11-27T10:07:30Z"), at("2026-11-27T11:22:10Z"), now=NOW)

    windows = by_name(plan)
    assert (windows["1m"].start, windows["1m"].end) == (
        at("2026-11-27T10:07:00Z"),
        at("2026-11-27T11:23:00Z"),
    )
    assert (windows["5m"].start, windows["5m"].end) == (
        at("2026-11-27T10:05:00Z"),
        at("2026-11-27T11:25:00Z"),
    )
    assert (windows["1h"].start, windows["1h"].end) == (
        at("2026-11-27T10:00:00Z"),
        at("2026-11-27T12:00:00Z"),
    )
    described = "\n".join(plan.describe())
    assert "widened to whole 1h buckets, 2026-11-27T10:00:00Z to 2026-11-27T12:00:00Z" in described
    assert "widened to whole 5m buckets" in described


def test_a_range_on_hour_boundaries_is_not_widened() -> None:
    plan = plan_aggregates(at("2026-11-27T09:00:00Z"), at("2026-11-27T11:00:00Z"), now=NOW)

    for window_plan in plan.windows:
        assert (window_plan.start, window_plan.end) == (plan.since, plan.until)
        assert window_plan.expired_before is None and window_plan.open_from is None
    assert "widened" not in "\n".join(plan.describe())


def test_until_defaults_to_now_and_open_buckets_are_left_to_the_processors() -> None:
    plan = plan_aggregates(at("2026-11-27T11:00:00Z"), now=NOW)

    assert plan.until == NOW
    windows = by_name(plan)
    # 12:30:20 - 60 s settle = 12:29:20: the 12:29 minute is not settled yet
    assert windows["1m"].end == at("2026-11-27T12:29:00Z")
    assert windows["1m"].open_from == at("2026-11-27T12:29:00Z")
    assert windows["5m"].end == at("2026-11-27T12:25:00Z")
    assert windows["1h"].end == at("2026-11-27T12:00:00Z")
    assert windows["1h"].open_from == at("2026-11-27T12:00:00Z")
    described = "\n".join(plan.describe())
    assert "those from 2026-11-27T12:00:00Z on are still open" in described
    assert "replay them after 2026-11-27T13:01:00Z" in described  # the hour once settled


def test_a_bucket_closed_long_enough_ago_is_replayed_whole() -> None:
    plan = plan_aggregates(at("2026-11-27T12:28:00Z"), at("2026-11-27T12:29:00Z"), now=NOW)

    minute = by_name(plan)["1m"]
    assert (minute.start, minute.end, minute.open_from) == (
        at("2026-11-27T12:28:00Z"),
        at("2026-11-27T12:29:00Z"),
        None,
    )
    assert by_name(plan)["1h"].empty  # 12:00 to 13:00 is still open


def test_expired_buckets_of_a_widened_range_are_skipped() -> None:
    since = NOW - timedelta(seconds=DEFAULT_TTL_SECONDS) + timedelta(minutes=10)  # 12:40:20

    plan = plan_aggregates(since, at("2026-11-25T14:00:00Z"), now=NOW)

    hour = by_name(plan)["1h"]
    assert hour.covering[0] == at("2026-11-25T12:00:00Z")
    assert hour.start == hour.expired_before == at("2026-11-25T13:00:00Z")
    assert by_name(plan)["1m"].start == at("2026-11-25T12:40:00Z")
    assert by_name(plan)["1m"].expired_before is None
    assert "those before 2026-11-25T13:00:00Z have expired" in "\n".join(plan.describe())


def test_a_since_older_than_the_ttl_is_refused_naming_the_fix() -> None:
    with pytest.raises(ValueError) as refused:
        plan_aggregates(at("2026-11-20T00:00:00Z"), now=NOW)

    message = str(refused.value)
    assert "--since 2026-11-20T00:00:00Z is older than Redis keeps aggregates (172800 s" in message
    assert "Pass --since 2026-11-25T12:30:21Z or later, or --ttl-seconds N" in message


def test_a_longer_ttl_lets_older_buckets_be_rebuilt() -> None:
    plan = plan_aggregates(
        at("2026-11-20T00:00:00Z"), at("2026-11-21T00:00:00Z"), now=NOW, ttl_seconds=14 * 86400
    )

    assert all(not window_plan.empty for window_plan in plan.windows)


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("2026-11-27T11:00:00Z", "2026-11-27T11:00:00Z", "the time range is empty"),
        ("2026-11-27T11:00:00Z", "2026-11-27T10:00:00Z", "the time range is empty"),
        ("2026-11-27T11:00:00", None, "has no UTC offset"),
    ],
)
def test_bad_ranges_are_refused(since: str, until: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_aggregates(at(since), None if until is None else at(until), now=NOW)


def test_a_bad_tenant_or_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid tenant name"):
        plan_aggregates(at("2026-11-27T11:00:00Z"), now=NOW, tenant="Acme Corp")
    with pytest.raises(ValueError, match="longer than the longest window"):
        plan_aggregates(at("2026-11-27T11:00:00Z"), now=NOW, ttl_seconds=600)


# --- rebuilding, over fakes -------------------------------------------------------------------


class FakeRedis:
    """Buckets as sluice.lua keeps them: sluice_aggregate adds, sluice_aggregate_set replaces."""

    def __init__(self) -> None:
        self.buckets: dict[str, Counter[str]] = {}
        self.ttls: dict[str, int] = {}
        self.calls: list[int] = []
        self.failures: list[Exception] = []

    def apply(self, increments: Sequence[Increment]) -> Sequence[int]:
        for increment in increments:
            bucket = self.buckets.setdefault(increment.key, Counter())
            bucket[increment.event_type] += increment.count
            bucket["_total"] += increment.count
            self.ttls.setdefault(increment.key, increment.ttl_seconds)
        return []

    def set_buckets(self, buckets: Sequence[BucketSet]) -> Sequence[bool]:
        self.calls.append(len(buckets))
        if self.failures:
            raise self.failures.pop(0)
        changed = []
        for bucket in buckets:
            new = Counter({event_type: count for event_type, count in bucket.counts if count})
            if new:
                new["_total"] = sum(new.values())
            changed.append(self.buckets.get(bucket.key, Counter()) != new)
            self.buckets.pop(bucket.key, None)
            if new:
                self.buckets[bucket.key] = new
                self.ttls[bucket.key] = bucket.ttl_seconds
        return changed

    def read_buckets(self, keys: Sequence[str]) -> Sequence[Mapping[str, int]]:
        return [dict(self.buckets.get(key, Counter())) for key in keys]


class FakePostgres:
    """The events table, counted per bucket as bucket_counts_sql counts it."""

    def __init__(self, events: Sequence[tuple[str, str, datetime]]) -> None:
        self.events = list(events)
        self.queries: list[tuple[str, datetime, datetime, str | None]] = []

    def __call__(
        self, window: Window, start: datetime, end: datetime, tenant: str | None
    ) -> Sequence[replay.CountRow]:
        self.queries.append((window.name, start, end, tenant))
        counted = Counter(
            (event_tenant, event_type, window.start(moment))
            for event_tenant, event_type, moment in self.events
            if start <= moment < end and tenant in (None, event_tenant)
        )
        return [(t, e, s, n) for (t, e, s), n in sorted(counted.items())]


EVENTS = [
    ("acme", "order.paid", at("2026-11-27T10:01:05Z")),
    ("acme", "order.paid", at("2026-11-27T10:01:59Z")),
    ("acme", "page.view", at("2026-11-27T10:04:00Z")),
    ("acme", "page.view", at("2026-11-27T10:59:59Z")),
    ("beta", "page.view", at("2026-11-27T10:30:00Z")),
]
PLAN = plan_aggregates(at("2026-11-27T10:00:00Z"), at("2026-11-27T11:00:00Z"), now=NOW)


def processed(events: Sequence[tuple[str, str, datetime]]) -> FakeRedis:
    redis = FakeRedis()
    redis.apply(build_increments(events))
    return redis


def run(redis: FakeRedis, plan: ReplayPlan = PLAN, **options: object) -> replay.ReplayReport:
    return replay_aggregates(plan, FakePostgres(EVENTS), redis, clock=lambda: NOW, **options)  # type: ignore[arg-type]


def test_replay_restores_counts_the_processor_lost() -> None:
    redis = processed(EVENTS[:1] + EVENTS[2:])  # the second order.paid was never counted
    expected = processed(EVENTS).buckets

    report = run(redis)

    assert redis.buckets == expected
    assert redis.buckets["sluice:{acme}:agg:202611271001"] == {"order.paid": 2, "_total": 2}
    assert redis.buckets["sluice:{acme}:agg1h:202611271000"] == {
        "order.paid": 2,
        "page.view": 2,
        "_total": 4,
    }
    assert report.changed
    # the lost event's minute, 5-minute and hour buckets
    assert [result.changed for result in report.results] == [1, 1, 1]


def test_replay_twice_gives_the_same_buckets_and_reports_no_change() -> None:
    redis = FakeRedis()
    first = run(redis)
    after_first = {key: Counter(bucket) for key, bucket in redis.buckets.items()}

    second = run(redis)

    assert redis.buckets == after_first == processed(EVENTS).buckets
    assert first.changed and not second.changed
    assert json.loads(second.json_line()) == {"changed": False, "buckets": 9, "events": 5}
    assert "Redis already held these counts" in second.summary()


def test_replay_sets_counts_absolutely_over_wrong_ones() -> None:
    redis = processed(EVENTS + EVENTS)  # counted twice, say

    run(redis)

    assert redis.buckets == processed(EVENTS).buckets


def test_rebuilt_buckets_expire_ttl_after_their_start_not_after_the_replay() -> None:
    redis = FakeRedis()

    run(redis)

    start = at("2026-11-27T10:01:00Z")
    expected = int((start + timedelta(seconds=DEFAULT_TTL_SECONDS) - NOW).total_seconds())
    assert redis.ttls["sluice:{acme}:agg:202611271001"] == expected
    assert redis.ttls["sluice:{acme}:agg1h:202611271000"] == expected - 60


def test_a_tenant_replay_asks_for_and_touches_only_that_tenant() -> None:
    redis = processed([("beta", "page.view", at("2026-11-27T10:30:00Z"))] * 3)
    plan = plan_aggregates(PLAN.since, PLAN.until, now=NOW, tenant="acme")
    postgres = FakePostgres(EVENTS)

    replay_aggregates(plan, postgres, redis, clock=lambda: NOW)

    assert {query[3] for query in postgres.queries} == {"acme"}
    assert [query[0] for query in postgres.queries] == [window.name for window in WINDOWS]
    assert redis.buckets["sluice:{beta}:agg:202611271030"] == {"page.view": 3, "_total": 3}
    assert "sluice:{acme}:agg:202611271001" in redis.buckets


def test_each_window_is_counted_over_its_own_widened_range() -> None:
    plan = plan_aggregates(at("2026-11-27T10:01:30Z"), at("2026-11-27T10:02:00Z"), now=NOW)
    postgres = FakePostgres(EVENTS)

    report = replay_aggregates(plan, postgres, FakeRedis(), clock=lambda: NOW)

    assert postgres.queries == [
        ("1m", at("2026-11-27T10:01:00Z"), at("2026-11-27T10:02:00Z"), None),
        ("5m", at("2026-11-27T10:00:00Z"), at("2026-11-27T10:05:00Z"), None),
        ("1h", at("2026-11-27T10:00:00Z"), at("2026-11-27T11:00:00Z"), None),
    ]
    assert [result.events for result in report.results] == [2, 3, 5]
    assert report.events == 5  # each event once, not once per window


def test_a_dry_run_compares_and_writes_nothing() -> None:
    redis = processed(EVENTS[1:])
    before = {key: Counter(bucket) for key, bucket in redis.buckets.items()}

    report = run(redis, dry_run=True)

    assert redis.buckets == before and redis.calls == []
    assert [result.changed for result in report.results] == [1, 1, 1]
    assert not report.changed
    assert "would correct 1 buckets" in report.summary()
    assert "dry run: Redis was read, not written" in report.summary()


def test_buckets_go_to_redis_in_chunks() -> None:
    redis = FakeRedis()

    report = run(redis, chunk_buckets=2)

    assert redis.calls == [2, 2, 2, 1, 2]  # 1m: 4 buckets, 5m: 3, 1h: 2
    assert report.buckets == 9


def test_a_redis_failure_propagates_and_the_same_replay_then_completes() -> None:
    redis = FakeRedis()
    redis.failures.append(ConnectionError("node 10.0.0.3:7001 went away"))

    with pytest.raises(ConnectionError):
        run(redis)
    run(redis)

    assert redis.buckets == processed(EVENTS).buckets


def test_empty_windows_ask_postgresql_nothing() -> None:
    plan = plan_aggregates(at("2026-11-27T12:10:00Z"), now=NOW)  # the hour is still open
    postgres = FakePostgres(EVENTS)

    report = replay_aggregates(plan, postgres, FakeRedis(), clock=lambda: NOW)

    assert [query[0] for query in postgres.queries] == ["1m", "5m"]
    assert report.results[2].buckets == 0


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay"], "the following arguments are required: WHAT"),
        (["replay", "kafka", "--since", "2026-11-27T10:00:00Z"], "invalid choice: 'kafka'"),
        (["replay", "aggregates"], "the following arguments are required: --since"),
        (["replay", "aggregates", "--since", "yesterday"], "not an ISO 8601 timestamp"),
        (["replay", "aggregates", "--since", "2026-11-27T10:00:00"], "has no UTC offset"),
        (
            ["replay", "aggregates", "--since", "2026-11-27T10:00:00Z", "--ttl-seconds", "2d"],
            "invalid int value",
        ),
    ],
)
def test_argument_errors_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--since", "2020-01-01T00:00:00Z"], "is older than Redis keeps aggregates"),
        (["--since", "2099-01-02T00:00:00Z", "--until", "2099-01-01T00:00:00Z"], "range is empty"),
        (
            ["--since", "2099-01-01T00:00:00Z", "--until", "2099-01-02T00:00:00Z", "--tenant", "A"],
            "invalid tenant name",
        ),
    ],
)
def test_a_replay_that_cannot_work_is_refused_before_any_connection(
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replay, "run_aggregates", pytest.fail)

    assert cli.main(["replay", "aggregates", *extra]) == 2

    err = capsys.readouterr().err
    assert err.startswith("sluice replay: ") and message in err


def test_the_command_prints_the_plan_the_summary_and_a_json_last_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    def run_aggregates(settings: object, plan: ReplayPlan, *, dry_run: bool) -> object:
        seen.update(settings=settings, plan=plan, dry_run=dry_run)
        return replay_aggregates(plan, FakePostgres([]), FakeRedis(), dry_run=dry_run)

    monkeypatch.setattr(replay, "run_aggregates", run_aggregates)
    monkeypatch.setattr(cli, "_settings", lambda: "settings")
    since = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)

    status = cli.main(["replay", "aggregates", "--tenant", "acme", "--since", since.isoformat()])

    assert status == 0
    plan = seen["plan"]
    assert isinstance(plan, ReplayPlan) and plan.tenant == "acme" and plan.since == since
    assert seen["settings"] == "settings" and seen["dry_run"] is False
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("replay Redis aggregates of tenant acme from PostgreSQL")
    assert json.loads(lines[-1]) == {"changed": False, "buckets": 0, "events": 0}


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        ("Function not found", "apply the redis_cluster role"),
        ("NOPERM User sluice has no permissions to run the 'hset' command", "apply the"),
        ("Connection reset by peer", "run the same replay again"),
    ],
)
def test_a_redis_failure_says_what_to_do(message: str, hint: str) -> None:
    assert hint in replay._redis_hint(message)
