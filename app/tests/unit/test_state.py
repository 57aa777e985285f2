"""Event sourcing: JSON merge patch (RFC 7386) and a subject's state folded from its history
as of a time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sluice.cloudevents import NO_DATA, Event
from sluice.derived.state import fold_subject_state, merge_patch
from sluice.storage.reads import StoredEvent

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def stored(event_id: str, minutes: float, data: Any = NO_DATA, **fields: Any) -> StoredEvent:
    """An event of subject ``order-1`` as read back, ``minutes`` after T0."""
    time = T0 + timedelta(minutes=minutes)
    event = Event(
        id=event_id, source="/orders", type="order.changed", time=time, data=data, **fields
    )
    return StoredEvent(event=event, ingested_at=time)


# RFC 7386, Appendix A: target, patch, result.
RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7386_EXAMPLES)
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


def test_merge_patch_changes_neither_input() -> None:
    target = {"a": {"b": 1, "keep": [1]}, "c": 2}
    patch = {"a": {"b": None, "new": {"x": 1}}, "c": None}
    target_before, patch_before = json.dumps(target), json.dumps(patch)

    assert merge_patch(target, patch) == {"a": {"keep": [1], "new": {"x": 1}}}
    assert json.dumps(target) == target_before and json.dumps(patch) == patch_before


def test_merge_patch_takes_deeper_documents_than_python_recursion_allows() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(5000):
        deep = {"n": deep}

    assert merge_patch({}, deep)["n"]["n"]["n"] is not None


HISTORY = [
    stored("e1", 0, data={"status": "created", "total": 10, "coupon": "X"}),
    stored("e2", 1, data={"status": "paid"}),
    stored("e3", 1, data_base64="AAE="),  # binary: not a patch
    stored("e4", 2),  # no payload: not a patch
    stored("e5", 3, data={"coupon": None, "lines": {"a": 1}}),
    stored("e6", 4, data={"lines": {"b": 2}}),
]


@pytest.mark.parametrize(
    ("as_of", "state"),
    [
        (T0 - timedelta(seconds=1), None),
        (T0, {"status": "created", "total": 10, "coupon": "X"}),  # an event at as_of counts
        (T0 + timedelta(minutes=2.5), {"status": "paid", "total": 10, "coupon": "X"}),
        (T0 + timedelta(minutes=3), {"status": "paid", "total": 10, "lines": {"a": 1}}),
        (None, {"status": "paid", "total": 10, "lines": {"a": 1, "b": 2}}),
    ],
)
def test_the_state_as_of_a_time_folds_the_events_up_to_it(
    as_of: datetime | None, state: Any
) -> None:
    assert fold_subject_state(HISTORY, as_of) == state


def test_a_null_payload_clears_the_state_and_later_events_start_again() -> None:
    events = [
        stored("e1", 0, data={"a": 1}),
        stored("e2", 1, data=None),
        stored("e3", 2, data={"b": 2}),
    ]

    assert fold_subject_state(events[:2], None) is None
    assert fold_subject_state(events, None) == {"b": 2}


def test_folding_page_by_page_gives_the_state_of_folding_at_once() -> None:
    as_of = T0 + timedelta(minutes=10)
    state = None
    for start in range(0, len(HISTORY), 2):
        state = fold_subject_state(HISTORY[start : start + 2], as_of, state)

    assert state == fold_subject_state(HISTORY, as_of)


def test_events_at_one_instant_apply_in_id_order_and_disorder_is_refused() -> None:
    same_time = [stored("a", 0, data={"v": "a"}), stored("b", 0, data={"v": "b"})]

    assert fold_subject_state(same_time, None) == {"v": "b"}
    with pytest.raises(ValueError, match="ascending"):
        fold_subject_state(list(reversed(same_time)), None)
    with pytest.raises(ValueError, match="timezone-aware"):
        fold_subject_state(same_time, datetime(2026, 5, 1))


def test_folding_leaves_the_events_as_they_were() -> None:
    before = [json.dumps(e.event.data) for e in HISTORY if e.event.data is not NO_DATA]

    fold_subject_state(HISTORY, None)

    assert [json.dumps(e.event.data) for e in HISTORY if e.event.data is not NO_DATA] == before
