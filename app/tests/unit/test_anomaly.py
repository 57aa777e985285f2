"""Anomaly detection: spikes in a tenant's per-minute counts raise an alert, steady or merely
noisy traffic does not, and the detector's memory stays bounded."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from sluice.derived.anomaly import AnomalyConfig, AnomalyDetector, alert_key, minute_of

#: A minute number: 2026-11-26T23:00Z. The detector only compares minutes.
T0 = minute_of(int(datetime(2026, 11, 26, 23, 0, tzinfo=UTC).timestamp() * 1000))


def feed(
    detector: AnomalyDetector,
    counts: list[int],
    *,
    start: int = T0,
    key: tuple[str, str] = ("acme", "order.created"),
) -> list[tuple[int, int]]:
    """Feed one minute per batch; the (minute index, count) of each alert."""
    alerts = []
    for index, count in enumerate(counts):
        for alert in detector.observe({(*key, start + index): count}):
            alerts.append((alert.minute - start, alert.count))
    return alerts


def noisy(mean: int, spread: int, minutes: int, seed: int = 1) -> list[int]:
    generator = random.Random(seed)
    return [mean + generator.randint(-spread, spread) for _ in range(minutes)]


def test_a_steady_noisy_series_raises_nothing() -> None:
    detector = AnomalyDetector()

    assert feed(detector, noisy(1000, 30, 240)) == []


def test_a_spike_after_enough_history_is_detected() -> None:
    detector = AnomalyDetector()
    history = noisy(1000, 30, 60)

    alerts = detector.observe({("acme", "order.created", T0 + m): c for m, c in enumerate(history)})
    assert alerts == []
    [alert] = detector.observe({("acme", "order.created", T0 + 60): 2000})

    assert (alert.tenant, alert.event_type, alert.minute, alert.count) == (
        "acme",
        "order.created",
        T0 + 60,
        2000,
    )
    assert alert.rule == "zscore"
    assert alert.mean == pytest.approx(sum(history) / 60)
    assert alert.z is not None
    assert alert.z >= 3
    # The history's spread (uniform +-30, about 17.6) is below sqrt(mean): the Poisson floor.
    assert alert.stddev < alert.mean**0.5
    assert alert.z == pytest.approx((2000 - alert.mean) / alert.mean**0.5)


def test_a_spike_is_detected_in_the_batch_that_pushes_the_minute_over_the_line() -> None:
    detector = AnomalyDetector()
    feed(detector, noisy(100, 5, 60))
    minute = T0 + 60

    assert detector.observe({("acme", "order.created", minute): 90}) == []
    [alert] = detector.observe({("acme", "order.created", minute): 90})
    assert alert.count == 180
    assert detector.observe({("acme", "order.created", minute): 500}) == []  # once per minute


def test_no_alert_before_the_minimum_history() -> None:
    detector = AnomalyDetector(AnomalyConfig(min_history=15))

    assert feed(detector, [*noisy(100, 5, 14), 10_000]) == []
    assert feed(detector, [10_000], start=T0 + 15) == [(0, 10_000)]


def test_minutes_without_events_are_zeros_in_the_history() -> None:
    detector = AnomalyDetector()
    # 50 events every other minute, nothing in between: normal for this series only because the
    # empty minutes count as zeros (otherwise the history would be a constant 50).
    for minute in range(0, 60, 2):
        assert detector.observe({("acme", "order.created", T0 + minute): 50}) == []

    [alert] = detector.observe({("acme", "order.created", T0 + 60): 200})

    assert (alert.mean, alert.stddev, alert.z) == (25.0, 25.0, 7.0)


def test_zero_variance_alerts_only_on_a_jump_by_the_factor() -> None:
    detector = AnomalyDetector(AnomalyConfig(jump_factor=3.0))
    feed(detector, [20] * 30)
    minute = T0 + 30

    assert detector.observe({("acme", "order.created", minute): 59}) == []
    [alert] = detector.observe({("acme", "order.created", minute): 1})

    assert (alert.rule, alert.count, alert.z, alert.mean, alert.stddev) == (
        "jump",
        60,
        None,
        20.0,
        0.0,
    )
    assert json.loads(alert.to_json_bytes())["z"] is None


def test_tiny_counts_never_alert() -> None:
    detector = AnomalyDetector(AnomalyConfig(min_count=10))
    quiet = [1 if minute % 7 == 0 else 0 for minute in range(60)]
    feed(detector, quiet)

    assert feed(detector, [9], start=T0 + 60) == []
    assert feed(detector, [10], start=T0 + 61) == [(0, 10)]


def test_the_poisson_floor_keeps_a_very_steady_series_quiet() -> None:
    steady = noisy(1000, 1, 60)
    floored = AnomalyDetector(AnomalyConfig(poisson_floor=True))
    raw = AnomalyDetector(AnomalyConfig(poisson_floor=False))
    feed(floored, steady)
    feed(raw, steady)

    # +2 % on a series that wobbles by 0.1 %: far out by its own deviation, normal for counts.
    assert feed(raw, [1020], start=T0 + 60) == [(0, 1020)]
    assert feed(floored, [1020], start=T0 + 60) == []
    assert feed(floored, [1200], start=T0 + 61) == [(0, 1200)]


def test_series_are_independent_per_tenant_and_type() -> None:
    detector = AnomalyDetector()
    feed(detector, noisy(100, 5, 60), key=("acme", "a"))
    feed(detector, noisy(5000, 100, 60), key=("acme", "b"))
    feed(detector, noisy(5000, 100, 60), key=("globex", "a"))

    alerts = detector.observe(
        {("acme", "a", T0 + 60): 500, ("acme", "b", T0 + 60): 5000, ("globex", "a", T0 + 60): 500}
    )

    assert [(alert.tenant, alert.event_type) for alert in alerts] == [("acme", "a")]


def test_a_minute_older_than_the_window_is_ignored() -> None:
    detector = AnomalyDetector(AnomalyConfig(window_minutes=60))
    feed(detector, noisy(100, 5, 61))

    assert detector.observe({("acme", "order.created", T0 - 1): 100_000}) == []


def test_the_same_input_gives_the_same_alerts() -> None:
    series = [*noisy(100, 5, 60), 400, *noisy(100, 5, 30, seed=2), 900]

    assert (
        feed(AnomalyDetector(), series) == feed(AnomalyDetector(), series) == [(60, 400), (91, 900)]
    )


def test_idle_series_are_evicted() -> None:
    detector = AnomalyDetector(AnomalyConfig(idle_minutes=120))
    feed(detector, [5] * 3, key=("acme", "a"))
    feed(detector, [5] * 3, start=T0 + 100, key=("acme", "b"))

    assert detector.evict(T0 + 2 + 120) == 0
    assert detector.evict(T0 + 2 + 121) == 1
    assert len(detector) == 1


def test_the_number_of_series_is_bounded() -> None:
    detector = AnomalyDetector(AnomalyConfig(max_series=100))

    for index in range(1000):
        detector.observe({("acme", f"type-{index}", T0): 1})

    assert len(detector) == 100


def test_a_series_keeps_no_more_than_its_window() -> None:
    detector = AnomalyDetector(AnomalyConfig(window_minutes=60))
    feed(detector, [100] * 1000)

    [series] = detector._series.values()
    assert len(series.counts) == 61


def test_an_alert_serialises_for_kafka_and_redis() -> None:
    detector = AnomalyDetector()
    feed(detector, noisy(100, 5, 60))
    [alert] = detector.observe({("acme", "order.created", T0 + 60): 400})

    document = json.loads(alert.to_json_bytes())

    assert document["minute"] == "2026-11-27T00:00:00Z"
    assert document["count"] == 400
    assert document["rule"] == "zscore"
    assert document["threshold"] == 3.0
    assert set(document) == {
        "tenant",
        "type",
        "minute",
        "count",
        "mean",
        "stddev",
        "z",
        "threshold",
        "rule",
    }
    assert alert.key == b"acme"
    assert (
        alert.redis_key
        == alert_key("acme", "order.created")
        == "sluice:{acme}:anomaly:order.created"
    )


def test_minutes_of_kafka_timestamps() -> None:
    assert minute_of(0) == 0
    assert minute_of(59_999) == 0
    assert minute_of(60_000) == 1


@pytest.mark.parametrize(
    "settings",
    [
        {"window_minutes": 0},
        {"threshold": 0},
        {"min_history": 61},
        {"jump_factor": -1},
        {"max_series": True},
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid AnomalyConfig"):
        AnomalyConfig(**settings)  # type: ignore[arg-type]
