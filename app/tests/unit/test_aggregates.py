"""Aggregates: which bucket an event lands in, the Redis key names and slots the Functions
library needs (slots as redis-py computes them), and the ``events.aggregated`` records built
from Redis's totals."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from redis.crc import key_slot

from sluice.derived.aggregates import (
    DEFAULT_TTL_SECONDS,
    FIVE_MINUTES,
    HOUR,
    MINUTE,
    BucketSet,
    Increment,
    Window,
    WindowCount,
    bucket_key,
    build_bucket_sets,
    build_increments,
    check_event_type,
    check_ttl,
    remaining_ttl,
    window_counts,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("moment", "minute", "five", "hour"),
    [
        ("2026-11-26T23:04:59.999999Z", "23:04", "23:00", "23:00"),
        ("2026-11-26T23:05:00Z", "23:05", "23:05", "23:00"),
        ("2026-11-26T23:59:59Z", "23:59", "23:55", "23:00"),
        ("2026-11-27T00:00:00Z", "00:00", "00:00", "00:00"),
    ],
)
def test_windows_are_tumbling_and_aligned_to_utc(
    moment: str, minute: str, five: str, hour: str
) -> None:
    starts = [window.start(at(moment)).strftime("%H:%M") for window in (MINUTE, FIVE_MINUTES, HOUR)]

    assert starts == [minute, five, hour]


def test_a_window_start_is_in_utc_whatever_the_events_offset() -> None:
    moment = datetime(2026, 11, 27, 0, 31, 10, tzinfo=timezone(timedelta(hours=2)))

    assert MINUTE.start(moment) == datetime(2026, 11, 26, 22, 31, tzinfo=UTC)
    assert HOUR.start(moment) == datetime(2026, 11, 26, 22, 0, tzinfo=UTC)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        MINUTE.start(datetime(2026, 11, 26, 23, 1))


def test_bucket_keys_are_the_ones_sluice_lua_documents() -> None:
    start = datetime(2026, 11, 26, 23, 1, tzinfo=UTC)

    assert bucket_key("t1", MINUTE, start) == "sluice:{t1}:agg:202611262301"
    assert bucket_key("t1", FIVE_MINUTES, start) == "sluice:{t1}:agg5m:202611262301"
    assert bucket_key("t1", HOUR, start) == "sluice:{t1}:agg1h:202611262301"


def test_every_bucket_of_a_tenant_is_in_the_slot_of_its_hash_tag() -> None:
    increments = build_increments(
        [
            ("acme", "order.created", at("2026-11-26T23:01:00Z")),
            ("acme", "order.paid", at("2026-11-27T09:59:00Z")),
        ]
    )

    assert {increment.key.split(":")[1] for increment in increments} == {"{acme}"}
    assert {key_slot(increment.key.encode()) for increment in increments} == {key_slot(b"acme")}
    assert key_slot(b"acme") != key_slot(b"globex")


def test_increments_count_each_event_once_per_window() -> None:
    events = [
        ("acme", "order.created", at("2026-11-26T23:01:10Z")),
        ("acme", "order.created", at("2026-11-26T23:01:50Z")),
        ("acme", "order.created", at("2026-11-26T23:02:00Z")),
        ("acme", "order.paid", at("2026-11-26T23:01:30Z")),
        ("globex", "order.created", at("2026-11-26T23:01:30Z")),
    ]

    counts = {
        (increment.key, increment.event_type): increment.count
        for increment in build_increments(events)
    }

    assert counts == {
        ("sluice:{acme}:agg:202611262301", "order.created"): 2,
        ("sluice:{acme}:agg:202611262302", "order.created"): 1,
        ("sluice:{acme}:agg:202611262301", "order.paid"): 1,
        ("sluice:{acme}:agg5m:202611262300", "order.created"): 3,
        ("sluice:{acme}:agg5m:202611262300", "order.paid"): 1,
        ("sluice:{acme}:agg1h:202611262300", "order.created"): 3,
        ("sluice:{acme}:agg1h:202611262300", "order.paid"): 1,
        ("sluice:{globex}:agg:202611262301", "order.created"): 1,
        ("sluice:{globex}:agg5m:202611262300", "order.created"): 1,
        ("sluice:{globex}:agg1h:202611262300", "order.created"): 1,
    }


def test_increments_do_not_depend_on_the_order_of_events() -> None:
    events = [
        (tenant, kind, at("2026-11-26T23:00:00Z") + timedelta(seconds=37 * index))
        for index, (tenant, kind) in enumerate(
            [("acme", "a"), ("globex", "b"), ("acme", "b"), ("initech", "a")] * 30
        )
    ]
    shuffled = events.copy()
    random.Random(7).shuffle(shuffled)

    assert build_increments(shuffled) == build_increments(events)


def test_an_increment_is_the_fcall_sluice_lua_expects() -> None:
    [increment] = [
        increment
        for increment in build_increments(
            [("acme", "order.created", at("2026-11-26T23:01:00Z"))], ttl_seconds=7200
        )
        if increment.window == MINUTE
    ]

    assert increment.fcall_args() == (
        "sluice_aggregate",
        1,
        "sluice:{acme}:agg:202611262301",
        "order.created",
        "1",
        "7200",
    )


@pytest.mark.parametrize("ttl", [0, 3600, 59, True, 7200.5])
def test_a_ttl_that_does_not_outlive_the_hour_window_is_refused(ttl: int) -> None:
    with pytest.raises(ValueError, match="longer than the longest window"):
        build_increments([], ttl_seconds=ttl)


def test_the_default_ttl_is_valid() -> None:
    assert check_ttl(DEFAULT_TTL_SECONDS) == DEFAULT_TTL_SECONDS


@pytest.mark.parametrize("event_type", ["_total", ""])
def test_types_sluice_lua_refuses_are_named(event_type: str) -> None:
    assert check_event_type(event_type) is not None


def test_ordinary_types_can_be_counted() -> None:
    assert check_event_type("total") is None
    assert check_event_type("_totals") is None


def test_window_counts_carry_the_totals_redis_answered() -> None:
    increments = build_increments(
        [("acme", "order.created", at("2026-11-26T23:01:00Z"))] * 2,
    )
    totals = [10, 30, 2]  # running totals, as if earlier batches had counted into the windows

    records = {record.window.name: record for record in window_counts(increments, totals)}

    assert {name: record.count for name, record in records.items()} == {
        increment.window.name: total for increment, total in zip(increments, totals, strict=True)
    }
    hour = records["1h"]
    assert hour.key == b"acme|order.created|1h|2026-11-26T23:00:00Z"
    assert json.loads(hour.to_json_bytes()) == {
        "tenant": "acme",
        "type": "order.created",
        "window": "1h",
        "start": "2026-11-26T23:00:00Z",
        "end": "2026-11-27T00:00:00Z",
        "count": hour.count,
    }


def test_window_counts_need_one_total_per_increment() -> None:
    increments = build_increments([("acme", "a", at("2026-11-26T23:01:00Z"))])

    with pytest.raises(ValueError, match="one total per increment"):
        window_counts(increments, [1])


def test_compaction_keys_of_different_windows_never_collide() -> None:
    start = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)
    piped_type = WindowCount("acme", "a|b", MINUTE, start, 1)
    piped_tenant = WindowCount("acme|a", "b", MINUTE, start, 1)

    assert piped_type.key == b"acme|a%7Cb|1m|2026-11-26T23:00:00Z"
    assert piped_type.key != piped_tenant.key
    assert WindowCount("acme", "a%7Cb", MINUTE, start, 1).key != piped_type.key


def test_an_increment_key_is_its_bucket() -> None:
    start = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)
    increment = Increment("acme", "a", FIVE_MINUTES, start, 3, DEFAULT_TTL_SECONDS)

    assert increment.key == bucket_key("acme", FIVE_MINUTES, start)


# --- rebuilding buckets (sluice replay) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "since", "until", "first", "last"),
    [
        (MINUTE, "23:01:30", "23:04:10", "23:01", "23:05"),
        (FIVE_MINUTES, "23:01:30", "23:04:10", "23:00", "23:05"),
        (HOUR, "23:01:30", "23:04:10", "23:00", "00:00"),
        (FIVE_MINUTES, "23:05:00", "23:10:00", "23:05", "23:10"),  # aligned: nothing to widen
        (FIVE_MINUTES, "23:05:00", "23:10:00.000001", "23:05", "23:15"),
        (MINUTE, "23:59:59", "23:59:59.5", "23:59", "00:00"),
    ],
)
def test_a_range_covers_every_whole_window_it_touches(
    window: Window, since: str, until: str, first: str, last: str
) -> None:
    day = "2026-11-26T"
    start, end = window.covering(at(f"{day}{since}Z"), at(f"{day}{until}Z"))

    assert (start.strftime("%H:%M"), end.strftime("%H:%M")) == (first, last)
    assert start == window.start(start) and end == window.start(end)


def test_an_empty_range_covers_nothing() -> None:
    with pytest.raises(ValueError, match="empty time range"):
        MINUTE.covering(at("2026-11-26T23:00:00Z"), at("2026-11-26T23:00:00Z"))


NOW = at("2026-11-27T12:00:00Z")


def test_counted_rows_become_one_bucket_set_per_bucket_with_the_remaining_ttl() -> None:
    start = at("2026-11-27T10:05:00Z")
    rows = [
        ("globex", "b", start, 1),
        ("acme", "order.paid", start, 2),
        ("acme", "cart.add", start, 5),
        ("acme", "cart.add", at("2026-11-27T10:00:00Z"), 1),
    ]

    rebuilt = build_bucket_sets(FIVE_MINUTES, rows, now=NOW, ttl_seconds=86400)

    assert [bucket.key for bucket in rebuilt.sets] == [
        "sluice:{acme}:agg5m:202611271000",
        "sluice:{acme}:agg5m:202611271005",
        "sluice:{globex}:agg5m:202611271005",
    ]
    bucket = rebuilt.sets[1]
    assert bucket.counts == (("cart.add", 5), ("order.paid", 2))
    assert bucket.total == 7 and rebuilt.events == 9
    # expires 86400 s after its start, 10:05 tomorrow: 22 h 5 min from now
    assert bucket.ttl_seconds == 22 * 3600 + 5 * 60
    assert key_slot(bucket.key.encode()) == key_slot(b"acme")


def test_a_bucket_set_is_the_fcall_sluice_lua_expects() -> None:
    bucket = BucketSet(
        "acme", MINUTE, at("2026-11-26T23:01:00Z"), (("cart.add", 5), ("order.paid", 2)), 600
    )

    assert bucket.fcall_args() == (
        "sluice_aggregate_set",
        1,
        "sluice:{acme}:agg:202611262301",
        "600",
        "cart.add",
        "5",
        "order.paid",
        "2",
    )


def test_a_bucket_set_matches_only_a_bucket_holding_exactly_its_counts() -> None:
    bucket = BucketSet("acme", MINUTE, at("2026-11-26T23:01:00Z"), (("a", 5), ("b", 2)), 600)

    assert bucket.matches({"a": 5, "b": 2, "_total": 7})
    assert not bucket.matches({"a": 5, "b": 1, "_total": 6})
    assert not bucket.matches({"a": 5, "b": 2, "c": 1, "_total": 8})
    assert not bucket.matches({})
    empty = BucketSet("acme", MINUTE, at("2026-11-26T23:01:00Z"), (("a", 0),), 600)
    assert empty.matches({}) and empty.total == 0


def test_expired_buckets_and_uncountable_types_are_left_out_and_counted() -> None:
    ttl = 2 * 3600
    rows = [
        ("acme", "a", at("2026-11-27T09:00:00Z"), 4),  # expired at 11:00
        ("acme", "a", at("2026-11-27T10:00:00Z"), 3),  # expires at 12:00, now: gone too
        ("acme", "a", at("2026-11-27T11:00:00Z"), 2),
        ("acme", "_total", at("2026-11-27T11:00:00Z"), 9),
        ("acme", "", at("2026-11-27T11:00:00Z"), 1),
    ]

    rebuilt = build_bucket_sets(HOUR, rows, now=NOW, ttl_seconds=ttl)

    assert [(bucket.key, bucket.counts, bucket.ttl_seconds) for bucket in rebuilt.sets] == [
        ("sluice:{acme}:agg1h:202611271100", (("a", 2),), 3600)
    ]
    assert (rebuilt.expired_buckets, rebuilt.expired_events) == (2, 7)
    assert rebuilt.uncountable_events == 10
    assert remaining_ttl(HOUR, at("2026-11-27T10:00:00Z"), NOW, ttl) == 0


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("acme", "a", at("2026-11-27T11:01:00Z"), 1), "not the start of a 5m window"),
        (("acme", "a", datetime(2026, 11, 27, 11, 0), 1), "not the start of a 5m window"),
        (("acme", "a", at("2026-11-27T11:00:00Z"), -1), "whole number >= 0"),
        (("acme", "a", at("2026-11-27T11:00:00Z"), 1.0), "whole number >= 0"),
    ],
)
def test_rows_not_grouped_by_window_start_are_refused(row: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_bucket_sets(FIVE_MINUTES, [row], now=NOW)


def test_a_type_counted_twice_in_one_bucket_is_refused() -> None:
    row = ("acme", "a", at("2026-11-27T11:00:00Z"), 1)
    with pytest.raises(ValueError, match="counted twice"):
        build_bucket_sets(HOUR, [row, row], now=NOW)
